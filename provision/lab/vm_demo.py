"""The whole install on QEMU machines (`make demo-vm`): lab up --vm -> `provision install` in the server
namespace -> machines power on (real firmware, our installer) -> (optionally one machine's QEMU killed
mid-clone) -> every survivor reboots from its own disk -> `provision verify` over SSH from the server
namespace -> checks from inside each clone -> a per-node, per-phase timing table -> lab down.

Phase times are seconds since the machine's power-on, taken when the watcher first sees them (polled
every 0.25 s): from the serial logs (kernel start = end of firmware and PXE, the installer's own lines,
the installed system's login prompt) and from the state store (image received, flip to local boot).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provision.lab import cluster as lab, vm as lab_vm, netns
from provision.cluster import ClusterFiles
from provision.errors import ProvisionError
from provision.images.initrd import MARKER
from provision.inventory import state_dir
from provision.model import Inventory, Transport

PHASES = ("firmware", "installer up", "partitioned", "cloned", "flipped", "booted from disk", "verified")
KERNEL_START = "Linux version"  # the kernel's first console line: firmware, PXE and loader are done
PARTITIONED = re.compile(r"provision-installer: .*partitioned")
# Files of the golden image whose bytes every clone must keep (its /etc/hostname, fstab, ... are personalised).
MARKER_FILES = ("/etc/provision-golden", "/usr/sbin/sshd", "/usr/bin/bash", "/etc/ssh/sshd_config", "/vmlinuz")


@dataclass
class NodeClock:
    """When (seconds after power-on) each phase of one machine ended; None: not seen."""

    name: str
    powered_on: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)

    def mark(self, phase: str, now: float | None = None) -> None:
        self.seen.setdefault(phase, (time.monotonic() if now is None else now) - self.powered_on)


class Watcher:
    """Polls the machines' serial logs and the state store in a thread and fills their NodeClocks."""

    def __init__(self, built: lab.Lab, files: ClusterFiles, clocks: Mapping[str, NodeClock]):
        self.built, self.files, self.clocks = built, files, clocks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vm-demo-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.poll()

    def poll(self) -> None:
        try:
            records = self.files.store().load()
        except ProvisionError:
            records = {}
        for node in self.built.nodes:
            clock = self.clocks[node.name]
            if not clock.powered_on:
                continue
            serial = serial_text(node)
            if KERNEL_START in serial:
                clock.mark("firmware")
            if MARKER in serial:
                clock.mark("installer up")
            if PARTITIONED.search(serial):
                clock.mark("partitioned")
            record = records.get(node.name)
            if record is not None and str(record.state) in ("cloning", "done"):
                clock.mark("cloned")
            if record is not None and str(record.boot) == "local":
                clock.mark("flipped")
            if "flipped" in clock.seen and f"{node.name} login:" in serial:
                clock.mark("booted from disk")


def serial_text(node: lab.LabNode) -> str:
    try:
        return (Path(node.work) / lab_vm.SERIAL_LOG).read_text(errors="replace")
    except OSError:
        return ""


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
        if self.killed:
            return self.state == "failed" and self.boot == "install"
        return (self.state == "done" and self.boot == "local" and self.verified and self.identical
                and self.booted_from_disk and self.installs == 1 and self.grown
                and self.table == self.expected_table)


@dataclass(frozen=True)
class VmDemoResult:
    install_status: int
    verify_status: int
    nodes: tuple[VmOutcome, ...]
    clocks: tuple[NodeClock, ...]
    seconds: float
    logs: Path

    @property
    def ok(self) -> bool:
        killed = any(n.killed for n in self.nodes)
        return self.install_status == (1 if killed else 0) and all(n.as_expected for n in self.nodes)


