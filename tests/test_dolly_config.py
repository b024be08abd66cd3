"""dolly_core's pure parts: the config grammar, the handshake, frame checksums and tags, SETUP."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from dolly_core import protocol as p
from dolly_core import tags
from dolly_core.config import ConfigError, Endpoint, IOFile, parse_config
from dolly_core.cook import CookError, cook_plan

SEED = """\
iofiles 3
/dev/hda1 > /tmp/dev/hda1
/data/file.gz >> /data/file
boot.tar.Z >> /boot
server n000.kek.jp
firstclient n001
lastclient n003
client 3
n001 n002
n003
endconfig
"""


def test_seed_config_with_client_keyword_and_names_on_several_lines():
    config = parse_config(SEED)
    assert config.files == (IOFile("/dev/hda1", "/tmp/dev/hda1", False), IOFile("/data/file.gz", "/data/file", True),
                            IOFile("boot.tar.Z", "/boot", True))
    assert config.server == Endpoint("n000.kek.jp", 9998)
    assert [str(c) for c in config.clients] == ["n001:9998", "n002:9998", "n003:9998"]


def test_host_port_and_ip_forms():
    text = "iofiles 1\na > b\nserver 10.0.0.1:7000\nfirstclient 10.0.0.2\nlastclient h:9\nclients 2\n10.0.0.2\nh:9\nendconfig\n"
    config = parse_config(text)
    assert config.server == Endpoint("10.0.0.1", 7000)
    assert config.clients == (Endpoint("10.0.0.2", 9998), Endpoint("h", 9))


@pytest.mark.parametrize("text, message", [
    ("iofile 1\n", "dolly.conf:1: expected 'iofiles N', found 'iofile 1'"),
    ("iofiles 1\na -> b\n", "dolly.conf:2: expected 'IN > OUT' or 'IN >> OUT', found 'a -> b'"),
    ("iofiles x\n", "dolly.conf:1: expected a positive number of iofiles, found 'x'"),
    ("iofiles 1\na > b\nfirstclient n1\n", "dolly.conf:3: expected 'server NAME'"),
    ("iofiles 1\na > b\nserver s\nfirstclient n1\nlastclient n2\nclients 2\nn1\nendconfig\n",
     "dolly.conf:8: expected 2 client names before 'endconfig' (found 1)"),
    ("iofiles 1\na > b\nserver s\nfirstclient n1\nlastclient n2\nclients 1\nn1 n2\nendconfig\n",
     "dolly.conf:7: expected exactly 1 client names ('clients 1'), found 'n2'"),
    ("iofiles 1\na > b\nserver s\nfirstclient n2\nlastclient n1\nclients 1\nn1\nendconfig\n",
     "dolly.conf:4: expected 'firstclient n1' (the first name of the client list)"),
    ("iofiles 1\na > b\nserver s\nfirstclient n1\nlastclient n1\nclients 1\nn1\n",
     "dolly.conf: at end of file: expected 'endconfig'"),
    ("iofiles 1\na > b\nserver s:99999\n", "dolly.conf:3: bad port '99999'"),
    ("iofiles 1\na > b\nserver s\nfirstclient n1\nlastclient n1\nclients 2\nn1 n1\nendconfig\n",
     "client 'n1' appears twice"),
])
def test_bad_lines_name_the_line_and_the_expectation(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "dolly.conf")
    assert message in str(err.value)


def test_cook_plan_by_suffix():
    assert cook_plan("x.gz") == (["gzip", "-dc"], False)
    assert cook_plan("boot.tar.Z") == (["gzip", "-dc"], True)
    assert cook_plan("a.tgz")[1] and cook_plan("a.tar.zst") == (["zstd", "-dcq"], True)
    assert cook_plan("plain.tar") == (None, True)
    with pytest.raises(CookError, match="unknown suffix"):
        cook_plan("image.raw")


def handshake(secret_l, secret_d):
    nonce_l, nonce_d = os.urandom(32), os.urandom(32)
    has, got_nonce = p.parse_hello(p.make_hello(nonce_l, secret_l is not None))
    status, _ = p.check_auth(secret_l, got_nonce, p.make_auth(secret_d, got_nonce, nonce_d))
    p.check_result(secret_d, nonce_l, nonce_d, p.make_result(status, secret_l, nonce_l, nonce_d))
    return status


def test_handshake_accepts_equal_secrets_and_no_secrets():
    assert handshake(b"s3cret", b"s3cret") is p.Status.OK
    assert handshake(None, None) is p.Status.OK


@pytest.mark.parametrize("listener, dialer, message", [
    (b"a", b"b", "rejected our shared secret"),
    (b"a", None, "the peer has a secret, we have none"),
    (None, b"a", "we have a secret, the peer has none"),
])
def test_handshake_mismatch_is_an_error(listener, dialer, message):
    with pytest.raises(p.AuthError, match=message):
        handshake(listener, dialer)


def test_garbage_greeting_is_a_protocol_error():
    with pytest.raises(p.ProtocolError):
        p.parse_hello(b"GET / HTTP/1.1\r\n\r\n" + bytes(21))


def test_frame_checksum_catches_flips_in_payload_and_header():
    payload = bytearray(os.urandom(1000))
    wire = p.pack_header(p.Kind.PING, 2, 7, 5 << 32, len(payload), payload)
    header = p.unpack_header(wire[:p.HEADER_LEN])
    assert header.offset == 5 << 32 and p.crc_ok(header, payload)
    payload[500] ^= 1
    assert not p.crc_ok(header, payload)
    payload[500] ^= 1
    moved = p.Header(header.kind, header.flags, header.file, header.seq, header.offset + 1, header.length, header.crc)
    assert not p.crc_ok(moved, payload)


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["digest", "hmac"])
def test_a_piece_tag_catches_flips_in_payload_and_header(key):
    payload = bytearray(os.urandom(1000))
    wire = p.pack_header(p.Kind.CHUNK, 2, 7, 5 << 32, len(payload), payload, key=key)
    header, tag = wire[:p.HEADER_LEN], wire[p.HEADER_LEN:]
    assert len(wire) == p.WIRE_HEADER_LEN and p.unpack_header(header).crc == 0  # the tag is a piece's check
    assert p.tag_ok(key, header, tag, payload)
    payload[500] ^= 1
    assert not p.tag_ok(key, header, tag, payload)
    payload[500] ^= 1
    moved = p.pack_header(p.Kind.CHUNK, 2, 7, (5 << 32) + 1, len(payload), payload, key=key)[:p.HEADER_LEN]
    assert not p.tag_ok(key, moved, tag, payload)
    assert not p.tag_ok(b"K" * 32 if key else b"k" * 32, header, tag, payload)


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["blake3", "keyed-blake3"])
def test_a_blake3_piece_tag_is_blake3_of_header_and_payload_under_a_derived_key(key):
    from blake3 import blake3

    tagger = tags.piece_tagger(tags.BLAKE3, key)
    payload = os.urandom(1000)
    wire = p.pack_piece(tagger, p.Kind.CHUNK, 2, 7, 5 << 32, len(payload), payload)
    header, tag = wire[:p.HEADER_LEN], wire[p.HEADER_LEN:]
    if key is None:
        expected = blake3(header + payload).digest(p.TAG_LEN)
    else:
        expected = blake3(header + payload, key=hmac.new(key, b"dolly-blake3", hashlib.sha256).digest()).digest(16)
    assert tag == expected and tagger.ok(header, tag, payload) and p.unpack_header(header).crc == 0
    flipped = bytearray(payload)
    flipped[500] ^= 1
    assert not tagger.ok(header, tag, flipped)
    moved = p.pack_piece(tagger, p.Kind.CHUNK, 2, 7, (5 << 32) + 1, len(payload), payload)[:p.HEADER_LEN]
    assert not tagger.ok(moved, tag, payload)
    assert not tags.piece_tagger(tags.BLAKE3, b"K" * 32 if key else b"k" * 32).ok(header, tag, payload)
    assert not tags.piece_tagger(tags.SHA256, key).ok(header, tag, payload)  # the algorithms do not mix


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["digest", "hmac"])
def test_a_sha256_piece_is_tagged_as_pack_header_tags_it(key):
    payload = os.urandom(3000)
    assert (p.pack_piece(tags.piece_tagger(tags.SHA256, key), p.Kind.CHUNK, 1, 2, 3, len(payload), payload)
            == p.pack_header(p.Kind.CHUNK, 1, 2, 3, len(payload), payload, key=key))


def test_setup_carries_the_tag_algorithm_and_an_unknown_one_is_named():
    from dolly_core.ring import FileSpec, Member, Ring, RunSetup
    from dolly_core.uplink import parse_setup

    ring = Ring((Member("s", "127.0.0.1", 1), Member("n", "127.0.0.2", 2), Member("t", "127.0.0.1", 1)))
    setup = RunSetup("run", ring, (FileSpec("src", "/out", False, 10),), 4096, 1.0, 0.0, tags.BLAKE3)
    assert parse_setup(setup.to_body(sender=0, target=1))[0] == setup
    assert tags.cannot_check(tags.BLAKE3) is None and tags.cannot_check(tags.SHA256) is None
    assert tags.cannot_check("md5") == ("this dollyC does not know the tag algorithm 'md5' "
                                        "(it knows sha256, blake3)")
    with pytest.raises(ValueError, match="unknown tag algorithm 'md5'"):
        tags.piece_tagger("md5", None)


def test_a_member_of_another_protocol_version_is_named_in_the_handshake():
    old = p.MAGIC[:-1] + bytes([p.MAGIC[-1] - 1])
    nonce = os.urandom(32)
    with pytest.raises(p.ProtocolError, match=f"the peer speaks dolly protocol version {old[-1]}, we speak "
                                              f"version {p.MAGIC[-1]}: every ring member must run the same"):
        p.parse_hello(old + p.make_hello(nonce, False)[len(old):])
    with pytest.raises(p.ProtocolError, match=f"protocol version {old[-1]}"):
        p.check_auth(None, nonce, old + p.make_auth(None, nonce, nonce)[len(old):])

def test_data_map_finds_the_data_of_a_sparse_file_chunk_by_chunk(tmp_path):
    """Extents straddling chunks, inside one, at the end and a trailing hole; the same ranges whatever the
    order of the questions (the map keeps the last extent it found)."""
    from dolly_core.server import DataMap

    path, mib = tmp_path / "sparse", 1 << 20
    data = [(0, 3 * mib), (5 * mib, 6 * mib), (8 * mib - 4096, 8 * mib)]
    with open(path, "wb") as f:
        f.truncate(10 * mib)
        for start, end in data:
            f.seek(start)
            f.write(os.urandom(end - start))
    chunk = 2 * mib
    expected = {c: [(max(a, c), min(b, c + chunk)) for a, b in data if a < c + chunk and b > c]
                for c in range(0, 10 * mib, chunk)}
    with open(path, "rb") as f:
        forward, backward = DataMap(f.fileno()), DataMap(f.fileno())
        assert {c: forward.ranges(c, c + chunk) for c in expected} == expected
        assert {c: backward.ranges(c, c + chunk) for c in reversed(expected)} == expected
