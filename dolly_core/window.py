"""The bounded chunk window a ring member keeps: filled in sequence order by one producer,
consumed by the writer and the forwarder at their own pace, and kept `keep` chunks behind the
forwarder so a short-cut to the node after next can be re-sent from memory.

Buffers are anonymous memory maps (page-aligned, so a target opened with O_DIRECT takes them as they
are), allocated as needed up to the window's size and recycled in place: the receive path reads
straight into them.
"""

from __future__ import annotations

import collections
import mmap
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from dolly_core.protocol import Header, is_hole


class WindowClosed(Exception):
    """The run was aborted while waiting on the window."""


class ChunkGone(Exception):
    """A consumer asked for a chunk older than the window still holds."""


@dataclass
class Entry:
    """One chunk: `header` describes the whole chunk; it arrives as pieces (wire frames, each with
    its own checksum) that are forwarded as soon as they are verified (cut-through), while the
    writer waits for the whole chunk."""

    header: Header
    buf: mmap.mmap | None  # None for a HOLE
    pieces: list[tuple[bytes, int, int]] = field(default_factory=list)  # (wire header, start, length)
    done: bool = False

    @property
    def payload(self) -> memoryview | None:
        return None if self.buf is None else memoryview(self.buf)[:self.header.length]

    def runs(self) -> list[tuple[bool, int, int]]:
        """(is a hole, start, length) of a complete chunk: its pieces, neighbours of a kind merged."""
        if self.buf is None:
            return [(True, 0, self.header.length)]
        runs: list[tuple[bool, int, int]] = []
        for wire, start, length in self.pieces:
            hole = is_hole(wire)
            if runs and runs[-1][0] == hole:
                runs[-1] = (hole, runs[-1][1], runs[-1][2] + length)
            else:
                runs.append((hole, start, length))
        return runs


class Window:
    def __init__(self, chunk_size: int, keep: int, ahead: int, consumers: dict[str, int]):
        """consumers: name -> chunks that must stay behind that consumer's position."""
        self.chunk_size = chunk_size
        self.capacity = keep + ahead
        lock = threading.Lock()
        self.cond = threading.Condition(lock)  # entries, positions, whole chunks
        self.arrived = threading.Condition(lock)  # pieces: the forwarder waits here, the writer does not
        self.entries: collections.deque[Entry] = collections.deque()
        self.first = 0
        self.end = 0
        self.free: list[mmap.mmap] = []
        self.allocated = 0
        self.margin = dict(consumers)
        self.pos = {name: 0 for name in consumers}
        self.error: str | None = None

    def close(self, error: str) -> None:
        with self.cond:
            self.error = error
            self.cond.notify_all()
            self.arrived.notify_all()

    def _evictable(self) -> bool:
        return bool(self.entries) and all(
            self.first < self.pos[name] - margin for name, margin in self.margin.items())

    def _evict(self) -> None:
        entry = self.entries.popleft()
        self.first += 1
        if entry.buf is not None:
            self.free.append(entry.buf)

    def acquire(self) -> mmap.mmap:
        """A buffer for the next chunk; blocks while the window is full (back-pressure)."""
        with self.cond:
            while True:
                if self.error:
                    raise WindowClosed(self.error)
                if len(self.entries) >= self.capacity and self._evictable():
                    self._evict()
                if len(self.entries) < self.capacity:
                    if self.free:
                        return self.free.pop()
                    if self.allocated < self.capacity:
                        self.allocated += 1
                        return mmap.mmap(-1, self.chunk_size)
                    if self._evictable():
                        self._evict()
                        continue
                self.cond.wait(0.5)

    def release(self, buf: mmap.mmap) -> None:
        """Give back a buffer that was acquired but not appended (e.g. a chunk failing its checksum)."""
        with self.cond:
            self.free.append(buf)

    def reserve_hole(self) -> None:
        """Block until there is room for an entry without a buffer."""
        with self.cond:
            while len(self.entries) >= self.capacity and not self._evictable():
                if self.error:
                    raise WindowClosed(self.error)
                self.cond.wait(0.5)
            if len(self.entries) >= self.capacity:
                self._evict()

    def append(self, entry: Entry) -> Entry:
        with self.cond:
            self.entries.append(entry)
            self.end += 1
            self.cond.notify_all()
        return entry

    def add_piece(self, entry: Entry, wire_header: bytes, start: int, length: int,
                  relay: Callable[[Entry, int], bool] | None = None) -> None:
        """A verified piece of entry; `relay(entry, k)` may send it at once (True), else the forwarder wakes."""
        with self.cond:
            entry.pieces.append((wire_header, start, length))
            entry.done = start + length >= entry.header.length
            if entry.done:
                self.cond.notify_all()
            k = len(entry.pieces) - 1
        if relay is not None and relay(entry, k):
            return
        with self.cond:
            self.arrived.notify_all()

    def add_pieces(self, entry: Entry, pieces: list[tuple[bytes, int, int]]) -> None:
        """Verified pieces of entry (wire header, start, length) at once: the forwarder wakes once for them."""
        with self.cond:
            entry.pieces.extend(pieces)
            _, start, length = pieces[-1]
            entry.done = start + length >= entry.header.length
            if entry.done:
                self.cond.notify_all()
            self.arrived.notify_all()

    def pieces(self, entry: Entry, k: int, timeout: float) -> list[tuple[bytes, int, int]]:
        """The verified pieces of entry from the k-th on, waiting up to `timeout` for one ([] then)."""
        with self.cond:
            while len(entry.pieces) <= k:
                if self.error:
                    raise WindowClosed(self.error)
                if not self.arrived.wait(timeout):
                    return []
            return entry.pieces[k:]

    def wait_done(self, entry: Entry) -> None:
        with self.cond:
            while not entry.done:
                if self.error:
                    raise WindowClosed(self.error)
                self.cond.wait(1.0)

    def get(self, seq: int, timeout: float | None = None) -> Entry | None:
        """The entry with sequence number seq, waiting for it; None after `timeout` seconds."""
        with self.cond:
            while seq >= self.end:
                if self.error:
                    raise WindowClosed(self.error)
                if not self.cond.wait(timeout):
                    return None
            if seq < self.first:
                raise ChunkGone(f"chunk {seq} is no longer buffered (window starts at {self.first})")
            return self.entries[seq - self.first]

    def advance(self, consumer: str, pos: int) -> None:
        with self.cond:
            self.pos[consumer] = pos
            self.cond.notify_all()

    def holds(self, seq: int) -> bool:
        with self.cond:
            return self.first <= seq
