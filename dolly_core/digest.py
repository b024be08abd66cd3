"""The end-to-end check of a file in a run: its tag list, SHA-256 over the tags of its pieces in order.

A piece's tag (protocol.py) is HMAC-SHA256 under the run's key, or SHA-256 without a secret, of its
header and payload: it pins the piece's bytes to its file, chunk, offset and length. The server makes
each tag once; every node checks each piece's tag on arrival (hashing the piece once, as it must anyway)
and, after the write call for a chunk succeeded, adds the tags of its pieces to the file's list. Equal
lists mean that every piece the node wrote is the server's piece at the server's place: a collision
of the list or a forged tag needs a SHA-256 second preimage (and, with a secret, the key). A HOLE frame's
tag covers its place and length, so a hole costs a node one tag, never hashing its zeros.

The list is that of the pieces as the server sent them (all-zero pieces as HOLE frames), not a function
of the bytes alone; the server also reports the plain SHA-256 of each file.
"""

from __future__ import annotations

import hashlib


class TagList:
    """Fed in file order with the tags of the file's pieces."""

    def __init__(self) -> None:
        self._list = hashlib.sha256()

    def add(self, tag) -> None:
        self._list.update(tag)

    def hexdigest(self) -> str:
        return self._list.hexdigest()
