"""Render every file of an install from one inventory through one Jinja environment.

Templates are looked up in the site directory first, then in the shipped `templates/`; a site template can
extend the shipped one of the same name as "shipped/<name>". Undefined variables are errors that name the
template file and line. render_files is pure; render_to checks dhcpd.conf with `dhcpd -t` (kea-dhcp4.conf
with `kea-dhcp4 -t`, when the inventory's dhcp.server is kea) and then writes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2

from provision import diskless
from provision.bootmode import BootMode, modes_for
from provision.bulk import cycle_collector_paused
from provision.errors import InputError
from provision.fields import ssh_public_key_problem
from provision.model import (DOLLY_PORT, GRUB_EFI_LOADER, GRUB_TFTP_DIR, MULTICAST_TFTP_PORT, DhcpServer, Firmware,
                             Inventory, Node, Transport)
from provision.outputs import Prune, WriteReport, write_tree
from provision.services import dhcpd, kea

DHCPD_CONF = "dhcpd.conf"
KEA_CONF = "kea-dhcp4.conf"  # instead of dhcpd.conf when the inventory says dhcp: {server: kea}
DOLLY_CONF = "dolly.conf"
TFTP_ROOT = "tftpboot"
PXELINUX_DIR = f"{TFTP_ROOT}/pxelinux.cfg"
GRUB_DIR = f"{TFTP_ROOT}/{GRUB_TFTP_DIR}"
KICKSTART_DIR = "kickstart"
PXE_LOADER = "pxelinux.0"  # BIOS loader when boot files go over TFTP, and for iPXE firmware over HTTP too
HTTP_PXE_LOADER = "lpxelinux.0"  # pxelinux with its own TCP/IP stack: also http:// URLs in KERNEL/INITRD
SHIPPED_PREFIX = "shipped"

# Per-node files of nodes no longer in the inventory are removed on render (a removed node must not reinstall).
PRUNE = (
    Prune(PXELINUX_DIR, re.compile(r"01(-[0-9a-f]{2}){6}")),
    Prune(GRUB_DIR, re.compile(r"grub\.cfg-01(-[0-9a-f]{2}){6}")),
    Prune(KICKSTART_DIR, re.compile(r"[A-Za-z0-9.-]+\.(ks|identity)")),  # .identity: a node out of diskless
    Prune(".", re.compile(r"dhcpd\.conf|kea-dhcp4\.conf")),  # the other DHCP server's, after a switch
)


def shipped_templates_dir() -> Path:
    """provision/templates inside an installed wheel, else <repository>/templates."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise InputError(f"shipped templates not found (looked in {package / 'templates'} and {package.parent})")


def pxelinux_path(node: Node) -> str:
    return f"{PXELINUX_DIR}/{node.pxelinux_name}"


def grub_path(node: Node) -> str:
    return f"{GRUB_DIR}/{node.grub_config_name}"


def kickstart_path(node: Node) -> str:
    return f"{KICKSTART_DIR}/{node.name}.ks"


def identity_path(node: Node) -> str:
    """A diskless node's identity script (served as /api/nodes/<name>/identity), rendered in diskless mode only."""
    return f"{KICKSTART_DIR}/{node.name}.identity"


def kickstart_url(inv: Inventory, node: Node) -> str:
    return f"{inv.server.url}/kickstart/{node.name}.ks"


def boot_url(inv: Inventory, node: Node) -> str:
    """Where a node's installer asks, before it touches the disk, whether it is really due for install."""
    return f"{inv.server.url}/api/nodes/{node.name}/boot"


def report_url(inv: Inventory, node: Node) -> str:
    return f"{inv.server.url}/api/nodes/{node.name}/state"


@dataclass(frozen=True)
class BootSource:
    """How one loader's config names the installer kernel and initrd."""

    kernel: str
    initrd: str


