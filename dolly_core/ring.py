"""What the server tells every ring member (sent in SETUP on every connection): the ring with
resolved addresses, the files, the chunk plan, settings and the pieces' tag algorithm. Index 0 is the
server's head, 1..N are the clients in config order, N+1 is the server's tail (where the last client
sends)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

# What a SETUP may ask of a member (it is checked before anything is allocated or opened)
MAX_MEMBERS = 100_000
MAX_FILES = 4096
MAX_CHUNK = 1 << 30
MAX_CHUNKS = 1 << 24  # chunk plan entries (at 4 MiB chunks: 64 TiB)
MAX_FILE = 1 << 62
MAX_SECONDS = 7 * 86400
MAX_TEXT = 4096  # a name, host, path or run id


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class Ring:
    members: tuple[Member, ...]  # head, clients..., tail

    @property
    def tail(self) -> int:
        return len(self.members) - 1

    @property
    def clients(self) -> range:
        return range(1, self.tail)

    def name(self, index: int) -> str:
        return self.members[index].name

    def address(self, index: int) -> tuple[str, int]:
        m = self.members[index]
        return m.host, m.port


@dataclass(frozen=True)
class FileSpec:
    source: str
    out: str
    cook: bool
    size: int


@dataclass(frozen=True)
class RunSetup:
    run: str
    ring: Ring
    files: tuple[FileSpec, ...]
    chunk_size: int
    timeout: float
    wait: float  # how long a member keeps trying to reach its first successor (it may start late)
    tag: str = "sha256"  # the pieces' tag algorithm (tags.py); a member that cannot check it refuses the run

    @property
    def chunks(self) -> int:
        """Chunks in the whole run (every file has at least one, so empty files get created too)."""
        return len(self.plan)

    def file_chunks(self, f: FileSpec) -> int:
        return max(1, -(-f.size // self.chunk_size))

    @cached_property
    def plan(self) -> tuple[tuple[int, int, int], ...]:
        """(file index, offset, length) of every chunk, by sequence number."""
        return tuple((i, k * self.chunk_size, min(self.chunk_size, f.size - k * self.chunk_size))
                     for i, f in enumerate(self.files) for k in range(self.file_chunks(f)))

    def to_body(self, sender: int, target: int) -> dict:
        return {
            "run": self.run, "sender": sender, "target": target,
            "ring": [[m.name, m.host, m.port] for m in self.ring.members],
            "files": [[f.source, f.out, f.cook, f.size] for f in self.files],
            "chunk_size": self.chunk_size, "timeout": self.timeout, "wait": self.wait, "tag": self.tag,
        }

    @classmethod
    def from_body(cls, body: dict) -> RunSetup:
        """The setup a SETUP frame carries, checked (ValueError, TypeError or KeyError when it is not one)."""
        ring, files = body["ring"], body["files"]
        if not 3 <= len(ring) <= MAX_MEMBERS + 2:  # head, clients, tail
            raise ValueError(f"a ring of {len(ring)} members")
        if not 1 <= len(files) <= MAX_FILES:
            raise ValueError(f"{len(files)} files")
        setup = cls(
            run=_text(body["run"]),
            ring=Ring(tuple(Member(_text(n), _text(h), _bounded(int, p, 0, 65535)) for n, h, p in ring)),
            files=tuple(FileSpec(_text(s), _text(o), _flag(c), _bounded(int, z, 0, MAX_FILE)) for s, o, c, z in files),
            chunk_size=_bounded(int, body["chunk_size"], 1, MAX_CHUNK),
            timeout=_bounded(float, body["timeout"], 0.001, MAX_SECONDS),
            wait=_bounded(float, body["wait"], 0, MAX_SECONDS),
            tag=_text(body["tag"]),
        )
        chunks = sum(setup.file_chunks(f) for f in setup.files)
        if chunks > MAX_CHUNKS:
            raise ValueError(f"{chunks} chunks (at most {MAX_CHUNKS})")
        return setup


def _text(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ValueError(f"not a short string: {str(value)[:40]!r}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"not true or false: {value!r}")
    return value


def _bounded(kind: type, value: object, low: float, high: float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {str(value)[:40]!r}")
    number = kind(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{number} is outside {low}..{high}")
    return number
