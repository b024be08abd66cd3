"""Several rings from one inventory (`ring: {count: K}`): the split of the ready nodes, each ring's files,
tail port and dolly.conf, the rings' dollyS --wait and --timeout, and the fields' checks (file, line, field,
value)."""

from __future__ import annotations

import pytest
from tests.fixtures.inventories import inventory_yaml, write

from dolly_core.cli import server_parser
from provision.errors import InputError
from provision.inventory import load_inventory
from provision.render import render_ring_config
from provision.ring_run import RingFiles, RingSettings, merge_progress, server_argv
from provision.rings import plan_rings, split


@pytest.mark.parametrize(("items", "count", "expected"), [
    (10, 1, [10]),
    (10, 2, [5, 5]),
    (10, 3, [4, 3, 3]),
    (10, 4, [3, 3, 2, 2]),
    (3, 5, [1, 1, 1]),      # never an empty ring
    (0, 2, []),
    (1000, 7, [143] * 6 + [142]),
])
def test_split_is_contiguous_in_order_and_even(items, count, expected):
    slices = split(list(range(items)), count)
    assert [len(s) for s in slices] == expected
    assert [i for s in slices for i in s] == list(range(items))  # every node once, in ring order


def test_rings_have_their_own_files_and_tail_ports(tmp_path):
    inv = load_inventory(write(tmp_path, inventory_yaml(5) + "ring: {count: 2}\n"))
    assert inv.ring.count == 2
    rings = plan_rings(tmp_path / "dolly", inv.server.dolly_port, inv.nodes, inv.ring.count)
    assert [(r.number, r.count, r.names, r.tail_port) for r in rings] == [
        (1, 2, ["node001", "node002", "node003"], 9998), (2, 2, ["node004", "node005"], 9999)]
    assert [r.files.directory for r in rings] == [tmp_path / "dolly" / "ring1", tmp_path / "dolly" / "ring2"]
    second = render_ring_config(inv, rings[1].nodes, server_port=rings[1].tail_port).split("\n")
    assert "server 10.9.0.1:9999" in second
    assert [line for line in second if line.startswith("10.9.")] == ["10.9.0.5", "10.9.0.6"]
    assert "server 10.9.0.1\n" in render_ring_config(inv, rings[0].nodes)
    [one] = plan_rings(tmp_path / "dolly", 9998, inv.nodes[:1], 2)  # one ready node: one ring, the usual files
    assert (one.count, one.files.directory, one.tail_port) == (1, tmp_path / "dolly", 9998)


def test_one_ring_unless_the_inventory_asks(tmp_path):
    assert load_inventory(write(tmp_path, inventory_yaml(2))).ring.count == 1
    assert load_inventory(write(tmp_path, inventory_yaml(2) + "ring:\n")).ring.count == 1


def test_the_rings_wait_and_timeout_reach_dollyS(tmp_path):
    """The inventory's ring.wait and ring.timeout, install --timeout over ring.timeout, as dollyS's own
    parser reads the command line provision install runs."""
    files, secret = RingFiles(tmp_path / "dolly"), tmp_path / "ring.secret"
    default = load_inventory(write(tmp_path, inventory_yaml(2))).ring
    assert (default.wait, default.timeout) == (10.0, 10.0)  # install's members listen before they report ready
    site = load_inventory(write(tmp_path, inventory_yaml(2) + "ring: {count: 2, wait: 5, timeout: 2.5}\n")).ring
    assert (site.count, site.wait, site.timeout) == (2, 5.0, 2.5)
    for ring, timeout, expected in [(default, None, (10.0, 10.0)), (site, None, (5.0, 2.5)), (site, 3.0, (5.0, 3.0))]:
        argv = server_argv(files, RingSettings.of(ring, secret, timeout, chunk_size=1 << 20))
        args = server_parser().parse_args(argv[1:])
        assert (args.wait, args.timeout) == expected
        assert (args.config, args.secret_file, args.chunk_size) == (str(files.config), str(secret), 1 << 20)


def test_the_inventorys_digest_reaches_dollyS(tmp_path):
    """dolly.digest (default sha256, the report as it was) as dollyS's own parser reads provision install's
    command line."""
    files, secret = RingFiles(tmp_path / "dolly"), tmp_path / "ring.secret"
    for extra, expected in [("", "sha256"), ("dolly: {digest: blake3}\n", "blake3"),
                            ("dolly: {digest: none}\n", "none")]:
        inv = load_inventory(write(tmp_path, inventory_yaml(2) + extra))
        argv = server_argv(files, RingSettings.of(inv.ring, secret, digest=inv.dolly.digest))
        assert server_parser().parse_args(argv[1:]).digest == expected


@pytest.mark.parametrize(("extra", "message"), [
    ("ring: {count: 0}", "ring.count: expected a whole number from 1 to 1024: 0"),
    ("ring: {count: two}", "ring.count: expected a whole number from 1 to 1024: 'two'"),
    ("ring: {count: true}", "ring.count: expected a whole number from 1 to 1024: True"),
    ("ring: {rings: 2}", "ring.rings: unknown key (known keys: count, wait, timeout): 'rings'"),
    ("ring: 2", "ring: expected a mapping (key: value lines): 2"),
    ("ring: {wait: 0}", "ring.wait: expected a number of seconds above 0 and at most 86400: 0"),
    ("ring: {wait: -5}", "ring.wait: expected a number of seconds above 0 and at most 86400: -5"),
    ("ring: {wait: 5 s}", "ring.wait: expected a number of seconds above 0 and at most 86400: '5 s'"),
    ("ring: {wait: yes}", "ring.wait: expected a number of seconds above 0 and at most 86400: True"),
    ("ring: {timeout: 1e9}", "ring.timeout: expected a number of seconds above 0 and at most 86400: '1e9'"),
    ("ring: {timeout: 100000.5}", "ring.timeout: expected a number of seconds above 0 and at most 86400: 100000.5"),
])
def test_bad_ring_fields_name_file_line_field_and_value(tmp_path, extra, message):
    path = write(tmp_path, inventory_yaml(2) + extra + "\n")
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    line = inventory_yaml(2).count("\n") + 1
    assert f"{path}:{line}: {message}" in str(caught.value)


@pytest.mark.parametrize(("ports", "count", "message"), [
    ("  dolly_port: 65535\n", 2, "ring.count: rings 1-2 close back to the server's ports 65535-65536: past 65535: 2"),
    ("  dolly_port: 8070\n", 20, "ring.count: rings 1-20 close back to the server's ports 8070-8089, which hold "
                                 "its http_port 8080: 20"),
])
def test_rings_need_free_server_ports(tmp_path, ports, count, message):
    text = inventory_yaml(2).replace("  ip: 10.9.0.1\n", "  ip: 10.9.0.1\n" + ports, 1) + f"ring: {{count: {count}}}\n"
    with pytest.raises(InputError, match=rf":\d+: {message}"):
        load_inventory(write(tmp_path, text))


def test_the_progress_of_rings_run_together_reads_as_one():
    first = {"total_bytes": 100, "seconds": 3.0, "nodes": [{"name": "n01", "state": "receiving", "bytes": 50}]}
    second = {"total_bytes": 100, "seconds": 2.5, "nodes": [{"name": "n02", "state": "dead", "bytes": 10}]}
    merged = merge_progress([first, second])
    assert merged == {"total_bytes": 100, "seconds": 3.0, "nodes": first["nodes"] + second["nodes"]}
    assert merge_progress([first, {}])["nodes"] == first["nodes"]  # a ring whose dollyS has not written yet
    assert merge_progress([first]) is first
