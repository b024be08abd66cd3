"""Inventory `bmc:`: per node over `defaults:`, the password only by file or environment variable, every bad
value reported as FILE:LINE: field: what: value; the password file's mode checked when it is read."""

from __future__ import annotations

import os

import pytest
from tests.fixtures.inventories import inventory_yaml, write

from provision.errors import InputError
from provision.inventory import load_inventory
from provision.model import BmcType
from provision.power.credentials import password

DEFAULTS = "bmc: {type: ipmi, user: admin, password_file: bmc.secret}"


def nodes(*lines: str) -> str:
    return "".join(f"  - {{name: b{i}, mac: \"02:00:00:00:09:{i:02x}\", ip: 10.9.0.{100 + i}, {line}}}\n"
                   for i, line in enumerate(lines, 1))


def test_a_nodes_bmc_goes_over_the_defaults(tmp_path):
    extra = nodes("bmc: {address: 10.8.0.1}",
                  "bmc: {address: 10.8.0.2, port: 6230, user: root, password_env: BMC_PW}",
                  "bmc: {type: redfish, address: 'https://bmc3.example', system: System.Embedded.1}")
    inv = load_inventory(write(tmp_path, inventory_yaml(0, defaults=DEFAULTS, extra_nodes=extra)))
    b1, b2, b3 = (inv.node(f"b{i}").bmc for i in (1, 2, 3))
    assert (b1.type, b1.address, b1.port, b1.user, b1.password_file) == (
        BmcType.IPMI, "10.8.0.1", None, "admin", tmp_path / "bmc.secret")
    assert b1.where == "ipmi 10.8.0.1:623"
    assert (b2.port, b2.user, b2.password_env, b2.password_file) == (6230, "root", "BMC_PW", None)
    assert (b3.type, b3.address, b3.system, b3.user) == (BmcType.REDFISH, "https://bmc3.example",
                                                         "System.Embedded.1", "admin")


def test_cipher_suite_and_tls_settings(tmp_path):
    extra = nodes("bmc: {address: 10.8.0.1}", "bmc: {address: 10.8.0.2, cipher_suite: 17}",
                  "bmc: {type: redfish, address: r1, ca_file: pki/ca.pem}",
                  "bmc: {type: redfish, address: r2, verify: false}")
    inv = load_inventory(write(tmp_path, inventory_yaml(0, defaults=DEFAULTS, extra_nodes=extra)))
    b1, b2, b3, b4 = (inv.node(f"b{i}").bmc for i in (1, 2, 3, 4))
    assert (b1.cipher_suite, b2.cipher_suite) == (None, 17)
    assert (b3.ca_file, b3.verify, b4.ca_file, b4.verify) == (tmp_path / "pki" / "ca.pem", True, None, False)


def test_nodes_without_bmc_have_none(tmp_path):
    inv = load_inventory(write(tmp_path, inventory_yaml(2)))
    assert [n.bmc for n in inv.nodes] == [None, None]


@pytest.mark.parametrize("line, message", [
    ("bmc: {address: 10.8.0.1, type: amt}", "nodes[0].bmc.type: expected one of ipmi, redfish: 'amt'"),
    ("bmc: {address: 10.8.0.1, port: 70000}", "nodes[0].bmc.port: expected a whole number from 1 to 65535: 70000"),
    ("bmc: {address: 'a b'}", "nodes[0].bmc.address: invalid BMC address"),
    ("bmc: {address: 10.8.0.1, password: hunter2}", "nodes[0].bmc.password: unknown key"),
    ("bmc: {address: 10.8.0.1, password_env: 'x-y'}", "nodes[0].bmc.password_env: invalid environment variable"),
    ("bmc: {address: 10.8.0.1, password_env: X, password_file: f}",
     "nodes[0].bmc.password_env: give password_file or password_env, not both"),
    ("bmc: {address: 10.8.0.1, system: '1'}", "nodes[0].bmc.system: system is for type: redfish only: '1'"),
    ("bmc: {address: 'http://10.8.0.1'}", "nodes[0].bmc.address: a URL is for type: redfish only"),
    ("bmc: {port: 623}", "nodes[0].bmc: the BMC lacks address (give them here or in defaults.bmc)"),
    ("bmc: 10.8.0.1", "nodes[0].bmc: expected a mapping"),
    ("bmc: {address: 10.8.0.1, cipher_suite: 0}", "nodes[0].bmc.cipher_suite: not a cipher suite ipmitool offers "
     "(1, 2, 3, 6, 7, 8, 15, 16, 17; 0 is refused: no authentication): 0"),
    ("bmc: {address: 10.8.0.1, cipher_suite: 4}", "nodes[0].bmc.cipher_suite: not a cipher suite ipmitool offers"),
    ("bmc: {address: 10.8.0.1, cipher_suite: true}", "nodes[0].bmc.cipher_suite: not a cipher suite ipmitool"),
    ("bmc: {type: redfish, address: r, cipher_suite: 17}", "nodes[0].bmc.cipher_suite: cipher_suite is for type: "
     "ipmi only: 17"),
    ("bmc: {address: 10.8.0.1, verify: false}", "nodes[0].bmc.verify: verify is for type: redfish only: False"),
    ("bmc: {address: 10.8.0.1, ca_file: ca.pem}", "nodes[0].bmc.ca_file: ca_file is for type: redfish only: 'ca.pem'"),
    ("bmc: {type: redfish, address: r, verify: 1}", "nodes[0].bmc.verify: expected true or false: 1"),
    ("bmc: {type: redfish, address: r, verify: false, ca_file: ca.pem}",
     "nodes[0].bmc.ca_file: ca_file with verify: false (the certificate is not checked): 'ca.pem'"),
    ("bmc: {type: redfish, address: 'http://r', ca_file: ca.pem}",
     "nodes[0].bmc.ca_file: ca_file is for an https service, the address is http://: 'ca.pem'"),
])
def test_bad_bmc_fields_name_file_line_field_and_value(tmp_path, line, message):
    path = write(tmp_path, inventory_yaml(0, defaults=DEFAULTS, extra_nodes=nodes(line)))
    with pytest.raises(InputError) as err:
        load_inventory(path)
    node_line = len(inventory_yaml(0, defaults=DEFAULTS).splitlines()) + 1
    lines = [l.strip() for l in str(err.value).splitlines()[1:]]
    assert any(l.startswith(f"{path}:{node_line}: {message}") for l in lines), lines


