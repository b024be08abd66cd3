"""Per-node install state on disk: one JSON file, changed under a lock and replaced atomically.

Several writers (the HTTP report handler threads, the install workflow, `provision flip-*` in another
process) may update it at once: every change takes an exclusive flock on `<file>.lock`, reads the
current file, applies the change and replaces the file by rename, so readers (`provision status`)
always see a whole file without taking the lock.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from provision.bootmode import BootMode
from provision.errors import ProvisionError
from provision.outputs import write_bytes_durably

FORMAT_VERSION = 1


class NodeState(enum.StrEnum):
    WAITING = "waiting"  # not heard from yet
    READY = "ready"      # %post started dollyC and it listens
    CLONING = "cloning"  # image received, identity being written
    DONE = "done"
    FAILED = "failed"


REPORTABLE = (NodeState.READY, NodeState.CLONING, NodeState.DONE, NodeState.FAILED)


@dataclass(frozen=True)
class NodeRecord:
    """One node's state. `error` is the reason of a failure (None otherwise); `message` the last
    report's text; `updated` an ISO 8601 UTC time; `bytes`/`seconds` filled in from the clone run."""

    name: str
    state: NodeState = NodeState.WAITING
    boot: BootMode = BootMode.INSTALL
    error: str | None = None
    message: str | None = None
    updated: str = ""
    bytes: int | None = None
    seconds: float | None = None

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "state": str(self.state), "boot": str(self.boot)}

    @classmethod
    def from_json(cls, data: Mapping) -> NodeRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**{**values, "state": NodeState(data.get("state", "waiting")),
                      "boot": BootMode(data.get("boot", "install"))})


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON durably and atomically (fsync'ed temporary file renamed over `path`)."""
    write_bytes_durably(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


class StateStore:
    """The node records of one cluster, kept in `path` (provision.cluster.ClusterFiles.store)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def load(self) -> dict[str, NodeRecord]:
        """All records by name, in the order they were first written; {} when there is no file."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"{self.path}: unreadable state file ({exc})") from None
        try:
            return {r.name: r for r in map(NodeRecord.from_json, data["nodes"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisionError(f"{self.path}: malformed state file ({exc!r})") from None

    @contextmanager
    def _locked(self) -> Iterator[dict[str, NodeRecord]]:
        """Exclusive access: yields the current records; the (mutated) dict is written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self.load()
            yield records
            write_json_atomic(self.path, {"version": FORMAT_VERSION,
                                          "nodes": [r.to_json() for r in records.values()]})

    def ensure(self, names: Iterable[str]) -> dict[str, NodeRecord]:
        """Add a `waiting` record for every name that has none; keep existing ones (a rerun continues)."""
        with self._locked() as records:
            for name in names:
                records.setdefault(name, NodeRecord(name, updated=now_iso()))
            return dict(records)

    def reset(self, names: Iterable[str]) -> None:
        """Forget what is known of these nodes: back to `waiting` on install boot."""
        with self._locked() as records:
            for name in names:
                records[name] = NodeRecord(name, updated=now_iso())

    def update(self, name: str, **changes) -> NodeRecord:
        """Change fields of one node's record (created if missing); `updated` is set to now."""
        with self._locked() as records:
            old = records.get(name, NodeRecord(name))
            records[name] = new = dataclasses.replace(old, **changes, updated=now_iso())
            return new

    def report(self, name: str, state: NodeState | str, message: str | None = None) -> NodeRecord:
        """A node's own report: a failure keeps its message as `error`, any other state clears it."""
        state = NodeState(state)
        return self.update(name, state=state, message=message,
                           error=(message or "failed") if state is NodeState.FAILED else None)

    def set_boot(self, names: Iterable[str], boot: BootMode) -> None:
        with self._locked() as records:
            for name in names:
                records[name] = dataclasses.replace(records.get(name, NodeRecord(name)),
                                                    boot=BootMode(boot), updated=now_iso())
