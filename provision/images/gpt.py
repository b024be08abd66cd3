"""GUID partition tables (UEFI spec, chapter 5) as bytes: a protective MBR, the primary header and entry
array at the disk's start, the backup entry array and header at its end, with their CRC32s. Pure byte
work; the installer writes the two pieces onto a node's disk.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from provision.images.bootsector import SECTOR

ENTRIES = 128
ENTRY_SIZE = 128
ENTRY_SECTORS = ENTRIES * ENTRY_SIZE // SECTOR  # 32
HEADER_SIZE = 92
SIGNATURE = b"EFI PART"
REVISION = 0x00010000
PROTECTIVE = 0xEE  # the MBR partition type covering a GPT disk
NAME_CHARS = 36    # UTF-16LE code units in an entry's name

ESP = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
LINUX_FS = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
LINUX_SWAP = uuid.UUID("0657FD6D-A4AB-4C6F-8442-1ACB60DD3B5E")
BIOS_BOOT = uuid.UUID("21686148-6449-6E6F-744E-656564454649")
BASIC_DATA = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")  # FAT that is not an ESP


@dataclass(frozen=True)
class GptPartition:
    start: int        # first LBA
    sectors: int
    type_guid: uuid.UUID
    guid: uuid.UUID   # the partition's own unique GUID
    name: str = ""


@dataclass(frozen=True)
class GptTables:
    head: bytes  # LBA 0 (protective MBR), 1 (header), 2..33 (entries)
    tail: bytes  # the backup entries and header: the disk's last 33 sectors

    @property
    def tail_sectors(self) -> int:
        return len(self.tail) // SECTOR


def usable_lbas(disk_sectors: int) -> tuple[int, int]:
    """The first and last LBA a partition may use on a disk of `disk_sectors` (128 entries of 128 bytes)."""
    return 2 + ENTRY_SECTORS, disk_sectors - 2 - ENTRY_SECTORS


def protective_mbr(disk_sectors: int) -> bytes:
    """Sector 0 of a GPT disk: one 0xEE partition from LBA 1 over the whole disk (at most 2^32-1 sectors)."""
    entry = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", PROTECTIVE, b"\xff\xff\xff", 1,
                        min(disk_sectors - 1, 0xFFFFFFFF))
    return bytes(446) + entry.ljust(64, b"\0") + b"\x55\xaa"


def _entry(part: GptPartition) -> bytes:
    name = part.name.encode("utf-16-le")
    if len(name) > 2 * NAME_CHARS:
        raise ValueError(f"GPT partition name {part.name!r} is longer than {NAME_CHARS} characters")
    return struct.pack("<16s16sQQQ72s", part.type_guid.bytes_le, part.guid.bytes_le, part.start,
                       part.start + part.sectors - 1, 0, name)


def _header(my_lba: int, alternate_lba: int, entries_lba: int, disk_sectors: int, disk_guid: uuid.UUID,
            entries_crc: int) -> bytes:
    first, last = usable_lbas(disk_sectors)
    fields = (SIGNATURE, REVISION, HEADER_SIZE, 0, 0, my_lba, alternate_lba, first, last, disk_guid.bytes_le,
              entries_lba, ENTRIES, ENTRY_SIZE, entries_crc)
    layout = "<8sIIIIQQQQ16sQIII"
    crc = zlib.crc32(struct.pack(layout, *fields))
    return struct.pack(layout, *fields[:3], crc, *fields[4:]).ljust(SECTOR, b"\0")


def gpt_tables(disk_sectors: int, partitions: list[GptPartition], disk_guid: uuid.UUID) -> GptTables:
    """The GPT of a disk of `disk_sectors` holding `partitions` (in entry order, each inside the usable
    LBAs, none overlapping)."""
    first, last = usable_lbas(disk_sectors)
    if len(partitions) > ENTRIES:
        raise ValueError(f"a GPT holds {ENTRIES} partitions, not {len(partitions)}")
    spans = sorted((p.start, p.start + p.sectors - 1) for p in partitions)
    for (start, end), (next_start, _) in zip(spans, spans[1:] + [(last + 1, 0)]):
        if start < first or end < start or end >= next_start:
            raise ValueError(f"GPT partition LBA {start}-{end} is outside {first}-{last} or overlaps the next")
    entries = b"".join(_entry(p) for p in partitions).ljust(ENTRIES * ENTRY_SIZE, b"\0")
    crc = zlib.crc32(entries)
    backup_lba = disk_sectors - 1
    primary = _header(1, backup_lba, 2, disk_sectors, disk_guid, crc)
    backup = _header(backup_lba, 1, backup_lba - ENTRY_SECTORS, disk_sectors, disk_guid, crc)
    return GptTables(protective_mbr(disk_sectors) + primary + entries, entries + backup)
