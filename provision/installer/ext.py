"""ext2/3/4 superblocks read from a device or image: the file system's size and its volume label."""

from __future__ import annotations

EXT_MAGIC = 0xEF53
EXT_FSTYPES = ("ext2", "ext3", "ext4")
SUPERBLOCK = 1024  # its offset, and how much of it is read


def read_superblock(device: str) -> bytes | None:
    """The 1 KiB at offset 1024 of `device`, None if it cannot be read."""
    try:
        with open(device, "rb") as dev:
            dev.seek(SUPERBLOCK)
            return dev.read(SUPERBLOCK)
    except OSError:
        return None


def is_ext(superblock: bytes, size: int) -> bool:
    """Whether `superblock` is an ext2/3/4 one at least `size` bytes long."""
    return len(superblock) >= size and int.from_bytes(superblock[56:58], "little") == EXT_MAGIC


def ext_blocks(superblock: bytes) -> tuple[int, int] | None:
    """(block count, block size) of an ext2/3/4 superblock (the 1 KiB at offset 1024), None if it is none."""
    if not is_ext(superblock, 0x158):
        return None
    count = int.from_bytes(superblock[4:8], "little")
    if int.from_bytes(superblock[0x60:0x64], "little") & 0x80:  # INCOMPAT_64BIT: the high half counts
        count |= int.from_bytes(superblock[0x150:0x154], "little") << 32
    return count, 1024 << int.from_bytes(superblock[24:28], "little")


def read_ext_blocks(device: str) -> tuple[int, int] | None:
    """(block count, block size) of the ext2/3/4 file system on `device`, None if it is none."""
    superblock = read_superblock(device)
    return None if superblock is None else ext_blocks(superblock)


def ext_label(device: str) -> str | None:
    """The volume label of an ext2/3/4 file system on `device` (read-only), None if it is none."""
    superblock = read_superblock(device)
    if superblock is None or not is_ext(superblock, 136):
        return None
    return superblock[120:136].rstrip(b"\0").decode(errors="replace")
