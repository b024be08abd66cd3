"""The initrd installer's parts that need no VM: the kernel line, the disk plan from a rendered kickstart
(MBR read back by busybox fdisk, GPT by sfdisk, sgdisk and fdisk), file systems made and grown by the real
e2fsprogs on sparse files, the %post's phase lines, its busybox report route, and GRUB placement on a disk
image with this machine's GRUB images."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from provision.errors import ProvisionError
from provision.images import gpt
from provision.images.bootsector import bios_grub_at, write_bios_grub_gpt
from provision.installer import (
    MIB_SECTORS,
    BootTarget,
    bootloader_main,
    ext_blocks,
    ext_label,
    format_commands,
    gpt_core_command,
    grow,
    grow_main,
    install_bootloader,
    mbr,
    parse_cmdline,
    partition_device,
    partition_table,
    plan_disk,
    post_phase,
    post_scripts,
    read_ext_blocks,
    read_kickstart,
)
from provision.inventory import FSTYPES, load_inventory, numbered_partitions, partition_number
from provision.model import BIOSBOOT
from provision.render import render_files
from tests.conftest import require_tool

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
  - {name: n02, mac: "02:79:00:00:00:02", ip: 10.79.0.12, firmware: uefi}
"""
DISK_SECTORS = 4 << 21  # 4 GiB
DISK_GUID = uuid.UUID("5b0c8a0e-3d4e-4a51-9b7e-0f6c2d9a1e01")


@pytest.fixture
def kickstarts(tmp_path) -> dict[str, str]:
    path = tmp_path / "pvi.yaml"
    path.write_text(INVENTORY)
    files = render_files(load_inventory(path))
    return {name: files[f"kickstart/{name}.ks"] for name in ("n01", "n02")}


@pytest.fixture
def kickstart(kickstarts) -> str:
    """The BIOS node's kickstart (clearpart --disklabel=msdos)."""
    return kickstarts["n01"]


def write_tables(path: Path, plan) -> None:
    tables = partition_table(plan, DISK_GUID)
    with open(path, "wb") as out:
        out.truncate(plan.sectors * 512)
        out.write(tables.head)
        out.seek((plan.sectors - tables.tail_sectors) * 512)
        out.write(tables.tail)


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
    plan = plan_disk(read_kickstart(kickstart), DISK_SECTORS, uefi=True)  # the kickstart says msdos
    root, esp = plan.partitions
    assert (plan.disk, plan.label) == ("/dev/vda", "msdos")
    assert (root.device, root.start, root.role, root.label) == ("/dev/vda1", MIB_SECTORS, "linux", "root")
    assert (esp.device, esp.sectors, esp.role, esp.is_esp) == ("/dev/vda2", 64 * MIB_SECTORS, "esp", True)
    assert root.sectors == (4096 - 1 - 64) * MIB_SECTORS  # grows to the disk's end minus the ESP
    assert esp.start + esp.sectors == DISK_SECTORS
    assert format_commands(plan) == [["mkdosfs", "-n", "EFI", "/dev/vda2"]]  # / is left to the ring
    with pytest.raises(ProvisionError, match="need 1664 MiB, the disk has 1023 MiB"):
        plan_disk(read_kickstart(kickstart), 1 << 21, uefi=False)


def test_disk_label_from_kickstart_else_firmware(kickstarts):
    uefi_plan = plan_disk(read_kickstart(kickstarts["n02"]), DISK_SECTORS, uefi=True)
    assert uefi_plan.label == "gpt"
    root, esp = uefi_plan.partitions
    # the backup GPT takes the last 33 sectors: the grown root ends a whole MiB earlier than on an MBR disk
    assert root.sectors == (4096 - 2 - 64) * MIB_SECTORS
    assert esp.start + esp.sectors <= gpt.usable_lbas(DISK_SECTORS)[1] + 1
    unsaid = kickstarts["n01"].replace(" --disklabel=msdos", "")
    assert plan_disk(read_kickstart(unsaid), DISK_SECTORS, uefi=True).label == "gpt"
    assert plan_disk(read_kickstart(unsaid), DISK_SECTORS, uefi=False).label == "msdos"


