"""The server side of the one-VM tests: a lab bridge in fresh namespaces, a server namespace with our router
advertisement (ends iPXE's IPv6 wait), a tap in the bridge for the machine, and every process started there
killed on the way out; our dhcpd, TFTP and HTTP servers in it; what the VM tests need; waiting for a prompt
on a machine's serial console."""

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
from provision.lab.qemu import OVMF_CODE, Machine
from provision.model import Firmware
from provision.services.dhcpd import DhcpdProcess
from tests.conftest import REPO, require_root, require_tool, skip_or_fail

TAP = "tap-vm1"
VM_TOOLS = ("qemu-system-x86_64", "dhcpd", "apt-get", "dpkg-deb", "depmod", "readelf")

TFTP_SERVE = """import logging, sys
from provision.services.tftp import TftpServer
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
TftpServer(sys.argv[1], host=sys.argv[2], port=69).serve_forever()
"""

# KICKSTART_DIR HOST BOOT_DIR|"" BOOT|"": with BOOT, the server answers every boot query with it
HTTP_SERVE = """import logging, sys, time
from provision.services.http import HttpServer
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
kickstart_dir, host, boot_dir, boot = sys.argv[1:]
HttpServer(kickstart_dir, nodes=["vm1"], on_report=print, host=host, port=8080, boot_dir=boot_dir or None,
           boot_of=(lambda name: boot) if boot else None).start()
print("http serving", flush=True)
time.sleep(3600)
"""


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


def require_vm(firmware: Firmware = Firmware.BIOS, *tools: str) -> None:
    """Root, QEMU, dhcpd, what the installer's build needs and `tools`, the NIC's iPXE ROM, and for UEFI OVMF."""
    require_root()
    for tool in (*VM_TOOLS, *tools):
        require_tool(tool)
    if not Path("/usr/lib/ipxe/qemu/efi-virtio.rom").is_file():
        skip_or_fail("needs the NIC's iPXE ROM (Debian package ipxe-qemu)")
    if firmware is Firmware.UEFI and not OVMF_CODE.is_file():
        skip_or_fail(f"needs {OVMF_CODE} (Debian package ovmf)")


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


def serve_boot_files(rig: Rig, rendered: Path, tftp_log: Path) -> DhcpdProcess:
    """Our dhcpd and tftpy server in the rig's server namespace, for the files rendered into `rendered`."""
    dhcpd = DhcpdProcess(rendered / "dhcpd.conf", tftp_log.parent / "dhcpd", interfaces=["eth0"])
    dhcpd.netns = rig.server.ns
    dhcpd.start()
    rig.cleanups.append(dhcpd.stop)
    rig.start_python(TFTP_SERVE, str(rendered / "tftpboot"), rig.server.ip, log=tftp_log)
    return dhcpd


def serve_http(rig: Rig, kickstart_dir: Path, log: Path, boot_dir: Path | None = None,
               boot: str | None = None) -> subprocess.Popen:
    """Our HTTP server on the rig's server, port 8080: kickstarts, with `boot_dir` the boot files under
    /boot/, with `boot` that answer to every boot query; its log in `log`. Returns once it serves."""
    http = rig.start_python(HTTP_SERVE, str(kickstart_dir), rig.server.ip, str(boot_dir or ""), boot or "", log=log)
    deadline = time.monotonic() + 30
    while "http serving" not in serial_text(log):
        assert http.poll() is None and time.monotonic() < deadline, f"HTTP server did not start:\n{serial_text(log)}"
        time.sleep(0.1)
    return http


def serial_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_prompt(qemu: subprocess.Popen, serial: Path, prompt: str, limit: float, started: float,
                    context: Callable[[], str] = lambda: "") -> float:
    """Wait until `prompt` shows on the serial console (QEMU still running, within `limit` s of `started`,
    else a failure with the console's end and `context()`); the seconds since `started`."""
    while prompt not in serial_text(serial):
        assert qemu.poll() is None, f"QEMU ended early:\n{serial_text(serial)[-3000:]}{context()}"
        assert time.monotonic() - started < limit, \
            f"no `{prompt}` in {limit:.0f} s; serial:\n{serial_text(serial)[-4000:]}{context()}"
        time.sleep(1)
    return time.monotonic() - started


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
        return wait_for_prompt(qemu, serial, prompt, limit, started)
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        subprocess.run(["ip", "netns", "delete", ns], check=False)
