"""Sequential discovery (xCAT's): the machines behind a range of BMCs are powered off, then on one at a time in
the range's order; the first DHCPDISCOVER from a new MAC after a machine's power-on makes it the next node, with
that BMC's address, so the names follow the rack order whatever order the machines would boot in."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provision.discovery.appender import append_nodes, replace_inventory
from provision.discovery.listener import requests
from provision.discovery.naming import Allocator, NewNode
from provision.model import Bmc
from provision.power import Verb, pool

DRAIN = 0.05  # seconds spent reading the requests queued before a power-on
POLL = 1.0  # seconds between power status reads while machines power off


@dataclass
class Result:
    found: list[NewNode] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # per BMC or machine that failed: what went wrong
    strays: list[str] = field(default_factory=list)  # new MACs heard while no machine was being powered on


class Sequential:
    """One run over `bmcs` with the listening socket `sock`; new nodes are appended to the inventory at `path`
    one by one (the first addition keeps the old file as .bak). `wait`: seconds for a machine's DISCOVER
    after its power-on (and for the range's machines to read off); `timeout` and `retries`: per BMC request
    (provision.power.pool)."""

    def __init__(self, sock: socket.socket, path: Path, allocator: Allocator, known: set[str], wait: float,
                 timeout: float, retries: int, show: Callable[[str], None]):
        self.sock, self.path, self.allocator, self.known = sock, path, allocator, known
        self.wait, self.show = wait, show
        self.power = {"timeout": timeout, "retries": retries}
        self.result = Result()

    def run(self, bmcs: Sequence[Bmc], count: int | None) -> Result:
        for bmc in self.powered_off(bmcs):
            if count is not None and len(self.result.found) >= count:
                break
            self.drain()
            self.discover(bmc)
        self.drain()
        return self.result

    def powered_off(self, bmcs: Sequence[Bmc]) -> list[Bmc]:
        """Power off every machine of the range at once, and wait until each reads off: then no DISCOVER comes
        from them until each is powered on. The BMCs that fail are reported and left out."""
        outcomes = pool.run_bmcs([(b.address, b) for b in bmcs], [Verb.OFF], **self.power)
        ready = [b for b, o in zip(bmcs, outcomes) if o.ok]
        for o in outcomes:
            if not o.ok:
                self.fail(f"{o.error}: skipped")
        pending = [b for b, o in zip(bmcs, outcomes) if o.ok and o.power != "off"]
        deadline = time.monotonic() + self.wait
        while pending and time.monotonic() < deadline:
            time.sleep(POLL)
            states = pool.run_bmcs([(b.address, b) for b in pending], [Verb.STATUS], **self.power)
            pending = [b for b, o in zip(pending, states) if o.power != "off"]
        for bmc in pending:
            self.fail(f"{bmc.where}: the machine is not off {self.wait:g} s after power off: skipped")
        self.show(f"discover: {len(ready) - len(pending)} machine(s) of the BMC range powered off")
        return [b for b in ready if b not in pending]

    def discover(self, bmc: Bmc) -> None:
        """Power the machine on (the next boot from the network) and take the first new MAC it asks from."""
        on = pool.run_bmc(bmc.address, bmc, [Verb.PXE_ONCE, Verb.ON], **self.power)
        if not on.ok:
            self.fail(on.error)
            return
        self.show(f"discover: {bmc.where}: powered on, waiting up to {self.wait:g} s for its DHCPDISCOVER")
        request = next((r for r in requests(self.sock, time.monotonic() + self.wait)
                        if r.is_discover and r.mac not in self.known), None)
        if request is None:
            off = pool.run_bmc(bmc.address, bmc, [Verb.OFF], **self.power)
            self.fail(f"{bmc.where}: powered on, but no DHCPDISCOVER from a new MAC within {self.wait:g} s ("
                      + ("powered off again)" if off.ok else f"powering it off failed: {off.error})"))
            return
        self.known.add(request.mac)
        node = self.allocator.next(request.mac, bmc.address, request.firmware)
        text = append_nodes(self.path.read_text(encoding="utf-8"), [node], self.path)
        replace_inventory(self.path, text, backup=not self.result.found)
        self.result.found.append(node)
        self.show(f"discover: {node.name} {node.mac} {node.ip}{f' {node.firmware}' if node.firmware else ''} bmc {bmc.address}")

    def drain(self) -> None:
        """The requests queued now: a new MAC among them came from no machine this run powered on."""
        for request in requests(self.sock, time.monotonic() + DRAIN):
            if request.is_discover and request.mac not in self.known:
                self.known.add(request.mac)
                self.result.strays.append(request.mac)
                self.show(f"discover: {request.mac} asked for an address while no machine of the range was being "
                          "powered on: not added")

    def fail(self, line: str) -> None:
        self.result.failed.append(line)
        self.show(f"discover: FAILED: {line}")
