"""The simulated network: namespaces on a bridge, shaping, name resolution, complete teardown."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from provision.lab import netns

pytestmark = pytest.mark.root


@pytest.fixture
def net():
    prefix = f"pvt-{uuid.uuid4().hex[:6]}"
    network = netns.Network(prefix, rate="100mbit")
    try:
        yield network
    finally:
        network.teardown()
        netns.teardown_prefix(prefix)


def test_two_hosts_ping_each_other_with_given_macs(net):
    a = net.add_host("a", address="10.250.0.1/24", mac="52:54:00:aa:00:01")
    b = net.add_host("b", address="10.250.0.2/24", mac="52:54:00:aa:00:02")
    assert net.run(a, ["ping", "-c", "1", "-W", "2", "10.250.0.2"], check=False).returncode == 0
    assert net.run(b, ["ping", "-c", "1", "-W", "2", "10.250.0.1"], check=False).returncode == 0
    neigh = net.run(a, ["ip", "neigh", "show", "10.250.0.2"]).stdout
    assert "52:54:00:aa:00:02" in neigh
    link = net.run(b, ["ip", "-o", "link", "show", "eth0"]).stdout
    assert "52:54:00:aa:00:02" in link


def test_lab_addresses_stay_out_of_the_host_namespace(net):
    net.add_host("a", address="10.250.1.1/24")
    host_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.250.1.1" not in host_addrs
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "port1" not in host_links and "br0" not in host_links


def test_shaping_is_applied_on_both_ends(net):
    a = net.add_host("a", address="10.250.2.1/24")
    b = net.add_host("b", address="10.250.2.2/24", rate="10mbit")
    host_side = subprocess.run(["tc", "-n", a.ns, "qdisc", "show", "dev", "eth0"],
                               capture_output=True, text=True, check=True).stdout
    switch_side = subprocess.run(["tc", "-n", net.switch_ns, "qdisc", "show", "dev", a.port],
                                 capture_output=True, text=True, check=True).stdout
    assert "tbf" in host_side and "100Mbit" in host_side
    assert "tbf" in switch_side and "100Mbit" in switch_side
    b_side = subprocess.run(["tc", "-n", b.ns, "qdisc", "show", "dev", "eth0"],
                            capture_output=True, text=True, check=True).stdout
    assert "10Mbit" in b_side


def test_hosts_file_resolves_names_inside_namespaces(net):
    a = net.add_host("a", address="10.250.3.1/24")
    net.add_host("b", address="10.250.3.2/24")
    net.write_hosts({"alpha": "10.250.3.1", "beta": "10.250.3.2"})
    out = net.run(a, ["getent", "hosts", "beta"]).stdout
    assert out.split()[0] == "10.250.3.2"
    assert net.run(a, ["ping", "-c", "1", "-W", "2", "beta"], check=False).returncode == 0


def test_teardown_removes_everything_even_with_running_processes():
    prefix = f"pvt-{uuid.uuid4().hex[:6]}"
    net = netns.Network(prefix)
    try:
        a = net.add_host("a", address="10.250.4.1/24")
        net.add_host("b")
        net.write_hosts({"a": "10.250.4.1"})
        sleeper = net.popen(a, ["sleep", "300"])
        removed = netns.teardown_prefix(prefix)  # as after a crash: no Network object needed
        assert sorted(removed) == sorted([f"{prefix}-sw", f"{prefix}-a", f"{prefix}-b"])
        assert sleeper.wait(timeout=10) != 0
        assert not [ns for ns in netns.list_namespaces() if ns.startswith(prefix)]
        assert not (netns.NETNS_ETC / f"{prefix}-a").exists()
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "port1" not in links and "port2" not in links
    finally:
        netns.teardown_prefix(prefix)


def test_a_leftover_switch_namespace_is_reported(net):
    with pytest.raises(netns.NetnsError, match="exists already"):
        netns.Network(net.prefix)


def test_bad_arguments_are_refused(net):
    with pytest.raises(ValueError, match="bad MAC"):
        net.add_host("a", mac="52:54:00:zz:00:01")
    with pytest.raises(ValueError, match="bad rate"):
        netns.parse_rate("fast")
    assert netns.parse_rate("100mbit") == 100_000_000


def test_a_kill_returns_once_a_big_process_has_ended(net):
    """QEMU frees gigabytes when killed and holds its tap until then: the kill waits for the end (here a
    zombie, as this test has not reaped its child yet)."""
    host = net.add_host("a", address="10.99.0.1/24")
    code = "import sys, time; b = b'x' * (512 << 20); print('filled', flush=True); time.sleep(60)"
    proc = subprocess.Popen(netns.ns_argv(host.ns, [sys.executable, "-c", code]), stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"filled\n"
        assert netns.kill_processes(host.ns) == [proc.pid]
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(") ", 1)[1][0]
        assert state == "Z", state
    finally:
        proc.kill()
        proc.wait()


def test_a_process_just_started_in_a_namespace_is_found_there_by_a_kill(net):
    host = net.add_host("a", address="10.99.0.1/24")
    proc = subprocess.Popen(netns.ns_argv(host.ns, ["sleep", "30"]))
    try:
        netns.wait_inside(host.ns, proc)
        assert proc.pid in netns.kill_processes(host.ns)
        assert proc.wait(timeout=10) == -9
    finally:
        proc.kill()
        proc.wait()
