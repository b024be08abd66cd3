"""Two rings from one inventory on the simulated cluster (root): `ring: {count: 2}` splits 6 namespace nodes
into n01-n03 and n04-n06, one dollyS each, started together; n02's plug is pulled mid-clone, so ring 1
short-cuts around it while ring 2 is not touched. Every other node ends verified, personalised, on local boot."""

from __future__ import annotations

import json

import pytest

from provision.cluster import ClusterFiles
from provision.inventory import load_inventory
from provision.lab import cluster as lab, demo as lab_demo, netns
from tests.conftest import require_tool
from tests.fixtures.inventories import lab_copy

pytestmark = pytest.mark.root


def test_two_rings_one_node_killed_in_the_first(tmp_path):
    for tool in ("dhcpd", "busybox", "tftp", "curl"):
        require_tool(tool)
    inventory, env = lab_copy(tmp_path, extra="ring: {count: 2}\n")
    inv = load_inventory(inventory)
    log = tmp_path / "install.log"
    try:
        result = lab_demo.run_demo(inv, nodes=6, kill="n02", image_mib=24, ring_timeout=5.0, env=env,
                                   show=lambda line: None, install_log=log, reboot_seconds=0.5)
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])
    output, summary = log.read_text(), lab_demo.summary(result)
    assert result.install_status == 1, output[-4000:]  # one node failed: non-zero
    assert result.ok, summary
    for node in result.nodes:
        if node.name == "n02":
            assert (node.state, node.boot) == ("failed", "install"), summary
        else:
            assert (node.state, node.boot, node.identical, node.hostname, node.lab_boot_ok) == \
                ("done", "local", True, node.name, True), summary
    assert "cloning" in output and "through 2 rings at once" in output, output[-4000:]
    assert "ring 1 of 2: 3 node(s): lab-srv -> n01 -> n02 -> n03" in output
    assert "ring 2 of 2: 3 node(s): lab-srv -> n04 -> n05 -> n06" in output
    # each ring ran its own dollyS, closing back to its own port, and verified its own members
    dolly = ClusterFiles.of(inv, env).dolly
    for number, port, members in ((1, 9998, ("n01", "n02", "n03")), (2, 9999, ("n04", "n05", "n06"))):
        config = (dolly / f"ring{number}" / "ring.conf").read_text()
        assert f"server 10.77.0.1{f':{port}' if port != 9998 else ''}\n" in config
        report = json.loads((dolly / f"ring{number}" / "report.json").read_text())
        verdicts = {str(inv.node(name).ip): name for name in members}
        oks = {verdicts[v["address"].split(":")[0]]: v["ok"] for v in report["nodes"]}
        assert oks == {name: name != "n02" for name in members}, report
