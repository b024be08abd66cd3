"""The initrd installer's parts that need no VM: the kernel line, the disk plan from a rendered kickstart
(read back by busybox fdisk), file system commands, the %post's phase lines, its busybox report
route, and GRUB placement on a disk image with this machine's GRUB images."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from provision.errors import ProvisionError
from provision.installer import (MIB_SECTORS, bootloader_main, ext_label, format_commands, install_bootloader,
                                 mbr, parse_cmdline, partition_device, plan_disk, post_phase, post_scripts,
                                 read_kickstart)
from provision.inventory import load_inventory
from provision.render import render_files

CMDLINE = ("BOOT_IMAGE=boot/vmlinuz-6.1.0-56-amd64 inst.ks=http://10.78.0.1:8080/kickstart/n01.ks "
           "provision.boot_url=http://10.78.0.1:8080/api/nodes/n01/boot ip=dhcp console=ttyS0,115200 "
           "BOOTIF=01-02-78-00-00-00-01\n")

INVENTORY = """cluster: pvi
server: {name: srv, ip: 10.79.0.1}
network: {subnet: 10.79.0.0/24}
boot: {kernel: /nonexistent/vmlinuz, initrd: /nonexistent/initrd.img}
images:
  - {source: /nonexistent/rootfs.ext4, target: /dev/vda1}
defaults:
  os_family: debian
  bootloader: grub2
  disk:
    device: vda
    partitions:
      - {mount: /, fstype: ext4, size: 1600, grow: true, label: root}
      - {mount: /boot/efi, fstype: vfat, size: 64, label: EFI}
nodes:
  - {name: n01, mac: "02:79:00:00:00:01", ip: 10.79.0.11}
