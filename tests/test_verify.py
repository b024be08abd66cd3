"""`provision run` and `provision verify` against real sshd processes, one per node namespace, each in its
own UTS namespace with its own hostname (root). One node answers with the wrong hostname."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from provision.lab import netns
from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.root

LAB = str(REPO / "inventory" / "lab.yaml")
NODES = {"n01": ("10.77.0.11", "n01"), "n02": ("10.77.0.12", "n02"), "n03": ("10.77.0.13", "impostor")}


def _keygen(path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture
def cluster(tmp_path):
    """A server namespace and three node namespaces (lab inventory addresses), sshd in each node."""
    sshd, unshare = require_tool("sshd"), require_tool("unshare")
    require_tool("ssh-keygen")
    os.chmod(tmp_path, 0o700)
    _keygen(tmp_path / "user_key")
    (tmp_path / "authorized_keys").write_text((tmp_path / "user_key.pub").read_text())
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    net = netns.Network(f"pvt-{uuid.uuid4().hex[:5]}")
    procs = []
    try:
        server = net.add_host("srv", address="10.77.0.1/24")
        for name, (ip, hostname) in NODES.items():
            host = net.add_host(name, address=f"{ip}/24")
            _keygen(tmp_path / f"host_key_{name}")
            config = tmp_path / f"sshd_{name}"
            config.write_text(
                f"ListenAddress {ip}\nHostKey {tmp_path}/host_key_{name}\n"
                f"AuthorizedKeysFile {tmp_path}/authorized_keys\nPidFile {tmp_path}/sshd_{name}.pid\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\n")
            procs.append(net.popen(host, [unshare, "--uts", "sh", "-c",
                                          f"hostname {hostname} && exec {sshd} -D -e -f {config}"],
                                   stderr=subprocess.DEVNULL))
        for ip, _ in NODES.values():
            _wait_listening(net, server, ip)
        yield net, server, tmp_path
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        net.teardown()


def _wait_listening(net, server, ip: str) -> None:
    probe = f"import socket; socket.create_connection(('{ip}', 22), timeout=1).close()"
    deadline = time.monotonic() + 15
    while net.run(server, [sys.executable, "-c", probe], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd on {ip} did not start")
        time.sleep(0.1)


def provision(net, server, tmp_path, command: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROVISION_STATE_DIR": str(tmp_path / "state")}
    return net.run(server, [sys.executable, "-m", "provision", command, "--inventory", LAB,
                            "--key", str(tmp_path / "user_key"), *args], check=False, env=env, cwd=REPO)


def test_run_on_nodes_in_parallel(cluster):
    net, server, tmp_path = cluster
    result = provision(net, server, tmp_path, "run", "n01,n02", "--", "echo", "hello from $(hostname)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from n01" in result.stdout and "hello from n02" in result.stdout
    assert "2 of 2 node(s) ok" in result.stdout
    assert (tmp_path / "state" / "clusters" / "lab" / "known_hosts").read_text().count("ssh-ed25519") == 2


def test_run_reports_unreachable_node(cluster):
    net, server, tmp_path = cluster
    result = provision(net, server, tmp_path, "run", "--connect-timeout", "2", "n01,n05", "--", "true")
    assert result.returncode == 1
    assert "n05 (10.77.0.15): ERROR" in result.stdout and "failed: n05" in result.stdout


def test_verify_checks_hostname_and_address(cluster):
    net, server, tmp_path = cluster
    result = provision(net, server, tmp_path, "verify", "n01,n02,n03")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "n01 (10.77.0.11): ok: hostname n01" in result.stdout
    assert "n02 (10.77.0.12): ok: hostname n02" in result.stdout
    assert "n03 (10.77.0.13): FAILED: hostname is 'impostor', expected 'n03'" in result.stdout
    assert "2 of 3 node(s) verified; failed: n03" in result.stdout


def test_unknown_node_is_an_input_error(cluster):
    net, server, tmp_path = cluster
    result = provision(net, server, tmp_path, "run", "n01,zz", "--", "true")
    assert result.returncode == 3 and "zz" in result.stderr
