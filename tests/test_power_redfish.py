"""`provision power` over real Redfish: sushy-tools' emulator (its in-memory systems driver: power actions take
effect 1-11 s later, as on hardware) on loopback, with HTTP basic authentication; every verb through the CLI,
the next boot set to Pxe; a wrong password, a closed port and a server that never answers fail per node."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import base64
import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import require_tool, skip_or_fail
from tests.fixtures.inventories import inventory_yaml, write

from provision.cli import main

USER, PASSWORD = "admin", "s3cret-Rf"
SYSTEMS = {"m1": "27946b59-9e44-4fa7-8e91-f3527a1e0001", "m2": "27946b59-9e44-4fa7-8e91-f3527a1e0002"}


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_emulator(tmp_path: Path, tls: tuple[Path, Path, Path] | None = None) -> Iterator[int]:
    """sushy-emulator --fake with two systems (m1, m2), on a free loopback port (https with the certificate and
    key of `tls`, whose CA is its third file); stopped afterwards."""
    emulator_bin = shutil.which("sushy-emulator", path=str(Path(sys.executable).parent))
    try:
        import bcrypt
    except ImportError:
        bcrypt = None
    if emulator_bin is None or bcrypt is None:
        skip_or_fail("needs sushy-tools' sushy-emulator (pip: the test extra)")
    port = free_tcp_port()
    (tmp_path / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    systems = [{"uuid": uuid, "name": name, "power_state": "Off", "external_notifier": False,
                "nics": [{"mac": f"02:00:00:00:0b:0{i}", "ip": f"10.9.0.6{i}"}]}
               for i, (name, uuid) in enumerate(SYSTEMS.items(), 1)]
    (tmp_path / "emulator.py").write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(tmp_path / 'htpasswd')!r}\nSUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\nSUSHY_EMULATOR_STATE_DIR = {str(tmp_path / 'rf-state')!r}\n"
        + (f"SUSHY_EMULATOR_SSL_CERT = {str(tls[0])!r}\nSUSHY_EMULATOR_SSL_KEY = {str(tls[1])!r}\n" if tls else ""))
    with open(tmp_path / "emulator.log", "wb") as log:
        proc = subprocess.Popen([emulator_bin, "--config", str(tmp_path / "emulator.py"), "--fake"],
                                stdout=log, stderr=subprocess.STDOUT)
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(tls[2])) if tls else None
    deadline = time.monotonic() + 30
    while True:  # up once it lists both systems (its fake driver makes its state on the first requests)
        try:
            if all(boot_of(port, name, base, context) is not None for name in SYSTEMS):
                break
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"sushy-emulator did not start: {(tmp_path / 'emulator.log').read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def emulator(tmp_path):
    with run_emulator(tmp_path) as port:
        yield port


def boot_of(port: int, name: str, base: str | None = None, context: ssl.SSLContext | None = None) -> dict:
    request = urllib.request.Request(f"{base or f'http://127.0.0.1:{port}'}/redfish/v1/Systems/{SYSTEMS[name]}",
                                     headers={"Authorization": "Basic " + base64.b64encode(
                                         f"{USER}:{PASSWORD}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.load(response)["Boot"]


def inventory_for(tmp_path: Path, nodes: str) -> Path:
    defaults = f"bmc: {{type: redfish, user: {USER}, password_env: PV_TEST_REDFISH_PW}}"
    return write(tmp_path, inventory_yaml(0, defaults=defaults, extra_nodes=nodes))


def node_entry(i: int, address: str, extra: str = "") -> str:
    return (f'  - {{name: m{i}, mac: "02:00:00:00:0b:{i:02x}", ip: 10.9.0.{60 + i}, '
            f"bmc: {{address: '{address}'{extra}}}}}\n")


def power(inventory: Path, capsys, *args: str) -> tuple[int, dict]:
    status = main(["power", *args, "--json", "--inventory", str(inventory)])
    return status, {n["node"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}


def wait_power(inventory: Path, capsys, want: str, *nodes: str) -> None:
    deadline = time.monotonic() + 40
    while True:
        status, found = power(inventory, capsys, "status", *nodes)
        if status == 0 and all(n["power"] == want for n in found.values()):
            return
        assert time.monotonic() < deadline, found
        time.sleep(0.5)


def test_every_verb_over_redfish(tmp_path, emulator, capsys, monkeypatch):
    monkeypatch.setenv("PV_TEST_REDFISH_PW", PASSWORD)
    url = f"http://127.0.0.1:{emulator}"
    inventory = inventory_for(tmp_path, node_entry(1, url, ", system: m1") + node_entry(2, url, ", system: m2"))
    status, nodes = power(inventory, capsys, "status", "--all")
    assert status == 0 and {n: v["power"] for n, v in nodes.items()} == {"m1": "off", "m2": "off"}, nodes
    assert nodes["m1"]["bmc"] == f"redfish {url}"

    assert power(inventory, capsys, "on", "m1", "--pxe-once")[0] == 0
    assert boot_of(emulator, "m1")["BootSourceOverrideTarget"] == "Pxe"
    wait_power(inventory, capsys, "on", "m1")
    assert power(inventory, capsys, "status", "m2")[1]["m2"]["power"] == "off"  # the other untouched
    assert power(inventory, capsys, "reset", "m1")[0] == 0  # off, then on again (the emulator's actions...
    assert power(inventory, capsys, "cycle", "m2")[0] == 0  # ...take effect later); an off machine's cycle: on
    wait_power(inventory, capsys, "on", "m1", "m2")
    assert power(inventory, capsys, "off", "--all")[0] == 0
    wait_power(inventory, capsys, "off", "m1", "m2")


def test_bad_redfish_services_fail_per_node(tmp_path, emulator, capsys, monkeypatch):
    monkeypatch.setenv("PV_TEST_REDFISH_PW", PASSWORD)
    monkeypatch.setenv("PV_TEST_WRONG_PW", "not-it")
    url = f"http://127.0.0.1:{emulator}"
    with socket.socket() as hanging:
        hanging.bind(("127.0.0.1", 0))
        hanging.listen()  # accepts into its backlog, never answers
        nodes = (node_entry(1, url, ", system: m1") + node_entry(2, url, ", system: m2, password_env: PV_TEST_WRONG_PW")
                 + node_entry(3, f"http://127.0.0.1:{free_tcp_port()}")
                 + node_entry(4, f"http://127.0.0.1:{hanging.getsockname()[1]}") + node_entry(5, url))
        status = main(["power", "status", "--all", "--timeout", "4", "--retries", "1",
                       "--inventory", str(inventory_for(tmp_path, nodes))])
    out, err = capsys.readouterr()
    assert status == 1 and out.split() == ["m1", "off"]
    lines = {line.split()[0]: line for line in err.splitlines()}
    assert f"redfish {url}: GET /redfish/v1/Systems/m2: HTTP 401 Unauthorized: Incorrect username or password" in lines["m2"]
    assert "no answer (" in lines["m3"] and "refused" in lines["m3"] and "after 2 attempts" in lines["m3"]
    assert "no answer (" in lines["m4"] and "timed out" in lines["m4"] and "after 2 attempts" in lines["m4"]
    assert "the service has 2 systems" in lines["m5"] and "name one with bmc.system" in lines["m5"]
    assert PASSWORD not in err and "not-it" not in err


def certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA made here, and a certificate for 127.0.0.1 it signed: (certificate, key, CA certificate)."""
    require_tool("openssl")
    ca, ca_key, cert, key, csr = (directory / n for n in ("ca.pem", "ca.key", "srv.pem", "srv.key", "srv.csr"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    for argv in (["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=pv-test-ca"],
                 ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                 ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days",
                  "2", "-extfile", directory / "san.ext"]):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return cert, key, ca


def test_https_certificate_checked_against_the_system_store_a_ca_file_or_not_at_all(tmp_path, capsys, monkeypatch):
    """The emulator over https with a certificate from a CA made in the test: refused against the system's CA
    store (at once: no retry), accepted with bmc.ca_file, accepted unchecked with verify: false; a ca_file that
    cannot be read is named."""
    monkeypatch.setenv("PV_TEST_REDFISH_PW", PASSWORD)
    cert, key, ca = certificates(tmp_path)
    with run_emulator(tmp_path, (cert, key, ca)) as port:
        url, other = f"https://127.0.0.1:{port}", f"https://localhost:{port}"  # two names: four BMCs, not two
        nodes = (node_entry(1, url, ", system: m1") + node_entry(2, url, ", system: m2, ca_file: ca.pem")
                 + node_entry(3, other, ", system: m1, verify: false")
                 + node_entry(4, other, ", system: m2, ca_file: none.pem"))
        status, found = power(inventory_for(tmp_path, nodes), capsys, "status", "--all", "--timeout", "4")
    assert status == 1
    assert {n: v["power"] for n, v in found.items()} == {"m1": None, "m2": "off", "m3": "off", "m4": None}, found
    assert found["m1"]["error"].startswith(f"redfish {url}: GET /redfish/v1/Systems/m1: the service's certificate "
                                           "is not trusted (unable to get local issuer certificate): give "
                                           "bmc.ca_file, or bmc.verify: false"), found["m1"]
    assert found["m1"]["attempts"] == 1
    assert found["m4"]["error"] == (f"{tmp_path / 'none.pem'}: bmc.ca_file: cannot load CA certificates from it: "
                                    "No such file or directory"), found["m4"]