def pxe_loader(inv: Inventory) -> str:
    """The boot file dhcpd names for BIOS nodes (see ipxe_pxe_loader for iPXE firmware): lpxelinux.0 when the
    kernel and initrd go over HTTP. (Over multicast, pxelinux.0 needs iPXE firmware under it: other PXE ROMs
    cannot load tftm:// URLs.)"""
    return HTTP_PXE_LOADER if inv.boot.transport is Transport.HTTP else PXE_LOADER


def ipxe_pxe_loader(inv: Inventory) -> str | None:
    """The boot file for BIOS nodes whose firmware is iPXE (DHCP user class "iPXE") when the kernel and initrd
    go over HTTP: pxelinux.0, which hands http:// URLs to iPXE's own HTTP client (the PXE file API) instead of
    running lpxelinux.0's lwIP stack on iPXE's UNDI (which once stalled mid-initrd in ~20 VM boots; iPXE's own
    HTTP fetched kernel and initrd 2-3 times faster than TFTP in the VM lab). None over TFTP or multicast (no
    difference)."""
    return PXE_LOADER if inv.boot.transport is Transport.HTTP else None


def pxelinux_boot(inv: Inventory, files: BootSource | None = None) -> BootSource:
    """KERNEL/INITRD for (l)pxelinux: http://SERVER:PORT/boot/<file>, tftm://SERVER:1069/boot/<file> (multicast
    TFTP, opened by the firmware under pxelinux.0), or boot/<file> in the TFTP root. `files`: other paths in the TFTP
    root than the installer's (the diskless kernel and initramfs)."""
    boot = inv.boot
    kernel, initrd = (files.kernel, files.initrd) if files else (boot.kernel_tftp_path, boot.initrd_tftp_path)
    if boot.transport is Transport.HTTP:
        return BootSource(f"{inv.server.url}/{kernel}", f"{inv.server.url}/{initrd}")
    if boot.transport is Transport.MULTICAST:
        base = f"tftm://{inv.server.ip}:{MULTICAST_TFTP_PORT}"
        return BootSource(f"{base}/{kernel}", f"{base}/{initrd}")
    return BootSource(kernel, initrd)


def multicast_payload(inv: Inventory, with_diskless: bool) -> list[str]:
    """The TFTP paths that pxelinux's configs name as tftm:// URLs (boot.transport: multicast): the installer's
    kernel and initrd, and the diskless ones while a node is in diskless boot."""
    files = [inv.boot.kernel_tftp_path, inv.boot.initrd_tftp_path]
    return files + ([diskless.KERNEL, diskless.INITRD] if with_diskless else [])


def grub_boot(inv: Inventory, files: BootSource | None = None) -> BootSource:
    """linux/initrd paths for GRUB: (http,SERVER:PORT)/boot/<file> (its http module), or /boot/<file> from the
    TFTP server it was loaded from. `files` as for pxelinux_boot."""
    boot = inv.boot
    kernel, initrd = (files.kernel, files.initrd) if files else (boot.kernel_tftp_path, boot.initrd_tftp_path)
    device = f"(http,{inv.server.ip}:{inv.server.http_port})" if boot.transport is Transport.HTTP else ""
    return BootSource(f"{device}/{kernel}", f"{device}/{initrd}")


@functools.lru_cache(maxsize=8)
def environment(site_templates: Path | None = None) -> jinja2.Environment:
    """The one Jinja environment (compiled templates are cached in it)."""
    shipped = jinja2.FileSystemLoader(str(shipped_templates_dir()))
    loaders: list[jinja2.BaseLoader] = [jinja2.PrefixLoader({SHIPPED_PREFIX: shipped})]
    if site_templates is not None:
        if not site_templates.is_dir():
            raise InputError(f"--templates {site_templates}: not a directory")
        loaders.append(jinja2.FileSystemLoader(str(site_templates)))
    loaders.append(shipped)
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )


def template(env: jinja2.Environment, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"template not found: {exc.name}") from None


