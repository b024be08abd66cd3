"""What the two demos (demo.py, vm_demo.py) conclude: a node's verdict, the run's, and the summary table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol


class Outcome(Protocol):
    killed: bool
    state: str  # from `provision status --json`
    boot: str   # install or local

    @property
    def as_expected(self) -> bool: ...


def node_as_expected(outcome: Outcome, checks: bool) -> bool:
    """A killed node failed and stays on install boot; any other is done, on local boot, and passed `checks`."""
    if outcome.killed:
        return outcome.state == "failed" and outcome.boot == "install"
    return outcome.state == "done" and outcome.boot == "local" and checks


def run_as_expected(install_status: int, nodes: Sequence[Outcome]) -> bool:
    """`provision install` exits 1 when a node was killed, else 0, and every node is as expected."""
    return install_status == (1 if any(n.killed for n in nodes) else 0) and all(n.as_expected for n in nodes)


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def summary_table(columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[str]], closing: str, ok: bool,
            after: str = "") -> str:
    """A table (each cell padded to its column's width, the last cell not) and the line
    `<closing>: as expected<after>` (or NOT as expected)."""
    widths = [width for _, width in columns]
    lines = [_row([title for title, _ in columns], widths), *(_row(cells, widths) for cells in rows)]
    lines.append(f"{closing}: {'as expected' if ok else 'NOT as expected'}{after}")
    return "\n".join(lines)


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return " ".join([*(f"{cell:{width}}" for cell, width in zip(cells[:-1], widths)), cells[-1]])
