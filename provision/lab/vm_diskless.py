"""demo-vm's diskless round, on installed lab machines, through the product's own commands in the server's
namespace: power off (BMC) -> sha256 of each machine's disk image -> flip-to-diskless -> `provision serve` ->
power on (BMC) -> the machine boots the golden kernel and squashfs from RAM and comes up as itself (`provision
verify` with the server's kept host keys; golden files byte for byte; / is the overlay) -> power off -> its disk
image unchanged -> flip-to-local -> power on -> it boots its own disk again and verifies."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.lab import cluster as lab, vm as lab_vm
from provision.lab.clone_checks import CHECK_COMMAND, golden_digests, parse_checks
from provision.lab.provision_cli import in_server, run_in_server, ssh_args, verify_nodes
from provision.model import Inventory

SERVE_READY = "SIGINT or SIGTERM ends"  # `provision serve` serves
IMAGE_VERIFIED = "provision-diskless: image verified"  # the diskless initramfs checked the squashfs's sha256
CHECKS = f"{CHECK_COMMAND}; echo root $(findmnt -no FSTYPE /)"


@dataclass(frozen=True)
class DisklessOutcome:
    name: str
    firmware: str
    login: float | None     # seconds from power-on to the diskless system's login prompt
    verified: float | None  # ... to `provision verify` passing (host name, address, kept host key)
    image_verified: bool    # the initramfs said it checked the squashfs against the server's sha256
    identical: bool         # the golden marker files, byte for byte
    root: str               # the running system's / file system type: overlay (tmpfs over the squashfs)
    disk_untouched: bool    # sha256 of the machine's disk image the same before and after the diskless boot
    back_on_disk: bool      # after flip-to-local: booted its own disk and verified

    @property
    def ok(self) -> bool:
        return (self.verified is not None and self.image_verified and self.identical and self.root == "overlay"
                and self.disk_untouched and self.back_on_disk)


def diskless_round(inv: Inventory, built: lab.Lab, names: Sequence[str], logs: Path, env: Mapping[str, str],
                   show: Callable[[str], None]) -> tuple[DisklessOutcome, ...]:
    """Run the round on the installed, running machines `names`; logs (serve, verify, checks, serial) in `logs`."""
    nodes = [built.node(name) for name in names]
    _cli(inv, built, env, "power", "off", *names)
    _wait_off(nodes)
    before = {n.name: disk_sha256(Path(n.disk)) for n in nodes}
    _cli(inv, built, env, "flip-to-diskless", *names)
    serve_log = logs / "serve.log"
    with open(serve_log, "wb") as out:
        serve = subprocess.Popen(in_server(built, ["serve", "--inventory", str(inv.path), "-v"]), env=dict(env),
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: SERVE_READY in serve_log.read_text() or serve.poll() is not None, 120, "provision serve")
        if serve.poll() is not None:
            raise ProvisionError(f"provision serve ended at once:\n{serve_log.read_text()[-3000:]}")
        started = _power_on(inv, built, env, nodes)
        login = _wait_login(nodes, started, 600)
        show("diskless: " + ", ".join(f"{n} login prompt {s:.0f} s after power-on" for n, s in login.items()))
        verified: dict[str, float] = {}
        verify_nodes(inv, built, list(login), logs / "verify-diskless.log", env,
                     lambda name, now: verified.setdefault(name, now - started[name]))
        consoles = {n.name: _serial(n) for n in nodes}
        checks = run_in_server(built, ["run", *ssh_args(inv), ",".join(names), "--", CHECKS], env)
        (logs / "checks-diskless.log").write_text(checks.stdout + checks.stderr)
        _cli(inv, built, env, "power", "off", *names)
        _wait_off(nodes)
        after = {n.name: disk_sha256(Path(n.disk)) for n in nodes}
        _keep_serial(nodes, logs, "diskless")
        _cli(inv, built, env, "flip-to-local", *names)
        local_started = _power_on(inv, built, env, nodes)
        _wait_login(nodes, local_started, 600)
        back = _back_on_disk(inv, built, names, logs, env)
        _keep_serial(nodes, logs, "local-again")
    finally:
        serve.terminate()
        serve.wait(30)
        run_in_server(built, ["dhcp", "stop", "--inventory", str(inv.path)], env)
    sums, roots = parse_checks(checks.stdout), _roots(checks.stdout)
    expected = golden_digests(Path(inv.images[0].source).resolve())
    return tuple(DisklessOutcome(
        n.name, n.firmware or "", login.get(n.name), verified.get(n.name), IMAGE_VERIFIED in consoles[n.name],
        sums.get(n.name, ({}, ""))[0] == expected, roots.get(n.name, ""), before[n.name] == after[n.name],
        n.name in back) for n in nodes)


def disk_sha256(path: Path) -> str:
    with open(path, "rb") as disk:
        return hashlib.file_digest(disk, "sha256").hexdigest()


def _cli(inv: Inventory, built: lab.Lab, env: Mapping[str, str], *argv: str) -> None:
    proc = run_in_server(built, [*argv, "--inventory", str(inv.path)], env)
    if proc.returncode != 0:
        raise ProvisionError(f"provision {' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")


def _power_on(inv: Inventory, built: lab.Lab, env: Mapping[str, str],
              nodes: Sequence[lab.LabNode]) -> dict[str, float]:
    """Fresh serial logs, then `provision power on` (the BMCs start the machines); the time of the power-on."""
    for node in nodes:
        (Path(node.work) / lab_vm.SERIAL_LOG).unlink(missing_ok=True)
    _cli(inv, built, env, "power", "on", *(n.name for n in nodes))
    now = time.monotonic()
    return {n.name: now for n in nodes}


def _wait_off(nodes: Sequence[lab.LabNode]) -> None:
    _wait(lambda: not any(lab_vm.qemu_pids(n.ns) for n in nodes), 60, "the machines to be off")


def _wait_login(nodes: Sequence[lab.LabNode], started: Mapping[str, float], seconds: float) -> dict[str, float]:
    """Seconds from power-on to each machine's login prompt on its serial console."""
    seen: dict[str, float] = {}

    def all_seen() -> bool:
        for node in nodes:
            if node.name not in seen and f"{node.name} login:" in _serial(node):
                seen[node.name] = time.monotonic() - started[node.name]
        return len(seen) == len(nodes)
    _wait(all_seen, seconds, "a login prompt on every machine (" + ", ".join(n.name for n in nodes) + ")")
    return seen


