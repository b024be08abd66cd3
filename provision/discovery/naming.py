"""The names and addresses that discovered nodes get, in order of appearance. Pure."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from provision.errors import InputError
from provision.model import Firmware, Inventory


@dataclass(frozen=True)
class NewNode:
    name: str
    mac: str
    ip: ipaddress.IPv4Address
    bmc_address: str | None = None  # the BMC that powered it on (sequential discovery): its entry's bmc.address
    firmware: Firmware | None = None  # what its DHCPDISCOVER said (option 93): its entry's firmware


def default_name_format(last_name: str) -> str:
    """The pattern of a node name ending in digits: n007 -> n{:03d}, rack2-n9 -> rack2-n{:01d}."""
    match = re.fullmatch(r"(.*?)(\d+)", last_name)
    if match is None:
        raise InputError(f"node {last_name!r} does not end in a number: give the names with --names (e.g. n{{:03d}})")
    prefix = match.group(1).replace("{", "{{").replace("}", "}}")
    return f"{prefix}{{:0{len(match.group(2))}d}}"


def format_name(name_format: str, index: int) -> str:
    try:
        return name_format.format(index)
    except (IndexError, KeyError, ValueError) as exc:
        raise InputError(f"--names {name_format!r}: not a Python format of one number ({exc})") from None


def check_name_format(name_format: str, start: int) -> None:
    """Fail unless the format gives a different name for every index (n{:03d}, not n001)."""
    if format_name(name_format, start) == format_name(name_format, start + 1):
        raise InputError(f"--names {name_format!r}: the index is not in it (e.g. n{{:03d}})")


class Allocator:
    """Hands out (name, address) pairs that the inventory does not use yet: names are `name_format` with the
    index 1, 2, ... (for the default format, from the last node's number on), addresses count up from
    `first_ip` (default: the address after the last node's) inside the subnet."""

    def __init__(self, inv: Inventory, name_format: str | None = None, first_ip: str | None = None):
        if not inv.nodes and (name_format is None or first_ip is None):
            raise InputError(f"{inv.path}: no nodes to continue from: give --names and --first-ip")
        last = inv.nodes[-1] if inv.nodes else None
        start = 1
        if name_format is None:
            name_format = default_name_format(last.name)
            start = int(re.fullmatch(r".*?(\d+)", last.name).group(1)) + 1
        check_name_format(name_format, start)  # a bad format fails before anything is heard
        try:
            ip = ipaddress.IPv4Address(first_ip) if first_ip is not None else last.ip + 1
        except ValueError as exc:
            raise InputError(f"--first-ip {first_ip!r}: {exc}") from None
        subnet = inv.network.subnet
        if ip not in subnet:
            raise InputError(f"--first-ip {ip}: not in the inventory's subnet {subnet}")
        taken_ips = {n.ip for n in inv.nodes} | {inv.server.ip, inv.network.gateway, subnet.network_address,
                                                 subnet.broadcast_address}
        self._names = self._free_names(name_format, start, {n.name for n in inv.nodes} | {inv.server.name})
        self._ips = (a for a in _addresses_from(ip, subnet) if a not in taken_ips)
        self.name_format = name_format

    @staticmethod
    def _free_names(name_format: str, start: int, taken: set[str]) -> Iterator[str]:
        index = start
        while True:
            name = format_name(name_format, index)
            if name not in taken:
                yield name
            index += 1

    def next(self, mac: str, bmc_address: str | None = None, firmware: Firmware | None = None) -> NewNode:
        ip = next(self._ips, None)
        if ip is None:
            raise InputError(f"no free address left in the subnet for {mac}")
        return NewNode(name=next(self._names), mac=mac, ip=ip, bmc_address=bmc_address, firmware=firmware)


def _addresses_from(first: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network) -> Iterator[ipaddress.IPv4Address]:
    address = first
    while address in subnet:
        yield address
        address += 1
