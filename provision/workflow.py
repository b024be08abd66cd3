"""`provision install`: from "reset pushed" to "every node cloned, personalised and on local boot".

render -> boot files -> DHCP (dhcpd or Kea) -> TFTP + HTTP -> wait for nodes to report ready (ARP probe as a fallback)
-> dollyS over the ready nodes in inventory order (one per ring: `ring.count`) -> as each node reports done, flip it
to local boot -> final table. Node state lives in the state store, so `provision status` follows from another terminal
and a rerun after a crash of provision itself does not clone finished nodes again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from provision.bootmode import BootMode
from provision.cluster import ClusterFiles
from provision.credentials import RunCredentials
from provision.diskless_stage import diskless_nodes
from provision.flip import apply_modes, current_modes
from provision.flipper import Flipper
from provision.host_keys import HostKeyKeeper, HostKeyStore, KeyedNode
from provision.model import BOOT_TFTP_DIR, Firmware, Inventory, Node, Transport
from provision.power import Verb
from provision.power.pool import run as power_nodes
from provision.probe import answering_arp
from provision.render import render_ring_config
from provision.ring_run import (RingSettings, follow, merge_progress, read_progress, read_ring_report,
                                server_argv)
from provision.rings import RingPlan, plan_rings
from provision.services.http import HttpServer, NodeAuth
from provision.services.multicast_tftp import MulticastTftpServer
from provision.services.ra import RouterAdvertiser, interface_with
from provision.services.tftp import TftpServer, install_boot_files
from provision.ssh import forget_hosts
from provision.state import NodeRecord, NodeState

log = logging.getLogger("provision.install")


@dataclass(frozen=True)
class InstallOptions:
    site_templates: Path | None = None
    nodes: tuple[str, ...] = ()      # install only these nodes (default: every node of the inventory)
    wait: float = 600.0              # longest wait for nodes to report ready
    enough: int | None = None        # start the ring once this many are ready (default: all pending)
    probe: bool = True               # ARP-probe nodes that did not report (the seed's "ping" fallback)
    dolly_timeout: float | None = None  # dollyS --timeout: when a silent node counts as dead (default ring.timeout)
    chunk_size: int | None = None
    finish_wait: float = 600.0       # after the ring: longest wait for the nodes' `done` reports
    linger: float = 5.0              # keep serving so rebooting nodes find their local-boot config
    tftp_port: int = 69
    verbose: bool = False
    power_cycle: bool = False        # set each pending node's next boot to PXE and power-cycle it via its BMC


@dataclass(frozen=True)
class InstallResult:
    records: tuple[NodeRecord, ...]  # every inventory node, in ring order

    @property
    def ok(self) -> bool:
        return all(r.state is NodeState.DONE for r in self.records)


class Install:
    """One run of `provision install` for one inventory."""

    def __init__(self, inv: Inventory, options: InstallOptions, env: Mapping[str, str] = os.environ,
                 show: Callable[[str], None] = print, live: bool = False):
        self.inv, self.options, self.env, self.show, self.live = inv, options, env, show, live
        self.files = ClusterFiles.of(inv, env)
        self.store = self.files.store()
        self.changed = threading.Event()  # set on every node report: wakes the waiting loops

    # -- the steps ---------------------------------------------------------------------------------

    def run(self) -> InstallResult:
        self.files.record_install(self.inv, self.options.site_templates)
        pending = self.prepare_state()
        credentials = RunCredentials.fresh([n.name for n in pending], self.inv.dolly.secret_file)
        modes = current_modes(self.inv, self.files)
        # the missing host keys are made from here on, ahead of the nodes' requests (before any node can boot)
        keeper = HostKeyKeeper(HostKeyStore(self.files.host_keys), self.files.known_hosts,
                               [KeyedNode(n.name, str(n.ip), f"root@{self.inv.fqdn(n.name)}")
                                for n in [*pending, *(self.inv.node(name) for name in diskless_nodes(modes))]],
                               on_error=lambda name, error: self.show(f"{name}: no host keys from the server, "
                                                                      f"it makes its own: {error}")).start()
        try:
            self.prepare_and_serve(pending, credentials, modes, keeper)
        finally:
            keeper.close()
        selected = set(self.options.nodes or self.inv.node_names)
        return InstallResult(tuple(r for r in self.records() if r.name in selected))

    def prepare_and_serve(self, pending: list[Node], credentials: RunCredentials, modes: dict[str, BootMode],
                          keeper: HostKeyKeeper) -> None:
        """The rendered files and boot files in place, then serve() (with IPv6 router advertisements if the
        network asks for them); the ring secret file only while serving."""
        apply_modes(self.inv, self.files, modes, self.options.site_templates)
        install_boot_files(self.files.tftp_root, self.inv.boot,
                           uefi=any(node.firmware is Firmware.UEFI for node in self.inv.nodes))
        # diskless nodes (their files staged by apply_modes) fetch their root over HTTP whatever boot.transport says
        over_http = self.inv.boot.transport is Transport.HTTP or bool(diskless_nodes(modes))
        advertiser = None
        if self.inv.network.ipv6_ra:  # before any node boots: iPXE waits ~13 s for IPv6 without one
            advertiser = RouterAdvertiser(interface_with(str(self.inv.server.ip))).start()
        credentials.write_secret(self.files.ring_secret)
        try:
            self.serve(pending, credentials, keeper,
                       boot_dir=self.files.tftp_root / BOOT_TFTP_DIR if over_http else None,
                       multicast=self.files.multicast_tftp(self.inv, bool(diskless_nodes(modes))),
                       ra=f"; IPv6 router advertisements on {advertiser.iface}" if advertiser else "")
        finally:
            self.files.ring_secret.unlink(missing_ok=True)
            if advertiser is not None:
                advertiser.stop()

    def serve(self, pending: list[Node], credentials: RunCredentials, keeper: HostKeyKeeper, boot_dir: Path | None,
              multicast: MulticastTftpServer | None, ra: str) -> None:
        """DHCP, TFTP (and `multicast` TFTP, if given) and HTTP (with the boot files from `boot_dir`, if given)
        until the pending nodes are done or failed; each pending node fetches its `credentials` once, from its
        own address, and its host keys from `keeper`."""
        dhcp = self.files.dhcp()
        if not dhcp.running():
            dhcp.start()
        selected = len(self.options.nodes or self.inv.nodes)
        self.show(f"{dhcp.NAME} serving {self.inv.network.subnet} (pid {dhcp.pid()}){ra}; "
                  f"{len(pending)} node(s) to install, {selected - len(pending)} done before")
        tftp = TftpServer(self.files.tftp_root, host=str(self.inv.server.ip), port=self.options.tftp_port)
        flipper = Flipper(self.flip_to_local, self.fail)
        http = HttpServer(self.files.kickstarts, nodes=self.inv.node_names,
                          on_report=lambda n, s, m: self.on_report(flipper, n, s, m),
                          host=str(self.inv.server.ip), port=self.inv.server.http_port,
                          states=lambda: [r.to_json() for r in self.records()],
                          boot_of=lambda name: self.record(name).boot, boot_dir=boot_dir,
                          host_key=keeper.key_file, credentials=credentials.deliver,
                          node_auth=NodeAuth({n.name: str(n.ip) for n in self.inv.nodes}, credentials.tokens,
                                             enforce=self.inv.server.node_auth))
        if not self.inv.server.node_auth:
            self.show("WARNING: server.node_auth is false: any host on the install network can fetch kickstarts "
                      "and credentials and report for any node")
        tftp.start()
        try:
            if multicast is not None:
                multicast.start()
                self.show(f"atftpd serving {', '.join(multicast.files)} by multicast TFTP on "
                          f"{self.inv.server.ip}:{multicast.port}")
            http.start()
            try:
                if pending and self.options.power_cycle:
                    pending = self.power_cycle(pending)
                if pending:
                    ready = self.wait_ready(pending)
                    if ready:
                        self.clone(ready, self.files.ring_secret)
                    self.wait_finished(pending)
                    time.sleep(self.options.linger)
            finally:
                http.stop()
        finally:
            if multicast is not None:
                multicast.stop()
            tftp.stop()
            flipper.close()

    def power_cycle(self, pending: list[Node]) -> list[Node]:
        """--power-cycle, once everything serves: each pending node's next boot (only) from the network, then a
        power cycle (on, if it was off) through its BMC. A node whose BMC fails is failed; the rest go on."""
        outcomes = power_nodes(pending, [Verb.PXE_ONCE, Verb.CYCLE])
        for o in outcomes:
            if o.ok:
                self.show(f"{o.node}: next boot from the network; power cycled through {o.bmc}")
            else:
                self.fail(o.node, f"--power-cycle: {o.error}")
        cycled = {o.node for o in outcomes if o.ok}
        return [n for n in pending if n.name in cycled]

    def prepare_state(self) -> list[Node]:
        """Nodes to install: every (selected) node not done before; they restart as `waiting` on install
        boot. Nodes outside the selection keep their records untouched."""
        records = self.store.ensure(self.inv.node_names)
        selected = [self.inv.node(name) for name in self.options.nodes] or list(self.inv.nodes)
        pending = [n for n in selected if records[n.name].state is not NodeState.DONE]
        for node in pending:
            self.store.update(node.name, state=NodeState.WAITING, boot=BootMode.INSTALL, error=None,
                              message=None, bytes=None, seconds=None)
        # trusted again as soon as the server has made (or found) the node's keys: see serve()
        forget_hosts(self.files.known_hosts, [str(n.ip) for n in pending])
        return pending

    def wait_ready(self, pending: list[Node]) -> list[Node]:
        """Wait until every pending node (or `enough` of them) reported ready, or until `wait` runs out;
        then ARP-probe the silent ones. Nodes that are not ready by then are failed."""
        enough = self.options.enough or len(pending)
        deadline = time.monotonic() + self.options.wait
        self.show(f"waiting up to {self.options.wait:.0f} s for {enough} of {len(pending)} node(s) to report ready")
        while True:
            ready = self._in_state(pending, NodeState.READY)
            if len(ready) >= enough or time.monotonic() >= deadline:
                break
            self.changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            self.changed.clear()
        silent = [n for n in pending if self.record(n.name).state is NodeState.WAITING]
        if len(ready) >= enough:
            why = f"not ready when the ring started with {len(ready)} node(s) (--enough {enough})"
        elif self.options.probe:
            alive = answering_arp([str(n.ip) for n in silent])
            for node in silent:
                if str(node.ip) in alive:
                    self.store.update(node.name, state=NodeState.READY,
                                      message="answers ARP but sent no ready report")
            ready = self._in_state(pending, NodeState.READY)
            why = f"not ready within {self.options.wait:.0f} s (no report, no ARP answer)"
        else:
            why = f"not ready within {self.options.wait:.0f} s (no report)"
        for node in pending:
            if self.record(node.name).state is NodeState.WAITING:
                self.fail(node.name, why)
        self.show(f"{len(ready)} node(s) ready: {' '.join(n.name for n in ready) or '-'}")
        return ready

    def clone(self, ready: list[Node], secret: Path) -> None:
        """Clone the ready nodes, in inventory order, split into the inventory's rings (`ring.count`): one
        dollyS per ring, all started together with the run's ring secret; record each ring's verdicts per node."""
        rings = plan_rings(self.files.dolly, self.inv.server.dolly_port, ready, self.inv.ring.count)
        settings = RingSettings.of(self.inv.ring, secret, self.options.dolly_timeout, self.options.chunk_size,
                                   self.options.verbose, self.inv.dolly.digest)
        images = ", ".join(str(i.source) for i in self.inv.images)
        if len(rings) > 1:
            self.show(f"cloning {images} through {len(rings)} rings at once")
        for ring in rings:
            ring.files.directory.mkdir(parents=True, exist_ok=True)
            ring.files.config.write_text(render_ring_config(self.inv, ring.nodes, self.options.site_templates,
                                                            ring.tail_port), encoding="utf-8")
            ring.files.report.unlink(missing_ok=True)
            ring.files.progress.unlink(missing_ok=True)
            members = " -> ".join([self.inv.server.name, *ring.names])
            self.show(f"ring {ring.number} of {ring.count}: {len(ring.nodes)} node(s): {members}" if len(rings) > 1
                      else f"cloning {images} through a ring of {len(ring.nodes)} node(s): {members}")
        names = [name for ring in rings for name in ring.names]

        def snapshot() -> tuple[list[NodeRecord], dict]:
            stored = self.store.load()
            return ([stored.get(name, NodeRecord(name)) for name in names],
                    merge_progress([read_progress(ring.files, ring.names) for ring in rings]))

        with ExitStack() as logs:
            procs = [subprocess.Popen(server_argv(ring.files, settings), stdin=subprocess.DEVNULL,
                                      stdout=logs.enter_context(open(ring.files.log, "wb")),
                                      stderr=subprocess.STDOUT, env={**os.environ, **self.env})
                     for ring in rings]
            follow(procs, snapshot, self.live, self.show)
        for ring, proc in zip(rings, procs):
            self.record_verdicts(ring, proc.returncode)

    def record_verdicts(self, ring: RingPlan, returncode: int) -> None:
        """One ring's verdicts from its dollyS report: a node not verified is failed with the reason."""
        for node, verdict in zip(ring.nodes, read_ring_report(ring.files.report, len(ring.nodes))):
            if verdict is None:
                self.fail(node.name, f"dollyS exited with status {returncode} and reported nothing on this "
                                     f"node (see {ring.files.log})")
            elif not verdict.get("ok"):
                self.fail(node.name, f"clone failed: {verdict.get('error') or 'not verified'}")
            else:
                self.store.update(node.name, bytes=verdict.get("bytes"), seconds=verdict.get("seconds"))

    def wait_finished(self, pending: list[Node]) -> None:
        """Wait for every pending node that is not failed to report done (and be flipped)."""
        deadline = time.monotonic() + self.options.finish_wait
        while time.monotonic() < deadline:
            open_nodes = [n for n in pending if self.record(n.name).state not in (NodeState.DONE, NodeState.FAILED)]
            if not open_nodes:
                return
            self.changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            self.changed.clear()
        for node in pending:
            if self.record(node.name).state not in (NodeState.DONE, NodeState.FAILED):
                self.fail(node.name, f"no done report within {self.options.finish_wait:.0f} s after the clone")

    # -- reports and flips -------------------------------------------------------------------------

    def on_report(self, flipper: Flipper, name: str, state: NodeState, message: str) -> None:
        """A node's report (HTTP thread). `done` is recorded once the node is flipped to local boot."""
        if state is NodeState.DONE:
            self.store.update(name, message=message)
            if not flipper.flip(name):
                self.fail(name, "flip to local boot did not finish in time")
        else:
            self.store.report(name, state, message)
            self.show(f"{name}: {state}{f' ({message})' if message else ''}")
        self.changed.set()

    def flip_to_local(self, names: list[str]) -> None:
        modes = current_modes(self.inv, self.files)
        modes.update(dict.fromkeys(names, BootMode.LOCAL))
        apply_modes(self.inv, self.files, modes, self.options.site_templates)
        self.store.set_boot(names, BootMode.LOCAL)
        for name in names:
            self.store.update(name, state=NodeState.DONE, error=None)
        self.show(f"{', '.join(names)}: done, switched to local boot")

    def fail(self, name: str, error: str) -> None:
        self.store.update(name, state=NodeState.FAILED, error=error)
        self.show(f"{name}: FAILED: {error}")
        self.changed.set()

    # -- reading state -----------------------------------------------------------------------------

    def record(self, name: str) -> NodeRecord:
        return self.store.load().get(name, NodeRecord(name))

    def records(self) -> list[NodeRecord]:
        stored = self.store.load()
        return [stored.get(name, NodeRecord(name)) for name in self.inv.node_names]

    def _in_state(self, nodes: list[Node], state: NodeState) -> list[Node]:
        stored = self.store.load()
        return [n for n in nodes if n.name in stored and stored[n.name].state is state]