def render_template(tmpl: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render one template; any error becomes an InputError naming the template file and line."""
    try:
        return tmpl.render(context)
    except jinja2.TemplateSyntaxError as exc:  # e.g. an {% extends %} or {% include %} target
        raise InputError(f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"{tmpl.filename}: template not found: {exc.name}") from None
    except Exception as exc:  # noqa: BLE001 - a template's own error (undefined variable, bad filter, ...)
        where = _template_frame(exc.__traceback__) or f"{tmpl.filename}"
        raise InputError(f"{where}: template error: {exc}") from None


def _template_frame(tb: TracebackType | None) -> str | None:
    """file:line of the innermost template frame in a traceback (Jinja maps frames to template lines)."""
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def render_files(
    inv: Inventory,
    site_templates: Path | str | None = None,
    boot_modes: Mapping[str, BootMode] | None = None,
) -> dict[str, str]:
    """Every output file, relative path -> text. Per-node files first, dhcpd.conf last (see render_to)."""
    with cycle_collector_paused():
        return _render_files(inv, site_templates, boot_modes)


def _render_files(
    inv: Inventory, site_templates: Path | str | None, boot_modes: Mapping[str, BootMode] | None
) -> dict[str, str]:
    env = environment(Path(site_templates).resolve() if site_templates is not None else None)
    modes = modes_for(inv, boot_modes)
    pxelinux = {mode: template(env, f"pxelinux/{mode}.cfg.j2") for mode in BootMode}
    grub = {mode: template(env, f"grub/{mode}.cfg.j2") for mode in BootMode}
    kickstart = template(env, "kickstart/node.ks.j2")
    identity = template(env, "diskless/identity.sh.j2") if BootMode.DISKLESS in modes.values() else None
    files: dict[str, str] = {}
    shared = {"inv": inv, "default_dolly_port": DOLLY_PORT}
    diskless_files = BootSource(diskless.KERNEL, diskless.INITRD)
    sources = {"pxelinux_boot": pxelinux_boot(inv), "grub_boot": grub_boot(inv),
               "diskless_pxelinux": pxelinux_boot(inv, diskless_files), "diskless_grub": grub_boot(inv, diskless_files)}
    key_files: dict[str, list[str]] = {}
    for node in inv.nodes:
        mode = modes[node.name]
        ks_url = kickstart_url(inv, node)
        context = {
            **shared,
            **sources,
            "node": node,
            "mode": mode,
            "fqdn": inv.fqdn(node.name),
            "kickstart_url": ks_url,
            "report_url": report_url(inv, node),
            "ssh_keys": authorized_keys(inv, node, key_files),
            "kernel_args": " ".join(a for a in (f"inst.ks={ks_url}", f"provision.boot_url={boot_url(inv, node)}",
                                                "ip=dhcp", inv.boot.append, node.append) if a),
            "diskless_args": diskless.kernel_args(inv, node),
        }
        files[pxelinux_path(node)] = render_template(pxelinux[mode], context)
        if node.firmware is Firmware.UEFI:
            files[grub_path(node)] = render_template(grub[mode], context)
        files[kickstart_path(node)] = render_template(kickstart, context)
        if mode is BootMode.DISKLESS:
            host_keys_url = f"{inv.server.url}/api/nodes/{node.name}/host-keys"
            files[identity_path(node)] = render_template(identity, {**context, "host_keys_url": host_keys_url})
    if inv.nodes:  # an inventory before discovery has no ring yet
        files[DOLLY_CONF] = render_template(template(env, "dolly.conf.j2"), {**shared, **dolly_ring(inv)})
    hosts = [(node, modes[node.name]) for node in inv.nodes]
    loaders = {"loader": pxe_loader(inv), "uefi_loader": GRUB_EFI_LOADER, "ipxe_loader": ipxe_pxe_loader(inv)}
    conf = KEA_CONF if inv.dhcp.server is DhcpServer.KEA else DHCPD_CONF
    files[conf] = render_template(template(env, f"{conf}.j2"), {**shared, "hosts": hosts, **loaders})
    return files


def authorized_keys(inv: Inventory, node: Node, key_files: dict[str, list[str]]) -> list[str]:
    """The node's `ssh_authorized_keys` as key lines: files named there are read (once per render, kept in
    `key_files`) and every line checked; a missing or bad file is an InputError naming it."""
    keys: list[str] = []
    for entry in node.ssh_authorized_keys:
        if not entry.startswith("/"):
            keys.append(entry)
            continue
        if entry not in key_files:
            try:
                lines = Path(entry).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{inv.path}: ssh_authorized_keys of {node.name}: cannot read {entry}: {exc}") from None
            found = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            for line in found:
                problem = ssh_public_key_problem(line)
                if problem:
                    raise InputError(f"{inv.path}: ssh_authorized_keys of {node.name}: {entry}: {problem}")
            if not found:
                raise InputError(f"{inv.path}: ssh_authorized_keys of {node.name}: {entry} holds no key")
            key_files[entry] = found
        keys.extend(key_files[entry])
    return keys


def dolly_ring(inv: Inventory, nodes: Sequence[Node] | None = None, by_address: bool = False,
               server_port: int | None = None) -> dict[str, Any]:
    """Ring members for dolly.conf in ring order (all nodes unless `nodes` is given), by name or, with
    `by_address`, by IP (so nothing needs to resolve names); NAME:PORT where a port is not dolly's default.
    The ring closes back to the server's `server_port` (default its dolly_port)."""

    def entry(name: str, ip: Any, port: int) -> str:
        host = str(ip) if by_address else name
        return host if port == DOLLY_PORT else f"{host}:{port}"

    return {
        "server": entry(inv.server.name, inv.server.ip, server_port or inv.server.dolly_port),
        "clients": [entry(node.name, node.ip, node.dolly_port) for node in (inv.nodes if nodes is None else nodes)],
    }


