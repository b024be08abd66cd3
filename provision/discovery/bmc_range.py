"""The BMCs of sequential discovery: `--bmc-range FIRST-LAST` as addresses in order, each one's BMC being the
inventory's defaults.bmc at that address (what a node entry `bmc: {address: ..}` means). Pure."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from provision.errors import InputError
from provision.inventory.checks import bmc_identity
from provision.model import Bmc, Inventory

MAX_RANGE = 4096  # addresses in one --bmc-range: a few racks, not a typo's /8


@dataclass(frozen=True)
class RangePlan:
    """The BMCs to power on one at a time, in order, and the addresses left out because a node has them."""

    bmcs: tuple[Bmc, ...]
    known: tuple[str, ...]  # "10.0.1.11 (n001's)"


def parse_range(text: str) -> list[ipaddress.IPv4Address]:
    """"10.0.1.11-10.0.1.40" -> its addresses, first to last (one address alone is a range of one)."""
    first, _, last = text.partition("-")
    try:
        low = ipaddress.IPv4Address(first.strip())
        high = ipaddress.IPv4Address((last or first).strip())
    except ValueError as exc:
        raise InputError(f"--bmc-range {text!r}: want FIRST-LAST, two IPv4 addresses ({exc})") from None
    if high < low:
        raise InputError(f"--bmc-range {text!r}: the last address comes before the first")
    if int(high) - int(low) >= MAX_RANGE:
        raise InputError(f"--bmc-range {text!r}: {int(high) - int(low) + 1} addresses, at most {MAX_RANGE}")
    return [low + i for i in range(int(high) - int(low) + 1)]


def plan(ranges: Sequence[str], inv: Inventory) -> RangePlan:
    """The BMCs of `ranges` (in the order given, each address once), leaving out the ones the inventory's nodes
    have already; InputError if the inventory has no defaults.bmc that names the user and password source."""
    base = inv.default_bmc
    if base is None or base.user is None or (base.password_file is None and base.password_env is None):
        raise InputError(f"{inv.path}: --bmc-range: the BMCs of the range are defaults.bmc at their addresses: "
                         "give defaults.bmc with user and password_file or password_env (and type, port)")
    taken = {bmc_identity(n.bmc): n.name for n in inv.nodes if n.bmc is not None and n.bmc.address is not None}
    bmcs: list[Bmc] = []
    known: list[str] = []
    seen: set[ipaddress.IPv4Address] = set()
    for text in ranges:
        for address in parse_range(text):
            if address in seen:
                continue
            seen.add(address)
            bmc = dataclasses.replace(base, address=str(address))
            owner = taken.get(bmc_identity(bmc))
            if owner is None:
                bmcs.append(bmc)
            else:
                known.append(f"{address} ({owner}'s)")
    return RangePlan(tuple(bmcs), tuple(known))
