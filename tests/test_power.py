"""`provision power` over real IPMI (RMCP+ on UDP to OpenIPMI's ipmi_sim on loopback, one per node, whose
chassis control is provision.lab.bmc) and real Redfish (sushy-tools' emulator): every verb through the CLI;
wrong password, a BMC that does not exist and one that never answers fail per node while the others go on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.fixtures.inventories import inventory_yaml, write

from provision.cli import main
from provision.inventory import load_inventory
from provision.lab import bmc as lab_bmc
from provision.state import NodeState
from provision.workflow import Install, InstallOptions

USER, PASSWORD = "admin", "s3cret-Pw"
# The "machine" behind each BMC: a process that says which boot device it was started with, then runs.
MACHINE = ["sh", "-c", 'echo "$PROVISION_LAB_BOOT" >> boots; exec sleep 3600']


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_entry(i: int, port: int, extra: str = "") -> str:
    return (f'  - {{name: m{i}, mac: "02:00:00:00:0a:{i:02x}", ip: 10.9.0.{50 + i}, '
            f"bmc: {{address: 127.0.0.1, port: {port}{extra}}}}}\n")


@pytest.fixture
def sims(tmp_path):
    """Two ipmi_sim BMCs on loopback; their machines and the simulators are ended afterwards."""
    require_tool(lab_bmc.IPMI_SIM)
    require_tool("ipmitool")
    started: list[tuple[subprocess.Popen, Path]] = []
    ports = []
    for i in (1, 2):
        port = free_udp_port()
        bmc = lab_bmc.LabBmc(f"m{i}", "127.0.0.1", port, USER, PASSWORD, tmp_path / f"bmc-m{i}")
        bmc.directory.mkdir()
        machine = ["sh", "-c", f'cd {bmc.directory} && ' + MACHINE[2]]
        started.append((lab_bmc.start(bmc, machine), bmc.directory))
        ports.append(port)
    yield ports
    for proc, directory in started:
        lab_bmc.stop_machine(directory)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def inventory(tmp_path, sims):
    secret = tmp_path / "bmc.secret"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    defaults = f"bmc: {{type: ipmi, user: {USER}, password_file: bmc.secret}}"
    nodes = "".join(node_entry(i, port) for i, port in enumerate(sims, 1))
    return write(tmp_path, inventory_yaml(0, defaults=defaults, extra_nodes=nodes))


def power(inventory: Path, capsys, *args: str) -> tuple[int, dict]:
    status = main(["power", *args, "--json", "--inventory", str(inventory)])
    return status, {n["node"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}


def machine_pid(tmp_path: Path, node: str) -> int | None:
    return lab_bmc._running(tmp_path / f"bmc-{node}")


def wait_power(inventory: Path, capsys, want: str) -> dict:
    """`power status --all` until every node is `want` (a cycle is off, then on a second later)."""
    deadline = time.monotonic() + 30
    while True:
        status, nodes = power(inventory, capsys, "status", "--all")
        if status == 0 and all(n["power"] == want for n in nodes.values()) or time.monotonic() > deadline:
            return nodes
        time.sleep(0.3)


def test_every_verb_over_rmcp(tmp_path, inventory, capsys):
    status, nodes = power(inventory, capsys, "status", "--all")
    assert status == 0 and {n: v["power"] for n, v in nodes.items()} == {"m1": "off", "m2": "off"}
    assert nodes["m1"]["bmc"].startswith("ipmi 127.0.0.1:")

    status, nodes = power(inventory, capsys, "on", "m1", "m2")
    assert status == 0 and all(v["power"] == "on" for v in nodes.values())
    pids = {n: machine_pid(tmp_path, n) for n in ("m1", "m2")}
    assert None not in pids.values()

    status, nodes = power(inventory, capsys, "reset", "m1")
    assert status == 0 and list(nodes) == ["m1"] and nodes["m1"]["power"] == "on"
    assert machine_pid(tmp_path, "m1") not in (None, pids["m1"])  # a new machine process
    assert machine_pid(tmp_path, "m2") == pids["m2"]  # the other untouched

    status, nodes = power(inventory, capsys, "cycle", "--all", "--pxe-once")
    assert status == 0
    wait_power(inventory, capsys, "on")
    boots = (tmp_path / "bmc-m2" / "boots").read_text().split()
    assert boots == ["default", "pxe"]  # powered on plainly, then cycled into a network boot, once
    assert machine_pid(tmp_path, "m2") != pids["m2"]

    status, nodes = power(inventory, capsys, "off", "--all")
    assert status == 0 and all(v["power"] == "off" for v in nodes.values())
    assert machine_pid(tmp_path, "m1") is None and machine_pid(tmp_path, "m2") is None

    assert main(["power", "on", "--inventory", str(inventory)]) == 3  # neither nodes nor --all
    assert "name the nodes, or give --all" in capsys.readouterr().err
    assert main(["power", "on", "nope", "--inventory", str(inventory)]) == 3


def test_bad_bmcs_fail_per_node_while_the_others_go_on(tmp_path, sims, capsys):
    """Wrong password, nothing at the port, a UDP socket that never answers: each node's own error, naming the
    BMC and what it said; the good node is powered on; the exit status says some failed."""
    (tmp_path / "bmc.secret").write_text(PASSWORD + "\n")
    (tmp_path / "bmc.secret").chmod(0o600)
    (tmp_path / "wrong.secret").write_text("not-the-password\n")
    (tmp_path / "wrong.secret").chmod(0o600)
    (tmp_path / "open.secret").write_text(PASSWORD + "\n")
    (tmp_path / "open.secret").chmod(0o644)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hanging:
        hanging.bind(("127.0.0.1", 0))
        nodes = (node_entry(1, sims[0]) + node_entry(2, sims[1], ", password_file: wrong.secret")
                 + node_entry(3, free_udp_port()) + node_entry(4, hanging.getsockname()[1])
                 + node_entry(5, free_udp_port(), ", password_file: open.secret"))
        defaults = f"bmc: {{user: {USER}, password_file: bmc.secret}}"
        inventory = write(tmp_path, inventory_yaml(0, defaults=defaults, extra_nodes=nodes))
        status = main(["power", "on", "--all", "--timeout", "2", "--retries", "1", "--inventory", str(inventory)])
    out, err = capsys.readouterr()
    assert status == 1
    assert out.split() == ["m1", "on"]
    lines = {line.split()[0]: line for line in err.splitlines()}
    assert f"FAILED: ipmi 127.0.0.1:{sims[1]}: wrong password (RAKP 2 HMAC is invalid)" in lines["m2"]
    for node in ("m3", "m4"):
        assert "no answer (Get Auth Capabilities error; " in lines[node] and "after 2 attempts" in lines[node]
    assert "open.secret: bmc.password_file of m5: mode 0644 lets others read it" in lines["m5"]
    assert PASSWORD not in err and "not-the-password" not in err
    assert machine_pid(tmp_path, "m1") is not None and machine_pid(tmp_path, "m2") is None


def test_the_cipher_suite_asked_for_is_used(tmp_path, sims, capsys):
    """bmc.cipher_suite goes to ipmitool: ipmi_sim speaks suite 2 (SHA1, no encryption) but has no SHA-256, so
    suite 17 is refused by the BMC, which says so, and is not retried."""
    (tmp_path / "bmc.secret").write_text(PASSWORD + "\n")
    (tmp_path / "bmc.secret").chmod(0o600)
    defaults = f"bmc: {{user: {USER}, password_file: bmc.secret}}"
    nodes = node_entry(1, sims[0], ", cipher_suite: 2") + node_entry(2, sims[1], ", cipher_suite: 17")
    inventory = write(tmp_path, inventory_yaml(0, defaults=defaults, extra_nodes=nodes))
    status, found = power(inventory, capsys, "status", "--all")
    assert status == 1 and found["m1"]["power"] == "off", found
    assert found["m2"]["error"].startswith(f"ipmi 127.0.0.1:{sims[1]}: the BMC does not offer cipher suite 17 ("
                                           "Error in open session response message : invalid authentication "
                                           "algorithm"), found["m2"]
    assert found["m2"]["error"].endswith("): set bmc.cipher_suite") and found["m2"]["attempts"] == 1


def test_install_power_cycle_sets_pxe_once_and_cycles_each_node_and_fails_the_refused(tmp_path, sims, inventory):
    """Install.power_cycle (what `install --power-cycle` does once it serves): the node is started with a
    network boot and stays pending; a node whose BMC refuses the login is failed in the state store, by name."""
    (tmp_path / "wrong.secret").write_text("not-the-password\n")
    (tmp_path / "wrong.secret").chmod(0o600)
    text = inventory.read_text().replace(node_entry(2, sims[1]), node_entry(2, sims[1], ", password_file: wrong.secret"))
    inv = load_inventory(write(tmp_path, text, "cycle.yaml"))
    env = {"PROVISION_STATE_DIR": str(tmp_path / "state")}
    install = Install(inv, InstallOptions(power_cycle=True), env, show=lambda line: None)
    install.store.ensure(inv.node_names)
    pending = install.power_cycle([inv.node("m1"), inv.node("m2")])
    assert [n.name for n in pending] == ["m1"]
    assert (tmp_path / "bmc-m1" / "boots").read_text().split() == ["pxe"]  # powered on from off: PXE once
    assert (tmp_path / "bmc-m1" / "boot").read_text().strip() == "default"  # used up
    assert machine_pid(tmp_path, "m2") is None  # refused
    failed = install.record("m2")
    assert failed.state is NodeState.FAILED
    assert failed.error == f"--power-cycle: ipmi 127.0.0.1:{sims[1]}: wrong password (RAKP 2 HMAC is invalid)"


def test_install_power_cycle_needs_a_bmc_for_every_node_to_install(tmp_path, capsys):
    path = write(tmp_path, inventory_yaml(2))
    env = {"PROVISION_STATE_DIR": str(tmp_path / "state")}
    assert main(["install", "--power-cycle", "--inventory", str(path)], env) == 3
    assert "--power-cycle: no bmc: for node001, node002 (nothing was done)" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
