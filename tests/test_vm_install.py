"""The whole install on one real (QEMU, TCG, SeaBIOS + iPXE) machine: `provision install` in a lab
namespace serves dhcpd, TFTP, HTTP and dollyS; the machine PXE-boots our installer, which partitions its
blank disk, receives the golden image through the ring onto /dev/vda1, writes its identity and GRUB, reports
done (the server flips it), reboots, and comes up from its own disk as `vm1`. And a node the server says
is not due boots its disk untouched."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from provision.images.golden import golden_image
from provision.images.initrd import installer_initrd
from provision.inventory import load_inventory
from provision.model import Firmware
from provision.lab.qemu import Machine
from provision.render import render_to
from provision.services.tftp import install_boot_files
from tests.conftest import REPO
from tests.vm_rig import require_vm, serial_text, serve_boot_files, serve_http, vm_rig, wait_for_prompt

MAC = "52:54:00:81:00:11"


def inventory_text(kernel: Path, initrd: Path, rootfs: Path, transport: str = "http") -> str:
    return f"""cluster: pvi
server: {{name: srv, ip: 10.81.0.1}}
network: {{subnet: 10.81.0.0/24}}
boot:
  kernel: {kernel}
  initrd: {initrd}
  append: console=ttyS0,115200
  transport: {transport}
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
    """A machine with a real machine's NIC (Intel 82574: the installer loads e1000e by its PCI alias, the NIC's
    own iPXE ROM boots it) installs itself and boots its own disk. The disk is virtio: QEMU 7.2's emulated
    NVMe lost I/O under TCG during the clone's writes in one of two runs (nvme I/O timeouts, aborts, no end)."""
    require_vm(Firmware.BIOS, "mmdebstrap")
    initrd, golden = installer_initrd(), golden_image()
    inv = tmp_path / "pvi.yaml"
    inv.write_text(inventory_text(initrd.kernel.vmlinuz, initrd.path, golden.rootfs))
    disk = tmp_path / "vm1.raw"
    with open(disk, "wb") as f:
        f.truncate(4 << 30)
    serial = tmp_path / "serial.log"
    env = {**os.environ, "PROVISION_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    install_log = tmp_path / "install.log"
    with vm_rig("pvi", "10.81.0.1/24") as rig:
        install = rig.start([sys.executable, "-m", "provision", "install", "--inventory", str(inv), "--wait", "300",
                             "--finish-wait", "400", "--linger", "90"], log=install_log, env=env)
        time.sleep(2)
        started = time.monotonic()
        qemu = rig.power_on(Machine("vm1", MAC, rig.tap, serial, Firmware.BIOS, disk=disk, nic_model="e1000e"))
        login = wait_for_prompt(qemu, serial, "vm1 login:", 900, started,
                                lambda: f"\ninstall:\n{serial_text(install_log)[-3000:]}")
        rc = install.wait(timeout=200)
    text = serial_text(serial)
    assert rc == 0, serial_text(install_log)[-3000:]
    seen = phases(text)
    for phase in ("due for install", "partitioned", "cloned", "identity", "bootloader", "done", "rebooting"):
        assert phase in seen, (phase, seen)
    assert re.search(r"modules loaded: \d+; for this machine: e1000e \(at", text), text[-3000:]
    after = text[text.index("provision-installer: rebooting"):]
    assert "provision-installer: initrd up" not in after  # the second boot did not start the installer
    assert "Debian GNU/Linux" in after and "vm1 login:" in after
    print(f"\ninstall (BIOS, e1000e, TCG): QEMU start to `vm1 login:` from its own disk {login:.1f} s; "
          "installer phases (kernel uptime, s): " + ", ".join(f"{k} {v:.1f}" for k, v in seen.items()))


@pytest.mark.vm
def test_vm_not_due_boots_its_disk_untouched(tmp_path):
    """A node whose PXE config still says install while the server says local (a flip that did not reach
    the TFTP root): the installer hears `local`, leaves the disk alone and switch_roots into the disk's
    system (the golden image here, on a snapshot), which comes up to its login prompt."""
    require_vm(Firmware.BIOS, "mmdebstrap")
    initrd, golden = installer_initrd(), golden_image()
    inv_path = tmp_path / "pvi.yaml"
    inv_path.write_text(inventory_text(initrd.kernel.vmlinuz, initrd.path, golden.rootfs, transport="tftp"))
    inv = load_inventory(inv_path)
    rendered = tmp_path / "rendered"
    render_to(rendered, inv)  # vm1 on install boot
    install_boot_files(rendered / "tftpboot", inv.boot)
    serial = tmp_path / "serial.log"
    with vm_rig("pvi", "10.81.0.1/24") as rig:
        serve_boot_files(rig, rendered, tmp_path / "tftp.log")
        serve_http(rig, rendered / "kickstart", tmp_path / "http.log", boot="local")
        started = time.monotonic()
        qemu = rig.power_on(Machine("vm1", MAC, rig.tap, serial, Firmware.BIOS, disk=golden.disk, snapshot=True))
        seconds = wait_for_prompt(qemu, serial, "golden login:", 400, started)
    seen = phases(serial_text(serial))
    assert "not due for install" in seen and "booting the local system on /dev/vda1" in serial_text(serial), seen
    assert "partitioned" not in seen and "rebooting" not in seen, seen
    print(f"\nnot due (BIOS, TCG): QEMU start to the disk's login prompt via switch_root {seconds:.1f} s")
