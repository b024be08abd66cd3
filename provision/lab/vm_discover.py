"""demo-vm's discovery step (`lab demo --vm --discover NODE,...`): the inventory the install uses is the lab's
without those machines' entries (all of them: `nodes: []`); `provision discover --bmc-range` in the server's
namespace, with the first one's name pattern and address (--names, --first-ip), beside the
cluster's running DHCP server, powers them on one at a time through their BMCs and appends each as the next
node (name, MAC, address, firmware from its DHCPDISCOVER, BMC address). They must come out as the lab's
inventory has them."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from provision.errors import InputError, ProvisionError
from provision.inventory import load_inventory
from provision.discovery.naming import default_name_format
from provision.lab import cluster as lab
from provision.lab.provision_cli import run_in_server
from provision.model import Inventory, Node


@dataclass(frozen=True)
class Discovered:
    inventory: Inventory  # the inventory with the machines found appended
    expected: tuple[str, ...]  # the machines it had to find, as "name mac ip firmware bmc"
    found: tuple[str, ...]     # what it appended, the same way
    output: str                # provision discover's output
    seconds: float             # how long provision discover took

    @property
    def ok(self) -> bool:
        return self.found == self.expected


def forget(inv: Inventory, names: Sequence[str], path: Path) -> Path:
    """Write the inventory without the entries of `names` (the last entries of its node list, or all of them:
    discovery numbers on from the first of them) to `path`."""
    tail = [n.name for n in inv.nodes[len(inv.nodes) - len(names):]] if names else []
    if not names or tail != list(names):
        raise InputError(f"--discover {','.join(names)}: give the last node(s) of {inv.path} "
                         f"(its nodes: {', '.join(n.name for n in inv.nodes)})")
    data = yaml.safe_load(inv.path.read_text())
    data["nodes"] = [entry for entry in data["nodes"] if entry["name"] not in names]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def bmc_range(nodes: Sequence[Node]) -> str:
    """FIRST-LAST spanning the nodes' BMC addresses (they must be consecutive: the range is discovery's order)."""
    addresses = [ipaddress.IPv4Address(n.bmc.address) for n in nodes if n.bmc is not None and n.bmc.address]
    if len(addresses) != len(nodes) or addresses != [addresses[0] + i for i in range(len(addresses))]:
        raise InputError("--discover: the machines need consecutive BMC addresses in node order: "
                         + ", ".join(f"{n.name} {n.bmc.address if n.bmc else None}" for n in nodes))
    return f"{addresses[0]}-{addresses[-1]}"


def describe(node: Node) -> str:
    return f"{node.name} {node.mac} {node.ip} {node.firmware} {node.bmc.address if node.bmc else None}"


def discover(inv: Inventory, built: lab.Lab, names: Sequence[str], logs: Path,
             env: Mapping[str, str]) -> Discovered:
    """Forget `names`, start the DHCP server for what is left, run `provision discover --bmc-range` for them."""
    path = forget(inv, names, logs / "discovered.yaml")
    wanted = [inv.node(name) for name in names]
    inventory = ["--inventory", str(path)]
    started = run_in_server(built, ["dhcp", "start", *inventory], env)
    if started.returncode != 0:
        raise ProvisionError(f"provision dhcp start: {started.stdout}{started.stderr}")
    started = time.monotonic()
    proc = run_in_server(built, ["discover", *inventory, "--bmc-range", bmc_range(wanted), "--timeout", "300",
                                 "--names", default_name_format(wanted[0].name), "--first-ip", str(wanted[0].ip)],
                         env)
    seconds = time.monotonic() - started
    (logs / "discover.log").write_text(proc.stdout + proc.stderr)
    found = load_inventory(path)
    return Discovered(found, tuple(describe(n) for n in wanted),
                      tuple(describe(n) for n in found.nodes[len(inv.nodes) - len(names):]), proc.stdout + proc.stderr,
                      seconds)
