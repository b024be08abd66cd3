"""The per-node table that `provision install` ends with and `provision status` prints."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from provision.state import NodeRecord, NodeState

_STYLE = {NodeState.DONE: "green", NodeState.FAILED: "bold red", NodeState.CLONING: "cyan",
          NodeState.READY: "yellow", NodeState.WAITING: "dim"}


def node_table(records: Sequence[NodeRecord], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("node", "state", "boot", "bytes", "MB/s", "seconds", "reason"):
        table.add_column(column, justify="right" if column in ("bytes", "MB/s", "seconds") else "left")
    for r in records:
        rate = f"{r.bytes / r.seconds / 1e6:.1f}" if r.bytes and r.seconds else ""
        table.add_row(r.name, f"[{_STYLE[r.state]}]{r.state}[/]", str(r.boot),
                      f"{r.bytes:,}" if r.bytes is not None else "", rate,
                      f"{r.seconds:.1f}" if r.seconds is not None else "", r.error or "")
    return table


def print_table(records: Sequence[NodeRecord], title: str | None = None) -> None:
    Console(width=max(Console().width, 120)).print(node_table(records, title))
