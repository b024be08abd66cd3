"""`provision dhcp start|status|stop` (alias `dhcpd`) and a flip while that server runs, for ISC dhcpd and Kea,
inside a namespace holding the lab server's address (dhcpd serves only interfaces with an address of a
declared subnet) (root)."""

from __future__ import annotations

import json
import os
import sys
import uuid

import pytest

from provision.lab import netns
from tests.conftest import REPO, require_tool
from tests.fixtures.diskless import diskless_dir

pytestmark = pytest.mark.root

LAB = REPO / "inventory" / "lab.yaml"


@pytest.fixture
def server(tmp_path, request):
    """`provision ARGS --inventory lab.yaml` in the server's namespace (the lab inventory with boot.diskless);
    with param "kea", on Kea."""
    inventory = tmp_path / "lab.yaml"
    text = LAB.read_text().replace("boot:\n", f"boot:\n  diskless: {diskless_dir(tmp_path)}\n", 1)
    if getattr(request, "param", "isc") == "kea":
        require_tool("kea-dhcp4")
        text += "dhcp: {server: kea}\n"
    else:
        require_tool("dhcpd")
    inventory.write_text(text)
    net = netns.Network(f"pvt-{uuid.uuid4().hex[:5]}")
    try:
        host = net.add_host("srv", address="10.77.0.1/24")

        def provision(*args: str):
            return net.run(host, [sys.executable, "-m", "provision", *args, "--inventory", str(inventory)],
                           check=False, env={**os.environ, "PROVISION_STATE_DIR": str(tmp_path)}, cwd=REPO)
        yield provision
        provision("dhcp", "stop")
    finally:
        net.teardown()


def pid_of(status) -> str:
    return status.stdout.split("pid ")[1].split(")")[0]


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
    flipped = server("flip-to-diskless", "n01")
    assert flipped.returncode == 0 and "dhcpd restarted" in flipped.stdout, flipped.stdout + flipped.stderr
    assert pid_of(server("dhcpd", "status")) != new_pid
    live = (tmp_path / "clusters" / "lab" / "dhcpd" / "dhcpd.conf").read_text()
    assert "# boot: diskless" in live[live.index("host n01 {"):]

    stopped = server("dhcpd", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert server("dhcpd", "status").returncode == 1


@pytest.mark.parametrize("server", ["kea"], indirect=True)
def test_kea_start_status_flip_reloads_without_restart_stop(server, tmp_path):
    started = server("dhcp", "start")
    assert started.returncode == 0, started.stderr
    status = server("dhcp", "status")
    assert status.returncode == 0 and status.stdout.startswith("kea-dhcp4 for lab: running (pid"), status.stdout
    pid = pid_of(status)

    flipped = server("flip-to-local", "n01")
    assert flipped.returncode == 0, flipped.stdout + flipped.stderr
    assert "kea-dhcp4 reloaded" in flipped.stdout, flipped.stdout
    assert pid_of(server("dhcp", "status")) == pid  # config-reload, no restart
    live = json.loads((tmp_path / "clusters" / "lab" / "kea" / "kea-dhcp4.conf").read_text())
    [n01] = [h for h in live["Dhcp4"]["subnet4"][0]["reservations"] if h["hostname"] == "n01"]
    assert "local" in json.dumps(n01)
    flipped = server("flip-to-diskless", "n01")
    assert flipped.returncode == 0 and "kea-dhcp4 reloaded" in flipped.stdout, flipped.stdout + flipped.stderr
    assert pid_of(server("dhcp", "status")) == pid
    live = json.loads((tmp_path / "clusters" / "lab" / "kea" / "kea-dhcp4.conf").read_text())
    [n01] = [h for h in live["Dhcp4"]["subnet4"][0]["reservations"] if h["hostname"] == "n01"]
    assert n01["user-context"] == {"boot": "diskless"}

    stopped = server("dhcpd", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert server("dhcp", "status").returncode == 1
