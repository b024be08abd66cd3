"""Inventory: one YAML file -> a validated, frozen Inventory; every problem reported at once.

The schema is documented in README.md ("Inventory"). The model classes live in provision.model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from provision.bulk import cycle_collector_paused
from provision.errors import InputError
from provision.fields import Fields, format_path
from provision.model import (
    BIOSBOOT,
    DOLLY_PORT,
    HTTP_PORT,
    Boot,
    Bootloader,
    Disk,
    DiskLabel,
    Dolly,
    Firmware,
    Image,
    Inventory,
    KickstartSettings,
    Network,
    Node,
    OsFamily,
    Partition,
    Server,
    Transport,
)
from provision.yaml_lines import MAX_TEXT, YamlSyntaxError, YamlTooLarge, load_yaml

__all__ = [
    "Inventory", "Node", "Server", "Network", "Boot", "Image", "Disk", "Partition",
    "load_inventory", "parse_inventory", "resolve_inventory_path", "state_dir",
]

DEFAULT_STATE_DIR = "/var/lib/provision"
LAST_INSTALL_FILE = "last-install.json"

TOP_KEYS = ("cluster", "server", "network", "boot", "images", "kickstart", "dolly", "defaults", "nodes")
NODE_SETTINGS = ("interface", "os_family", "bootloader", "firmware", "disk", "dolly_port", "append",
                 "root_password_hash", "ssh_authorized_keys")
# What the installer makes (ext2/3/4, vfat, swap) and its kernel mounts (the root receives the image raw, then
# the %post mounts it): provision/installer.py format_commands. xfs and btrfs have no path through it.
FSTYPES = ("ext2", "ext3", "ext4", "vfat", "swap", BIOSBOOT)
UNSUPPORTED_FSTYPES = ("xfs", "btrfs")
ESP_MOUNT = "/boot/efi"  # the EFI system partition (the installer's `esp` role)
MBR_PRIMARY = 4  # partitions an msdos label holds (the installer writes no extended ones)
DEFAULT_DISK = Disk("sda", (Partition("/", "ext4", 4096, grow=True, label="root"),))
SETTING_DEFAULTS = {"interface": "eth0", "os_family": "redhat", "bootloader": "grub2", "firmware": "bios",
                    "disk": DEFAULT_DISK, "dolly_port": DOLLY_PORT, "append": "", "root_password_hash": None,
                    "ssh_authorized_keys": ()}

_DEVICE = re.compile(r"^[a-z][a-z0-9]*$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_FS_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,12}$")
_WORD = re.compile(r"^[A-Za-z0-9_./+-]+$")
_MOUNT = re.compile(r"^/[A-Za-z0-9_./-]*$")
_OPTIONS = re.compile(r"^[A-Za-z0-9_=,.:-]+$")
_SAFE_TEXT = re.compile(r"^[^'\"`$\\]*$")  # ends up inside shell/kickstart lines: no quoting games


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file. Raises InputError listing every problem."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT:
            raise InputError(f"{path}: {path.stat().st_size:,} bytes: an inventory is at most {MAX_TEXT >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the inventory: {exc}") from None
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    """Validate inventory YAML text; `path` names the file in messages."""
    with cycle_collector_paused():
        try:
            doc = load_yaml(text)
        except YamlTooLarge as exc:
            raise InputError(f"{path}:{exc.line}: refused: {exc}") from None
        except YamlSyntaxError as exc:
            raise InputError(f"{path}:{exc.line}: not valid YAML: {exc}") from None
        fields = Fields(doc)
        for dup in doc.duplicates:
            fields.problem(dup.path, "key given twice")
        inventory = _Parser(fields, path).inventory(doc.data)
    if fields.problems:
        count = len(fields.problems)
        lines = "\n".join("  " + p.render(path) for p in sorted(fields.problems, key=lambda p: p.line))
        raise InputError(f"{path}: {count} problem{'s' if count > 1 else ''} in the inventory:\n{lines}")
    assert inventory is not None
    return inventory


class _Parser:
    def __init__(self, fields: Fields, path: Path):
        self.f = fields
        self.path = path
        self.identities: list[tuple[int, str | None, str | None, IPv4Address | None]] = []
        self.reported: set[tuple[tuple, str]] = set()  # (path, message) of node-level problems said once
        # (id of a disk, its label, where it is given) -> (the disk, names of the nodes that have it)
        self.disks: dict[tuple, tuple[Disk, list[str]]] = {}

    def inventory(self, data: Any) -> Inventory | None:
        top = self.f.mapping((), data, TOP_KEYS, ("server", "network", "boot", "images", "nodes"))
        if top is None:
            return None
        cluster = self.f.text(("cluster",), top["cluster"]) if "cluster" in top else self.path.stem
        server = self.server(top.get("server"))
        network = self.network(top.get("network"))
        boot = self.boot(top.get("boot"))
        images = self.images(top.get("images"))
        kickstart = self.kickstart({} if top.get("kickstart") is None else top["kickstart"])
        dolly = self.dolly({} if top.get("dolly") is None else top["dolly"])
        defaults = self.settings(("defaults",), {} if top.get("defaults") is None else top["defaults"], None)
        nodes = self.nodes(top.get("nodes"), defaults)
        if network is not None:
            self.check_addresses(network, server)
        if images is not None:
            self.check_image_targets(images)
        parts = (cluster, server, network, boot, images, kickstart, dolly, defaults, nodes)
        if self.f.problems or any(p is None for p in parts):
            return None
        return Inventory(self.path, cluster, server, network, boot, images, kickstart, tuple(nodes), dolly)

    def checked(self, m: dict, path: tuple, key: str, check: Callable, *args: Any) -> Any:
        """check(path.key, value, *args) if the key has a value, else None (mapping() reports missing ones)."""
        value = m.get(key)
        return None if value is None else check(path + (key,), value, *args)

    def server(self, data: Any) -> Server | None:
        p = ("server",)
        m = self.f.mapping(p, data, ("name", "ip", "http_port", "dolly_port", "node_auth"), ("name", "ip"))
        if m is None:
            return None
        name = self.checked(m, p, "name", self.f.hostname)
        ip = self.checked(m, p, "ip", self.f.ipv4)
        http_port = self.f.port(p + ("http_port",), m.get("http_port", HTTP_PORT))
        dolly_port = self.f.port(p + ("dolly_port",), m.get("dolly_port", DOLLY_PORT))
        node_auth = self.f.boolean(p + ("node_auth",), m.get("node_auth", True))
        if None in (name, ip, http_port, dolly_port, node_auth):
            return None
        return Server(name, ip, http_port, dolly_port, node_auth)

    def network(self, data: Any) -> Network | None:
        p = ("network",)
        m = self.f.mapping(p, data, ("subnet", "gateway", "dns", "domain", "ipv6_ra"), ("subnet",))
        if m is None:
            return None
        subnet = self.checked(m, p, "subnet", self.f.subnet)
        gateway = self.checked(m, p, "gateway", self.f.ipv4)
        dns = self.dns(p + ("dns",), m.get("dns"))
        domain = self.checked(m, p, "domain", self.f.hostname)
        ipv6_ra = self.f.boolean(p + ("ipv6_ra",), m.get("ipv6_ra", False))
        if subnet is not None and gateway is not None and gateway not in subnet:
            self.f.problem(p + ("gateway",), f"gateway is outside the subnet {subnet}", str(gateway))
        if subnet is None or dns is None or ipv6_ra is None:
            return None
        return Network(subnet, gateway, dns, domain, ipv6_ra)

    def dns(self, path: tuple, value: Any) -> tuple[IPv4Address, ...] | None:
        """One address or a list of them."""
        if value is None:
            return ()
        if isinstance(value, str):
            found = self.f.ipv4(path, value)
            return None if found is None else (found,)
        items = self.f.sequence(path, value)
        if items is None:
            return None
        addresses = tuple(self.f.ipv4(path + (i,), item) for i, item in enumerate(items))
        return None if None in addresses else addresses

    def boot(self, data: Any) -> Boot | None:
        p = ("boot",)
        m = self.f.mapping(p, data, ("kernel", "initrd", "append", "transport"), ("kernel", "initrd"))
        if m is None:
            return None
        kernel = self.checked(m, p, "kernel", self.f.text, _WORD, "path")
        initrd = self.checked(m, p, "initrd", self.f.text, _WORD, "path")
        append = self._append(p + ("append",), m.get("append", ""))
        transport = self.f.choice(p + ("transport",), m.get("transport", Transport.TFTP.value), Transport)
        if kernel and initrd and Path(kernel).name == Path(initrd).name:
            self.f.problem(p + ("initrd",), "kernel and initrd need different file names", initrd)
            return None
        if None in (kernel, initrd, append, transport):
            return None
        return Boot(kernel, initrd, append, transport)

    def images(self, data: Any) -> tuple[Image, ...] | None:
        items = self.f.sequence(("images",), data)
        if items is None:
            return None
        if not items:
            self.f.problem(("images",), "at least one image is needed")
            return None
        images = []
        for i, item in enumerate(items):
            p = ("images", i)
            m = self.f.mapping(p, item, ("source", "target", "cook"), ("source", "target"))
            if m is None:
                continue
            source = self.checked(m, p, "source", self.f.text, _WORD, "path")
            target = self.checked(m, p, "target", self.f.text, _MOUNT, "absolute path")
            cook = self.f.boolean(p + ("cook",), m.get("cook", False))
            if None not in (source, target, cook):
                images.append(Image(source, target, cook))
        return tuple(images) if len(images) == len(items) else None

    def kickstart(self, data: Any) -> KickstartSettings | None:
        p = ("kickstart",)
        m = self.f.mapping(p, data, ("lang", "keyboard", "timezone"))
        if m is None:
            return None
        d = KickstartSettings()
        values = [self.f.text(p + (k,), m.get(k, getattr(d, k)), _WORD, k) for k in ("lang", "keyboard", "timezone")]
        return None if None in values else KickstartSettings(*values)

    def dolly(self, data: Any) -> Dolly | None:
        """The ring cloner's settings; only the path's form is checked (the secret file may be made later)."""
        p = ("dolly",)
        m = self.f.mapping(p, data, ("secret_file",))
        if m is None:
            return None
        if m.get("secret_file") is None:
            return Dolly()
        text = self.f.text(p + ("secret_file",), m["secret_file"], _WORD, "path")
        return None if text is None else Dolly((self.path.parent / text).absolute())

    def settings(self, path: tuple, data: Any, base: dict | None) -> dict | None:
        """Per-node settings: the `defaults:` section (base None) or one node's overrides of `base`."""
        if base is None:
            m = self.f.mapping(path, data, NODE_SETTINGS)
            if m is None:
                return None
            values, out = {**SETTING_DEFAULTS, **m}, {}
        else:
            values, out = {k: data[k] for k in NODE_SETTINGS if k in data}, dict(base)
        ok = True
        for key, value in values.items():
            parsed = self.setting(path + (key,), key, value)
            ok = ok and (parsed is not None or (key == "root_password_hash" and value is None))
            out[key] = parsed
        return out if ok else None

    def setting(self, path: tuple, key: str, value: Any) -> Any:
        f = self.f
        if key == "interface":
            return f.text(path, value, _INTERFACE, "interface name")
        if key == "os_family":
            return f.choice(path, value, OsFamily)
        if key == "bootloader":
            return f.choice(path, value, Bootloader)
        if key == "firmware":
            return f.choice(path, value, Firmware)
        if key == "disk":
            return value if value is DEFAULT_DISK else self.disk(path, value)
        if key == "dolly_port":
            return f.port(path, value)
        if key == "append":
            return self._append(path, value)
        if key == "ssh_authorized_keys":
            return value if value == () else f.ssh_keys(path, value)
        return None if value is None else f.crypt_hash(path, value)  # root_password_hash

    def disk(self, path: tuple, data: Any) -> Disk | None:
        m = self.f.mapping(path, data, ("device", "label", "partitions"), ("partitions",))
        if m is None:
            return None
        device = self.f.text(path + ("device",), m.get("device", "sda"), _DEVICE, "disk device name (like sda)")
        label = self.checked(m, path, "label", self.f.choice, DiskLabel)
        items = self.checked(m, path, "partitions", self.f.sequence)
        if items is None:
            return None
        parts = [self.partition(path + ("partitions", i), item) for i, item in enumerate(items)]
        if None in parts or device is None or ("label" in m and label is None):
            return None
        mounts = [p.mount for p in parts]
        if "/" not in mounts:
            self.f.problem(path + ("partitions",), "no partition is mounted on /")
            return None
        seen_mounts: set[str] = set()
        seen_labels: set[str] = set()
        for i, part in enumerate(parts):
            where = path + ("partitions", i)
            if part.is_biosboot and (label is DiskLabel.MSDOS or part.mount in seen_mounts):
                self.f.problem(where + ("fstype",), "a second biosboot partition (a disk has one)"
                               if part.mount in seen_mounts else "a biosboot partition needs label: gpt (on an msdos "
                               "disk GRUB's core.img goes into the gap after the MBR)", part.fstype)
            elif part.mount in seen_mounts and not part.is_swap:
                self.f.problem(where + ("mount",), "mount point used twice", part.mount)
            if part.label in seen_labels:
                self.f.problem(where + ("label",), "label used twice", part.label)
            seen_mounts.add(part.mount)
            seen_labels.add(part.label)
        return Disk(device, tuple(parts), label)

    def partition(self, path: tuple, data: Any) -> Partition | None:
        keys = ("mount", "fstype", "size", "grow", "label", "options")
        m = self.f.mapping(path, data, keys, ("fstype",))
        if m is None or m.get("fstype") is None:
            return None
        fstype = self.f.text(path + ("fstype",), m["fstype"])
        if fstype in UNSUPPORTED_FSTYPES:
            self.f.problem(path + ("fstype",), f"the installer can neither make nor mount {fstype} (supported: "
                           f"{', '.join(FSTYPES)})", fstype)
            fstype = None
        elif fstype is not None and fstype not in FSTYPES:
            self.f.problem(path + ("fstype",), f"expected one of {', '.join(FSTYPES)}", fstype)
            fstype = None
        if fstype == BIOSBOOT:
            return self.biosboot_partition(path, m)
        for key in ("mount", "size"):
            if m.get(key) is None:
                self.f.problem(path + (key,), "missing required field")
        if fstype is None or m.get("mount") is None or m.get("size") is None:
            return None
        mount = m["mount"]
        if mount != "swap":
            mount = self.f.text(path + ("mount",), mount, _MOUNT, "mount point (absolute path or swap)")
        if mount is not None and fstype is not None and (mount == "swap") != (fstype == "swap"):
            self.f.problem(path + ("fstype",), "swap goes with mount: swap (and only there)", fstype)
            fstype = None
        size = self.f.integer(path + ("size",), m["size"], 1, 1 << 30)
        grow = self.f.boolean(path + ("grow",), m.get("grow", False))
        default_label = "root" if mount == "/" else (mount or "").strip("/").replace("/", "-")[:12] or "part"
        label = self.f.text(path + ("label",), m.get("label", default_label), _FS_LABEL, "label (1-12 of A-Za-z0-9_-)")
        options = self.f.text(path + ("options",), m.get("options", "defaults"), _OPTIONS, "mount options")
        if None in (mount, fstype, size, grow, label, options):
            return None
        return Partition(mount, fstype, size, grow, label, options)

    def biosboot_partition(self, path: tuple, m: dict) -> Partition | None:
        """GRUB's partition on a GPT disk of a BIOS machine: `{fstype: biosboot}` (size 1 MiB by default),
        no mount point, no file system, not grown."""
        ok = True
        if m.get("mount", BIOSBOOT) != BIOSBOOT:
            self.f.problem(path + ("mount",), "a biosboot partition is not mounted (leave mount out)", m["mount"])
            ok = False
        for key, default in (("grow", False), ("options", "defaults")):
            if m.get(key, default) != default:
                self.f.problem(path + (key,), f"a biosboot partition takes no {key}", m[key])
                ok = False
        size = self.f.integer(path + ("size",), m.get("size", 1), 1, 1 << 30)
        label = self.f.text(path + ("label",), m.get("label", BIOSBOOT), _FS_LABEL, "label (1-12 of A-Za-z0-9_-)")
        if not ok or None in (size, label):
            return None
        return Partition(BIOSBOOT, BIOSBOOT, size, label=label)

    def nodes(self, data: Any, defaults: dict | None) -> list[Node | None] | None:
        items = self.f.sequence(("nodes",), data)
        if items is None:
            return None
        if not items:
            self.f.problem(("nodes",), "at least one node is needed")
            return None
        known = ("name", "mac", "ip") + NODE_SETTINGS
        base = defaults or {}
        nodes: list[Node | None] = []
        f = self.f
        for i, item in enumerate(items):
            p = ("nodes", i)
            m = f.mapping(p, item, known, ("name", "mac", "ip"))
            if m is None:
                nodes.append(None)
                continue
            name = self.checked(m, p, "name", f.hostname)
            mac = self.checked(m, p, "mac", f.mac)
            ip = self.checked(m, p, "ip", f.ipv4)
            self.identities.append((i, name, mac, ip))
            settings = self.settings(p, m, base) if len(m) > 3 else base
            if None in (name, mac, ip, settings) or defaults is None:
                nodes.append(None)
                continue
            node = Node(name, mac, ip, **settings)
            self.check_disk_label(node, next((p + (k,) for k in ("disk", "firmware", "bootloader") if k in m),
                                             ("defaults", "disk")))
            self.check_bootloader(node, next((p + (k,) for k in ("bootloader", "firmware", "disk") if k in m),
                                             ("defaults", "bootloader")))
            given = p + ("disk",) if "disk" in m else None if node.disk is DEFAULT_DISK else ("defaults", "disk")
            self.disks.setdefault((id(node.disk), node.disk_label, given), (node.disk, []))[1].append(name)
            nodes.append(node)
        return nodes

    def check_disk_label(self, node: Node, path: tuple) -> None:
        """The node's disk label against its firmware and bootloader (both may come from elsewhere than its
        disk): BIOS GRUB on GPT needs a biosboot partition, msdos holds neither biosboot nor more than four.
        Reported at the node's own disk, firmware or bootloader, else once at defaults.disk."""
        label, disk = node.disk_label, node.disk
        given = "" if disk.label else f" (firmware {node.firmware}'s default)"
        problems = []
        if (label is DiskLabel.GPT and node.firmware == Firmware.BIOS and node.bootloader == Bootloader.GRUB2
                and disk.biosboot is None):
            problems.append("firmware bios, bootloader grub2, disk label gpt: GRUB needs a biosboot partition on "
                            "a GPT disk (add {fstype: biosboot} to disk.partitions, or use label: msdos)")
        if label is DiskLabel.MSDOS and disk.label is None and disk.biosboot is not None:
            problems.append(f"disk label msdos{given} with a biosboot partition: set disk.label: gpt "
                            "(or leave biosboot out)")
        if label is DiskLabel.MSDOS and len(disk.partitions) > MBR_PRIMARY:
            problems.append(f"disk label msdos{given} holds {MBR_PRIMARY} partitions, the disk has "
                            f"{len(disk.partitions)} (use disk.label: gpt)")
        for message in problems:
            if (path, message) not in self.reported:
                self.reported.add((path, message))
                self.f.problem(path, message)

    def check_bootloader(self, node: Node, path: tuple) -> None:
        """LILO writes a BIOS boot sector for an MBR disk: refused on UEFI firmware and on a GPT label.
        Reported at the node's own bootloader, firmware or disk, else once at defaults.bootloader."""
        if node.bootloader != Bootloader.LILO:
            return
        label = f"disk label {node.disk_label}" + ("" if node.disk.label else f" (firmware {node.firmware}'s default)")
        if node.firmware == Firmware.UEFI:
            message = (f"bootloader lilo, firmware uefi, {label}: LILO boots BIOS machines only, from an msdos "
                       "disk (use bootloader grub2)")
        elif node.disk_label is DiskLabel.GPT:
            message = (f"bootloader lilo, {label}: LILO boots only from an msdos (MBR) disk (use disk.label: msdos, "
                       "or bootloader grub2 with a {fstype: biosboot} partition)")
        else:
            return
        if (path, message) not in self.reported:
            self.reported.add((path, message))
            value = {"bootloader": node.bootloader, "firmware": node.firmware}.get(path[-1])
            self.f.problem(path, message, *([str(value)] if value else []))

    def check_image_targets(self, images: tuple[Image, ...]) -> None:
        """A raw image target that is a partition of a node's disk (/dev/sda2, /dev/nvme0n1p2) must be one the
        disk has, and one with a file system to receive (not biosboot, swap or the ESP). Said once per image
        and disk layout, naming the nodes that have it."""
        for i, image in enumerate(images):
            if image.cook or not image.target.startswith("/dev/"):
                continue
            for (_, label, given), (disk, names) in self.disks.items():
                number = partition_number(disk.device, image.target)
                if number is None:
                    continue
                numbered = numbered_partitions(disk, label)
                where = format_path(given) if given else "the default disk"
                if number > len(numbered):
                    self.f.problem(("images", i, "target"), f"{image.target} is no partition of "
                                   f"{of_nodes(names, 'disk ' + disk.device)}: it has {len(numbered)} "
                                   f"partition{'s' if len(numbered) > 1 else ''} ({where})",
                                   image.target)
                    continue
                index, part = numbered[number - 1]
                kind = ("biosboot" if part.is_biosboot else "swap" if part.is_swap
                        else f"EFI system ({ESP_MOUNT})" if part.mount == ESP_MOUNT else None)
                if kind is not None:
                    self.f.problem(("images", i, "target"), f"{image.target} is "
                                   f"{of_nodes(names, kind + ' partition')} "
                                   f"(partition {number} of disk {disk.device}, {where}.partitions[{index}]); an "
                                   "image goes onto / or another partition with a file system", image.target)

    def check_addresses(self, network: Network, server: Server | None) -> None:
        """Addresses inside the subnet; no name, MAC or IP used twice (server and gateway included)."""
        subnet = network.subnet
        reserved = {subnet.network_address, subnet.broadcast_address} if subnet.prefixlen < 31 else set()
        names: dict[str, str] = {}
        ips: dict[IPv4Address, str] = {}
        macs: dict[str, str] = {}
        if server is not None:
            if server.ip not in subnet or server.ip in reserved:
                self.f.problem(("server", "ip"), f"server IP is not a host address of the subnet {subnet}",
                               str(server.ip))
            names[server.name.lower()] = "the server"
            ips[server.ip] = "the server"
        if network.gateway is not None:
            ips.setdefault(network.gateway, "the gateway")
        for i, name, mac, ip in self.identities:
            p = ("nodes", i)
            if ip is not None and (ip not in subnet or ip in reserved):
                self.f.problem(p + ("ip",), f"IP is not a host address of the subnet {subnet}", str(ip))
            for key, value, seen in (("name", name, names), ("mac", mac, macs), ("ip", ip, ips)):
                if value is None:
                    continue
                if key == "name":
                    value = value.lower()
                if value in seen:
                    self.f.problem(p + (key,), f"already used by {seen[value]}", str(value))
                else:
                    seen[value] = f"nodes[{i}] ({name or '?'})"

    def _append(self, path: tuple, value: Any) -> str | None:
        if value is None or value == "":
            return ""
        return self.f.text(path, value, _SAFE_TEXT, "kernel arguments (no quotes, $ or backslashes)")


