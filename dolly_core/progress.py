"""Live progress of a run on the server: per node bytes, MB/s and state.

Fed from the heartbeats that travel back up the ring (never from the data path); drawn with rich
when stderr is a terminal, else (with -v) logged as one line every few seconds.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table


class Progress:
    def __init__(self, names: list[str], total: int, live: bool, log, every: float = 2.0):
        self.names, self.total, self.log, self.every = names, total, log, every
        self.started = time.monotonic()
        self.last_line = 0.0
        self.live = Live(console=Console(stderr=True), refresh_per_second=4, transient=False) if live else None
        if self.live:
            self.live.start()

    def rows(self, progress: dict[int, list]) -> list[tuple[str, int, float, str]]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rows = []
        for index, name in enumerate(self.names, 1):
            done, state = progress.get(index, [0, "waiting"])
            rows.append((name, int(done), done / elapsed / 1e6, state))
        return rows

    def update(self, progress: dict[int, list]) -> None:
        rows = self.rows(progress)
        if self.live:
            table = Table(title=f"dollyS: {self.total / 1e6:.1f} MB to {len(self.names)} node(s)")
            for col in ("node", "bytes", "MB/s", "%", "state"):
                table.add_column(col, justify="left" if col in ("node", "state") else "right")
            for name, done, rate, state in rows:
                pct = 100.0 * done / self.total if self.total else 100.0
                table.add_row(name, f"{done:,}", f"{rate:.1f}", f"{pct:.0f}", state)
            self.live.update(table)
        elif self.log and time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            self.log.info("progress: %s", ", ".join(
                f"{name} {done / 1e6:.0f} MB {state}" for name, done, _, state in rows))

    def stop(self) -> None:
        if self.live:
            self.live.stop()
