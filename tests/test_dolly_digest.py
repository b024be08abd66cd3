"""The tag list: SHA-256 over the tags of a file's pieces as the server sends them (all-zero pieces and
chunks as HOLE frames; tags of either algorithm); it changes with any byte, a hole's place or the file's
length, and with the key."""

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from dolly_core import protocol as p
from dolly_core.digest import TagList
from dolly_core.node import make_window
from dolly_core.ring import FileSpec, Member, Ring, RunSetup
from dolly_core.server import Source

CHUNK = 4 * p.PIECE


def tag(key: bytes | None, frame: bytes, algorithm: str = "sha256") -> bytes:
    if algorithm == "blake3":
        from blake3 import blake3
        return (blake3(frame, key=hmac.new(key, b"dolly-blake3", hashlib.sha256).digest()) if key
                else blake3(frame)).digest(p.TAG_LEN)
    mac = hmac.new(key, frame, hashlib.sha256) if key else hashlib.sha256(frame)
    return mac.digest()[:p.TAG_LEN]


def listed(data: bytes, key: bytes | None, algorithm: str = "sha256") -> str:
    """The list as the definition says, built from the header layout by hand (a piece's crc is 0)."""
    outer = hashlib.sha256()
    for seq, c in enumerate(range(0, max(len(data), 1), CHUNK)):
        body = data[c:c + CHUNK]
        if body and not any(body):
            outer.update(tag(key, p.HEADER.pack(p.Kind.HOLE, 0, 0, 0, seq, c, len(body), 0), algorithm))
            continue
        for start in range(0, max(len(body), 1), p.PIECE):
            piece = body[start:start + p.PIECE]
            kind = p.Kind.HOLE if piece and not any(piece) else p.Kind.CHUNK
            header = p.HEADER.pack(kind, 0, 0, 0, seq, c + start, len(piece), 0)
            outer.update(tag(key, header + (piece if kind is p.Kind.CHUNK else b""), algorithm))
    return outer.hexdigest()


def served(tmp_path: Path, data: bytes, key: bytes | None, algorithm: str = "sha256") -> str:
    """The list dollyS's source makes of a file holding `data`."""
    source = tmp_path / "image"
    source.write_bytes(data)
    ring = Ring((Member("s", "127.0.0.1", 1), Member("n", "127.0.0.2", 2), Member("t", "127.0.0.1", 1)))
    setup = RunSetup("run", ring, (FileSpec(str(source), "/out", False, len(data)),), CHUNK, 1.0, 0.0, algorithm)
    src = Source(setup, make_window(setup, consumers=("forward",)), key)
    src.run()
    assert src.error is None
    return src.digests[0]


def image() -> bytes:
    data = bytearray(3 * CHUNK + 5 * p.PIECE + 1000)  # a hole chunk, hole pieces, a short last piece
    data[10:20] = os.urandom(10)
    data[2 * CHUNK + p.PIECE:2 * CHUNK + 2 * p.PIECE] = os.urandom(p.PIECE)
    data[-5:] = b"tail!"
    return bytes(data)


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["digest", "keyed"])
def test_the_server_lists_the_tags_of_its_frames(tmp_path, key, algorithm):
    data = image()
    assert served(tmp_path, data, key, algorithm) == listed(data, key, algorithm)
    assert served(tmp_path, b"", key, algorithm) == listed(b"", key, algorithm)
    assert listed(data, key, algorithm) != listed(data, key, "blake3" if algorithm == "sha256" else "sha256")


def test_the_list_changes_with_a_byte_a_moved_hole_the_length_or_the_key():
    data = image()
    reference = listed(data, None)
    flipped = bytearray(data)
    flipped[2 * CHUNK + p.PIECE + 3] ^= 1
    moved = bytearray(data)  # the same data piece one piece later: the hole before it moved
    moved[2 * CHUNK + 2 * p.PIECE:2 * CHUNK + 3 * p.PIECE] = data[2 * CHUNK + p.PIECE:2 * CHUNK + 2 * p.PIECE]
    moved[2 * CHUNK + p.PIECE:2 * CHUNK + 2 * p.PIECE] = bytes(p.PIECE)
    for other in (bytes(flipped), bytes(moved), data + bytes(1), data[:-1]):
        assert listed(other, None) != reference
    assert listed(data, b"k" * 32) not in (reference, listed(data, b"K" * 32))


def test_a_node_lists_the_tags_it_is_given():
    tags = [os.urandom(p.TAG_LEN) for _ in range(3)]
    fed = TagList()
    for t in tags:
        fed.add(t)
    assert fed.hexdigest() == hashlib.sha256(b"".join(tags)).hexdigest()
