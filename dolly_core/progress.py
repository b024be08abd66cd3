"""Live progress of a run on the server: per node bytes, MB/s and state.

Fed from the heartbeats that travel back up the ring (never from the data path), through the same
per-node status as the live status file (status.py); drawn with rich when stderr is a terminal,
else (with -v) logged as one line every few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dolly_core.ring import Member
from dolly_core.status import node_statuses


class Progress:
    def __init__(self, clients: Sequence[Member], total: int, live: bool, log, every: float = 2.0):
        self.clients, self.total, self.log, self.every = list(clients), total, log, every
        self.started = time.monotonic()
        self.last_line = 0.0
        self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=False) if live else None
        if self.live:
            self.live.start()

    def update(self, progress: dict[int, list]) -> None:
        rows = node_statuses(self.clients, progress, time.monotonic() - self.started)
        if self.live:
            table = Table(title=f"dollyS: {self.total / 1e6:.1f} MB to {len(self.clients)} node(s)")
            for col in ("node", "bytes", "MB/s", "%", "state"):
                table.add_column(col, justify="left" if col in ("node", "state") else "right")
            for row in rows:
                pct = 100.0 * row.bytes / self.total if self.total else 100.0
                table.add_row(row.name, f"{row.bytes:,}", f"{row.mb_per_s:.1f}", f"{pct:.0f}", row.state)
            self.live.update(table)
        elif self.log and time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            self.log.info("progress: %s", ", ".join(
                f"{row.name} {row.bytes / 1e6:.0f} MB {row.state}" for row in rows))

    def stop(self) -> None:
        if self.live:
            self.live.stop()
