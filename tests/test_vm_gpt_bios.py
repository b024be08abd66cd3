"""A BIOS machine on a GPT disk: the installer's GPT with a biosboot partition, the golden root file system
grown to fill its partition, GRUB for GPT made by the clone's own grub-mkimage (chroot into the mounted
clone) and placed in the biosboot partition; then SeaBIOS boots that disk under TCG to the clone's login
prompt (root found by its label on the GPT partition). No network: QEMU runs in an empty namespace."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid

import pytest

from provision.images.golden import golden_image
from provision.installer import (MIB_SECTORS, BootTarget, grow, install_bootloader, partition_table, plan_disk,
                                 read_kickstart)
from tests.conftest import require_root, require_tool
from tests.vm_rig import boot_disk_to_prompt

pytestmark = [pytest.mark.vm, pytest.mark.root]

KICKSTART = """text
reboot
rootpw --lock
zerombr
clearpart --all --initlabel --drives=vda --disklabel=gpt
part biosboot --fstype=biosboot --size=1 --ondisk=vda
part / --fstype=ext4 --size=1600 --grow --ondisk=vda --label=root
bootloader --location=mbr --boot-drive=vda
"""
DISK_SECTORS = 3 << 21  # 3 GiB


def test_bios_machine_boots_a_grown_clone_from_a_gpt_disk(tmp_path):
    require_root()
    for tool in ("qemu-system-x86_64", "sgdisk", "e2fsck", "resize2fs", "mount", "dd"):
        require_tool(tool)
    golden = golden_image()
    plan = plan_disk(read_kickstart(KICKSTART), DISK_SECTORS, uefi=False)
    biosboot, root = plan.partitions
    assert (plan.label, biosboot.role, root.mount) == ("gpt", "biosboot", "/")
    disk = tmp_path / "disk.raw"
    tables = partition_table(plan, uuid.uuid4())
    with open(disk, "wb") as out:
        out.truncate(DISK_SECTORS * 512)
        out.write(tables.head)
        out.seek((DISK_SECTORS - tables.tail_sectors) * 512)
        out.write(tables.tail)

    # the ring's work, then the installer's grow: the golden file system on a partition-sized file
    part = tmp_path / "root.part"
    subprocess.run(["cp", "--sparse=always", str(golden.rootfs), str(part)], check=True)
    with open(part, "r+b") as out:
        out.truncate(root.sectors * 512)
    assert grow(str(part)) == f"grown {part}: {golden.rootfs.stat().st_size >> 20} MiB -> {root.sectors >> 11} MiB"

    # provision-bootloader with the clone mounted (its grub-mkimage runs in a chroot)
    mnt = tmp_path / "sysimage"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(part), str(mnt)], check=True)
    try:
        placed = install_bootloader(mnt, str(disk), dataclasses.replace(BootTarget.of(plan), esp=None))
        assert not (mnt / "tmp" / "provision-core-gpt.img").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert placed == [f"BIOS GRUB in {disk} (core.img for GPT in its biosboot partition)"]
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={root.start // MIB_SECTORS}",
                    "conv=notrunc,sparse", "status=none"], check=True)
    part.unlink()
    verify = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True, check=False)
    assert "No problems found" in verify.stdout, verify.stdout

    serial = tmp_path / "serial.log"
    seconds = boot_disk_to_prompt(disk, serial)
    console = serial.read_text(errors="replace")
    assert "root=LABEL=root" in console and "vda: vda1 vda2" in console  # the kernel read the GPT
    print(f"\nBIOS + GPT: SeaBIOS -> GRUB from the biosboot partition -> the grown clone's login prompt in "
          f"{seconds:.0f} s")
