"""Write rendered files atomically (temporary file + os.replace), skip unchanged ones, prune stale ones."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError

TEMP_SUFFIX = ".provision-tmp"


@dataclass(frozen=True)
class Prune:
    """Files in `directory` whose names match `pattern` and that the new render does not contain are stale."""

    directory: str
    pattern: re.Pattern


@dataclass(frozen=True)
class WriteReport:
    written: tuple[str, ...]
    unchanged: int
    removed: tuple[str, ...]


def check_relpath(relpath: str) -> str:
    """A relative path that stays inside the output directory (no absolute paths, no `..`)."""
    if not relpath or relpath.startswith("/") or ".." in relpath.split("/"):
        raise ValueError(f"output path escapes the output directory: {relpath!r}")
    return relpath


def write_atomic(path: Path | str, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old file or the new one, never a part."""
    _replace(os.fspath(path), text.encode("utf-8"))


def write_bytes_durably(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    """write_atomic for state that must survive a crash: parents created, data fsync'ed before the rename;
    the file is created with `mode` (less the umask): 0o600 keeps a secret from other users from the start."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _replace(path, data, fsync=True, mode=mode)


def _replace(path: str, data: bytes, fsync: bool = False, mode: int = 0o644) -> None:
    head, tail = os.path.split(path)
    temp = os.path.join(head, f".{tail}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_tree(out_dir: Path, files: Mapping[str, str], prune: Sequence[Prune] = ()) -> WriteReport:
    """Write every file under `out_dir` in the mapping's order; then remove stale files matched by `prune`."""
    root = os.fspath(out_dir)
    for rel in files:
        check_relpath(rel)
    written: list[str] = []
    unchanged = 0
    try:
        existing: set[str] = set()  # compare only with files that exist (one listing, not a failed open each)
        for directory in sorted({os.path.dirname(rel) for rel in files}):
            path = os.path.join(root, directory)
            os.makedirs(path, exist_ok=True)
            existing.update(os.path.join(directory, name) for name in os.listdir(path))
        for rel, text in files.items():
            path = os.path.join(root, rel)
            data = text.encode("utf-8")
            if rel in existing and _same_bytes(path, data):
                unchanged += 1
                continue
            _replace(path, data)
            written.append(rel)
        removed = [rel for rule in prune for rel in _stale(out_dir, rule, files)]
        for rel in removed:
            os.unlink(os.path.join(root, rel))
    except OSError as exc:
        raise ProvisionError(f"cannot write the rendered files into {out_dir}: {exc}") from None
    return WriteReport(tuple(written), unchanged, tuple(removed))


def _same_bytes(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False


def _stale(out_dir: Path, rule: Prune, keep: Mapping[str, str]) -> list[str]:
    directory = os.path.join(out_dir, rule.directory)
    if not os.path.isdir(directory):
        return []
    stale = []
    for entry in os.scandir(directory):
        rel = os.path.normpath(f"{rule.directory}/{entry.name}")  # "./dhcpd.conf" is "dhcpd.conf"
        leftover_temp = entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)
        if entry.is_file(follow_symlinks=False) and rel not in keep and (
            leftover_temp or rule.pattern.fullmatch(entry.name)
        ):
            stale.append(rel)
    return sorted(stale)
