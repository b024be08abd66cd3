"""Sequential discovery through BMCs (root): namespace machines with unknown MACs, each behind its own ipmi_sim
BMC (on the server namespace's loopback) whose power-on makes the machine ask for DHCP (busybox udhcpc in its
namespace, after a delay of its own). `provision discover --bmc-range` names them in BMC order, not in MAC order
nor in the order their delays would have them boot; a BMC that does not answer and a machine that never asks are
named and the others go on; the BMC of a node the inventory has is left alone; a machine outside the range that
asks while no machine is being powered on is named and not added."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from provision.inventory import load_inventory
from provision.lab import bmc as lab_bmc, netns
from tests.conftest import REPO, require_tool
from tests.fixtures.inventories import inventory_yaml, write

pytestmark = pytest.mark.root

USER, PASSWORD = "admin", "s3cret-Seq"
KNOWN = '  - {name: n01, mac: "02:00:00:00:00:01", ip: 10.9.0.11, bmc: {address: 127.0.0.10}}\n'
# BMC address -> (machine's host name, MAC, seconds before it asks for DHCP; None: it never does)
MACHINES = {"127.0.0.11": ("c", "02:77:00:00:00:c3", 1.0),
            "127.0.0.13": ("a", "02:77:00:00:00:a1", 0.5),
            "127.0.0.14": ("b", "02:77:00:00:00:b2", 0.0),
            "127.0.0.15": ("d", "02:77:00:00:00:d4", None)}  # 127.0.0.12: no BMC there
STRAY = "02:77:00:00:00:e5"  # a machine behind no BMC of the range


def listening(server: netns.Host, address: str) -> bool:
    out = netns.ns_argv(server.ns, ["ss", "-Hlun", f"src {address}:623"])
    return bool(subprocess.run(out, capture_output=True, text=True).stdout.strip())


@pytest.fixture
def rack(tmp_path):
    """The server (10.9.0.1) and the machines on one switch, their BMCs up; yields (network, server, inventory)."""
    for tool in ("busybox", lab_bmc.IPMI_SIM, "ipmitool"):
        require_tool(tool)
    sims: list[subprocess.Popen] = []
    with netns.Network(f"pvt-{uuid.uuid4().hex[:6]}") as net:
        server = net.add_host("srv", address="10.9.0.1/24")
        net.add_host("stray", mac=STRAY)
        try:
            for address, (name, mac, delay) in MACHINES.items():
                host = net.add_host(name, mac=mac)
                asks = f"sleep {delay}; exec busybox udhcpc -f -i eth0 -s /bin/true -t 5 -T 1 -A 1"
                machine = netns.ns_argv(host.ns, ["sh", "-c", asks if delay is not None else "exec sleep 3600"])
                bmc = lab_bmc.LabBmc(name, address, 623, USER, PASSWORD, tmp_path / f"bmc-{name}")
                sims.append(lab_bmc.start(bmc, machine, wrap=netns.ns_argv(server.ns, [])))
                deadline = time.monotonic() + 5
                while not listening(server, address):  # start() waits for port 623, which the first one has
                    assert time.monotonic() < deadline, f"ipmi_sim for {address} does not listen"
                    time.sleep(0.05)
            secret = tmp_path / "bmc.secret"
            secret.write_text(PASSWORD + "\n")
            secret.chmod(0o600)
            defaults = f"bmc: {{type: ipmi, user: {USER}, password_file: bmc.secret}}"
            yield net, server, write(tmp_path, inventory_yaml(0, defaults=defaults, extra_nodes=KNOWN))
        finally:
            for name, *_ in MACHINES.values():
                lab_bmc.stop_machine(tmp_path / f"bmc-{name}")
            for proc in sims:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_machines_are_named_in_bmc_order(rack, tmp_path):
    net, server, path = rack
    original = path.read_text()
    discover = net.popen(server, [sys.executable, "-m", "provision", "discover", "--inventory", str(path),
                                  "--bmc-range", "127.0.0.10-127.0.0.15", "--timeout", "5", "--bmc-timeout", "1",
                                  "--bmc-retries", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    out = ""
    for line in discover.stdout:
        out += line
        if "listening on eth0" in line:
            break
    # one DISCOVER while the range is powered off (the BMC where nothing answers holds that up for 2 s)
    net.run(net.hosts["stray"], ["busybox", "udhcpc", "-n", "-q", "-i", "eth0", "-s", "/bin/true", "-t", "1",
                                 "-T", "1"], check=False)
    rest, _ = discover.communicate(timeout=120)
    out += rest
    assert discover.returncode == 1, out
    assert "discover: left out, nodes have them: 127.0.0.10 (n01's)\n" in out
    found = [line for line in out.splitlines() if line.startswith("discover: n0")]
    assert found == ["discover: n02 02:77:00:00:00:c3 10.9.0.12 bmc 127.0.0.11",
                     "discover: n03 02:77:00:00:00:a1 10.9.0.13 bmc 127.0.0.13",
                     "discover: n04 02:77:00:00:00:b2 10.9.0.14 bmc 127.0.0.14"], out
    failed = [line for line in out.splitlines() if line.startswith("discover: FAILED")]
    assert len(failed) == 2, out
    assert failed[0].startswith("discover: FAILED: ipmi 127.0.0.12:623: no answer (") and failed[0].endswith(
        "after 1 attempts: skipped"), out
    assert failed[1] == ("discover: FAILED: ipmi 127.0.0.15:623: powered on, but no DHCPDISCOVER from a new MAC "
                         "within 5 s (powered off again)"), out
    assert (f"discover: {STRAY} asked for an address while no machine of the range was being powered on: not "
            "added\n") in out
    assert out.endswith(f"discover: 2 failed (FAILED above); MACs from no machine of the range: {STRAY} not added; "
                        f"3 node(s) added to {path} (the old file: cluster.yaml.bak)\n"), out
    assert path.read_text() == original + (
        '  - {name: n02, mac: "02:77:00:00:00:c3", ip: 10.9.0.12, bmc: {address: 127.0.0.11}}\n'
        '  - {name: n03, mac: "02:77:00:00:00:a1", ip: 10.9.0.13, bmc: {address: 127.0.0.13}}\n'
        '  - {name: n04, mac: "02:77:00:00:00:b2", ip: 10.9.0.14, bmc: {address: 127.0.0.14}}\n')
    assert path.with_name("cluster.yaml.bak").read_text() == original
    n02 = load_inventory(path).node("n02").bmc
    assert (n02.address, n02.user, n02.password_file) == ("127.0.0.11", USER, tmp_path / "bmc.secret")
    running = {name: lab_bmc._running(tmp_path / f"bmc-{name}") is not None for name, *_ in MACHINES.values()}
    assert running == {"c": True, "a": True, "b": True, "d": False}  # the found stay on, to be installed
