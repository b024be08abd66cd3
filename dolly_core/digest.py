"""The end-to-end check of a file in a run: its tag list, SHA-256 over the tags of its pieces in order.

A piece's tag (protocol.py, tags.py) is the run's tag algorithm (keyed BLAKE3 or HMAC-SHA256 under the run's
key; unkeyed without a secret) of its header and payload: it pins the piece's bytes to its file, chunk, offset
and length. The server makes
each tag once; every node checks each piece's tag on arrival (hashing the piece once, as it must anyway)
and, after the write call for a chunk succeeded, adds the tags of its pieces to the file's list. Equal
lists mean that every piece the node wrote is the server's piece at the server's place: a collision
of the list or a forged tag needs a SHA-256 second preimage (and, with a secret, the key). A HOLE frame's
tag covers its place and length, so a hole costs a node one tag, never hashing its zeros.

The list is that of the pieces as the server sent them (all-zero pieces as HOLE frames), not a function
of the bytes alone. The server's report also names each file's plain digest, the site's choice (dollyS
--digest): SHA-256 as sha256sum prints it (the default), BLAKE3 (b3sum's, about a third of its CPU) or none;
it is for people and other tools to compare, the nodes' check above does not need it.
"""

from __future__ import annotations

import hashlib

try:
    from blake3 import blake3 as _blake3
except ImportError:  # a Python without the blake3 module: sha256 or none
    _blake3 = None

SHA256, BLAKE3, NONE = "sha256", "blake3", "none"
FILE_DIGESTS = (SHA256, BLAKE3, NONE)  # dollyS --digest; a report field of each name but none


class TagList:
    """Fed in file order with the tags of the file's pieces."""

    def __init__(self) -> None:
        self._list = hashlib.sha256()

    def add(self, tag) -> None:
        self._list.update(tag)

    def hexdigest(self) -> str:
        return self._list.hexdigest()


def file_hasher(name: str):
    """A new hasher of a whole file for the report (hashlib's interface), None for `none`; ValueError for a
    digest this Python cannot make."""
    if name == SHA256:
        return hashlib.sha256()
    if name == NONE:
        return None
    if name != BLAKE3:
        raise ValueError(f"unknown file digest {name!r} (known: {', '.join(FILE_DIGESTS)})")
    if _blake3 is None:
        raise ValueError("this dollyS cannot make blake3 digests: its Python has no blake3 module "
                         "(run it with --digest sha256, or install blake3 here)")
    return _blake3()