"""
DISK_SECTORS = 4 << 21  # 4 GiB


@pytest.fixture
def kickstart(tmp_path) -> str:
    path = tmp_path / "pvi.yaml"
    path.write_text(INVENTORY)
    return render_files(load_inventory(path))["kickstart/n01.ks"]


def test_cmdline():
    cmd = parse_cmdline(CMDLINE)
    assert cmd.kickstart_url == "http://10.78.0.1:8080/kickstart/n01.ks"
    assert cmd.boot_url == "http://10.78.0.1:8080/api/nodes/n01/boot"
    assert cmd.bootif == "02:78:00:00:00:01"
    assert parse_cmdline("ks=http://s/x.ks").boot_url is None
    with pytest.raises(ProvisionError, match="no inst.ks="):
        parse_cmdline("console=ttyS0 inst.ks=/local/file.ks")


def test_partition_device_names():
    assert partition_device("/dev/vda", 1) == "/dev/vda1"
    assert partition_device("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"


def test_plan_from_rendered_kickstart(kickstart):
    plan = plan_disk(read_kickstart(kickstart), DISK_SECTORS)
    root, esp = plan.partitions
    assert plan.disk == "/dev/vda"
    assert (root.device, root.start, root.kind, root.label) == ("/dev/vda1", MIB_SECTORS, 0x83, "root")
    assert (esp.device, esp.sectors, esp.kind, esp.is_esp) == ("/dev/vda2", 64 * MIB_SECTORS, 0xEF, True)
    assert root.sectors == (4096 - 1 - 64) * MIB_SECTORS  # grows to the disk's end minus the ESP
    assert esp.start + esp.sectors == DISK_SECTORS
    assert format_commands(plan) == [["mkdosfs", "-n", "EFI", "/dev/vda2"]]  # / is left to the ring
    with pytest.raises(ProvisionError, match="need 1664 MiB, the disk has 1023 MiB"):
        plan_disk(read_kickstart(kickstart), 1 << 21)


def test_mbr_reads_back_with_fdisk(kickstart, tmp_path):
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not installed")
    plan = plan_disk(read_kickstart(kickstart), DISK_SECTORS)
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as out:
        out.truncate(DISK_SECTORS * 512)
        out.write(mbr(plan))
    listing = subprocess.run([busybox, "fdisk", "-l", str(disk)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in listing.splitlines() if line.startswith(str(disk))]
    # device [*] start-CHS end-CHS start-LBA end-LBA sectors size id type
    fields = [(r[1] == "*", r[2:] if r[1] == "*" else r[1:]) for r in rows]
    assert [(boot, int(f[2]), int(f[4]), f[6]) for boot, f in fields] == [
        (True, MIB_SECTORS, plan.partitions[0].sectors, "83"),
        (False, plan.partitions[1].start, 64 * MIB_SECTORS, "ef")]


def test_other_file_systems_are_refused(kickstart):
    text = kickstart.replace("part /boot/efi --fstype=vfat", "part /var --fstype=xfs")
    with pytest.raises(ProvisionError, match="cannot make xfs"):
        format_commands(plan_disk(read_kickstart(text), DISK_SECTORS))
    swap = kickstart.replace("part /boot/efi --fstype=vfat --size=64", "part swap --fstype=swap --size=64")
    assert format_commands(plan_disk(read_kickstart(swap), DISK_SECTORS)) == [["mkswap", "-L", "EFI", "/dev/vda2"]]


def test_post_script_and_its_phase_lines(kickstart):
    (script,) = post_scripts(read_kickstart(kickstart))
    assert (script.interpreter, script.in_chroot, script.error_on_fail) == ("/bin/bash", False, True)
    assert 'dollyC -v --root "${DOLLY_ROOT:-$SYSIMAGE}"' in script.script
    assert 'mount "$PROVISION_ROOT_DEVICE" "$SYSIMAGE"' in script.script
    assert 'provision-bootloader "$SYSIMAGE" /dev/vda' in script.script
    assert post_phase("provision: report cloning: image received; writing the identity of n01\n") == "cloned"
    assert post_phase("provision: identity written (hostname, hosts, network, fstab, keys)") == "identity"
    assert post_phase("dollyC: chunk 3") is None


class _Recorder(http.server.BaseHTTPRequestHandler):
    posts: list[tuple[str, str, bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_report_without_curl_posts_with_busybox_wget(kickstart, tmp_path):
    """The %post's report() on a machine without curl (the installer initrd): busybox wget POSTs the JSON."""
    busybox = shutil.which("busybox")
    bash = shutil.which("bash")
    if busybox is None or bash is None:
        pytest.skip("needs busybox and bash")
    tools = tmp_path / "bin"
    tools.mkdir()
    for applet in ("wget", "tr", "printf", "sleep", "timeout"):
        os.symlink(busybox, tools / applet)
    (script,) = post_scripts(read_kickstart(kickstart))
    report = script.script[script.script.index("report() {"):script.script.index("trap ")]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/nodes/n01/state"
        proc = subprocess.run([bash, "-c", f'{report}\nREPORT_URL={url}\nreport cloning "say \\"hi\\""'],
                              env={"PATH": str(tools)}, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "provision: report cloning: say hi\n"
    assert _Recorder.posts == [("/api/nodes/n01/state", "application/json",
                                b'{"state": "cloning", "message": "say hi"}')]


def test_bootloader_from_the_clone_images(tmp_path, kickstart):
    """BIOS GRUB from a clone's /boot/grub/i386-pc lands in the MBR gap, the partition table stays."""
    grub = Path("/usr/lib/grub/i386-pc")
    if shutil.which("grub-mkimage") is None or not (grub / "boot.img").is_file():
        pytest.skip("needs grub-mkimage and GRUB's i386-pc files (grub-pc-bin)")
    clone = tmp_path / "sysimage"
    (clone / "boot/grub/i386-pc").mkdir(parents=True)
    shutil.copyfile(grub / "boot.img", clone / "boot/grub/i386-pc/boot.img")
    subprocess.run(["grub-mkimage", "-O", "i386-pc", "-d", str(grub), "-p", "(hd0,msdos1)/boot/grub",
                    "-o", str(clone / "boot/grub/i386-pc/core.img"), "biosdisk", "part_msdos", "ext2"], check=True)
    plan = plan_disk(read_kickstart(kickstart), DISK_SECTORS)
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as out:
        out.truncate(DISK_SECTORS * 512)
        out.write(mbr(plan))
    assert install_bootloader(clone, str(disk), None) == [f"BIOS GRUB in {disk}"]
    written = disk.read_bytes()[:MIB_SECTORS * 512]
    core = (clone / "boot/grub/i386-pc/core.img").read_bytes()
    assert written[:440] == (grub / "boot.img").read_bytes()[:440]
    assert written[446:512] == mbr(plan)[446:512]
    assert written[512:512 + len(core)] == core
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProvisionError, match="no GRUB images"):
        bootloader_main([str(empty), str(disk)])


def test_ext_label_read_from_the_superblock(tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4 (e2fsprogs)")
    image = tmp_path / "fs.img"
    subprocess.run(["mkfs.ext4", "-q", "-L", "root", "-F", str(image), "8M"], check=True)
    assert ext_label(str(image)) == "root"
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4096))
    assert ext_label(str(blank)) is None and ext_label(str(tmp_path / "missing")) is None
