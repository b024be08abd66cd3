"""Discovery on the simulated cluster (root): lab nodes whose MACs the inventory lacks ask for DHCP one after
another; `provision discover` in the server namespace (beside a running dhcpd, which gives them nothing) appends
them in boot order, and `provision install` then installs them. More MACs than --count, a time-out, and the
listener's kernel filter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from provision.cluster import ClusterFiles
from provision.discovery.dhcp_packet import parse_frame
from provision.inventory import load_inventory
from provision.lab import cluster as lab, netns
from tests.conftest import REPO, require_tool
from tests.fixtures.inventories import lab_copy

pytestmark = pytest.mark.root

# n02 and n03 get MACs out of name order: the order discover gives them is the order they booted in
MACS = {"n02": "02:77:00:00:00:f2", "n03": "02:77:00:00:00:a3"}


@pytest.fixture
def unknown_nodes(tmp_path):
    """A lab of n01..n03 built from inventory/lab.yaml; then the inventory is cut down to n01, so n02 and n03
    are machines with MACs nobody has typed in. Yields (lab, inventory path, its text, env)."""
    for tool in ("dhcpd", "busybox", "tftp", "curl"):
        require_tool(tool)
    path, env = lab_copy(tmp_path)
    text = path.read_text()
    for name, mac in MACS.items():
        text = re.sub(rf'(name: {name}, mac: )"[^"]+"', rf'\1"{mac}"', text)
    path.write_text(text)
    try:
        built = lab.lab_up(load_inventory(path), nodes=3, env=env, image_mib=4)
        known = re.sub(r"  - \{name: n(0[2-9]|1\d).*\n", "", text)
        path.write_text(known)
        yield built, path, known, env
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])


def provision(built: lab.Lab, env: dict[str, str], *argv: str) -> subprocess.Popen:
    """`provision ARGV` in the lab's server namespace, output as text lines."""
    return subprocess.Popen(netns.ns_argv(built.server_ns, [sys.executable, "-m", "provision", *argv]),
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(proc: subprocess.Popen, marker: str) -> str:
    """The output of `proc` up to and including the first line with `marker` (all of it if it never comes)."""
    seen = ""
    for line in proc.stdout:
        seen += line
        if marker in line:
            break
    return seen


def test_unknown_nodes_are_discovered_in_boot_order_then_installed(unknown_nodes, tmp_path):
    built, path, known, env = unknown_nodes
    inventory = ["--inventory", str(path)]
    dhcp = provision(built, env, "dhcp", "start", *inventory)
    assert dhcp.wait(timeout=60) == 0, dhcp.stdout.read()
    discover = provision(built, env, "discover", *inventory, "--count", "2", "--timeout", "60", "--settle", "2")
    output = read_until(discover, "listening on eth0")
    assert "listening on eth0 for up to 2 node(s)" in output, output
    booted = lab.boot_nodes(built, ["n02"], reboot_seconds=0.5)
    output += read_until(discover, "discover: n02")
    booted.update(lab.boot_nodes(built, ["n03"], reboot_seconds=0.5))
    rest, _ = discover.communicate(timeout=60)
    output += rest
    assert discover.returncode == 0, output
    assert "discover: n02 02:77:00:00:00:f2 10.77.0.12 bios\ndiscover: n03 02:77:00:00:00:a3 10.77.0.13 bios\n" in output
    assert f"discover: 2 node(s) added to {path} (the old file: lab.yaml.bak)\n" in output
    assert path.read_text() == known.replace(
        '  - {name: n01, mac: "02:77:00:00:00:01", ip: 10.77.0.11}\n',
        '  - {name: n01, mac: "02:77:00:00:00:01", ip: 10.77.0.11}\n'
        '  - {name: n02, mac: "02:77:00:00:00:f2", ip: 10.77.0.12, firmware: bios}\n'  # their option 93: x86 BIOS
        '  - {name: n03, mac: "02:77:00:00:00:a3", ip: 10.77.0.13, firmware: bios}\n')
    assert path.with_name("lab.yaml.bak").read_text() == known
    # the running dhcpd heard them too, and gave unknown MACs nothing
    files = ClusterFiles.of(load_inventory(path), env)
    dhcpd_log = (files.root / "dhcpd" / "dhcpd.log").read_text()
    for mac in MACS.values():
        assert f"DHCPDISCOVER from {mac}" in dhcpd_log, dhcpd_log[-2000:]
        assert "DHCPOFFER on" not in dhcpd_log, dhcpd_log[-2000:]
    assert [lab.node_address(built.node(n).ns) for n in MACS] == [None, None]

    # install renders the grown inventory and restarts the running dhcpd with it
    install = provision(built, env, "install", *inventory, "--nodes", "n02,n03", "--wait", "60",
                        "--finish-wait", "60", "--linger", "2")
    installed, _ = install.communicate(timeout=180)
    assert install.returncode == 0, installed
    assert [booted[n].wait(timeout=60) for n in MACS] == [0, 0], installed
    assert "ring of 2 node(s): lab-srv -> n02 -> n03" in installed
    image = (tmp_path / "files" / "image.raw").read_bytes()
    for name in MACS:
        assert (Path(built.node(name).disk) / "dev" / "sda1").read_bytes() == image
    records = files.store().load()
    assert [(records[n].state, records[n].boot) for n in MACS] == [("done", "local")] * 2


def test_more_macs_than_count_and_a_time_out(unknown_nodes):
    built, path, known, env = unknown_nodes
    inventory = ["--inventory", str(path)]
    discover = provision(built, env, "discover", *inventory, "--count", "1", "--timeout", "60", "--settle", "5")
    read_until(discover, "listening on eth0")
    lab.boot_nodes(built, ["n02", "n03"], dhcp_wait=60)
    output, _ = discover.communicate(timeout=60)
    assert discover.returncode == 1, output
    [mac] = re.findall(r"discover: n02 (\S+) 10\.77\.0\.12 bios\n", output)
    [other] = set(MACS.values()) - {mac}
    assert (f"more MACs than --count 1: {other} not added; 1 node(s) added to {path} "
            f"(the old file: lab.yaml.bak)\n") in output, output
    assert [n.mac for n in load_inventory(path).nodes] == ["02:77:00:00:00:01", mac]
    assert path.with_name("lab.yaml.bak").read_text() == known

    lab.power_off(built, ["n02", "n03"])
    grown = path.read_text()
    again = provision(built, env, "discover", *inventory, "--count", "1", "--timeout", "2")
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 1, output
    assert f"time-out after 2 s: 0 of 1 node(s) found; {path} unchanged\n" in output
    assert path.read_text() == grown and path.with_name("lab.yaml.bak").read_text() == known


# In the server namespace: the first frames the listener's socket gets, raw, as hex lines.
FIRST_FRAMES = """import sys, time
from provision.discovery.listener import open_listener
sock = open_listener("eth0")
sock.settimeout(20)
print("listening", flush=True)
for _ in range(2):
    print(sock.recv(65535).hex(), flush=True)
"""


def test_the_kernel_filter_passes_dhcp_requests_only(tmp_path):
    """The listener's socket gets no ping, no UDP to other ports and no DHCP reply port: the first two frames
    it is given are the client's DHCPDISCOVERs."""
    require_tool("busybox")
    with netns.Network(f"pvt-{uuid.uuid4().hex[:6]}") as net:
        server = net.add_host("srv", address="10.252.0.1/24")
        client = net.add_host("c", address="10.252.0.2/24", mac="02:77:00:00:00:c1")
        listener = net.popen(server, [sys.executable, "-c", FIRST_FRAMES], stdout=subprocess.PIPE, text=True,
                             cwd=REPO)
        assert listener.stdout.readline() == "listening\n"
        assert net.run(client, ["ping", "-c", "2", "-i", "0.2", "10.252.0.1"], check=False).returncode == 0
        for port in (68, 69, 6767):
            net.run(client, [sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                                                   f".sendto(b'x' * 300, ('10.252.0.1', {port}))"])
        net.run(client, ["busybox", "udhcpc", "-n", "-q", "-i", "eth0", "-s", "/bin/true", "-t", "2", "-T", "1"],
                check=False)
        frames, _ = listener.communicate(timeout=30)
    requests = [parse_frame(bytes.fromhex(line)) for line in frames.split()]
    assert [(r.mac, r.is_discover) for r in requests] == [("02:77:00:00:00:c1", True)] * 2, frames
