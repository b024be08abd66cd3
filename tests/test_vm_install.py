"""The whole install on one real (QEMU, TCG, SeaBIOS + iPXE) machine: `provision install` in a lab
namespace serves dhcpd, TFTP, HTTP and dollyS; the machine PXE-boots our installer, which partitions its
blank disk, receives the golden image through the ring onto /dev/vda1, writes its identity and GRUB, reports
done (the server flips it), reboots, and comes up from its own disk as `vm1`. And a node the server says
is not due boots its disk untouched."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from provision import netns
from provision.images.golden import golden_image
from provision.images.initrd import installer_initrd
from provision.inventory import load_inventory
from provision.model import Firmware
from provision.qemu import Machine
from provision.render import render_to
from provision.services.dhcpd import DhcpdProcess
from provision.services.tftp import install_boot_files
from tests.conftest import require_tool
from tests.test_vm_pxe import TFTP_SERVE, _require, _text

MAC = "52:54:00:81:00:11"


def inventory_text(kernel: Path, initrd: Path, rootfs: Path) -> str:
    return f"""cluster: pvi
server: {{name: srv, ip: 10.81.0.1}}
network: {{subnet: 10.81.0.0/24}}
boot:
  kernel: {kernel}
  initrd: {initrd}
  append: console=ttyS0,115200
images:
  - {{source: {rootfs}, target: /dev/vda1}}
defaults:
  interface: eth0
  os_family: debian
  bootloader: grub2
  firmware: bios
  disk:
    device: vda
    partitions:
      - {{mount: /, fstype: ext4, size: 1600, grow: true, label: root}}
      - {{mount: /boot/efi, fstype: vfat, size: 64, label: EFI}}
nodes:
  - {{name: vm1, mac: "{MAC}", ip: 10.81.0.11}}
"""


def phases(serial: str) -> dict[str, float]:
    """`provision-installer: <phase> ... (at S s)` lines of the console: phase -> kernel uptime."""
    found = {}
    for match in re.finditer(r"provision-installer: (.*?) \(at ([0-9.]+) s\)", serial):
        phase = re.split(r"[:,(]| /", match.group(1))[0].strip()
        found.setdefault(phase, float(match.group(2)))
    return found


@pytest.mark.vm
def test_vm_installs_itself_and_boots_its_own_disk(tmp_path):
    _require(Firmware.BIOS)
    require_tool("mmdebstrap")
    initrd, golden = installer_initrd(), golden_image()
    inv = tmp_path / "pvi.yaml"
    inv.write_text(inventory_text(initrd.kernel.vmlinuz, initrd.path, golden.rootfs))
    disk = tmp_path / "vm1.raw"
    with open(disk, "wb") as f:
        f.truncate(4 << 30)
    serial = tmp_path / "serial.log"
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PROVISION_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": repo}
    net = netns.Network(f"pvi-{uuid.uuid4().hex[:5]}")
    procs: list[subprocess.Popen] = []
    try:
        server = net.add_host("srv", address="10.81.0.1/24")
        tap = "tap-vm1"
        subprocess.run(["ip", "-n", net.switch_ns, "tuntap", "add", tap, "mode", "tap"], check=True)
        subprocess.run(["ip", "-n", net.switch_ns, "link", "set", tap, "master", "br0", "up"], check=True)
        ra = net.popen(server, [sys.executable, "-m", "provision.ra", "eth0"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, cwd=repo)
        procs.append(ra)
        assert ra.stdout.readline().startswith("provision.ra: advertising"), "no router advertisement"
        install_log = tmp_path / "install.log"
        with open(install_log, "wb") as log:
            install = net.popen(server, [sys.executable, "-m", "provision", "install", "--inventory", str(inv),
                                         "--wait", "300", "--finish-wait", "400", "--linger", "90"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=repo, env=env)
        procs.append(install)
        time.sleep(2)
        machine = Machine("vm1", MAC, tap, serial, Firmware.BIOS, disk=disk)
        started = time.monotonic()
        qemu = subprocess.Popen(netns.ns_argv(net.switch_ns, machine.argv()), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(qemu)
        login = None
        while login is None:
            text = _text(serial)
            if "vm1 login:" in text:
                login = time.monotonic() - started
                break
            assert qemu.poll() is None, f"QEMU ended:\n{text[-3000:]}"
            assert time.monotonic() - started < 900, (f"no `vm1 login:` in 900 s; serial:\n{text[-4000:]}\n"
                                                      f"install:\n{_text(install_log)[-3000:]}")
            time.sleep(2)
        rc = install.wait(timeout=200)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        net.teardown()
    text = _text(serial)
    assert rc == 0, _text(install_log)[-3000:]
    seen = phases(text)
    for phase in ("due for install", "partitioned", "cloned", "identity", "bootloader", "done", "rebooting"):
        assert phase in seen, (phase, seen)
    after = text[text.index("provision-installer: rebooting"):]
    assert "provision-installer: initrd up" not in after  # the second boot did not start the installer
    assert "Debian GNU/Linux" in after and "vm1 login:" in after
    print(f"\ninstall (BIOS, TCG): QEMU start to `vm1 login:` from its own disk {login:.1f} s; "
          "installer phases (kernel uptime, s): " + ", ".join(f"{k} {v:.1f}" for k, v in seen.items()))


HTTP_LOCAL = """import sys, time
from provision.services.http import HttpServer
HttpServer(sys.argv[1], nodes=["vm1"], on_report=lambda *a: print("report", *a, flush=True), host="10.81.0.1",
           port=8080, boot_of=lambda name: "local").start()
