"""The runs of dollyS for `provision install` (one per ring): command line, progress while they run, verdicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.live import Live

from provision.errors import ProvisionError
from provision.model import FileDigest, Ring
from provision.state import NodeRecord
from provision.table import clone_table

Snapshot = Callable[[], tuple[list[NodeRecord], dict]]  # the nodes' records and dollyS's progress file


@dataclass(frozen=True)
class RingFiles:
    """The files of one ring run, in the cluster's dolly/ directory."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "ring.conf"

    @property
    def report(self) -> Path:
        return self.directory / "report.json"

    @property
    def progress(self) -> Path:
        return self.directory / "progress.json"

    @property
    def log(self) -> Path:
        return self.directory / "dollyS.log"


@dataclass(frozen=True)
class RingSettings:
    timeout: float                  # dollyS --timeout: when a silent node counts as dead
    wait: float                     # dollyS --wait: how long a member keeps dialling its first successor
    secret_file: Path               # the run's ring secret (dollyS --secret-file)
    chunk_size: int | None = None
    verbose: bool = False
    digest: FileDigest = FileDigest.SHA256  # dollyS --digest: the images' plain digest in its report (dolly.digest)

    @classmethod
    def of(cls, ring: Ring, secret_file: Path, timeout: float | None = None, chunk_size: int | None = None,
           verbose: bool = False, digest: FileDigest = FileDigest.SHA256) -> RingSettings:
        """The inventory's ring settings; `timeout` (install --timeout), when given, overrides ring.timeout."""
        return cls(ring.timeout if timeout is None else timeout, ring.wait, secret_file, chunk_size, verbose, digest)


def dolly_server() -> str:
    """dollyS next to this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "dollyS"
    found = str(beside) if beside.exists() else shutil.which("dollyS")
    if found is None:
        raise ProvisionError("dollyS not found (it is installed with this package)")
    return found


def server_argv(files: RingFiles, settings: RingSettings) -> list[str]:
    argv = [dolly_server(), "-f", str(files.config), "--json", str(files.report),
            "--timeout", str(settings.timeout), "--wait", str(settings.wait), "--progress", str(files.progress),
            "--secret-file", str(settings.secret_file), "--digest", str(settings.digest)]
    if settings.chunk_size:
        argv += ["--chunk-size", str(settings.chunk_size)]
    if settings.verbose:
        argv.append("-v")
    return argv


def read_progress(files: RingFiles, names: list[str]) -> dict:
    """dollyS's progress file, its members named as the inventory names them (dollyS names them by address)."""
    try:
        ring_status = json.loads(files.progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    for name, entry in zip(names, ring_status.get("nodes", [])):
        entry["name"] = name
    return ring_status


def merge_progress(rings: Sequence[dict]) -> dict:
    """The progress files of rings that run together, as one: their nodes in order, the longest time."""
    if len(rings) == 1:
        return rings[0]
    return {"total_bytes": max((r.get("total_bytes") or 0 for r in rings), default=0),
            "seconds": max((r.get("seconds") or 0 for r in rings), default=0),
            "nodes": [node for r in rings for node in r.get("nodes", [])]}


def follow(rings: Sequence[subprocess.Popen], snapshot: Snapshot, live: bool, show: Callable[[str], None]) -> None:
    """Show the clone while the dollyS of `rings` run: a live per-node table on a terminal, else a line
    every 5 s."""

    def running() -> bool:
        return any(ring.poll() is None for ring in rings)

    if live:
        with Live(clone_table(*snapshot()), refresh_per_second=2, transient=True) as table:
            while running():
                time.sleep(0.5)
                table.update(clone_table(*snapshot()))
        return
    next_line = time.monotonic() + 5
    while running():
        time.sleep(0.2)
        if time.monotonic() >= next_line:
            next_line += 5
            show(progress_line(*snapshot()))


def progress_line(records: list[NodeRecord], ring: dict) -> str:
    """One line for a log: how far the ring is, at its slowest node."""
    nodes = ring.get("nodes") or []
    total = ring.get("total_bytes") or 0
    if not nodes or not total:
        return f"clone: starting ({len(records)} node(s))"
    alive = [n for n in nodes if n["state"] not in ("dead", "failed")]
    slowest = min((n["bytes"] for n in alive), default=0)
    dead = [n["name"] for n in nodes if n["state"] in ("dead", "failed")]
    return (f"clone: {ring.get('seconds', 0):.0f} s, every live node has {100 * slowest / total:.0f}% "
            f"of {total / 2**20:,.0f} MiB" + (f"; dead: {' '.join(dead)}" if dead else ""))


def read_ring_report(path: Path, members: int) -> list[dict | None]:
    """dollyS's JSON verdicts in ring order (its `nodes` list follows the ring config); None for each
    member when there is no usable report."""
    try:
        nodes = json.loads(path.read_text(encoding="utf-8"))["nodes"]
    except (OSError, ValueError, KeyError, TypeError):
        return [None] * members
    return [*nodes[:members], *[None] * (members - len(nodes))]
