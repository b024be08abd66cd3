"""The piece hash list: a function of the bytes alone (zeros hash the same sent as data or as a hole),
and it changes with any byte, a hole's place or the file's length."""

import hashlib
import os

from dolly_core.digest import PieceDigest
from dolly_core.protocol import PIECE


def listed(data: bytes, chunk: int) -> str:
    """The list as the definition says: SHA-256 over SHA-256 of each piece of each chunk."""
    outer = hashlib.sha256()
    for c in range(0, len(data), chunk):
        body = data[c:c + chunk]
        for start in range(0, len(body), PIECE):
            outer.update(hashlib.sha256(body[start:start + PIECE]).digest())
    return outer.hexdigest()


def fed(data: bytes, chunk: int, as_holes: bool) -> str:
    """Fed like a node: runs of zero pieces as holes (or as data), the rest piece by piece."""
    d = PieceDigest()
    for c in range(0, len(data), chunk):
        body = data[c:c + chunk]
        for start in range(0, len(body), PIECE):
            piece = body[start:start + PIECE]
            if as_holes and not any(piece):
                d.zeros(len(piece))
            else:
                d.data(piece)
    return d.hexdigest()


def image() -> bytes:
    chunk = 4 * PIECE
    data = bytearray(3 * chunk + PIECE + 1000)  # a short last chunk with a short last piece
    data[10:20] = os.urandom(10)
    data[chunk + PIECE:chunk + 2 * PIECE] = os.urandom(PIECE)
    data[-5:] = b"tail!"
    return bytes(data)


def test_holes_and_zeros_sent_as_data_give_the_definition():
    data, chunk = image(), 4 * PIECE
    assert fed(data, chunk, as_holes=True) == fed(data, chunk, as_holes=False) == listed(data, chunk)


def test_a_whole_hole_chunk_at_once_equals_its_pieces():
    d = PieceDigest()
    d.zeros(2 * PIECE + 7)
    assert d.hexdigest() == listed(bytes(2 * PIECE + 7), 4 * PIECE)


def test_the_list_changes_with_a_byte_a_moved_hole_or_the_length():
    data, chunk = image(), 4 * PIECE
    reference = fed(data, chunk, as_holes=True)
    flipped = bytearray(data)
    flipped[chunk + PIECE + 3] ^= 1
    moved = bytearray(data)  # the same data piece one piece later: the hole before it moved
    moved[chunk + 2 * PIECE:chunk + 3 * PIECE] = data[chunk + PIECE:chunk + 2 * PIECE]
    moved[chunk + PIECE:chunk + 2 * PIECE] = bytes(PIECE)
    for other in (bytes(flipped), bytes(moved), data + bytes(1), data[:-1]):
        assert fed(other, chunk, as_holes=True) != reference
