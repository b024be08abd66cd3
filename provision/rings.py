"""Several rings from one inventory (`ring: {count: K}`): the ready nodes split into K contiguous slices of
the ring order, each cloned by its own dollyS, all started together. Ring i (from 1) keeps its files in
<cluster dir>/dolly/ring<i>/ and its tail listens on the server's dolly_port + i - 1; one ring keeps dolly/
and dolly_port. Pure: what to run, not running it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from provision.model import Node
from provision.ring_run import RingFiles

T = TypeVar("T")


def split(items: Sequence[T], count: int) -> list[tuple[T, ...]]:
    """`items` in min(count, len(items)) contiguous slices, in order, their lengths differing by one at most
    (the first ones longer); no slice for no items."""
    parts = min(count, len(items))
    if parts < 1:
        return []
    size, longer = divmod(len(items), parts)
    slices, start = [], 0
    for i in range(parts):
        end = start + size + (i < longer)
        slices.append(tuple(items[start:end]))
        start = end
    return slices


@dataclass(frozen=True)
class RingPlan:
    """One of an install's rings."""

    number: int              # 1 .. count
    count: int               # how many rings run together
    nodes: tuple[Node, ...]  # its members, in ring order
    files: RingFiles         # its ring.conf, report, progress and log
    tail_port: int           # where its last member connects back to the server

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def plan_rings(dolly_dir: Path, dolly_port: int, ready: Sequence[Node], count: int) -> list[RingPlan]:
    """The rings for `ready` (in ring order) when the inventory asks for `count` of them."""
    slices = split(ready, count)
    if len(slices) == 1:
        return [RingPlan(1, 1, slices[0], RingFiles(dolly_dir), dolly_port)]
    return [RingPlan(i, len(slices), part, RingFiles(dolly_dir / f"ring{i}"), dolly_port + i - 1)
            for i, part in enumerate(slices, start=1)]
