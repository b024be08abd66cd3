"""Place BIOS GRUB on a disk without grub-install: boot.img's code in the MBR, core.img in the sectors
between the MBR and the first partition (docs/boot.md, firmware fact 12), or on a GPT disk in its BIOS boot partition.
Pure byte work on an open disk or image file, so the installer can do it on a node's disk with the files
the golden image carries in /boot/grub/i386-pc/.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from provision.errors import ProvisionError

SECTOR = 512
BOOT_CODE = 440  # boot.img bytes that go into the MBR: the disk signature and partition table stay
KERNEL_SECTOR = 0x5C  # in boot.img: the LBA of core.img's first sector (u64; grub-mkimage's default 1)
BLOCKLIST_START = SECTOR - 12  # in core.img's first sector: the LBA of the rest of core.img (u64; default 2)
PROTECTIVE = 0xEE  # the MBR partition type of a GPT disk


def mbr_partition_table(partitions: list[tuple[int, int, int, bool]]) -> bytes:
    """The first sector of a disk with up to four primary partitions, each (start LBA, sectors, type,
    bootable): no boot code (zeros), LBA fields only (CHS marked unused), signature 0x55AA."""
    if len(partitions) > 4:
        raise ValueError("an MBR holds four primary partitions")
    entries = b"".join(struct.pack("<B3sB3sII", 0x80 if bootable else 0, b"\xfe\xff\xff", kind, b"\xfe\xff\xff",
                                   start, sectors) for start, sectors, kind, bootable in partitions)
    return bytes(446) + entries.ljust(64, b"\0") + b"\x55\xaa"


def first_partition_lba(mbr: bytes) -> int:
    """The lowest start LBA among the MBR's partitions (0 when it has none)."""
    starts = [struct.unpack_from("<I", mbr, 454 + 16 * i)[0] for i in range(4) if mbr[450 + 16 * i]]
    return min(starts, default=0)


def bios_grub_at(boot_img: bytes, core_img: bytes, lba: int) -> tuple[bytes, bytes]:
    """boot.img's MBR code and core.img, pointed at core.img written from `lba` (what grub-setup patches)."""
    boot, core = bytearray(boot_img[:BOOT_CODE]), bytearray(core_img)
    struct.pack_into("<Q", boot, KERNEL_SECTOR, lba)
    struct.pack_into("<Q", core, BLOCKLIST_START, lba + 1)
    return bytes(boot), bytes(core)


def write_bios_grub_gpt(disk: BinaryIO, boot_img: bytes, core_img: bytes, lba: int, sectors: int) -> None:
    """boot.img's code into a GPT disk's protective MBR, core.img into its BIOS boot partition (`sectors`
    from `lba`)."""
    disk.seek(0)
    mbr = disk.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:] != b"\x55\xaa" or mbr[450] != PROTECTIVE:
        raise ProvisionError("the disk has no GPT (protective MBR)")
    if sectors * SECTOR < len(core_img):
        raise ProvisionError(f"GRUB core.img ({len(core_img)} bytes) does not fit the BIOS boot partition "
                             f"({sectors} sectors)")
    boot, core = bios_grub_at(boot_img, core_img, lba)
    disk.seek(0)
    disk.write(boot)
    disk.seek(lba * SECTOR)
    disk.write(core)


def write_bios_grub(disk: BinaryIO, boot_img: bytes, core_img: bytes) -> None:
    """boot.img's code into the MBR and core.img from sector 1; core.img must end before the first
    partition (grub-mkimage already wrote core.img's length into its first sector's block list)."""
    disk.seek(0)
    mbr = disk.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:] != b"\x55\xaa":
        raise ProvisionError("the disk has no MBR partition table")
    room = first_partition_lba(mbr) - 1
    if room * SECTOR < len(core_img):
        raise ProvisionError(f"GRUB core.img ({len(core_img)} bytes) does not fit before the first partition "
                             f"({room} sectors)")
    disk.seek(0)
    disk.write(boot_img[:BOOT_CODE])
    disk.seek(SECTOR)
    disk.write(core_img)