def test_gpt_on_bios_needs_a_biosboot_partition(kickstarts):
    text = kickstarts["n02"]  # --disklabel=gpt
    with pytest.raises(ProvisionError, match=r"BIOS machine needs GRUB's core.img in a biosboot partition "
                       r"\(part biosboot --fstype=biosboot --size=1\), and the kickstart has none"):
        plan_disk(read_kickstart(text), DISK_SECTORS, uefi=False)
    biosboot = text.replace("part / ", "part biosboot --fstype=biosboot --size=1 --ondisk=vda\npart / ")
    plan = plan_disk(read_kickstart(biosboot), DISK_SECTORS, uefi=False)
    assert (plan.biosboot.number, plan.biosboot.start, plan.biosboot.sectors) == (1, MIB_SECTORS, MIB_SECTORS)
    assert BootTarget.of(plan) == BootTarget("/dev/vda3", True, (MIB_SECTORS, MIB_SECTORS), 2)
    assert "biosboot" not in str(format_commands(plan))
    on_mbr = plan_disk(read_kickstart(biosboot.replace("--disklabel=gpt", "--disklabel=msdos")), DISK_SECTORS,
                       uefi=False)
    assert [p.mount for p in on_mbr.partitions] == ["/", "/boot/efi"]  # GRUB uses the MBR gap instead
    unbooted = text.replace("bootloader --location=mbr --boot-drive=vda", "bootloader --location=none")
    assert plan_disk(read_kickstart(unbooted), DISK_SECTORS, uefi=False).label == "gpt"


