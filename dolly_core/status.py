"""Per-node status of a run as the server sees it, and the machine-readable live status file
(`dollyS --progress FILE`) an orchestrator polls.

Fed from the heartbeats that travel back up the ring (never from the data path): each heartbeat
entry is [bytes, state] or [bytes, state, error]. The final snapshot settles every node with its
verdict from the END report. The file is replaced atomically (temp file + rename), so a reader
never sees a half-written snapshot:

    {"seconds": elapsed, "total_bytes": N,
     "nodes": [{"name", "address", "state", "bytes", "mb_per_s", "error"}, ...]}   (ring order)

state: waiting (no heartbeat yet), receiving, done (verified), failed, dead (short-cut).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from dolly_core.ring import Member


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    state: str
    bytes: int
    mb_per_s: float
    error: str | None


def node_statuses(clients: Sequence[Member], progress: Mapping[int, list], elapsed: float) -> list[NodeStatus]:
    """One status per client (ring index 1..N) from the heartbeat progress, in ring order."""
    elapsed = max(elapsed, 1e-6)
    rows = []
    for index, member in enumerate(clients, 1):
        entry = progress.get(index) or [0, "waiting"]
        done = int(entry[0])
        error = entry[2] if len(entry) > 2 else None
        rows.append(NodeStatus(member.name, f"{member.host}:{member.port}", str(entry[1]), done,
                               round(done / elapsed / 1e6, 3), error))
    return rows


def settled(rows: Sequence[NodeStatus], report: Mapping) -> list[NodeStatus]:
    """The final word on every node: its verdict from the run's report (see Server.report)."""
    seconds = max(float(report["seconds"]), 1e-6)
    final = []
    for row, node in zip(rows, report["nodes"]):
        done = int(node["bytes"] or 0) if node["ok"] else max(row.bytes, int(node["bytes"] or 0))
        if node["ok"]:
            state = "done"
        elif row.state == "dead" or (node["error"] or "").startswith("dead"):
            state = "dead"
        else:
            state = "failed"
        final.append(NodeStatus(row.name, row.address, state, done, round(done / seconds / 1e6, 3),
                                None if node["ok"] else node["error"]))
    return final


def snapshot(rows: Sequence[NodeStatus], total: int, seconds: float) -> dict:
    return {"seconds": round(seconds, 3), "total_bytes": total, "nodes": [asdict(r) for r in rows]}


def write_atomically(path: str, body: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


class StatusFile:
    """Writes the live snapshot about once per `every` seconds, and the settled one at the end."""

    def __init__(self, path: str, clients: Sequence[Member], total: int, log, every: float = 1.0):
        self.path, self.clients, self.total, self.log, self.every = path, list(clients), total, log, every
        self.started = time.monotonic()
        self.last = 0.0
        self.failed = False
        write_atomically(path, snapshot(node_statuses(self.clients, {}, 0.0), total, 0.0))  # OSError: bad path

    def update(self, progress: Mapping[int, list]) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            elapsed = now - self.started
            self._write(snapshot(node_statuses(self.clients, progress, elapsed), self.total, elapsed))

    def finish(self, progress: Mapping[int, list], report: Mapping) -> None:
        rows = settled(node_statuses(self.clients, progress, report["seconds"]), report)
        self._write(snapshot(rows, self.total, report["seconds"]))

    def _write(self, body: dict) -> None:
        try:
            write_atomically(self.path, body)
        except OSError as exc:
            if not self.failed:  # the clone goes on; say it once
                self.log.warning("cannot write the progress file %s: %s", self.path, exc)
            self.failed = True
