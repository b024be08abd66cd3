"""The per-node status and the live status file of dollyS --progress (pure parts and the file)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from dolly_core.ring import Member
from dolly_core.status import StatusFile, node_statuses, settled

REPO = Path(__file__).resolve().parents[1]
CLIENTS = [Member("n1", "10.0.0.1", 9998), Member("n2", "10.0.0.2", 9998), Member("n3:7000", "10.0.0.3", 7000)]


def test_statuses_follow_the_heartbeats_in_ring_order():
    progress = {1: [4_000_000, "done"], 3: [0, "dead", "dead (seen by n2): connection reset"]}
    rows = node_statuses(CLIENTS, progress, elapsed=2.0)
    assert [(r.name, r.address, r.state, r.bytes, r.mb_per_s, r.error) for r in rows] == [
        ("n1", "10.0.0.1:9998", "done", 4_000_000, 2.0, None),
        ("n2", "10.0.0.2:9998", "waiting", 0, 0.0, None),
        ("n3:7000", "10.0.0.3:7000", "dead", 0, 0.0, "dead (seen by n2): connection reset")]


def test_the_final_snapshot_takes_each_nodes_verdict():
    rows = node_statuses(CLIENTS, {1: [3_000_000, "receiving"], 2: [1_000_000, "receiving"]}, elapsed=1.0)
    report = {"seconds": 2.0, "nodes": [
        {"ok": True, "error": None, "bytes": 4_000_000},
        {"ok": False, "error": "/disk.img: sha256 ... differs from the server's", "bytes": 4_000_000},
        {"ok": False, "error": "dead (seen by n2): no heartbeat for 2.1 s", "bytes": 0}]}
    assert [(r.state, r.bytes, r.mb_per_s, r.error) for r in settled(rows, report)] == [
        ("done", 4_000_000, 2.0, None),
        ("failed", 4_000_000, 2.0, "/disk.img: sha256 ... differs from the server's"),
        ("dead", 0, 0.0, "dead (seen by n2): no heartbeat for 2.1 s")]


def test_status_file_is_replaced_whole(tmp_path):
    path = tmp_path / "progress.json"
    status = StatusFile(str(path), CLIENTS, 4_000_000, log=None, every=0.0)
    assert json.loads(path.read_text()) == {"seconds": 0.0, "total_bytes": 4_000_000, "nodes": [
        {"name": m.name, "address": f"{m.host}:{m.port}", "state": "waiting", "bytes": 0, "mb_per_s": 0.0,
         "error": None} for m in CLIENTS]}
    status.update({2: [1_000_000, "receiving"]})
    assert json.loads(path.read_text())["nodes"][1]["bytes"] == 1_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_unwritable_progress_file_is_bad_input(tmp_path):
    (tmp_path / "disk.img").write_bytes(b"x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "dolly.conf"
    config.write_text(f"iofiles 1\n{tmp_path / 'disk.img'} > /disk.img\nserver 127.0.0.1:{port}\n"
                      "firstclient 127.0.0.2\nlastclient 127.0.0.2\nclients 1\n127.0.0.2\nendconfig\n")
    target = tmp_path / "missing" / "progress.json"
    proc = subprocess.run([sys.executable, "-m", "dolly_core.cli", "server", "-f", config, "--progress", target],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert f"cannot write the progress file {target}" in proc.stderr
