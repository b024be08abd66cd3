"""What the server tells every ring member (sent in SETUP on every connection): the ring with
resolved addresses, the files, the chunk plan and settings. Index 0 is the server's head, 1..N
are the clients in config order, N+1 is the server's tail (where the last client sends)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


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

    def to_body(self, sender: int, target: int, dead: dict[int, str]) -> dict:
        return {
            "run": self.run, "sender": sender, "target": target, "dead": {str(k): v for k, v in dead.items()},
            "ring": [[m.name, m.host, m.port] for m in self.ring.members],
            "files": [[f.source, f.out, f.cook, f.size] for f in self.files],
            "chunk_size": self.chunk_size, "timeout": self.timeout, "wait": self.wait,
        }

    @classmethod
    def from_body(cls, body: dict) -> RunSetup:
        return cls(
            run=str(body["run"]),
            ring=Ring(tuple(Member(str(n), str(h), int(p)) for n, h, p in body["ring"])),
            files=tuple(FileSpec(str(s), str(o), bool(c), int(z)) for s, o, c, z in body["files"]),
            chunk_size=int(body["chunk_size"]), timeout=float(body["timeout"]), wait=float(body["wait"]),
        )