def run_vm_demo(inv: Inventory, nodes: int | None = None, kill: str | None = None, ring_timeout: float = 20.0,
                env: Mapping[str, str] = os.environ, show: Callable[[str], None] = print,
                logs: Path | None = None, boot_wait: float = 900.0) -> VmDemoResult:
    """Run the demo; logs (install, verify, every serial console, TFTP) are kept in `logs`
    (default <state dir>/demo-vm/) after lab down."""
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
        files = ClusterFiles.of(inv, env)
        clocks = {name: NodeClock(name) for name in names}
        install_log = logs / "install.log"
        with open(install_log, "wb") as out:
            install = subprocess.Popen(netns.ns_argv(built.server_ns, [
                sys.executable, "-m", "provision", "install", "--inventory", str(inv.path), "--nodes", ",".join(names),
                "--wait", "600", "--finish-wait", "900", "--timeout", str(ring_timeout), "--linger", "60", "-v"]),
                env=run_env, stdout=out, stderr=subprocess.STDOUT)
        _wait_for(lambda: "dhcpd serving" in install_log.read_text() or install.poll() is not None, 120,
                  "provision install did not start serving")
        if install.poll() is not None:
            raise ProvisionError(f"provision install ended at once:\n{install_log.read_text()[-3000:]}")
        watcher = Watcher(built, files, clocks)
        watcher.start()
        try:
            for name in names:
                clocks[name].powered_on = time.monotonic()
                lab.boot_nodes(built, [name])
            show(f"machines powered on; following {install_log}")
            if kill is not None:
                _kill_mid_clone(inv, built, files, kill, show)
            install_status = install.wait(timeout=1800)
            show(f"provision install ended with status {install_status}")
            survivors = [n for n in built.nodes if n.name != kill]
            deadline = time.monotonic() + boot_wait
            while time.monotonic() < deadline and not all("booted from disk" in clocks[n.name].seen
                                                            or _failed(files, n.name) for n in survivors):
                time.sleep(1)
            booted = [n.name for n in survivors if "booted from disk" in clocks[n.name].seen]
            verify_status = _verify(inv, built, booted, logs, run_env, clocks) if booted else 1
        finally:
            watcher.stop()
        status = json.loads(subprocess.run([sys.executable, "-m", "provision", "status", "--inventory", str(inv.path),
                                            "--json"], capture_output=True, text=True, check=True, env=run_env).stdout)
        outcomes = _outcomes(inv, built, status, kill, booted, logs, run_env, install_log.read_text())
    finally:
        for node in built.nodes:
            serial = Path(node.work) / lab_vm.SERIAL_LOG
            if serial.exists():
                shutil.copyfile(serial, logs / f"{node.name}.serial.log")
        lab.lab_down(env)
    return VmDemoResult(install_status, verify_status, outcomes, tuple(clocks[n] for n in names),
                        time.monotonic() - started, logs)


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


