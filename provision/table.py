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


def clone_table(records: Sequence[NodeRecord], ring: dict) -> Table:
    """The live view while the ring runs: each node's install state and, from dollyS's progress file
    (`{"total_bytes", "nodes": [{"name", "state", "bytes", "mb_per_s", "error"}]}`), its share of the image."""
    total = ring.get("total_bytes") or 0
    by_name = {n["name"]: n for n in ring.get("nodes", [])}
    table = Table(title=f"cloning {total / 2**20:,.0f} MiB, {ring.get('seconds', 0):.0f} s")
    for column in ("node", "state", "ring", "received", "MB/s", "note"):
        table.add_column(column, justify="right" if column in ("received", "MB/s") else "left")
    for r in records:
        node = by_name.get(r.name, {})
        received = node.get("bytes", 0)
        share = f"{received / 2**20:,.0f} MiB ({100 * received / total:.0f}%)" if total and node else ""
        table.add_row(r.name, f"[{_STYLE[r.state]}]{r.state}[/]", node.get("state", ""), share,
                      f"{node['mb_per_s']:.1f}" if node else "", r.error or node.get("error") or "")
    return table


def print_table(records: Sequence[NodeRecord], title: str | None = None) -> None:
    Console(width=max(Console().width, 120)).print(node_table(records, title))