def test_gpt_reads_back_with_sfdisk_sgdisk_and_fdisk(kickstarts, tmp_path):
    """The written GPT as util-linux and gdisk see it: types, names, places, both headers and their CRCs."""
    sfdisk, sgdisk, fdisk = require_tool("sfdisk"), require_tool("sgdisk"), require_tool("fdisk")
    text = kickstarts["n02"].replace("part / ", "part swap --fstype=swap --size=16 --ondisk=vda --label=swap\n"
                                                "part biosboot --fstype=biosboot --size=1 --ondisk=vda\npart / ")
    plan = plan_disk(read_kickstart(text), DISK_SECTORS, uefi=True)
    disk = tmp_path / "disk.raw"
    write_tables(disk, plan)
    dump = json.loads(subprocess.run([sfdisk, "--json", str(disk)], capture_output=True, text=True,
                                     check=True).stdout)["partitiontable"]
    assert (dump["label"], dump["id"].lower(), dump["firstlba"], dump["lastlba"]) == (
        "gpt", str(DISK_GUID), 34, DISK_SECTORS - 34)
    assert [(p["node"], p["start"], p["size"], p["type"].lower(), p.get("name")) for p in dump["partitions"]] == [
        (f"{disk}1", MIB_SECTORS, 16 * MIB_SECTORS, str(gpt.LINUX_SWAP).lower(), "swap"),
        (f"{disk}2", 17 * MIB_SECTORS, MIB_SECTORS, str(gpt.BIOS_BOOT).lower(), None),
        (f"{disk}3", 18 * MIB_SECTORS, plan.partitions[2].sectors, str(gpt.LINUX_FS).lower(), "root"),
        (f"{disk}4", plan.partitions[3].start, 64 * MIB_SECTORS, str(gpt.ESP).lower(), "EFI")]
    assert len({p["uuid"] for p in dump["partitions"]}) == 4
    verify = subprocess.run([sgdisk, "-v", str(disk)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and "No problems found" in verify.stdout, verify.stdout + verify.stderr
    listing = subprocess.run([fdisk, "-l", str(disk)], capture_output=True, text=True, check=True).stdout
    assert "Disklabel type: gpt" in listing and "EFI System" in listing and "BIOS boot" in listing
    assert "corrupt" not in listing.lower() and "mismatch" not in listing.lower()


def test_gpt_tables_refuse_bad_layouts():
    part = gpt.GptPartition(2048, 2048, gpt.LINUX_FS, uuid.uuid4(), "x" * 37)
    with pytest.raises(ValueError, match="longer than 36"):
        gpt.gpt_tables(DISK_SECTORS, [part], DISK_GUID)
    with pytest.raises(ValueError, match="outside 34-"):
        gpt.gpt_tables(DISK_SECTORS, [gpt.GptPartition(DISK_SECTORS - 40, 20, gpt.LINUX_FS, uuid.uuid4())],
                       DISK_GUID)
    with pytest.raises(ValueError, match="overlaps"):
        gpt.gpt_tables(DISK_SECTORS, [gpt.GptPartition(2048, 4096, gpt.LINUX_FS, uuid.uuid4()),
                                      gpt.GptPartition(4096, 2048, gpt.LINUX_FS, uuid.uuid4())], DISK_GUID)


def test_mbr_disk_clears_a_stale_gpt(kickstarts, tmp_path):
    """An MBR written over a GPT disk leaves no GPT behind (primary and backup zeroed)."""
    sfdisk = require_tool("sfdisk")
    disk = tmp_path / "disk.raw"
    write_tables(disk, plan_disk(read_kickstart(kickstarts["n02"]), DISK_SECTORS, uefi=True))
    plan = plan_disk(read_kickstart(kickstarts["n01"]), DISK_SECTORS, uefi=True)
    tables = partition_table(plan, DISK_GUID)
    with open(disk, "r+b") as out:
        out.write(tables.head.ljust(MIB_SECTORS * 512, b"\0"))
        out.seek((DISK_SECTORS - tables.tail_sectors) * 512)
        out.write(tables.tail)
    dump = json.loads(subprocess.run([sfdisk, "--json", str(disk)], capture_output=True, text=True,
                                     check=True).stdout)["partitiontable"]
    assert dump["label"] == "dos" and [p["type"] for p in dump["partitions"]] == ["83", "ef"]
    assert b"EFI PART" not in disk.read_bytes()[-33 * 512:]


def test_mbr_reads_back_with_fdisk(kickstart, tmp_path):
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not installed")
    plan = plan_disk(read_kickstart(kickstart), DISK_SECTORS, uefi=False)
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


@pytest.mark.parametrize("old, new, message", [
    ("part /boot/efi --fstype=vfat", "part /var --fstype=xfs",
     r"part /var \(/dev/vda2\): the installer cannot make xfs"),
    ("part /boot/efi --fstype=vfat", "part /srv --fstype=jfs", r"part /srv \(/dev/vda2\): the installer cannot make "
     r"jfs \(it makes ext4, ext3, ext2, vfat and swap"),  # btrfs: pykickstart's RHEL 9 syntax refuses it itself
    ("part / --fstype=ext4", "part / --fstype=xfs", r"part / \(/dev/vda1\): the root receives the image and is "
     r"mounted and grown as ext4, ext3 or ext2 \(the installer's kernel has no xfs\)"),
])
def test_a_file_system_the_installer_cannot_make_or_mount_is_refused_by_the_plan(kickstart, old, new, message):
    """Refused when the disk is planned, before its table is written (partition() writes it, then formats)."""
    assert old in kickstart
    with pytest.raises(ProvisionError, match=message):
        plan_disk(read_kickstart(kickstart.replace(old, new)), DISK_SECTORS, uefi=False)


def test_a_kickstart_pykickstart_refuses_is_a_provision_error_naming_it(kickstart):
    """btrfs (RHEL 9 syntax has none) reaches the installer's FAILED line, not a traceback."""
    with pytest.raises(ProvisionError, match=r"^http://srv/ks/n01.ks: The following problem occurred on line \d+ of the kickstart file: Btrfs file system is not supported$"):
        read_kickstart(kickstart.replace("part / --fstype=ext4", "part / --fstype=btrfs"), "http://srv/ks/n01.ks")


def test_the_installer_makes_every_file_system_the_inventory_accepts(kickstart):
    for fstype in FSTYPES:
        mount = {"swap": "swap", BIOSBOOT: BIOSBOOT}.get(fstype, "/x")
        part = f"part {mount} --fstype={fstype} --size=64"
        text = kickstart.replace("part /boot/efi --fstype=vfat --size=64", part).replace("=msdos", "=gpt")
        plan = plan_disk(read_kickstart(text), DISK_SECTORS, uefi=True)
        assert len(format_commands(plan)) == (0 if fstype == BIOSBOOT else 1), fstype
        if fstype.startswith("ext"):
            root = kickstart.replace("part / --fstype=ext4", f"part / --fstype={fstype}")
            assert plan_disk(read_kickstart(root), DISK_SECTORS, uefi=False).mounted_at("/").fstype == fstype


def test_inventory_and_installer_number_partitions_alike(tmp_path):
    """A raw image target /dev/<disk>N means the same partition to the inventory's check and to the installer's
    plan of the rendered kickstart (kickstart order; on GPT a biosboot part counts; nvme names take a `p`)."""
    nodes = """nodes:
  - {name: n01, mac: "02:79:00:00:00:01", ip: 10.79.0.11, disk: {label: gpt, partitions: [{fstype: biosboot},
      {mount: swap, fstype: swap, size: 16}, {mount: /, fstype: ext4, size: 512, grow: true},
      {mount: /boot/efi, fstype: vfat, size: 64}, {mount: /data, fstype: ext3, size: 64}]}}
  - {name: n02, mac: "02:79:00:00:00:02", ip: 10.79.0.12, firmware: uefi, disk: {device: nvme0n1, partitions: [
      {mount: /boot/efi, fstype: vfat, size: 64}, {mount: /, fstype: ext4, size: 512}]}}
  - {name: n03, mac: "02:79:00:00:00:03", ip: 10.79.0.13}
"""
    path = tmp_path / "numbers.yaml"
    path.write_text(INVENTORY.split("nodes:")[0] + nodes)
    inv = load_inventory(path)
    files = render_files(inv)
    for node in inv.nodes:
        plan = plan_disk(read_kickstart(files[f"kickstart/{node.name}.ks"]), DISK_SECTORS,
                         uefi=node.firmware == "uefi")
        numbered = numbered_partitions(node.disk, node.disk_label)
        assert len(plan.partitions) == len(numbered) == len(node.disk.partitions)
        for planned in plan.partitions:
            number = partition_number(node.disk.device, planned.device)
            assert number == planned.number
            assert numbered[number - 1][1].mount == planned.mount
        beyond = partition_device(plan.disk, len(plan.partitions) + 1)
        assert partition_number(node.disk.device, beyond) == len(numbered) + 1
    assert partition_number("nvme0n1", "/dev/nvme0n12") is None  # another namespace, not a partition
    assert partition_number("sda", "/dev/sdab1") is None and partition_number("sda", "/dev/sda01") is None


def test_file_system_commands(kickstart):
    swap = kickstart.replace("part /boot/efi --fstype=vfat --size=64", "part swap --fstype=swap --size=64")
    assert format_commands(plan_disk(read_kickstart(swap), DISK_SECTORS, uefi=False)) == [
        ["mkswap", "-L", "EFI", "/dev/vda2"]]
    home = kickstart.replace("part /boot/efi --fstype=vfat", "part /home --fstype=ext3")
    assert format_commands(plan_disk(read_kickstart(home), DISK_SECTORS, uefi=False)) == [
        ["mke2fs", "-t", "ext3", "-F", "-q", "-L", "EFI", "/dev/vda2"]]


@pytest.mark.parametrize("fstype", ["ext4", "ext3", "ext2"])
def test_ext_file_systems_made_by_e2fsprogs_on_a_sparse_file(kickstart, tmp_path, fstype):
    """The planned mke2fs command, run for real with a sparse file in place of the partition."""
    require_tool("mke2fs")
    text = kickstart.replace("part /boot/efi --fstype=vfat --size=64", f"part /srv --fstype={fstype} --size=64")
    (argv,) = format_commands(plan_disk(read_kickstart(text), DISK_SECTORS, uefi=False))
    device = tmp_path / "part.img"
    with open(device, "wb") as out:
        out.truncate(64 << 20)
    subprocess.run([*argv[:-1], str(device)], check=True, capture_output=True)
    blocks, block_size = read_ext_blocks(str(device))
    assert ext_label(str(device)) == "EFI" and blocks * block_size == 64 << 20
    kind = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", str(device)], capture_output=True, text=True,
                          check=True)
    assert kind.stdout.strip() == fstype


def test_grow_fills_the_partition_with_e2fsck_and_resize2fs(tmp_path, capsys):
    """A received ext4 image (64 MiB, with files) on a bigger partition (a 300 MiB sparse file) grows to
    fill it; the files stay and e2fsck finds it clean; anything else is left alone."""
    for tool in ("mkfs.ext4", "e2fsck", "resize2fs", "debugfs"):
        require_tool(tool)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "marker").write_text("golden\n")
    part = tmp_path / "vda1"
    subprocess.run(["mkfs.ext4", "-q", "-b", "4096", "-L", "root", "-d", str(tree), "-F", str(part), "64M"], check=True)
    assert read_ext_blocks(str(part)) == (64 * 256, 4096)
    with open(part, "r+b") as out:
        out.truncate(300 << 20)
    assert grow(str(part)) == f"grown {part}: 64 MiB -> 300 MiB"
    assert read_ext_blocks(str(part)) == (300 * 256, 4096) and ext_label(str(part)) == "root"
    subprocess.run(["e2fsck", "-fn", str(part)], check=True, capture_output=True)
    cat = subprocess.run(["debugfs", "-R", "cat /etc/marker", str(part)], capture_output=True, text=True,
                         check=True)
    assert cat.stdout == "golden\n"
    blank = tmp_path / "blank"
    blank.write_bytes(bytes(1 << 20))
    assert grow_main([str(blank)]) == 0
    assert f"{blank}: no ext2/3/4 file system, left as it is" in capsys.readouterr().out
    assert ext_blocks(bytes(2048)) is None


