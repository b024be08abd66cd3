"""The END report's verdicts (dolly_core/verdicts.py): what members add as END passes, what the server reads
back, and the size of END at the ring's tail (with the wire encoder), deterministic. A real ring's END is
checked in tests/test_dolly_ring.py."""

from __future__ import annotations

import pytest

from dolly_core import protocol as p
from dolly_core import verdicts
from dolly_core.ring import FileSpec, Member, Ring, RunSetup

SHA = ["ab" * 32, "cd" * 32]
TAG_LISTS = ["ef" * 32, "01" * 32]
FILES = (FileSpec("/srv/root.img", "/dev/sda1", False, 5_000_000), FileSpec("/srv/home.tar.gz", "/home", True, 700))


def ring_setup(n: int, files=FILES) -> RunSetup:
    members = ([Member("head", "10.0.0.1", 0)] + [Member(f"n{i:04d}", f"10.0.{i // 256}.{i % 256}", 9998)
                                                  for i in range(1, n + 1)] + [Member("head (tail)", "10.0.0.1", 9998)])
    return RunSetup("f" * 32, Ring(tuple(members)), files, 4 << 20, 10.0, 10.0, "blake3")


def node_verdict(setup: RunSetup, server: dict, seconds: float, error: str | None = None) -> dict:
    """What node.py's _make_verdict makes: a failed member's files carry null digests."""
    plain = verdicts.plain_digests(server)
    return {"ok": error is None, "error": error, "bytes": sum(f.size for f in setup.files) - (1 if error else 0),
            "seconds": seconds,
            "files": [{"path": f.out, **{name: values[i] if error is None else None for name, values in plain.items()}}
                      for i, f in enumerate(setup.files)]}


def around(setup: RunSetup, server: dict, made: dict[int, dict], dead_at_head: tuple[int, ...] = ()) -> dict:
    """END as the server's tail gets it: from the head (its dead successors whole), then every member in
    ring order adding its verdict."""
    body = {"server": server, "verdicts": {str(i): {"ok": False, "error": "dead (seen by the server): refused",
                                                    "bytes": 0, "seconds": None, "files": []}
                                           for i in dead_at_head}}
    for index, verdict in sorted(made.items()):
        body = verdicts.add(body, index, verdict, setup)
    return body


def end_bytes(body: dict) -> int:
    return len(p.control(p.Kind.END, body))


@pytest.mark.parametrize("server", [{"sha256": SHA, "digest": TAG_LISTS}, {"blake3": SHA, "digest": TAG_LISTS},
                                    {"digest": TAG_LISTS}], ids=["sha256", "blake3", "none"])
def test_the_server_reads_back_every_verdict_as_the_member_made_it(server):
    setup = ring_setup(7)
    made = {1: node_verdict(setup, server, 9.101), 2: node_verdict(setup, server, 9.2),
            4: node_verdict(setup, server, 9.4, error="/dev/sda1: tag list 00 differs from the server's"),
            5: node_verdict(setup, server, 9.5), 6: node_verdict(setup, server, 9.6), 7: node_verdict(setup, server, 10.0)}
    body = around(setup, server, made, dead_at_head=(3,))
    assert body["verified"] == "1:9.101,9.2;5:9.5,9.6,10.0"  # 3 and 4 break the run
    assert set(body["verdicts"]) == {"3", "4"} and body["verdicts"]["4"] == made[4]
    whole = verdicts.read(p.parse_control(*wire(body)), setup)  # through the wire's JSON
    assert whole == {**{str(i): v for i, v in made.items()}, "3": body["verdicts"]["3"]}
    assert whole["1"] == {"ok": True, "error": None, "bytes": 5_000_700, "seconds": 9.101, "files": [
        {"path": "/dev/sda1", **{k: SHA[0] for k in server if k != "digest"}},
        {"path": "/home", **{k: SHA[1] for k in server if k != "digest"}}]}


def wire(body: dict) -> tuple[p.Header, bytes]:
    frame = p.control(p.Kind.END, body)
    return p.unpack_header(frame[:p.HEADER_LEN]), frame[p.WIRE_HEADER_LEN:]


@pytest.mark.parametrize("change", [{"bytes": 5_000_699}, {"error": "late"}, {"files": []}, {"ok": False}, {"seconds": 3},
                                    {"files": [{"path": "/dev/sda1", "sha256": SHA[0]}, {"path": "/home", "sha256": None}]}])
def test_a_verdict_that_is_not_exactly_a_verified_ones_travels_whole(change):
    setup = ring_setup(3)
    server = {"sha256": SHA, "digest": TAG_LISTS}
    odd = {**node_verdict(setup, server, 2.5), **change}
    body = around(setup, server, {1: node_verdict(setup, server, 2.0), 2: odd, 3: node_verdict(setup, server, 3.0)})
    assert body["verified"] == "1:2.0;3:3.0" and body["verdicts"] == {"2": odd}
    assert verdicts.read(body, setup)["2"] == odd
    dead = {"ok": False, "error": "dead (seen by n0001): silent", "bytes": 0, "seconds": None, "files": []}
    again = verdicts.add({**body, "verdicts": {"2": dead}}, 2, node_verdict(setup, server, 2.5), setup)
    assert verdicts.read(again, setup)["2"] == node_verdict(setup, server, 2.5)  # its own word wins


def test_end_at_the_tail_grows_by_a_few_bytes_per_verified_member():
    """Protocol 3 carried every verdict whole (about 170 bytes each here, so N^2 / 2 bytes around the ring);
    now a verified member adds its seconds: at most 8 bytes at up to 999.999 s."""
    server = {"sha256": SHA, "digest": TAG_LISTS}
    size, whole = {}, {}
    for n in (8, 32, 100):
        setup = ring_setup(n)
        body = around(setup, server, {i: node_verdict(setup, server, round(100 + i * 1.001, 3)) for i in range(1, n + 1)})
        size[n] = end_bytes(body)
        whole[n] = end_bytes({"server": server, "verdicts": verdicts.read(body, setup)})  # protocol 3's END
    per_member = (size[100] - size[8]) / 92
    assert per_member <= 8, size
    assert (whole[100] - whole[8]) / 92 > 150, whole
    assert size[8] < end_bytes({"server": server, "verdicts": {}}) + 8 * 8 + 20


def test_garbled_runs_and_verdicts_give_no_verdicts_and_no_error():
    """Only well-formed runs and whole verdicts of the ring's own members count (END is checked by its tag,
    not trusted to be sane: a run of a million indexes makes no million verdicts)."""
    setup = ring_setup(3)
    for body in ({"server": [], "verified": "x:1;2:abc;9:1.0;3:inf;0:1.0", "verdicts": []},
                 {"verified": ["1:2.0"], "verdicts": {"1": "no", "x": {}, "7": {"ok": True}}},
                 {"verified": "4:" + ",".join(["1.0"] * 1000)}):
        assert verdicts.read(body, setup) == {}
    assert list(verdicts.read({"verified": "2:1.0,1.0,1.0,1.0"}, setup)) == ["2", "3"]
    assert verdicts.add(body, 1, {"ok": False, "error": "x", "bytes": 0, "seconds": 1.0, "files": []},
                        setup)["verdicts"] == {"1": {"ok": False, "error": "x", "bytes": 0, "seconds": 1.0, "files": []}}
