"""Diskless boot on QEMU machines without a disk (root, TCG; slow): `provision serve` (our dhcpd, TFTP and
HTTP) in the one-VM rig (tests/vm_rig.py); a BIOS machine (pxelinux, files over TFTP) and a UEFI machine (GRUB,
files over HTTP) boot the golden kernel and the diskless initramfs, verify and mount the golden squashfs,
come up as themselves (host name, address, the server's kept host keys: `provision verify`), with golden
files byte for byte; then flipped to install, the same machine's next boot is the installer."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.cli import main
from provision.images.diskless import diskless_image
from provision.images.golden import golden_image
from provision.images.initrd import MARKER, installer_initrd
from provision.lab.qemu import OVMF_VARS, Machine
from provision.model import Firmware
from tests.conftest import REPO
from tests.vm_rig import require_vm, serial_text, vm_rig, wait_for_prompt

MAC = "52:54:00:66:00:21"
ADDRESS = "10.66.0.21"
GOLDEN_FILES = ("/etc/provision-golden", "/usr/sbin/sshd", "/usr/bin/passwd", "/usr/lib/systemd/systemd")


def inventory_text(kernel: Path, initrd: Path, diskless: Path, firmware: Firmware, transport: str, key: Path) -> str:
    return f"""cluster: pvdl
server: {{name: srv, ip: 10.66.0.1}}
network: {{subnet: 10.66.0.0/24}}
boot:
  kernel: {kernel}
  initrd: {initrd}
  append: console=ttyS0,115200
  transport: {transport}
  diskless: {diskless}
images:
  - {{source: /nonexistent/image.raw, target: /dev/vda1}}
nodes:
  - {{name: vm1, mac: "{MAC}", ip: {ADDRESS}, firmware: {firmware}, ssh_authorized_keys: [{key}]}}
