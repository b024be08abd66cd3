"""The simulated cluster (root): `lab up` / `lab down`, and lab nodes booting with real clients against
the real services: see tests/test_lab_workflow.py for the whole install."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from provision.lab import cluster as lab, netns
from provision.cli import main as provision_main
from tests.conftest import require_tool

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def lab_env(tmp_path):
    """A private lab: its own namespace prefix, state dir and lab files (a copy of inventory/lab.yaml
    with paths under tmp_path and only the first two nodes, so dolly.conf names exactly the lab)."""
    for tool in ("dhcpd", "busybox", "tftp", "curl"):
        require_tool(tool)
    data = yaml.safe_load((REPO / "inventory" / "lab.yaml").read_text())
    text = yaml.safe_dump({**data, "nodes": data["nodes"][:2]}, sort_keys=False)
    inventory = tmp_path / "lab.yaml"
    inventory.write_text(text.replace("/var/lib/provision/lab", str(tmp_path / "files")))
    env = {"PROVISION_STATE_DIR": str(tmp_path / "state"), "PROVISION_LAB_PREFIX": f"pvt-{uuid.uuid4().hex[:5]}",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        yield env, inventory
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])


def host_view() -> str:
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout


def test_lab_up_status_down(lab_env, tmp_path, capsys):
    env, inventory = lab_env
    prefix = env["PROVISION_LAB_PREFIX"]
    assert provision_main(["lab", "up", "--inventory", str(inventory), "--nodes", "2", "--image-mib", "1"], env) == 0
    assert {f"{prefix}-sw", f"{prefix}-lab-srv", f"{prefix}-n01", f"{prefix}-n02"} <= set(netns.list_namespaces())
    link = subprocess.run(["ip", "-n", f"{prefix}-n02", "-o", "link", "show", "eth0"],
                          capture_output=True, text=True, check=True).stdout
    assert "02:77:00:00:00:02" in link
    assert lab.node_address(f"{prefix}-n01") is None  # nodes start without an address: DHCP gives it
    assert lab.node_address(f"{prefix}-lab-srv") == "10.77.0.1/24"
    assert "10.77.0." not in host_view()  # lab addresses never on the host's interfaces
    qdisc = subprocess.run(["tc", "-n", f"{prefix}-n01", "qdisc", "show", "dev", "eth0"],
                           capture_output=True, text=True).stdout
    assert "tbf" in qdisc and "100Mbit" in qdisc
    assert (tmp_path / "files" / "image.raw").stat().st_size == 1 << 20
    assert (tmp_path / "files" / "boot" / "vmlinuz").read_bytes() == lab.MEMDISK.read_bytes()

    capsys.readouterr()
    assert provision_main(["lab", "status", "--json"], env) == 0
    status = json.loads(capsys.readouterr().out)
    assert [(n["name"], n["namespace"]) for n in status["nodes"]] == [("n01", f"{prefix}-n01"), ("n02", f"{prefix}-n02")]
    assert status["nodes"][0]["disk"] == str(tmp_path / "state" / "lab" / "disks" / "n01")
    assert Path(status["nodes"][0]["disk"]).is_dir()

    # power: a booted node asks for DHCP (no server yet) until `off` kills it and takes its link down
    procs = lab.boot_nodes(lab.load_lab(env), ["n02"], dhcp_wait=60)
    assert procs["n02"].poll() is None
    lab.power_off(lab.load_lab(env), ["n02"])
    assert procs["n02"].wait(timeout=10) != 0
    assert "state DOWN" in subprocess.run(["ip", "-n", f"{prefix}-n02", "link", "show", "eth0"],
                                          capture_output=True, text=True).stdout

    # a second `up` clears the first (as after a crash) and builds a fresh lab
    assert provision_main(["lab", "up", "--inventory", str(inventory), "--nodes", "1", "--image-mib", "1"], env) == 0
    assert f"{prefix}-n02" not in netns.list_namespaces()

    assert provision_main(["lab", "down"], env) == 0
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(prefix)]
    assert not (tmp_path / "state" / "lab" / "disks").exists()
    assert not (tmp_path / "files" / "image.raw").exists()  # made by `up`, so removed by `down`
    assert provision_main(["lab", "status"], env) != 0


def test_bad_node_count_is_refused(lab_env):
    env, inventory = lab_env
    assert provision_main(["lab", "up", "--inventory", str(inventory), "--nodes", "3"], env) == 3
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(env["PROVISION_LAB_PREFIX"])]
