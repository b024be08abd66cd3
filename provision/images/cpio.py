"""newc cpio archives (the format the kernel unpacks as initramfs), written from a directory tree.

Deterministic: entries sorted, owner root, mtime 0, so the same tree gives the same bytes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TRAILER = "TRAILER!!!"


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    name_b = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    return header + name_b + _pad(len(header) + len(name_b)) + data + _pad(len(data))


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield Path(dirpath) / name


def write_newc(root: Path, out: BinaryIO) -> int:
    """Write every directory, regular file and symlink under `root` (names relative to it); returns the
    number of entries. Other file types are an error (devices come from devtmpfs at boot)."""
    count = 0
    for count, path in enumerate(_walk(root), 1):
        st = path.lstat()
        name = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            data = os.readlink(path).encode()
        elif stat.S_ISREG(st.st_mode):
            data = path.read_bytes()
        elif stat.S_ISDIR(st.st_mode):
            data = b""
        else:
            raise ValueError(f"{path}: not a file, directory or symlink")
        out.write(_entry(name, st.st_mode, data, count))
    out.write(_entry(TRAILER, 0, b"", 0))
    return count
