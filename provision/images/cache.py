"""The build cache: one directory per artifact and recipe, complete or absent.

    <cache>/<kind>/<key>/        key = the first 16 hex digits of sha256(recipe as canonical JSON)
    <cache>/<kind>/<key>/recipe.json
    <cache>/debs/                downloaded Debian packages (their file names carry their versions)

The cache is $PROVISION_CACHE, else <state dir>/cache. An entry is built in a temporary directory beside
its final place and renamed into it when complete, under a lock per kind, so an interrupted build leaves
nothing that looks finished and two builders never race. After a build, entries of its kind beyond the
`keep` newest are removed once they are a day old (every change of this project's sources makes a new
initrd; a day's grace keeps what a running lab links to), and so are work directories of dead builders.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.inventory import state_dir

CACHE_ENV = "PROVISION_CACHE"
RECIPE_FILE = "recipe.json"
KEEP = 3  # entries kept per kind
GRACE_SECONDS = 24 * 3600  # younger entries are never removed


def cache_key(recipe: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able recipe (key order does not matter)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cache:
    root: Path

    @classmethod
    def of(cls, env: Mapping[str, str] = os.environ) -> Cache:
        return cls(Path(env[CACHE_ENV]) if env.get(CACHE_ENV) else state_dir(env) / "cache")

    @property
    def debs(self) -> Path:
        return self.root / "debs"

    def entry(self, kind: str, recipe: Mapping[str, Any]) -> Path:
        return self.root / kind / cache_key(recipe)

    def build(self, kind: str, recipe: Mapping[str, Any], make: Callable[[Path], None], keep: int = KEEP) -> Path:
        """The entry for (kind, recipe); `make(directory)` fills a fresh directory when it is missing (then
        older entries of the kind beyond the `keep` newest are removed)."""
        final = self.entry(kind, recipe)
        if (final / RECIPE_FILE).is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (final / RECIPE_FILE).is_file():  # built by someone else while we waited
                return final
            work = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            try:
                make(work)
                (work / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover (no recipe.json)
                os.rename(work, final)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            self._prune(final.parent, keep, final)
        return final

    @staticmethod
    def _prune(directory: Path, keep: int, built: Path) -> None:
        """Remove day-old complete entries beyond the `keep` newest (never `built`) and dead builders' work."""
        complete = sorted((p for p in directory.iterdir() if (p / RECIPE_FILE).is_file()),
                          key=lambda p: (p == built, (p / RECIPE_FILE).stat().st_mtime), reverse=True)
        for old in complete[max(keep, 1):]:
            if time.time() - (old / RECIPE_FILE).stat().st_mtime > GRACE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        for work in directory.glob(".*.tmp"):
            pid = work.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(work, ignore_errors=True)
