"""`provision dhcpd start|status|stop` and a flip while that dhcpd runs, inside a namespace holding the
lab server's address (dhcpd serves only interfaces with an address of a declared subnet) (root)."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from provision.lab import netns
from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.root

LAB = str(REPO / "inventory" / "lab.yaml")


@pytest.fixture
def server(tmp_path):
    require_tool("dhcpd")
    net = netns.Network(f"pvt-{uuid.uuid4().hex[:5]}")
    try:
        host = net.add_host("srv", address="10.77.0.1/24")

        def provision(*args: str):
            return net.run(host, [sys.executable, "-m", "provision", *args, "--inventory", LAB], check=False,
                           env={**os.environ, "PROVISION_STATE_DIR": str(tmp_path)}, cwd=REPO)
        yield provision
        provision("dhcpd", "stop")
    finally:
        net.teardown()


def test_start_status_flip_restarts_stop(server, tmp_path):
    assert server("dhcpd", "status").returncode == 1
    started = server("dhcpd", "start")
    assert started.returncode == 0, started.stderr
    status = server("dhcpd", "status")
    assert status.returncode == 0 and "running (pid" in status.stdout
    pid = status.stdout.split("pid ")[1].split(")")[0]

    flipped = server("flip-to-local", "n01")
    assert flipped.returncode == 0 and "dhcpd restarted" in flipped.stdout, flipped.stdout + flipped.stderr
    new_pid = server("dhcpd", "status").stdout.split("pid ")[1].split(")")[0]
    assert new_pid != pid
    live = (tmp_path / "clusters" / "lab" / "dhcpd" / "dhcpd.conf").read_text()
    assert "# boot: local" in live[live.index("host n01 {"):]

    stopped = server("dhcpd", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert server("dhcpd", "status").returncode == 1
