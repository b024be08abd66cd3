"""The whole install on QEMU machines (`make demo-vm`), no human step: lab up --vm (each machine with its
BMC) -> `provision install --power-cycle` in the server namespace, which powers the machines on through their
BMCs (real firmware, our installer) -> (optionally one machine's QEMU killed mid-clone) -> every survivor
reboots from its own disk -> `provision verify` over SSH from the server namespace -> checks from inside each
clone (clone_checks.py) -> a per-node, per-phase timing table (vm_watch.py) -> (optionally) the diskless round
(vm_diskless.py) -> lab down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.cluster import ClusterFiles
from provision.errors import ProvisionError
from provision.inventory import state_dir
from provision.lab import cluster as lab, vm as lab_vm, vm_discover
from provision.lab.clone_checks import CHECK_COMMAND, golden_digests, installer_fetches, parse_checks, parse_disks
from provision.lab.provision_cli import (in_server, install_args, node_records, run_in_server, ssh_args,
                                         verify_nodes)
from provision.lab.verdict import node_as_expected, run_as_expected, summary_table, yes_no
from provision.lab.vm_diskless import DisklessOutcome, diskless_round, summary as diskless_summary
from provision.lab.vm_watch import PHASES, NodeClock, Watcher
from provision.model import Inventory


@dataclass(frozen=True)
class VmOutcome:
    name: str
    firmware: str
    state: str             # from `provision status --json`
    boot: str              # install or local
    error: str | None
    killed: bool
    verified: bool         # `provision verify`: hostname and IP as the inventory says, over SSH
    identical: bool        # sha256 of MARKER_FILES on the clone = on the golden image
    booted_from_disk: bool  # /proc/cmdline is the disk's GRUB entry, not the installer's
    installs: int          # how often it fetched the installer's initrd (over boot.transport: HTTP or TFTP)
    note: str = ""
    table: str = ""        # the disk's partition table as the clone's blkid says: gpt or dos
    grown: bool = False    # the root file system fills its partition (the installer grew the received image)
    disk_label: str = "msdos"  # the inventory's disk label (Node.disk_label): gpt or msdos

    @property
    def expected_table(self) -> str:
        """What blkid calls the table of the node's disk label: gpt, or dos for msdos."""
        return "dos" if self.disk_label == "msdos" else self.disk_label

    @property
    def as_expected(self) -> bool:
        return node_as_expected(self, self.verified and self.identical and self.booted_from_disk
                                and self.installs == 1 and self.grown and self.table == self.expected_table)


@dataclass(frozen=True)
class VmDemoResult:
    install_status: int
    verify_status: int
    nodes: tuple[VmOutcome, ...]
    clocks: tuple[NodeClock, ...]
    seconds: float
    logs: Path
    diskless: tuple[DisklessOutcome, ...] = ()  # the diskless round, if it ran
    discovered: tuple[str, ...] = ()  # what `provision discover` appended (name mac ip firmware bmc), if it ran

    @property
    def ok(self) -> bool:
        return run_as_expected(self.install_status, self.nodes) and all(o.ok for o in self.diskless)


def run_vm_demo(inv: Inventory, nodes: int | None = None, kill: str | None = None, ring_timeout: float = 20.0,
                env: Mapping[str, str] = os.environ, show: Callable[[str], None] = print,
                logs: Path | None = None, boot_wait: float = 900.0, discover: Sequence[str] = ()) -> VmDemoResult:
    """Run the demo; logs (install, verify, every serial console, TFTP) are kept in `logs`
    (default <state dir>/demo-vm/) after lab down. Without `kill`, and if the inventory has boot.diskless, the
    first BIOS and the first UEFI machine then do the diskless round (vm_diskless.py). With `discover` (the
    inventory's last node names) the install's inventory first lacks those machines and `provision discover
    --bmc-range` finds them (vm_discover.py)."""
    started = time.monotonic()
    logs = logs or state_dir(env) / "demo-vm"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    run_env = {**os.environ, **env}
    built = lab.lab_up(inv, nodes=nodes, rate=None, env=env, vm=True)
    try:
        names = [n.name for n in built.nodes]
        if kill is not None and kill not in names:
            raise ProvisionError(f"--kill {kill}: not a machine of this lab ({', '.join(names)})")
        show(f"lab up --vm: {len(names)} QEMU machines ({', '.join(f'{n.name} {n.firmware}' for n in built.nodes)}) "
             f"+ server {built.server_name} in {built.server_ns}")
        discovered = ()
        if discover:
            found = vm_discover.discover(inv, built, discover, logs, run_env)
            if not found.ok:
                raise ProvisionError(f"provision discover did not find {', '.join(found.expected)} as the lab has "
                                     f"them; it appended {list(found.found)}:\n{found.output[-3000:]}")
            inv, discovered = found.inventory, found.found
            show(f"provision discover --bmc-range found in {found.seconds:.0f} s: " + "; ".join(discovered))
        files = ClusterFiles.of(inv, env)
        clocks = {name: NodeClock(name) for name in names}
        install_log = logs / "install.log"
        install = _start_install(inv, built, names, ring_timeout, install_log, run_env)
        watcher = Watcher(built, files, clocks)
        watcher.start()
        try:
            _follow_power_cycle(install, install_log, clocks)
            show(f"provision install --power-cycle powered the machines on; following {install_log}")
            if kill is not None:
                _kill_mid_clone(inv, built, files, kill, show)
            install_status = install.wait(timeout=1800)
            show(f"provision install ended with status {install_status}")
            booted = _wait_booted(files, clocks, [n for n in names if n != kill], boot_wait)
            verify_status = _verify(inv, built, booted, logs, run_env, clocks) if booted else 1
        finally:
            watcher.stop()
        outcomes = _outcomes(inv, built, node_records(inv, env), kill, booted, logs, run_env, install_log.read_text())
        round_nodes = _diskless_nodes(inv, built, booted) if kill is None and verify_status == 0 else []
        diskless = diskless_round(inv, built, round_nodes, logs, run_env, show) if round_nodes else ()
    finally:
        _keep_serial_logs(built, logs)
        lab.lab_down(env)
    return VmDemoResult(install_status, verify_status, outcomes, tuple(clocks[n] for n in names),
                        time.monotonic() - started, logs, diskless, discovered)