"""


def golden_sha256(rootfs: Path, path: str) -> str:
    """sha256 of a file of the golden rootfs.ext4, read with debugfs (no mount)."""
    data = subprocess.run(["debugfs", "-R", f"cat {path}", str(rootfs)], capture_output=True, check=True).stdout
    return hashlib.sha256(data).hexdigest()


def newc_names(archive: bytes) -> list[str]:
    """The entry names of a newc cpio archive."""
    names, offset = [], 0
    while True:
        header = archive[offset:offset + 110]
        namesize, filesize = int(header[94:102], 16), int(header[54:62], 16)
        name = archive[offset + 110:offset + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            return names
        names.append(name)
        offset = (offset + 110 + namesize + 3) // 4 * 4
        offset = (offset + filesize + 3) // 4 * 4


@pytest.mark.vm
def test_diskless_image_holds_the_golden_kernel_root_and_an_initramfs_that_fetches_it(capsys):
    require_vm(Firmware.BIOS, "mmdebstrap", "mksquashfs")
    image, golden = diskless_image(), golden_image()
    assert main(["images", "--diskless"], os.environ) == 0
    assert f"boot.diskless: {image.root.parent}\n" in capsys.readouterr().out  # what the inventory names
    assert image.kernel.read_bytes() == installer_initrd().kernel.vmlinuz.read_bytes() == golden.vmlinuz.read_bytes()
    digest = hashlib.sha256(image.root.read_bytes()).hexdigest()
    assert image.sha256.read_text() == f"{digest}  root.squashfs\n"
    names = newc_names(gzip.decompress(image.initrd.read_bytes()))
    assert {"init", "bin/busybox", "bin/diskless-fetch", "etc/udhcpc.sh"} <= set(names)
    modules = [n for n in names if n.endswith(".ko")]
    for module in ("squashfs.ko", "overlay.ko", "loop.ko", "virtio_net.ko", "e1000.ko", "igb.ko"):
        assert any(n.endswith("/" + module) for n in modules), modules
    assert not any("nvme" in n or "megaraid" in n for n in names)  # no disk drivers


@pytest.mark.vm
@pytest.mark.parametrize("firmware", list(Firmware), ids=[f.value for f in Firmware])
def test_vm_diskless_boot_then_flip_to_install(tmp_path, firmware):
    require_vm(firmware, "mmdebstrap", "mksquashfs", "ssh-keygen", "debugfs")
    image, initrd, golden = diskless_image(), installer_initrd(), golden_image()
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    transport = "http" if firmware is Firmware.UEFI else "tftp"
    inventory = tmp_path / "pvdl.yaml"
    inventory.write_text(inventory_text(initrd.kernel.vmlinuz, initrd.path, image.root.parent, firmware, transport,
                                        key.with_suffix(".pub")))
    env = {**os.environ, "PROVISION_STATE_DIR": str(tmp_path / "state")}
    assert main(["flip-to-diskless", "--inventory", str(inventory), "vm1"], env) == 0
    efi_vars = None
    if firmware is Firmware.UEFI:
        efi_vars = tmp_path / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, efi_vars)
    with vm_rig("pvdl", "10.66.0.1/24") as rig:
        def provision(*args: str) -> subprocess.CompletedProcess[str]:
            return rig.net.run(rig.server, [sys.executable, "-m", "provision", *args, "--inventory", str(inventory)],
                               check=False, env=env, cwd=REPO, timeout=300)
        rig.cleanups.append(lambda: provision("dhcp", "stop"))
        serve_log = tmp_path / "serve.log"
        rig.start([sys.executable, "-m", "provision", "serve", "-v", "--inventory", str(inventory)], log=serve_log,
                  env=env)
        deadline = time.monotonic() + 60
        while "SIGINT or SIGTERM ends" not in serial_text(serve_log):
            assert time.monotonic() < deadline, serial_text(serve_log)
            time.sleep(0.2)

        serial = tmp_path / "diskless.log"
        started = time.monotonic()
        qemu = rig.power_on(Machine("vm1", MAC, rig.tap, serial, firmware, efi_vars=efi_vars, memory_mib=1024))
        login = wait_for_prompt(qemu, serial, "vm1 login:", 600, started, lambda: serial_text(serve_log)[-3000:])
        verify = provision("verify", "--key", str(key))
        verified = time.monotonic() - started
        assert verify.returncode == 0 and "1 of 1 node(s) verified" in verify.stdout, verify.stdout + verify.stderr
        known_hosts = tmp_path / "state" / "clusters" / "pvdl" / "known_hosts"  # the server's kept keys only
        ssh = rig.net.run(rig.server, ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                                       "-o", f"UserKnownHostsFile={known_hosts}", f"root@{ADDRESS}",
                                       f"sha256sum {' '.join(GOLDEN_FILES)}; findmnt -no FSTYPE /; ls /sys/block"],
                          check=False, timeout=120)
        assert ssh.returncode == 0, ssh.stdout + ssh.stderr
        lines = ssh.stdout.splitlines()
        sums = {path: digest for digest, path in (line.split() for line in lines if line.endswith(GOLDEN_FILES))}
        assert sums == {path: golden_sha256(golden.rootfs, path) for path in GOLDEN_FILES}, ssh.stdout
        assert "overlay" in lines and all(re.fullmatch(r"loop\d+", name) for name in lines[lines.index("overlay") + 1:]), \
            ssh.stdout  # the root is the overlay; the only block devices are loops (the squashfs)
        console = serial_text(serial)
        assert "provision-diskless: image verified (sha256 " + image.sha256.read_text().split()[0] in console
        qemu.kill()
        qemu.wait()

        flipped = provision("flip-to-install", "vm1")
        assert flipped.returncode == 0 and "dhcpd restarted" in flipped.stdout, flipped.stdout + flipped.stderr
        serial = tmp_path / "install.log"
        started = time.monotonic()
        qemu = rig.power_on(Machine("vm1", MAC, rig.tap, serial, firmware, efi_vars=efi_vars, memory_mib=1024))
        installer = wait_for_prompt(qemu, serial, MARKER, 600, started, lambda: serial_text(serve_log)[-3000:])
        assert "provision-diskless" not in serial_text(serial)
    print(f"\ndiskless ({firmware}, kernel over {transport}, TCG): power-on to login {login:.1f} s, to verified "
          f"{verified:.1f} s; after flip-to-install, power-on to the installer {installer:.1f} s")