print("http serving", flush=True)
time.sleep(3600)
"""


@pytest.mark.vm
def test_vm_not_due_boots_its_disk_untouched(tmp_path):
    """A node whose PXE config still says install while the server says local (a flip that did not reach
    the TFTP root): the installer hears `local`, leaves the disk alone and switch_roots into the disk's
    system (the golden image here, on a snapshot), which comes up to its login prompt."""
    _require(Firmware.BIOS)
    require_tool("mmdebstrap")
    initrd, golden = installer_initrd(), golden_image()
    inv_path = tmp_path / "pvi.yaml"
    inv_path.write_text(inventory_text(initrd.kernel.vmlinuz, initrd.path, golden.rootfs))
    inv = load_inventory(inv_path)
    rendered = tmp_path / "rendered"
    render_to(rendered, inv)  # vm1 on install boot
    install_boot_files(rendered / "tftpboot", inv.boot)
    serial = tmp_path / "serial.log"
    repo = str(Path(__file__).resolve().parents[1])
    net = netns.Network(f"pvi-{uuid.uuid4().hex[:5]}")
    dhcpd = DhcpdProcess(rendered / "dhcpd.conf", tmp_path / "dhcpd", interfaces=["eth0"])
    procs: list[subprocess.Popen] = []
    try:
        server = net.add_host("srv", address="10.81.0.1/24")
        dhcpd.netns = server.ns
        tap = "tap-vm1"
        subprocess.run(["ip", "-n", net.switch_ns, "tuntap", "add", tap, "mode", "tap"], check=True)
        subprocess.run(["ip", "-n", net.switch_ns, "link", "set", tap, "master", "br0", "up"], check=True)
        dhcpd.start()
        ra = net.popen(server, [sys.executable, "-m", "provision.ra", "eth0"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, cwd=repo)
        procs.append(ra)
        assert ra.stdout.readline().startswith("provision.ra: advertising"), "no router advertisement"
        http = net.popen(server, [sys.executable, "-c", HTTP_LOCAL, str(rendered / "kickstart")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo)
        procs.append(http)
        assert http.stdout.readline().strip() == "http serving"
        with open(tmp_path / "tftp.log", "wb") as log:
            procs.append(net.popen(server, [sys.executable, "-c", TFTP_SERVE.replace("10.66.0.1", "10.81.0.1"),
                                            str(rendered / "tftpboot")],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=repo))
        machine = Machine("vm1", MAC, tap, serial, Firmware.BIOS, disk=golden.disk, snapshot=True)
        started = time.monotonic()
        qemu = subprocess.Popen(netns.ns_argv(net.switch_ns, machine.argv()), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(qemu)
        while "golden login:" not in _text(serial):
            assert qemu.poll() is None, f"QEMU ended:\n{_text(serial)[-3000:]}"
            assert time.monotonic() - started < 400, f"no `golden login:` in 400 s:\n{_text(serial)[-4000:]}"
            time.sleep(2)
        seconds = time.monotonic() - started
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        dhcpd.stop()
        net.teardown()
    seen = phases(_text(serial))
    assert "not due for install" in seen and "booting the local system on /dev/vda1" in _text(serial), seen
    assert "partitioned" not in seen and "rebooting" not in seen, seen
    print(f"\nnot due (BIOS, TCG): QEMU start to the disk's login prompt via switch_root {seconds:.1f} s")
