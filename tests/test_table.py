"""The install's tables and progress line, from node records and a dollyS progress snapshot."""

from __future__ import annotations

from rich.console import Console

from provision.bootmode import BootMode
from provision.state import NodeRecord, NodeState
from provision.table import clone_table, node_table
from provision.ring_run import progress_line

RING = {"seconds": 4.2, "total_bytes": 64 << 20, "nodes": [
    {"name": "n01", "address": "10.77.0.11:9998", "state": "receiving", "bytes": 48 << 20, "mb_per_s": 11.9, "error": None},
    {"name": "n02", "address": "10.77.0.12:9998", "state": "dead", "bytes": 8 << 20, "mb_per_s": 2.0,
     "error": "silent for 3 s"},
    {"name": "n03", "address": "10.77.0.13:9998", "state": "receiving", "bytes": 40 << 20, "mb_per_s": 9.5, "error": None},
]}
RECORDS = [NodeRecord("n01", NodeState.READY), NodeRecord("n02", NodeState.READY), NodeRecord("n03", NodeState.READY)]


def text_of(table) -> str:
    console = Console(width=160, record=True)
    console.print(table)
    return console.export_text()


def test_clone_table_shows_each_nodes_share_and_rate():
    text = text_of(clone_table(RECORDS, RING))
    assert "cloning 64 MiB, 4 s" in text
    n01 = next(line for line in text.splitlines() if "n01" in line)
    assert "receiving" in n01 and "48 MiB (75%)" in n01 and "11.9" in n01
    n02 = next(line for line in text.splitlines() if "n02" in line)
    assert "dead" in n02 and "silent for 3 s" in n02


def test_clone_table_before_the_first_snapshot():
    text = text_of(clone_table(RECORDS, {}))
    assert "n03" in text and "%" not in text


def test_progress_line_reports_the_slowest_live_node():
    assert progress_line(RECORDS, RING) == "clone: 4 s, every live node has 62% of 64 MiB; dead: n02"
    assert progress_line(RECORDS, {}) == "clone: starting (3 node(s))"


def test_final_table_has_rate_and_reason():
    records = [NodeRecord("n01", NodeState.DONE, BootMode.LOCAL, bytes=64 << 20, seconds=5.6),
               NodeRecord("n02", NodeState.FAILED, error="clone failed: node is dead")]
    text = text_of(node_table(records))
    assert "12.0" in next(line for line in text.splitlines() if "n01" in line)
    assert "clone failed: node is dead" in text