def render_ring_config(inv: Inventory, nodes: Sequence[Node], site_templates: Path | str | None = None,
                       server_port: int | None = None) -> str:
    """dolly.conf for a run over `nodes` only (the ones that are ready, or one ring of them), by address,
    closing back to the server's `server_port` (default its dolly_port)."""
    env = environment(Path(site_templates).resolve() if site_templates is not None else None)
    context = {"inv": inv, "default_dolly_port": DOLLY_PORT,
               **dolly_ring(inv, nodes, by_address=True, server_port=server_port)}
    return render_template(template(env, "dolly.conf.j2"), context)


@dataclass(frozen=True)
class RenderReport:
    out_dir: Path
    nodes: int
    files: WriteReport
    dhcp_config: str   # the rendered DHCP server config (dhcpd.conf or kea-dhcp4.conf)
    dhcp_checked: bool  # by the real server's -t


def render_to(
    out_dir: Path | str,
    inv: Inventory,
    site_templates: Path | str | None = None,
    boot_modes: Mapping[str, BootMode] | None = None,
    check_dhcpd: bool = True,
) -> RenderReport:
    """Render everything in memory, check dhcpd.conf with `dhcpd -t` (when dhcpd is installed and
    `check_dhcpd`), then write each file atomically; per-node files before dhcpd.conf, stale ones last.
    Any failure before the writes leaves `out_dir` as it was."""
    out_dir = Path(out_dir)
    files = render_files(inv, site_templates, boot_modes)
    checked = False
    if inv.dhcp.server is DhcpServer.KEA:
        kea.parse_config(files[KEA_CONF], str(out_dir / KEA_CONF))  # JSON, even where Kea is not installed
        if check_dhcpd and kea.find_kea() is not None:
            kea.check_config_text(files[KEA_CONF], label=str(out_dir / KEA_CONF))
            checked = True
    elif check_dhcpd and dhcpd.find_dhcpd() is not None:
        dhcpd.check_config_text(files[DHCPD_CONF], label=str(out_dir / DHCPD_CONF))
        checked = True
    report = write_tree(out_dir, files, PRUNE)
    return RenderReport(out_dir, len(inv.nodes), report, KEA_CONF if inv.dhcp.server is DhcpServer.KEA else DHCPD_CONF,
                        checked)
