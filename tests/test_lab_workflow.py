"""The whole workflow on the simulated cluster (root): `provision install` in the lab's server namespace,
8 lab nodes booting with real DHCP/TFTP/HTTP clients, one node's plug pulled in the middle of the clone.
The 7 others must end byte-identical, personalised and on local boot; the dead one failed, on install."""

from __future__ import annotations

import uuid

import pytest
import yaml

from provision import lab, lab_demo, netns
from provision.cluster import ClusterFiles
from provision.inventory import load_inventory
from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.root


@pytest.fixture
def lab_inventory(tmp_path):
    """inventory/lab.yaml with its lab files under tmp_path; a private namespace prefix and state dir."""
    for tool in ("dhcpd", "busybox", "tftp", "curl"):
        require_tool(tool)
    inventory = tmp_path / "lab.yaml"
    text = (REPO / "inventory" / "lab.yaml").read_text()
    inventory.write_text(text.replace("/var/lib/provision/lab", str(tmp_path / "files")))
    env = {"PROVISION_STATE_DIR": str(tmp_path / "state"), "PROVISION_LAB_PREFIX": f"pvt-{uuid.uuid4().hex[:5]}"}
    try:
        yield load_inventory(inventory), env
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])


def test_eight_nodes_one_killed_mid_clone(lab_inventory, tmp_path):
    inv, env = lab_inventory
    log = tmp_path / "install.log"
    result = lab_demo.run_demo(inv, nodes=8, kill="n04", image_mib=48, ring_timeout=2.0, env=env,
                               show=lambda line: None, install_log=log, reboot_seconds=0.5)
    install_output = log.read_text()
    summary = lab_demo.summary(result)
    assert result.install_status == 1, install_output[-4000:]  # one node failed: non-zero
    survivors = [n for n in result.nodes if n.name != "n04"]
    for node in survivors:
        assert (node.state, node.boot) == ("done", "local"), summary
        assert node.identical, summary
        assert node.hostname == node.name, summary
        assert node.lab_boot_ok, summary  # its firmware found local boot after the reboot
    [dead] = [n for n in result.nodes if n.name == "n04"]
    assert (dead.state, dead.boot) == ("failed", "install"), summary
    assert dead.error, summary
    assert result.ok

    # the real services did the work: leases from our dhcpd, PXE configs from our TFTP server
    files = ClusterFiles.of(inv, env)
    dhcpd_log = (files.root / "dhcpd" / "dhcpd.log").read_text()
    for node in inv.nodes[:8]:
        assert f"DHCPACK on {node.ip} to {node.mac}" in dhcpd_log
        assert f"sent pxelinux.cfg/01-{node.mac.replace(':', '-')} to {node.ip}:" in install_output
    # the dead node's PXE config still installs; the others boot locally
    pxe = files.tftp_root / "pxelinux.cfg"
    assert "DEFAULT install" in (pxe / f"01-{inv.node('n04').mac.replace(':', '-')}").read_text()
    assert "LOCALBOOT 0" in (pxe / f"01-{inv.node('n05').mac.replace(':', '-')}").read_text()
    # lab down removed everything the lab made
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(env["PROVISION_LAB_PREFIX"])]
