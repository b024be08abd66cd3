"""Write rendered files atomically (temporary file + os.replace), skip unchanged ones, prune stale ones."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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


def safe_relpath(relpath: str) -> PurePosixPath:
    """A relative path that stays inside the output directory (no absolute paths, no `..`)."""
    path = PurePosixPath(relpath)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise ValueError(f"output path escapes the output directory: {relpath!r}")
    return path


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old file or the new one, never a part."""
    temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_tree(out_dir: Path, files: Mapping[str, str], prune: Sequence[Prune] = ()) -> WriteReport:
    """Write every file under `out_dir` in the mapping's order; then remove stale files matched by `prune`."""
    paths = {rel: out_dir / safe_relpath(rel) for rel in files}
    written: list[str] = []
    unchanged = 0
    made_dirs: set[Path] = set()
    try:
        for rel, text in files.items():
            target = paths[rel]
            if target.parent not in made_dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
                made_dirs.add(target.parent)
            if _same_text(target, text):
                unchanged += 1
                continue
            write_atomic(target, text)
            written.append(rel)
        removed = [rel for rule in prune for rel in _stale(out_dir, rule, files)]
        for rel in removed:
            (out_dir / rel).unlink(missing_ok=True)
    except OSError as exc:
        raise ProvisionError(f"cannot write the rendered files into {out_dir}: {exc}") from None
    return WriteReport(tuple(written), unchanged, tuple(removed))


def _same_text(path: Path, text: str) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read() == text
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return False


def _stale(out_dir: Path, rule: Prune, keep: Mapping[str, str]) -> list[str]:
    directory = out_dir / rule.directory
    if not directory.is_dir():
        return []
    stale = []
    for entry in os.scandir(directory):
        rel = f"{rule.directory}/{entry.name}"
        leftover_temp = entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)
        if entry.is_file(follow_symlinks=False) and rel not in keep and (
            leftover_temp or rule.pattern.fullmatch(entry.name)
        ):
            stale.append(rel)
    return sorted(stale)
