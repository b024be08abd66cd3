"""The end-to-end check of a file in a run: a hash list, SHA-256 over the SHA-256 of each piece.

The pieces are those of the run's layout (chunks of chunk_size bytes, each cut into pieces of PIECE
bytes, the last of each chunk shorter), so the list is a function of the file's bytes alone, whichever
pieces travelled as HOLE frames: a piece of zeros has the digest of its zeros either way. It is as
strong a check as SHA-256 over the whole file (a collision in the list is a collision of SHA-256) and
pins every byte to its offset (the layout fixes each piece's length and place).

Why not SHA-256 over the whole file: a node learns a hole's zeros from a HOLE frame, never from the
wire or the disk, so hashing them proves nothing more than their length and place, which the list
already holds; but it cost every node a SHA-256 pass over all the zeros of a mostly empty image
(~1 GiB per node, ~95 MiB/s in a TCG virtual machine). With the list a hole costs one cached digest per
piece. The server still reports the plain SHA-256 of each file.
"""

from __future__ import annotations

import functools
import hashlib

from dolly_core.protocol import PIECE


@functools.lru_cache(maxsize=8)
def zeros_digest(length: int) -> bytes:
    return hashlib.sha256(bytes(length)).digest()


class PieceDigest:
    """Fed in file order with whole pieces (`data`) and with runs of zero pieces (`zeros`)."""

    def __init__(self) -> None:
        self._list = hashlib.sha256()

    def data(self, piece) -> None:
        """One piece's bytes (at most PIECE; zeros here give the same digest as `zeros`)."""
        self._list.update(hashlib.sha256(piece).digest())

    def zeros(self, length: int) -> None:
        """`length` zero bytes starting at a piece boundary: whole pieces, the last may be shorter."""
        for start in range(0, length, PIECE):
            self._list.update(zeros_digest(min(PIECE, length - start)))

    def hexdigest(self) -> str:
        return self._list.hexdigest()
