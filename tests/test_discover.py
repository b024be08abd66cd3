"""Discovery's pure parts: the DHCP frame parser (a DHCPDISCOVER captured from busybox udhcpc, and ones built
per RFC 2131), the names and addresses given, and the inventory appender (comments and layout kept, validated
before the atomic replace, the old file kept as .bak)."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
import subprocess
from pathlib import Path

import pytest

from provision.cli import main
from provision.discovery import bmc_range
from provision.discovery.appender import append_nodes, replace_inventory
from provision.discovery.dhcp_packet import DHCPDISCOVER, DHCPREQUEST, parse_bootp, parse_frame
from provision.discovery.naming import Allocator, NewNode, default_name_format
from provision.errors import InputError
from provision.inventory import load_inventory, parse_inventory
from provision.model import Firmware
from tests.conftest import require_tool
from tests.fixtures.inventories import LAB, inventory_yaml, write

# busybox 1.35 `udhcpc -i va -V PXEClient:Arch:00000:UNDI:002001 -x 0x5d:0000 -x hostname:lab-node` on a veth
# with MAC 02:77:00:00:00:99, read from the peer with an AF_PACKET socket: Ethernet + IPv4 + UDP 68 -> 67.
UDHCPC_DISCOVER = bytes.fromhex(
    "ffffffffffff027700000099080045000156000000004011799800000000ffffffff004400430142f77601010600a912363f"
    + "00" * 20 + "027700000099" + "00" * 202
    + "638253633501013902024037070103060c0f1c2a0c086c61622d6e6f64653c20505845436c69656e743a417263683a30303030"
    "303a554e44493a3030323030313d07010277000000995d020000ff")


def bootp(mac: bytes = bytes.fromhex("020000000042"), op: int = 1, options: bytes = b"\x35\x01\x01\xff",
          cookie: bytes = b"\x63\x82\x53\x63") -> bytes:
    """A BOOTP message per RFC 2131 section 2: op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr
    chaddr(16) sname(64) file(128), then the magic cookie and the options."""
    return (struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, 0, 0x1234, 0, 0x8000, bytes(4), bytes(4),
                        bytes(4), bytes(4), mac, b"", b"") + cookie + options)


def frame(payload: bytes, dst_port: int = 67, fragment: int = 0, vlan: bool = False) -> bytes:
    udp = struct.pack("!HHHH", 68, dst_port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, fragment, 64, 17, 0, bytes(4), b"\xff" * 4) + udp
    tag = b"\x81\x00\x00\x05" if vlan else b""
    return b"\xff" * 6 + bytes.fromhex("0a0000000001") + tag + b"\x08\x00" + ip


def test_a_captured_udhcpc_discover():
    request = parse_frame(UDHCPC_DISCOVER)
    assert request is not None and request.is_discover
    assert (request.mac, request.xid) == ("02:77:00:00:00:99", 0xA912363F)
    assert (request.hostname, request.vendor_class) == ("lab-node", "PXEClient:Arch:00000:UNDI:002001")
    assert (request.client_arch, request.firmware) == (0, Firmware.BIOS)  # option 93: x86 BIOS


@pytest.mark.parametrize("arch, firmware", [(b"\x00\x07", Firmware.UEFI), (b"\x00\x09", Firmware.UEFI),
                                            (b"\x00\x06", Firmware.UEFI), (b"\x00\x10", Firmware.UEFI),
                                            (b"\x00\x00", Firmware.BIOS), (b"\x00\x0b", None), (b"\x07", None)])
def test_option_93_tells_the_firmware(arch, firmware):
    """EFI BC / x86-64 / IA32 / HTTP boot: uefi; x86 BIOS: bios; ARM64 EFI (11) or a short option: not said."""
    options = b"\x35\x01\x01\x5d" + bytes([len(arch)]) + arch + b"\xff"
    assert parse_frame(frame(bootp(options=options))).firmware == firmware
    assert parse_frame(frame(bootp())).firmware is None  # no option 93


def test_built_requests_and_what_is_not_one():
    relayed = frame(bootp())  # the frame's source MAC is a relay's: the client is chaddr
    assert parse_frame(relayed).mac == "02:00:00:00:00:42"
    assert parse_frame(frame(bootp(), vlan=True)).mac == "02:00:00:00:00:42"
    assert parse_frame(frame(bootp(options=b"\x35\x01\x03\xff"))).message_type == DHCPREQUEST
    assert parse_frame(frame(bootp(options=b"\x00\x00\x35\x01\x01\xff"))).message_type == DHCPDISCOVER  # pads
    plain = parse_frame(frame(bootp(cookie=b"\0\0\0\0", options=b"")))  # BOOTP without DHCP options
    assert plain is not None and plain.message_type is None and not plain.is_discover
    assert parse_frame(frame(bootp(op=2))) is None  # a reply
    assert parse_frame(frame(bootp(), dst_port=68)) is None
    assert parse_frame(frame(bootp(), fragment=0x2000)) is None  # more fragments follow
    assert parse_frame(frame(bootp(options=b"\x35\x05\x01"))) is None  # an option past the end
    assert parse_frame(relayed[:100]) is None  # truncated
    assert parse_frame(relayed[:13]) is None
    assert parse_frame(relayed.replace(b"\x08\x00E", b"\x86\xddE", 1)) is None  # not IPv4
    assert parse_bootp(bootp()[:235]) is None


def test_names_continue_the_pattern_and_addresses_the_last_node():
    inv = load_inventory(LAB)  # n01..n16 at 10.77.0.11..26
    allocator = Allocator(inv)
    assert [allocator.next(m) for m in ("02:00:00:00:00:a1", "02:00:00:00:00:a2")] == [
        NewNode("n17", "02:00:00:00:00:a1", ipaddress.IPv4Address("10.77.0.27")),
        NewNode("n18", "02:00:00:00:00:a2", ipaddress.IPv4Address("10.77.0.28"))]
    given = Allocator(inv, "rack1-{:02d}", "10.77.0.20")  # 10.77.0.20..26 are n10..n16's: skipped
    assert (given.next("02:00:00:00:00:a1").name, given.next("02:00:00:00:00:a2").ip) == (
        "rack1-01", ipaddress.IPv4Address("10.77.0.28"))
    assert default_name_format("node007") == "node{:03d}"
    assert Allocator(inv, "n{:02d}", "10.77.0.100").next("02:00:00:00:00:a1").name == "n17"  # n01..16 taken


@pytest.mark.parametrize("names, first_ip, message", [
    ("n{:02d", None, "--names 'n{:02d': not a Python format"),
    ("node", None, "--names 'node': the index is not in it"),
    (None, "10.78.0.1", "--first-ip 10.78.0.1: not in the inventory's subnet 10.77.0.0/24"),
    (None, "10.77.0.x", "--first-ip '10.77.0.x'"),
])
def test_bad_names_and_addresses_are_refused(names, first_ip, message):
    with pytest.raises(InputError, match=message.replace("{", r"\{").replace("(", r"\(")):
        Allocator(load_inventory(LAB), names, first_ip)


def test_the_subnet_runs_out():
    inv = parse_inventory(inventory_yaml(3), Path("c.yaml"))
    allocator = Allocator(inv, first_ip="10.9.0.253")  # .254 is the gateway, .255 the broadcast address
    assert str(allocator.next("02:00:00:00:01:01").ip) == "10.9.0.253"
    with pytest.raises(InputError, match="no free address left in the subnet for 02:00:00:00:01:02"):
        allocator.next("02:00:00:00:01:02")


NEW = [NewNode("n17", "02:00:00:00:00:a1", ipaddress.IPv4Address("10.77.0.27")),
       NewNode("n18", "02:00:00:00:00:a2", ipaddress.IPv4Address("10.77.0.28"))]


def test_appending_keeps_every_line_and_the_flow_style():
    text = LAB.read_text() + "# a closing comment\n"
    new = append_nodes(text, NEW, Path("lab.yaml"))
    last = '  - {name: n16, mac: "02:77:00:00:00:10", ip: 10.77.0.26}\n'
    assert new == text.replace(last, last + '  - {name: n17, mac: "02:00:00:00:00:a1", ip: 10.77.0.27}\n'
                                            '  - {name: n18, mac: "02:00:00:00:00:a2", ip: 10.77.0.28}\n')
    inv = parse_inventory(new, Path("lab.yaml"))
    assert [(n.name, n.mac, str(n.ip)) for n in inv.nodes[-2:]] == [(n.name, n.mac, str(n.ip)) for n in NEW]


def test_appending_to_block_style_nodes_before_the_next_section():
    text = inventory_yaml(0).replace("nodes:\n", "nodes:\n    # first rack\n    - name: n16  # the last\n"
                                     '      mac: "02:00:00:00:00:10"\n      ip: 10.9.0.26\n\n# trailer\n'
                                     "kickstart:\n  lang: C\n")
    new = append_nodes(text, NEW[:1], Path("c.yaml"))
    assert new.endswith('      ip: 10.9.0.26\n    - name: n17\n      mac: "02:00:00:00:00:a1"\n      ip: 10.77.0.27\n'
                        "\n# trailer\nkickstart:\n  lang: C\n")
    assert new.replace("    - name: n17\n      mac: \"02:00:00:00:00:a1\"\n      ip: 10.77.0.27\n", "") == text
    no_newline = append_nodes(LAB.read_text().rstrip("\n"), NEW[:1], Path("lab.yaml"))
    assert no_newline.endswith('ip: 10.77.0.26}\n  - {name: n17, mac: "02:00:00:00:00:a1", ip: 10.77.0.27}\n')


@pytest.mark.parametrize("nodes, message", [
    ("nodes: [{name: n1, mac: '02:00:00:00:00:01', ip: 10.9.0.2}]\n", "nodes: discovery appends to a block list"),
    ("", "nodes: no top-level `nodes:` list"),
    ("nodes:\n  -\n    name: n1\n    mac: '02:00:00:00:00:01'\n    ip: 10.9.0.2\n", "nodes: cannot tell the list"),
])
def test_no_list_to_append_to(nodes, message):
    text = inventory_yaml(0).replace("nodes:\n", nodes)
    with pytest.raises(InputError, match=message):
        append_nodes(text, NEW, Path("c.yaml"))


@pytest.mark.parametrize("empty", ["nodes: []\n", "nodes: []   # found by provision discover\n"])
def test_appending_to_an_inventory_without_nodes(tmp_path, empty):
    """A cluster's inventory before discovery: server, network, defaults and no nodes; the first ones become a block
    list of flow lines under `nodes:` (its comment kept), and what follows `nodes:` stays."""
    text = inventory_yaml(0).replace("nodes:\n", empty) + "# the end\n"
    assert parse_inventory(text, Path("c.yaml")).nodes == ()
    new = [NewNode("n01", "02:00:00:00:00:01", ipaddress.IPv4Address("10.9.0.11"), firmware=Firmware.UEFI),
           NewNode("n02", "02:00:00:00:00:02", ipaddress.IPv4Address("10.9.0.12"))]
    out = append_nodes(text, new, Path("c.yaml"))
    head = "nodes:  # found by provision discover\n" if "#" in empty else "nodes:\n"
    assert out == text.replace(empty, head + '  - {name: n01, mac: "02:00:00:00:00:01", ip: 10.9.0.11, firmware: uefi}\n'
                                            '  - {name: n02, mac: "02:00:00:00:00:02", ip: 10.9.0.12}\n')
    assert [n.name for n in parse_inventory(out, Path("c.yaml")).nodes] == ["n01", "n02"]
    assert append_nodes(out, [NewNode("n03", "02:00:00:00:00:03", ipaddress.IPv4Address("10.9.0.13"))],
                        Path("c.yaml")).endswith('  - {name: n03, mac: "02:00:00:00:00:03", ip: 10.9.0.13}\n# the end\n')


def test_an_inventory_without_nodes_renders_a_dhcpd_config_that_serves_nobody(tmp_path):
    """What `provision dhcp start` needs before the first discovery: dhcpd's config (checked with dhcpd -t), no
    dolly.conf (no ring yet)."""
    require_tool("dhcpd")
    path = write(tmp_path, inventory_yaml(0).replace("nodes:\n", "nodes: []\n"))
    out = tmp_path / "out"
    assert main(["render", "--inventory", str(path), "--out", str(out)], {"PROVISION_STATE_DIR": str(tmp_path)}) == 0
    assert (out / "dhcpd.conf").is_file() and "host " not in (out / "dhcpd.conf").read_text()
    assert not (out / "dolly.conf").exists()
    check = subprocess.run(["dhcpd", "-t", "-4", "-cf", str(out / "dhcpd.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_install_refuses_an_inventory_without_nodes(tmp_path, capsys):
    path = write(tmp_path, inventory_yaml(0).replace("nodes:\n", "nodes: []\n"))
    assert main(["install", "--inventory", str(path)], {"PROVISION_STATE_DIR": str(tmp_path / "state")}) == 3
    assert f"{path}: nodes: none yet (provision discover adds them); nothing was done" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_replace_validates_keeps_a_backup_and_the_mode(tmp_path):
    path = write(tmp_path, LAB.read_text(), "lab.yaml")
    path.chmod(0o640)
    old = path.read_text()
    inode = path.stat().st_ino
    bad = append_nodes(old, [NewNode("n01", "02:00:00:00:00:a1", ipaddress.IPv4Address("10.77.0.27"))], path)
    with pytest.raises(InputError, match=r"lab.yaml:\d+: nodes\[16\]\.name: .*'n01'"):
        replace_inventory(path, bad)
    assert (path.read_text(), path.stat().st_ino) == (old, inode)  # untouched
    assert not path.with_name("lab.yaml.bak").exists()
    inv = replace_inventory(path, append_nodes(old, NEW[:1], path))
    assert inv.nodes[-1].name == "n17" and path.stat().st_ino != inode  # renamed over: atomic
    assert path.with_name("lab.yaml.bak").read_text() == old
    assert (path.stat().st_mode & 0o777, path.with_name("lab.yaml.bak").stat().st_mode & 0o777) == (0o640, 0o640)
    replace_inventory(path, append_nodes(path.read_text(), NEW[1:], path), backup=False)
    assert path.with_name("lab.yaml.bak").read_text() == old  # the file as before the whole discovery
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_command_refuses_bad_options_before_listening(tmp_path, capsys):
    path = write(tmp_path, LAB.read_text(), "lab.yaml")
    assert main(["discover", "--inventory", str(path), "--count", "0"], {}) == 3
    assert main(["discover", "--inventory", str(path), "--names", "n{:02d"], {}) == 3
    assert main(["discover", "--inventory", str(path), "--timeout", "0"], {}) == 3
    err = capsys.readouterr().err
    assert "--count 0: expected 1 or more" in err and "--names 'n{:02d'" in err and "--timeout 0" in err
    # outside a lab's server namespace nobody holds 10.77.0.1
    assert main(["discover", "--inventory", str(path), "--timeout", "1"], {}) == 1
    assert "no interface here has the server address 10.77.0.1" in capsys.readouterr().err


def test_a_node_found_through_its_bmc_gets_its_address_in_either_style():
    node = NewNode("n17", "02:00:00:00:00:a1", ipaddress.IPv4Address("10.77.0.27"), bmc_address="10.78.0.17")
    flow = append_nodes(LAB.read_text(), [node], Path("lab.yaml"))
    assert flow.endswith('  - {name: n17, mac: "02:00:00:00:00:a1", ip: 10.77.0.27, bmc: {address: 10.78.0.17}}\n')
    text = inventory_yaml(0).replace("nodes:\n", 'nodes:\n  - name: n16\n    mac: "02:00:00:00:00:10"\n'
                                     "    ip: 10.9.0.26\n")
    block = append_nodes(text, [node], Path("c.yaml"))
    assert block.endswith('  - name: n17\n    mac: "02:00:00:00:00:a1"\n    ip: 10.77.0.27\n'
                          "    bmc: {address: 10.78.0.17}\n")


def test_a_node_whose_request_said_its_firmware_gets_it_in_either_style(tmp_path):
    node = NewNode("n17", "02:00:00:00:00:a1", ipaddress.IPv4Address("10.77.0.27"), bmc_address="10.78.0.17",
                   firmware=Firmware.UEFI)
    flow = append_nodes(LAB.read_text(), [node], Path("lab.yaml"))
    assert flow.endswith('  - {name: n17, mac: "02:00:00:00:00:a1", ip: 10.77.0.27, firmware: uefi, '
                         'bmc: {address: 10.78.0.17}}\n')
    text = inventory_yaml(0).replace("nodes:\n", 'nodes:\n  - name: n16\n    mac: "02:00:00:00:00:10"\n'
                                     "    ip: 10.9.0.26\n")
    block = append_nodes(text, [dataclasses.replace(node, bmc_address=None)], Path("c.yaml"))
    assert block.endswith('  - name: n17\n    mac: "02:00:00:00:00:a1"\n    ip: 10.77.0.27\n    firmware: uefi\n')
    path = write(tmp_path, LAB.read_text(), "lab.yaml")
    replace_inventory(path, append_nodes(path.read_text(), [dataclasses.replace(node, bmc_address=None)], path))
    assert load_inventory(path).node("n17").firmware is Firmware.UEFI  # what the loader makes of it


@pytest.mark.parametrize("text, message", [
    ("10.0.1.9-10.0.1.1", "the last address comes before the first"),
    ("10.0.1.1-10.0.2", "want FIRST-LAST, two IPv4 addresses"),
    ("bmc1-bmc9", "want FIRST-LAST, two IPv4 addresses"),
    ("10.0.0.0-10.0.16.0", "4097 addresses, at most 4096"),
])
def test_bad_bmc_ranges(text, message):
    with pytest.raises(InputError, match=f"--bmc-range '{text}': {message}"):
        bmc_range.parse_range(text)


def test_the_range_is_defaults_bmc_at_each_address_less_the_nodes_ones(tmp_path):
    defaults = "bmc: {type: ipmi, user: admin, password_file: bmc.secret, port: 6230, cipher_suite: 17}"
    known = '  - {name: b1, mac: "02:00:00:00:09:01", ip: 10.9.0.101, bmc: {address: 10.8.0.3}}\n'
    inv = load_inventory(write(tmp_path, inventory_yaml(0, defaults=defaults, extra_nodes=known)))
    plan = bmc_range.plan(["10.8.0.2-10.8.0.4", "10.8.0.1", "10.8.0.4-10.8.0.5"], inv)
    assert [b.address for b in plan.bmcs] == ["10.8.0.2", "10.8.0.4", "10.8.0.1", "10.8.0.5"]
    assert plan.known == ("10.8.0.3 (b1's)",)
    assert {(b.port, b.user, b.cipher_suite, b.password_file) for b in plan.bmcs} == {
        (6230, "admin", 17, tmp_path / "bmc.secret")}
    assert dataclasses.replace(plan.bmcs[0], address="10.8.0.3") == inv.node("b1").bmc  # what its entry means


def test_a_range_needs_defaults_bmc(tmp_path, capsys):
    path = write(tmp_path, inventory_yaml(1))
    assert main(["discover", "--inventory", str(path), "--bmc-range", "10.8.0.1-10.8.0.4"], {}) == 3
    assert (f"{path}: --bmc-range: the BMCs of the range are defaults.bmc at their addresses: give defaults.bmc "
            "with user and password_file or password_env") in capsys.readouterr().err
    assert main(["discover", "--inventory", str(path), "--bmc-range", "10.8.0.1", "--bmc-timeout", "0"], {}) == 3
    assert "--bmc-timeout 0.0 / --bmc-retries 2: expected a positive time-out" in capsys.readouterr().err
