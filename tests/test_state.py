"""Node state store: atomic JSON, safe against concurrent writers in several processes."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from provision.bootmode import BootMode
from provision.errors import ProvisionError
from provision.state import NodeRecord, NodeState, StateStore


def test_records_round_trip_and_reports_set_errors(tmp_path):
    store = StateStore(tmp_path / "nodes-lab.json")
    assert store.load() == {}
    store.ensure(["n01", "n02"])
    store.report("n01", "ready", "dollyC listening")
    store.report("n02", NodeState.FAILED, "disk full")
    store.set_boot(["n01"], BootMode.LOCAL)
    records = StateStore(tmp_path / "nodes-lab.json").load()
    assert list(records) == ["n01", "n02"]
    assert records["n01"].state is NodeState.READY and records["n01"].error is None
    assert records["n01"].boot is BootMode.LOCAL
    assert records["n02"].state is NodeState.FAILED and records["n02"].error == "disk full"
    store.report("n02", "ready", "reinstalling")
    assert store.load()["n02"].error is None
    data = json.loads((tmp_path / "nodes-lab.json").read_text())
    assert {"name", "state", "boot", "error", "updated"} <= set(data["nodes"][0])
    assert data["nodes"][0]["updated"].endswith("Z")


def test_ensure_keeps_existing_records(tmp_path):
    store = StateStore(tmp_path / "s.json")
    store.update("n01", state=NodeState.DONE, boot=BootMode.LOCAL, bytes=10)
    records = store.ensure(["n01", "n02"])
    assert records["n01"].state is NodeState.DONE and records["n01"].bytes == 10
    assert records["n02"] == NodeRecord("n02", updated=records["n02"].updated)


def _hammer(path: str, worker: int) -> None:
    store = StateStore(path)
    for i in range(25):
        store.report(f"w{worker}-{i}", "cloning", f"update {i}")


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "s.json"
    procs = [multiprocessing.get_context("fork").Process(target=_hammer, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(StateStore(path).load()) == 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.json.")]  # no temp files left


def test_corrupt_file_is_reported(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(ProvisionError, match="s.json: unreadable state file"):
        StateStore(tmp_path / "s.json").load()