def _diskless_nodes(inv: Inventory, built: lab.Lab, booted: Sequence[str]) -> list[str]:
    """The first booted machine of each firmware kind, if the inventory has a diskless image."""
    first: dict[str | None, str] = {}
    for node in built.nodes:
        if inv.boot.diskless and node.name in booted:
            first.setdefault(node.firmware, node.name)
    return list(first.values())


def _start_install(inv: Inventory, built: lab.Lab, names: Sequence[str], ring_timeout: float, log: Path,
                   env: Mapping[str, str]) -> subprocess.Popen:
    """`provision install -v` in the server's namespace, its output in `log`, once its DHCP server serves."""
    with open(log, "wb") as out:
        install = subprocess.Popen(
            in_server(built, install_args(inv, names, ring_timeout, 600, 900, "--linger", "60", "--power-cycle",
                                          "-v")),
            env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    serving = f" serving {inv.network.subnet} "  # "dhcpd serving ..." or "kea-dhcp4 serving ..."
    _wait_for(lambda: serving in log.read_text() or install.poll() is not None, 120,
              "provision install did not start serving")
    if install.poll() is not None:
        raise ProvisionError(f"provision install ended at once:\n{log.read_text()[-3000:]}")
    return install


def _follow_power_cycle(install: subprocess.Popen, log: Path, clocks: Mapping[str, NodeClock]) -> None:
    """Start each machine's clock when `provision install --power-cycle` says it cycled it through its BMC
    (return once each one is cycled or failed)."""
    def cycled() -> bool:
        text = log.read_text()
        for name, clock in clocks.items():
            if not clock.powered_on and f"{name}: next boot from the network; power cycled through" in text:
                clock.powered_on = time.monotonic()
        return install.poll() is not None or all(
            c.powered_on or f"{c.name}: FAILED: --power-cycle:" in text for c in clocks.values())
    _wait_for(cycled, 300, "provision install --power-cycle did not power every machine on")


def _wait_booted(files: ClusterFiles, clocks: Mapping[str, NodeClock], names: Sequence[str],
                 seconds: float) -> list[str]:
    """Wait until each of `names` booted from its disk or failed (or `seconds` passed); those that booted."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all("booted from disk" in clocks[name].seen or _failed(files, name)
                                                    for name in names):
        time.sleep(1)
    return [name for name in names if "booted from disk" in clocks[name].seen]


def _keep_serial_logs(built: lab.Lab, logs: Path) -> None:
    for node in built.nodes:
        serial = Path(node.work) / lab_vm.SERIAL_LOG
        if serial.exists():
            shutil.copyfile(serial, logs / f"{node.name}.serial.log")


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise ProvisionError(f"{what} within {seconds:.0f} s")
        time.sleep(0.2)


def _failed(files: ClusterFiles, name: str) -> bool:
    record = files.store().load().get(name)
    return record is not None and str(record.state) == "failed"


def _kill_mid_clone(inv: Inventory, built: lab.Lab, files: ClusterFiles, name: str, show) -> None:
    """Kill `name`'s QEMU once the ring has delivered a quarter, not all, of the image to it."""
    ip = str(inv.node(name).ip)
    progress = files.dolly / "progress.json"
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        try:
            status = json.loads(progress.read_text())
        except (OSError, ValueError):
            status = {}
        total = status.get("total_bytes") or 0
        for entry in status.get("nodes", []):
            if ip in (str(entry.get("address", "")).split(":")[0], entry.get("name")) and total // 4 <= entry["bytes"] < total:
                lab.power_off(built, [name])
                show(f"killed {name}'s QEMU after {entry['bytes']:,} of {total:,} bytes of the clone")
                return
        time.sleep(0.1)
    raise ProvisionError(f"{name} never started receiving the image: nothing to kill mid-clone")


def _verify(inv: Inventory, built: lab.Lab, names: list[str], logs: Path, env, clocks) -> int:
    """`provision verify` from the server namespace (a few tries); each node's clock marks when it passed."""
    return verify_nodes(inv, built, names, logs / "verify.log", env,
                        lambda name, now: clocks[name].mark("verified", now) if name in clocks else None)


def _outcomes(inv: Inventory, built: lab.Lab, records: Mapping[str, dict], kill: str | None, booted: list[str],
              logs: Path, env, install_output: str) -> tuple[VmOutcome, ...]:
    expected = golden_digests(Path(inv.images[0].source).resolve())
    checks: dict[str, tuple[dict[str, str], str]] = {}
    disks: dict[str, tuple[str, int, int]] = {}
    if booted:
        proc = run_in_server(built, ["run", *ssh_args(inv), ",".join(booted), "--", CHECK_COMMAND], env)
        (logs / "checks.log").write_text(proc.stdout + proc.stderr)
        checks, disks = parse_checks(proc.stdout), parse_disks(proc.stdout)
    outcomes = []
    for node in built.nodes:
        record = records[node.name]
        sums, cmdline = checks.get(node.name, ({}, ""))
        ip = str(inv.node(node.name).ip)
        installs = installer_fetches(inv, ip, install_output)
        verified = (logs / "verify.log").exists() and re.search(
            rf"^{node.name} \([0-9.]+\): ok:", (logs / "verify.log").read_text(), re.M) is not None
        table, partition_bytes, fs_bytes = disks.get(node.name, ("", 0, -1))
        outcomes.append(VmOutcome(
            node.name, node.firmware or "", record["state"], record["boot"], record["error"], node.name == kill,
            verified, bool(sums) and sums == expected, "root=" in cmdline and "inst.ks=" not in cmdline,
            installs, table=table, grown=fs_bytes == partition_bytes,
            disk_label=str(inv.node(node.name).disk_label),
            note=f"root {fs_bytes >> 20} MiB of {partition_bytes >> 20} MiB" if table else ""))
    return tuple(outcomes)


def timing_table(result: VmDemoResult) -> str:
    """Per node: seconds after power-on at which each phase ended ('-': never)."""
    widths = [max(len(p), 6) for p in PHASES]
    lines = [f"{'node':5} {'fw':5} " + " ".join(f"{p:>{w}}" for p, w in zip(PHASES, widths)) + "  result"]
    outcome = {n.name: n for n in result.nodes}
    for clock in result.clocks:
        n = outcome[clock.name]
        cells = " ".join(f"{clock.seen[p]:>{w}.0f}" if p in clock.seen else f"{'-':>{w}}"
                         for p, w in zip(PHASES, widths))
        verdict = ("killed mid-clone: " if n.killed else "") + (f"{n.state}, {n.boot} boot")
        if n.error:
            verdict += f" ({n.error})"
        lines.append(f"{clock.name:5} {n.firmware:5} {cells}  {verdict}")
    return "\n".join(lines)


def summary(result: VmDemoResult) -> str:
    table = summary_table(
        [("node", 5), ("verified", 9), ("golden files", 13), ("disk boot", 10), ("installs", 8), ("disk", 0)],
        ([n.name, yes_no(n.verified), "identical" if n.identical else "DIFFER", yes_no(n.booted_from_disk),
          str(n.installs), f"{n.table or '-'}{'' if n.table == n.expected_table else f' (want {n.expected_table})'}"
                           f" {n.note}"] for n in result.nodes),
        f"demo-vm: {len(result.nodes)} machine(s) in {result.seconds:.0f} s, install exit status "
        f"{result.install_status}, verify {result.verify_status}", result.ok, f" (logs in {result.logs})")
    lines = ([f"found by provision discover: {'; '.join(result.discovered)}"] if result.discovered else []) + [
        "seconds after power-on at the end of each phase:", timing_table(result), "", table]
    return "\n".join(lines + ([diskless_summary(result.diskless)] if result.diskless else []))
