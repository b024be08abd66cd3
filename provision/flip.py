"""Switch nodes between install, local and diskless boot: change the mode, re-render, check, swap, apply to DHCP.

The rendered PXE configs and the DHCP config (dhcpd.conf or kea-dhcp4.conf) are a function of (inventory,
boot modes); a flip never edits a written file. Order: render everything with the new modes (`dhcpd -t` or
`kea-dhcp4 -t` checks it) -> make it the live DHCP config and apply it to our server if it runs (dhcpd:
restart; Kea: config-reload) -> record the modes. A failure before the swap changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provision.bootmode import BootMode
from provision.cluster import ClusterFiles
from provision.diskless_stage import diskless_sources, install_diskless
from provision.errors import InputError
from provision.model import Inventory
from provision.render import render_to


@dataclass(frozen=True)
class FlipResult:
    mode: BootMode
    changed: tuple[str, ...]     # nodes whose mode changed
    unchanged: tuple[str, ...]   # nodes that had this mode already
    dhcp: str                    # the DHCP server's name (dhcpd, kea-dhcp4)
    applied: str | None          # how the running server took the new config ("restarted"); None: not running


def current_modes(inv: Inventory, files: ClusterFiles) -> dict[str, BootMode]:
    """Every inventory node's recorded boot mode (install when nothing is recorded)."""
    records = files.store().load()
    return {name: records[name].boot if name in records else BootMode.INSTALL for name in inv.node_names}


def select_nodes(inv: Inventory, names: Iterable[str], all_nodes: bool) -> list[str]:
    """Validate node names against the inventory (all of them at once); --all means every node."""
    names = [n for n in names if n]
    if all_nodes == bool(names):
        raise InputError("name the nodes to flip, or give --all (not both)")
    if all_nodes:
        return list(inv.node_names)
    unknown = [n for n in names if n not in inv.node_names]
    if unknown:
        raise InputError(f"{inv.path}: unknown node(s): {', '.join(unknown)} (nothing was changed)")
    return list(dict.fromkeys(names))


def apply_modes(inv: Inventory, files: ClusterFiles, modes: dict[str, BootMode],
                site_templates: Path | None) -> str | None:
    """Render with `modes` into the cluster's rendered dir and make its DHCP config live, applied to our DHCP
    server if it runs. Returns how the running server took a changed config (its APPLIED: "restarted", ...),
    None if none runs or nothing changed. Nodes in diskless boot get their files into the TFTP root once the
    render is checked (a missing boot.diskless fails before anything changes)."""
    diskless = diskless_sources(inv, modes)
    render_to(files.rendered, inv, site_templates=site_templates, boot_modes=modes)
    install_diskless(files.tftp_root, diskless)
    dhcp = files.dhcp()
    if dhcp.running():
        return dhcp.APPLIED if dhcp.install_and_reload(files.dhcp_rendered) else None
    dhcp.install(files.dhcp_rendered)
    return None


def flip(inv: Inventory, files: ClusterFiles, names: Iterable[str], mode: BootMode,
         site_templates: Path | None = None) -> FlipResult:
    """Set `names` to `mode` (idempotent). Site templates default to those of the last install."""
    names = list(names)
    modes = current_modes(inv, files)
    changed = tuple(n for n in names if modes[n] is not mode)
    unchanged = tuple(n for n in names if modes[n] is mode)
    modes.update(dict.fromkeys(names, mode))
    applied = apply_modes(inv, files, modes, site_templates or files.recorded_templates())
    files.store().set_boot(names, mode)
    return FlipResult(mode, changed, unchanged, files.dhcp().NAME, applied)