def test_grow_fails_on_an_image_bigger_than_its_partition(tmp_path, capsys):
    require_tool("e2fsck")
    part = tmp_path / "vda1"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(part), "16M"], check=True, capture_output=True)
    with open(part, "r+b") as out:  # the image's second half did not fit
        out.truncate(8 << 20)
    assert grow_main([str(part)]) == 1
    assert "FAILED: `e2fsck -f -y" in capsys.readouterr().out


def test_post_script_and_its_phase_lines(kickstart):
    (script,) = post_scripts(read_kickstart(kickstart))
    assert (script.interpreter, script.in_chroot, script.error_on_fail) == ("/bin/bash", False, True)
    assert 'dollyC -v --root "${DOLLY_ROOT:-$SYSIMAGE}"' in script.script
    assert 'mount "$PROVISION_ROOT_DEVICE" "$SYSIMAGE"' in script.script
    assert 'provision-bootloader "$SYSIMAGE" /dev/vda' in script.script
    received = script.script.index('wait "$dolly_pid"')
    grow_at = script.script.index('provision-grow "${grow_root%/}/dev/vda1"')
    assert received < grow_at < script.script.index('mount "$PROVISION_ROOT_DEVICE" "$SYSIMAGE"')
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
    plan = plan_disk(read_kickstart(kickstart), DISK_SECTORS, uefi=False)
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as out:
        out.truncate(DISK_SECTORS * 512)
        out.write(mbr(plan))
    assert install_bootloader(clone, str(disk)) == [f"BIOS GRUB in {disk}"]
    written = disk.read_bytes()[:MIB_SECTORS * 512]
    core = (clone / "boot/grub/i386-pc/core.img").read_bytes()
    boot = (grub / "boot.img").read_bytes()
    assert written[:440] == boot[:440]
    assert written[446:512] == mbr(plan)[446:512]
    assert written[512:512 + len(core)] == core
    # the two pointers grub-setup patches hold grub-mkimage's defaults for core.img at LBA 1
    assert bios_grub_at(boot, core, 1) == (boot[:440], core)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProvisionError, match="no GRUB images"):
        bootloader_main([str(empty), str(disk)])
    gpt_disk = tmp_path / "gpt.raw"  # BIOS GRUB would overwrite the GPT header: left out there
    write_tables(gpt_disk, plan_disk(read_kickstart(kickstart.replace("=msdos", "=gpt")), DISK_SECTORS, uefi=True))
    before = gpt_disk.read_bytes()[:MIB_SECTORS * 512]
    with pytest.raises(ProvisionError, match=r"for this GPT disk \(BIOS GRUB needs a biosboot partition\)"):
        install_bootloader(clone, str(gpt_disk), BootTarget(gpt=True))
    assert gpt_disk.read_bytes()[:MIB_SECTORS * 512] == before


