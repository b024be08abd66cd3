"""The server side of the one-VM tests: a lab bridge in fresh namespaces, a server namespace with our router
advertisement (ends iPXE's IPv6 wait), a tap in the bridge for the machine, and every process started there
killed on the way out."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from provision.lab import netns
from provision.lab.qemu import Machine
from tests.conftest import REPO

TAP = "tap-vm1"


@dataclass
class Rig:
    net: netns.Network
    server: netns.Host
    tap: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path | None = None, **kwargs) -> subprocess.Popen:
        """`argv` in the server namespace from the repository (stdout to `log` if given); killed at the end."""
        with open(log, "wb") if log else contextlib.nullcontext() as out:
            if out is not None:
                kwargs.update(stdout=out, stderr=subprocess.STDOUT)
            proc = self.net.popen(self.server, argv, cwd=str(REPO), **kwargs)
        self.procs.append(proc)
        return proc

    def start_python(self, code: str, *args: str, **kwargs) -> subprocess.Popen:
        return self.start([sys.executable, "-c", code, *args], **kwargs)

    def power_on(self, machine: Machine) -> subprocess.Popen:
        """QEMU for `machine` in the bridge's namespace (its tap is there)."""
        qemu = subprocess.Popen(netns.ns_argv(self.net.switch_ns, machine.argv()), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(qemu)
        return qemu


@contextlib.contextmanager
def vm_rig(prefix: str, server_address: str) -> Iterator[Rig]:
    """Namespaces `<prefix>-<random>`: the bridge with a tap for one VM and the server at `server_address`."""
    net = netns.Network(f"{prefix}-{uuid.uuid4().hex[:5]}")
    rig: Rig | None = None
    try:
        rig = Rig(net, net.add_host("srv", address=server_address), TAP)
        subprocess.run(["ip", "-n", net.switch_ns, "tuntap", "add", TAP, "mode", "tap"], check=True)
        subprocess.run(["ip", "-n", net.switch_ns, "link", "set", TAP, "master", "br0", "up"], check=True)
        ra = rig.start([sys.executable, "-m", "provision.services.ra", "eth0"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
        assert ra.stdout.readline().startswith("provision.services.ra: advertising"), "no router advertisement"
        yield rig
    finally:
        if rig is not None:
            for proc in reversed(rig.procs):
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            for cleanup in reversed(rig.cleanups):
                cleanup()
        net.teardown()


def serial_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def boot_disk_to_prompt(disk: Path, serial: Path, snapshot: bool = False, prompt: str = "golden login:",
                        limit: float = 300.0) -> float:
    """SeaBIOS (TCG) boots `disk` in an empty network namespace (no network at all) until `prompt` shows on
    its serial console; returns the seconds from QEMU start. QEMU and the namespace are gone afterwards."""
    ns = f"pvd-{uuid.uuid4().hex[:6]}"
    drive = f"if=none,id=d0,format=raw,file={disk}" + (",snapshot=on" if snapshot else "")
    argv = ["qemu-system-x86_64", "-machine", "pc,accel=tcg,graphics=off", "-m", "768", "-display", "none",
            "-monitor", "none", "-nodefaults", "-serial", f"file:{serial}",
            "-drive", drive, "-device", "virtio-blk-pci,drive=d0,bootindex=1"]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    qemu = None
    try:
        started = time.monotonic()
        qemu = subprocess.Popen(netns.ns_argv(ns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while prompt not in serial_text(serial):
            assert qemu.poll() is None, f"QEMU ended early:\n{serial_text(serial)[-3000:]}"
            assert time.monotonic() - started < limit, serial_text(serial)[-3000:]
            time.sleep(1)
        return time.monotonic() - started
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        subprocess.run(["ip", "netns", "delete", ns], check=False)