def _in_server(built: lab.Lab, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(netns.ns_argv(built.server_ns, [sys.executable, "-m", "provision", *argv]),
                          capture_output=True, text=True, env=dict(env), timeout=600)


def _ssh_args(inv: Inventory) -> list[str]:
    return ["--inventory", str(inv.path), *(a for k in lab_vm.key_pairs(inv) for a in ("--key", str(k))),
            "--host-key-policy", "reject", "--connect-timeout", "20"]  # only the keys the server gave the nodes


def _verify(inv: Inventory, built: lab.Lab, names: list[str], logs: Path, env, clocks) -> int:
    """`provision verify` from the server namespace, a few tries (sshd may still be starting)."""
    for _ in range(10):
        proc = _in_server(built, ["verify", *_ssh_args(inv), ",".join(names)], env)
        (logs / "verify.log").write_text(proc.stdout + proc.stderr)
        now = time.monotonic()
        for line in proc.stdout.splitlines():
            m = re.match(r"(\S+) \([0-9.]+\): ok:", line)
            if m and m.group(1) in clocks:
                clocks[m.group(1)].mark("verified", now)
        if proc.returncode == 0:
            return 0
        time.sleep(3)
    return proc.returncode


def golden_digests(rootfs: Path, paths: Sequence[str] = MARKER_FILES) -> dict[str, str]:
    """sha256 of files inside the golden ext4 image, read with debugfs (no mount), symlinks followed once."""
    digests = {}
    for path in paths:
        target = subprocess.run(["debugfs", "-R", f"stat {path}", str(rootfs)], capture_output=True,
                                text=True).stdout
        m = re.search(r'Fast link dest: "([^"]+)"', target)
        real = m.group(1) if m else path
        real = real if real.startswith("/") else str(Path(path).parent / real)
        data = subprocess.run(["debugfs", "-R", f"cat {real}", str(rootfs)], capture_output=True).stdout
        digests[path] = hashlib.sha256(data).hexdigest()
    return digests


# one line `disk <table> <root partition bytes> <root file system bytes>` (dumpe2fs: block count x size)
DISK_COMMAND = ("root=$(findmnt -no SOURCE /); echo disk $(blkid -o value -s PTTYPE /dev/$(lsblk -no PKNAME $root))"
                " $(blockdev --getsize64 $root)"
                " $(dumpe2fs -h $root 2>/dev/null | awk '/^Block (count|size):/ {n = n ? n * $3 : $3} END {printf \"%.0f\\n\", n}')")
CHECK_COMMAND = f"sha256sum {' '.join(MARKER_FILES)}; cat /proc/cmdline; {DISK_COMMAND}"


def parse_checks(output: str) -> dict[str, tuple[dict[str, str], str]]:
    """`provision run NODES -- CHECK_COMMAND` output -> per node: ({path: sha256}, the booted kernel's
    command line)."""
    checks = {}
    for block in re.split(r"^== ", output, flags=re.M)[1:]:
        lines = block.splitlines()
        sums = {}
        for line in lines[1:]:
            m = re.fullmatch(r"([0-9a-f]{64})  (/\S*)", line)
            if m:
                sums[m.group(2)] = m.group(1)
        cmdline = next((line for line in lines[1:] if "BOOT_IMAGE=" in line or "root=" in line), "")
        checks[lines[0].split()[0]] = (sums, cmdline)
    return checks


def parse_disks(output: str) -> dict[str, tuple[str, int, int]]:
    """`provision run NODES -- CHECK_COMMAND` output -> per node: (partition table, root partition bytes,
    root file system bytes), from its DISK_COMMAND line."""
    disks = {}
    for block in re.split(r"^== ", output, flags=re.M)[1:]:
        m = re.search(r"^disk (\w+) (\d+) (\d+)$", block, re.M)
        if m:
            disks[block.split()[0]] = (m.group(1), int(m.group(2)), int(m.group(3)))
    return disks


def _outcomes(inv: Inventory, built: lab.Lab, status: dict, kill: str | None, booted: list[str], logs: Path,
              env, install_output: str) -> tuple[VmOutcome, ...]:
    records = {r["name"]: r for r in status["nodes"]}
    expected = golden_digests(Path(inv.images[0].source).resolve())
    checks: dict[str, tuple[dict[str, str], str]] = {}
    disks: dict[str, tuple[str, int, int]] = {}
    if booted:
        proc = _in_server(built, ["run", *_ssh_args(inv), ",".join(booted), "--", CHECK_COMMAND], env)
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


def installer_fetches(inv: Inventory, ip: str, install_output: str) -> int:
    """Whole fetches of the installer's initrd by `ip` in the log of `provision install -v`: from the HTTP
    server's log lines when boot.transport is http (a ranged re-read does not count), else from the TFTP's."""
    initrd = re.escape(inv.boot.initrd_tftp_path)
    if inv.boot.transport is Transport.HTTP:
        line = rf"http: sent /?{initrd} to {re.escape(ip)}: \d+ bytes in [0-9.]+ s$"
    else:
        line = rf"tftp: sent /?{initrd} to {re.escape(ip)}:"
    return len(re.findall(line, install_output, re.M))


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
    lines = ["seconds after power-on at the end of each phase:", timing_table(result), "",
             f"{'node':5} {'verified':9} {'golden files':13} {'disk boot':10} {'installs':8} disk"]
    for n in result.nodes:
        lines.append(f"{n.name:5} {'yes' if n.verified else 'no':9} {'identical' if n.identical else 'DIFFER':13} "
                     f"{'yes' if n.booted_from_disk else 'no':10} {n.installs:<8} {n.table or '-'}"
                     f"{'' if n.table == n.expected_table else f' (want {n.expected_table})'} {n.note}")
    verdict = "as expected" if result.ok else "NOT as expected"
    lines.append(f"demo-vm: {len(result.nodes)} machine(s) in {result.seconds:.0f} s, install exit status "
                 f"{result.install_status}, verify {result.verify_status}: {verdict} (logs in {result.logs})")
    return "\n".join(lines)