def test_a_bmc_without_password_source_or_user_is_refused_once_at_the_defaults(tmp_path):
    path = write(tmp_path, inventory_yaml(3, defaults="bmc: {address: 10.8.0.1}"))
    with pytest.raises(InputError) as err:
        load_inventory(path)
    assert str(err.value).count("defaults.bmc: the BMC lacks user, password_file or password_env") == 1


def test_the_password_is_never_in_a_message(tmp_path, monkeypatch):
    secret = tmp_path / "bmc.secret"
    secret.write_text("hunter2\n")
    os.chmod(secret, 0o644)
    inv = load_inventory(write(tmp_path, inventory_yaml(0, defaults=DEFAULTS, extra_nodes=nodes(
        "bmc: {address: 10.8.0.1}", "bmc: {address: 10.8.0.2, password_env: PV_TEST_BMC_PW}"))))
    with pytest.raises(InputError, match=r"bmc.secret: bmc.password_file of b1: mode 0644 lets others read it") as err:
        password(inv.node("b1").bmc, "b1")
    assert "hunter2" not in str(err.value)
    os.chmod(secret, 0o600)
    assert password(inv.node("b1").bmc, "b1") == "hunter2"
    monkeypatch.delenv("PV_TEST_BMC_PW", raising=False)
    with pytest.raises(InputError, match="b2: bmc.password_env: the environment variable PV_TEST_BMC_PW is not set"):
        password(inv.node("b2").bmc, "b2")
    monkeypatch.setenv("PV_TEST_BMC_PW", "s3cret")
    assert password(inv.node("b2").bmc, "b2") == "s3cret"
    secret.unlink()
    with pytest.raises(InputError, match="bmc.password_file of b1: cannot read: No such file"):
        password(inv.node("b1").bmc, "b1")


@pytest.mark.parametrize("first, second, where", [
    ("bmc: {address: 10.8.0.1}", "bmc: {address: 10.8.0.1, port: 623}", "ipmi 10.8.0.1:623"),
    ("bmc: {address: BMC1.example}", "bmc: {address: bmc1.example}", "ipmi bmc1.example:623"),
    ("bmc: {type: redfish, address: 'https://10.8.0.1'}", "bmc: {type: redfish, address: '10.8.0.1', port: 443}",
     "redfish 10.8.0.1:443"),
    ("bmc: {type: redfish, address: 'http://r', system: '2'}", "bmc: {type: redfish, address: 'http://r:80', system: '2'}",
     "redfish http://r:80 system 2"),
])
def test_two_nodes_with_one_bmc_are_refused(tmp_path, first, second, where):
    path = write(tmp_path, inventory_yaml(0, defaults=DEFAULTS, extra_nodes=nodes(first, second)))
    with pytest.raises(InputError) as err:
        load_inventory(path)
    second_line = len(inventory_yaml(0, defaults=DEFAULTS).splitlines()) + 2
    lines = [line.strip() for line in str(err.value).splitlines()[1:]]
    assert len(lines) == 1 and lines[0].startswith(f"{path}:{second_line}: nodes[1].bmc.address: the BMC {where} "
                                                   "is already nodes[0] (b1)'s: "), lines


@pytest.mark.parametrize("first, second", [
    ("bmc: {address: 10.8.0.1}", "bmc: {address: 10.8.0.1, port: 6230}"),
    ("bmc: {address: 10.8.0.1}", "bmc: {type: redfish, address: 'https://10.8.0.1'}"),
    ("bmc: {type: redfish, address: 'https://r', system: '1'}", "bmc: {type: redfish, address: 'https://r', system: '2'}"),
    ("bmc: {type: redfish, address: 'https://r'}", "bmc: {type: redfish, address: 'https://r:8443'}"),
])
def test_bmcs_that_differ_in_protocol_port_or_system_are_two(tmp_path, first, second):
    inv = load_inventory(write(tmp_path, inventory_yaml(0, defaults=DEFAULTS, extra_nodes=nodes(first, second))))
    assert len({n.bmc for n in inv.nodes}) == 2
