"""Checks across the inventory's sections and nodes: addresses in the subnet and unique, each node's disk
label and bootloader against its firmware, raw image targets against the nodes' disks."""

from __future__ import annotations

from ipaddress import IPv4Address
from urllib.parse import urlsplit

from provision.fields import Fields, format_path
from provision.inventory.disks import numbered_partitions, partition_number
from provision.model import (IPMI_PORT, Bmc, BmcType, Bootloader, Disk, DiskLabel, Firmware, Image, Network, Node,
                             Server)

ESP_MOUNT = "/boot/efi"  # the EFI system partition (the installer's `esp` role)
MBR_PRIMARY = 4  # partitions an msdos label holds (the installer writes no extended ones)
# (index in nodes, name, MAC, IP) of a node as given, each None where it is not valid
Identity = tuple[int, str | None, str | None, IPv4Address | None]
# (id of a disk, its label, where it is given) -> (the disk, names of the nodes that have it)
DiskUse = dict[tuple, tuple[Disk, list[str]]]


class Checks:
    """Records problems in `fields`; a node-level problem said at a place shared by many nodes (defaults.disk)
    is said once."""

    def __init__(self, fields: Fields):
        self.f = fields
        self.reported: set[tuple[tuple, str]] = set()  # (path, message) of node-level problems said once
        self.bmc_users: dict[tuple, tuple[int, str]] = {}  # a BMC's identity -> (index, name) of its first node

    def say_once(self, path: tuple, message: str, *value: str) -> None:
        if (path, message) not in self.reported:
            self.reported.add((path, message))
            self.f.problem(path, message, *value)

    def disk_label(self, node: Node, path: tuple) -> None:
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
            self.say_once(path, message)

    def bootloader(self, node: Node, path: tuple) -> None:
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
        value = {"bootloader": node.bootloader, "firmware": node.firmware}.get(path[-1])
        self.say_once(path, message, *([str(value)] if value else []))

    def bmc(self, node: Node, index: int, path: tuple) -> None:
        """No two nodes with the same BMC (the same protocol, address and port; for Redfish also the same system):
        a power action would hit the wrong machine. Reported at the second node's `path`."""
        if node.bmc is None or node.bmc.address is None:
            return
        first, name = self.bmc_users.setdefault(bmc_identity(node.bmc), (index, node.name))
        if first != index:
            system = f" system {node.bmc.system}" if node.bmc.system else ""
            self.f.problem(path, f"the BMC {node.bmc.where}{system} is already nodes[{first}] ({name})'s",
                           node.bmc.address)

    def image_targets(self, images: tuple[Image, ...], disks: DiskUse) -> None:
        """A raw image target that is a partition of a node's disk (/dev/sda2, /dev/nvme0n1p2) must be one the
        disk has, and one with a file system to receive (not biosboot, swap or the ESP). Said once per image
        and disk layout, naming the nodes that have it."""
        for i, image in enumerate(images):
            if image.cook or not image.target.startswith("/dev/"):
                continue
            for (_, label, given), (disk, names) in disks.items():
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

    def addresses(self, network: Network, server: Server | None, identities: list[Identity]) -> None:
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
        for i, name, mac, ip in identities:
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


def bmc_identity(bmc: Bmc) -> tuple:
    """What tells BMCs apart: protocol, host (lower case), port (the default one if not given) and, for Redfish,
    the system (None: the service's only one). https://h, h and https://h:443 are one Redfish service."""
    if bmc.type == BmcType.REDFISH:
        scheme, _, rest = (bmc.address or "").lower().rpartition("://")
        url = urlsplit(f"{scheme or 'https'}://{rest}")
        try:
            given = url.port
        except ValueError:
            given = None
        port = bmc.port or given or (443 if url.scheme == "https" else 80)
        return (BmcType.REDFISH, url.hostname, port, bmc.system)
    return (bmc.type, (bmc.address or "").lower(), bmc.port or IPMI_PORT, None)


def of_nodes(names: list[str], thing: str) -> str:
    """"n02's biosboot partition", or "the biosboot partition of n01, n02, n03 and 17 more"."""
    if len(names) == 1:
        return f"{names[0]}'s {thing}"
    shown = names[:3] if len(names) > 4 else names[:-1]
    rest = names[-1] if len(names) <= 4 else f"{len(names) - 3} more"
    return f"the {thing} of {', '.join(shown)} and {rest}"