def numbered_partitions(disk: Disk, label: DiskLabel) -> list[tuple[int, Partition]]:
    """(index in disk.partitions, partition) for partition numbers 1, 2, ...: as the installer numbers the
    kickstart's part lines (in the order listed; an msdos disk leaves a biosboot part out; no logical ones)."""
    return [(i, p) for i, p in enumerate(disk.partitions) if label is DiskLabel.GPT or not p.is_biosboot]


def partition_number(device: str, target: str) -> int | None:
    """N when `target` names partition N of /dev/`device` (/dev/sda2; /dev/nvme0n1p2 for a device name ending
    in a digit, as provision.installer.partition_device names them), else None."""
    prefix = f"/dev/{device}{'p' if device[-1].isdigit() else ''}"
    number = target[len(prefix):] if target.startswith(prefix) else ""
    return int(number) if number.isascii() and number.isdigit() and number[0] != "0" else None


def of_nodes(names: list[str], thing: str) -> str:
    """"n02's biosboot partition", or "the biosboot partition of n01, n02, n03 and 17 more"."""
    if len(names) == 1:
        return f"{names[0]}'s {thing}"
    shown = names[:3] if len(names) > 4 else names[:-1]
    rest = names[-1] if len(names) <= 4 else f"{len(names) - 3} more"
    return f"the {thing} of {', '.join(shown)} and {rest}"


def state_dir(env: Mapping[str, str]) -> Path:
    """The state directory: $PROVISION_STATE_DIR, else /var/lib/provision."""
    return Path(env.get("PROVISION_STATE_DIR") or DEFAULT_STATE_DIR)


def resolve_inventory_path(arg: str | None, env: Mapping[str, str]) -> Path:
    """--inventory, else $PROVISION_INVENTORY, else the inventory recorded by the last install."""
    if arg:
        return Path(arg)
    if env.get("PROVISION_INVENTORY"):
        return Path(env["PROVISION_INVENTORY"])
    record = state_dir(env) / LAST_INSTALL_FILE
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))["inventory"]
    except FileNotFoundError:
        raise InputError(
            f"no inventory given: pass --inventory FILE or set PROVISION_INVENTORY (no last install in {record})"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{record}: unreadable last-install record ({exc}); pass --inventory FILE") from None
    if not isinstance(recorded, str) or not recorded:
        raise InputError(f"{record}: field inventory: expected a path, got {recorded!r}")
    return Path(recorded)