def test_bios_grub_into_a_gpt_biosboot_partition(tmp_path, kickstart):
    """boot.img in the protective MBR points at core.img in the biosboot partition, core.img's block list
    at its own second sector; the GPT stays valid (sgdisk -v)."""
    sgdisk = require_tool("sgdisk")
    grub = Path("/usr/lib/grub/i386-pc")
    if shutil.which("grub-mkimage") is None or not (grub / "boot.img").is_file():
        pytest.skip("needs grub-mkimage and GRUB's i386-pc files (grub-pc-bin)")
    core_img = tmp_path / "core.img"
    subprocess.run([*gpt_core_command(2, str(core_img))[:4], str(grub), *gpt_core_command(2, str(core_img))[5:]],
                   check=True)
    text = kickstart.replace("=msdos", "=gpt").replace(
        "part / ", "part biosboot --fstype=biosboot --size=1 --ondisk=vda\npart / ")
    plan = plan_disk(read_kickstart(text), DISK_SECTORS, uefi=False)
    disk = tmp_path / "disk.raw"
    write_tables(disk, plan)
    boot, core = (grub / "boot.img").read_bytes(), core_img.read_bytes()
    with open(disk, "r+b") as out:
        write_bios_grub_gpt(out, boot, core, *BootTarget.of(plan).biosboot)
    written = disk.read_bytes()
    assert written[:440] == boot[:0x5C] + MIB_SECTORS.to_bytes(8, "little") + boot[0x64:440]
    assert written[440:512] == partition_table(plan, DISK_GUID).head[440:512]
    placed = written[MIB_SECTORS * 512:MIB_SECTORS * 512 + len(core)]
    assert placed == core[:500] + (MIB_SECTORS + 1).to_bytes(8, "little") + core[508:]
    verify = subprocess.run([sgdisk, "-v", str(disk)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and "No problems found" in verify.stdout, verify.stdout
    with pytest.raises(ProvisionError, match="does not fit the BIOS boot partition"):
        with open(disk, "r+b") as out:
            write_bios_grub_gpt(out, boot, core, MIB_SECTORS, 8)
    mbr_disk = tmp_path / "mbr.raw"
    mbr_disk.write_bytes(mbr(plan_disk(read_kickstart(kickstart), DISK_SECTORS, uefi=False)))
    with pytest.raises(ProvisionError, match="no GPT"), open(mbr_disk, "r+b") as out:
        write_bios_grub_gpt(out, boot, core, MIB_SECTORS, MIB_SECTORS)


def test_ext_label_read_from_the_superblock(tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4 (e2fsprogs)")
    image = tmp_path / "fs.img"
    subprocess.run(["mkfs.ext4", "-q", "-L", "root", "-F", str(image), "8M"], check=True)
    assert ext_label(str(image)) == "root"
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4096))
    assert ext_label(str(blank)) is None and ext_label(str(tmp_path / "missing")) is None