def _back_on_disk(inv: Inventory, built: lab.Lab, names: Sequence[str], logs: Path, env: Mapping[str, str]) -> set[str]:
    """The machines that, after flip-to-local, verify and run the kernel of their disk's GRUB entry."""
    verified: set[str] = set()
    verify_nodes(inv, built, names, logs / "verify-local-again.log", env, lambda name, now: verified.add(name))
    proc = run_in_server(built, ["run", *ssh_args(inv), ",".join(names), "--", CHECKS], env)
    (logs / "checks-local-again.log").write_text(proc.stdout + proc.stderr)
    roots = _roots(proc.stdout)
    return {name for name, (_, cmdline) in parse_checks(proc.stdout).items()
            if name in verified and "root=" in cmdline and "inst.ks=" not in cmdline and roots.get(name) == "ext4"}


def _roots(output: str) -> dict[str, str]:
    """Per node, the `root FSTYPE` line of CHECKS."""
    roots = {}
    for block in re.split(r"^== ", output, flags=re.M)[1:]:
        m = re.search(r"^root (\S+)$", block, re.M)
        if m:
            roots[block.split()[0]] = m.group(1)
    return roots


def _serial(node: lab.LabNode) -> str:
    try:
        return (Path(node.work) / lab_vm.SERIAL_LOG).read_text(errors="replace")
    except OSError:
        return ""


def _keep_serial(nodes: Sequence[lab.LabNode], logs: Path, what: str) -> None:
    for node in nodes:
        (logs / f"{node.name}.serial.{what}.log").write_text(_serial(node))


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise ProvisionError(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.5)


def summary(outcomes: Sequence[DisklessOutcome]) -> str:
    """One line per machine: its diskless boot's times and checks."""
    def secs(value: float | None) -> str:
        return f"{value:.0f} s" if value is not None else "-"
    lines = ["diskless round (power-on through the BMC; seconds after it):"]
    for o in outcomes:
        lines.append(f"  {o.name} {o.firmware}: login {secs(o.login)}, verified {secs(o.verified)}; image "
                     f"{'verified' if o.image_verified else 'NOT verified'}, golden files "
                     f"{'identical' if o.identical else 'DIFFER'}, root {o.root or '-'}, disk "
                     f"{'untouched' if o.disk_untouched else 'CHANGED'}, back on its disk: "
                     f"{'yes' if o.back_on_disk else 'NO'}")
    return "\n".join(lines)
