"""Targets a node writes into: a plain file or block device (`>`), or cooked on the fly (`>>`):
decompressed by the source's suffix through the system's decompressor, and tar archives unpacked
streaming into the OUT directory. Nothing is staged in a temporary copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import subprocess
import tarfile
import threading

# suffix -> decompressor command reading stdin, writing stdout (.Z: gzip reads compress'ed data)
DECOMPRESSORS = {
    ".gz": ["gzip", "-dc"], ".tgz": ["gzip", "-dc"],
    ".bz2": ["bzip2", "-dc"], ".tbz": ["bzip2", "-dc"], ".tbz2": ["bzip2", "-dc"],
    ".xz": ["xz", "-dc"], ".txz": ["xz", "-dc"],
    ".zst": ["zstd", "-dcq"], ".tzst": ["zstd", "-dcq"],
    ".Z": ["gzip", "-dc"], ".taz": ["gzip", "-dc"],
}
TAR_SHORT = (".tgz", ".tbz", ".tbz2", ".txz", ".tzst", ".taz")


class CookError(ValueError):
    """A `>>` source whose name says nothing we can cook."""


def cook_plan(source: str) -> tuple[list[str] | None, bool]:
    """(decompressor command or None, is a tar archive) for a `>>` source name."""
    name = os.path.basename(source)
    root, suffix = os.path.splitext(name)
    command = DECOMPRESSORS.get(suffix)
    is_tar = suffix in TAR_SHORT or suffix == ".tar" or (command is not None and root.endswith(".tar"))
    if command is None and not is_tar:
        raise CookError(f"cannot cook {source!r}: unknown suffix (expected one of "
                        f"{', '.join(sorted(DECOMPRESSORS))}, .tar)")
    return command, is_tar


BLKZEROOUT = 0x127F  # _IO(0x12, 127): zero a byte range of a block device inside the device


class PlainTarget:
    """A regular file (created/truncated; holes stay holes) or an existing block device, whose holes are
    zeroed by the device (BLKZEROOUT: write-zeroes or a discard that reads back as zeros), else written
    as zeros: never a stale block.

    Written with O_DIRECT where the file system takes it: the node's page-aligned buffers go to the
    device without a copy into the page cache (that copy, and its write-back at fsync, cost a node more
    CPU than anything else). The first write O_DIRECT refuses (unaligned: a short last piece, an odd
    chunk size) turns it off for the rest of the file."""

    ZERO = bytes(1 << 20)

    def __init__(self, path: str, size: int):
        self.path = path
        self.size = size
        is_blockdev = os.path.exists(path) and stat.S_ISBLK(os.stat(path).st_mode)
        flags = os.O_WRONLY | os.O_CREAT | (0 if is_blockdev else os.O_TRUNC)
        try:
            self.fd, self.direct = os.open(path, flags | os.O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no O_DIRECT on this file system
                raise
            self.fd, self.direct = os.open(path, flags, 0o644), False
        self.sparse = not is_blockdev
        self.pos = 0

    def write(self, data: memoryview) -> None:
        while data:
            try:
                n = os.write(self.fd, data)
            except OSError as exc:
                if not (self.direct and exc.errno == errno.EINVAL):
                    raise
                self._buffered()
                continue
            data = data[n:]
            self.pos += n

    def _buffered(self) -> None:
        """Turn O_DIRECT off: the rest of the file goes through the page cache."""
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def hole(self, length: int) -> None:
        if self.sparse:
            self.pos = os.lseek(self.fd, length, os.SEEK_CUR)
            return
        if self._zero_out(length):
            return
        while length:
            step = min(length, len(self.ZERO))
            self.write(memoryview(self.ZERO)[:step])
            length -= step

    def _zero_out(self, length: int) -> bool:
        """Let the block device zero [pos, pos + length); False where it cannot (then zeros are written)."""
        if self.pos % 512 or length % 512:
            return False
        try:
            fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("QQ", self.pos, length))
        except OSError:
            return False
        self.pos = os.lseek(self.fd, self.pos + length, os.SEEK_SET)
        return True

    def close(self) -> None:
        try:
            if self.sparse:
                os.ftruncate(self.fd, self.pos)
            os.fsync(self.fd)
        finally:
            os.close(self.fd)

    def abandon(self) -> None:
        os.close(self.fd)


class CookedTarget:
    """Compressed bytes go into a decompressor's stdin; its output goes to OUT, or through a
    streaming tar reader into the OUT directory (tarfile's 'tar' filter refuses path escapes)."""

    def __init__(self, path: str, source: str):
        command, self.is_tar = cook_plan(source)
        self.path = path
        self.error: str | None = None
        self.untar: threading.Thread | None = None
        self.proc = None
        self.out_fd = None
        if self.is_tar:
            os.makedirs(path, exist_ok=True)
            if command is None:
                read_fd, self.fd = os.pipe()
                self._start_untar(os.fdopen(read_fd, "rb"))
                return
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            self._start_untar(self.proc.stdout)
        else:
            self.out_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=self.out_fd,
                                         stderr=subprocess.PIPE)
        self.fd = self.proc.stdin.fileno()

    def _start_untar(self, stream) -> None:
        def run() -> None:
            try:
                with tarfile.open(fileobj=stream, mode="r|") as archive:
                    archive.extractall(self.path, filter="tar")
            except (tarfile.TarError, OSError) as exc:
                self.error = f"untar into {self.path}: {exc}"
            finally:
                stream.read()  # drain, so the decompressor never blocks on a full pipe
                stream.close()
        self.untar = threading.Thread(target=run, name="untar", daemon=True)
        self.untar.start()

    def write(self, data: memoryview) -> None:
        while data:
            try:
                n = os.write(self.fd, data)
            except BrokenPipeError:
                raise OSError(f"cooking {self.path}: the decompressor stopped reading") from None
            data = data[n:]

    def hole(self, length: int) -> None:
        zero = memoryview(PlainTarget.ZERO)
        while length:
            step = min(length, len(zero))
            self.write(zero[:step])
            length -= step

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            stderr = self.proc.stderr.read().decode(errors="replace").strip()
            if self.proc.wait() != 0:
                self.error = self.error or f"{self.proc.args[0]} failed: {stderr or self.proc.returncode}"
        else:
            os.close(self.fd)
        if self.untar is not None:
            self.untar.join()
        if self.out_fd is not None:
            os.fsync(self.out_fd)
            os.close(self.out_fd)
        if self.error:
            raise OSError(self.error)

    def abandon(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self.fd)
        except OSError:
            pass
        if self.out_fd is not None:
            os.close(self.out_fd)


def open_target(path: str, source: str, size: int, cook: bool) -> PlainTarget | CookedTarget:
    """The target for OUT `path`. A path under the system's /dev must be there already: a missing device
    (a disk not attached, a partition not made) is an error, not a file made in /dev's RAM. /dev/shm is
    no device directory: files are made there like anywhere else."""
    real = os.path.realpath(path)
    if real.startswith("/dev/") and not real.startswith("/dev/shm/") and not os.path.exists(real):
        raise OSError(f"no such device {real}: a target under /dev must exist (dollyC makes no files there)")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return CookedTarget(path, source) if cook else PlainTarget(path, size)
