"""The tags that check frames: HMAC-SHA256 (SHA-256 without a key) from the standard library, and keyed
BLAKE3 (plain BLAKE3 without a key) where the `blake3` module is installed.

A tag is the first TAG_LEN bytes of the algorithm's output over a frame's header and payload. Control
frames are always tagged with HMAC-SHA256 under their connection's key; a run's pieces with the algorithm
the server chose for the run (dollyS --tag, in SETUP), under the run's key. BLAKE3's key is derived from
the run's key (HMAC-SHA256(key, "dolly-blake3")), so the two algorithms never share a key.
"""

from __future__ import annotations

import hashlib
import hmac

try:
    from blake3 import blake3 as _blake3
except ImportError:  # a Python with the standard library only (an installer without it): SHA-256 only
    _blake3 = None

TAG_LEN = 16
SHA256, BLAKE3 = "sha256", "blake3"
ALGORITHMS = (SHA256, BLAKE3)
AVAILABLE = ALGORITHMS if _blake3 is not None else (SHA256,)  # what this Python can tag and check
DEFAULT = BLAKE3 if _blake3 is not None else SHA256  # dollyS's choice unless --tag says otherwise

_IPAD, _OPAD = (bytes(b ^ pad for b in range(256)) for pad in (0x36, 0x5C))


class Tagger:
    """Tags frames under one key: HMAC-SHA256 (RFC 2104) with the key's pads hashed once, or SHA-256 without
    a key, of header and payload, cut to TAG_LEN. Per frame that is its bytes' hashing and a few calls."""

    def __init__(self, key: bytes | None):
        self.inner, self.outer = hashlib.sha256(), None
        if key is not None:
            key = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
            self.inner.update(key.translate(_IPAD))
            self.outer = hashlib.sha256(key.translate(_OPAD))

    def tag(self, header, payload=None) -> bytes:
        inner = self.inner.copy()
        inner.update(header)
        if payload is not None:
            inner.update(payload)
        if self.outer is None:
            return inner.digest()[:TAG_LEN]
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_LEN]

    def ok(self, header, tag, payload=None) -> bool:
        return hmac.compare_digest(self.tag(header, payload), tag)


class Blake3Tagger:
    """Tags frames with BLAKE3 keyed by a key derived from `key` (plain BLAKE3 without one), cut to TAG_LEN."""

    def __init__(self, key: bytes | None):
        if _blake3 is None:
            raise ValueError("this Python has no blake3 module")
        self.key = None if key is None else hmac.new(key, b"dolly-blake3", hashlib.sha256).digest()

    def tag(self, header, payload=None) -> bytes:
        hasher = _blake3(header) if self.key is None else _blake3(header, key=self.key)
        if payload is not None:
            hasher.update(payload)
        return hasher.digest(TAG_LEN)

    def ok(self, header, tag, payload=None) -> bool:
        return hmac.compare_digest(self.tag(header, payload), tag)


def piece_tagger(algorithm: str, key: bytes | None) -> Tagger | Blake3Tagger:
    """The tagger of a run's pieces (ValueError for an algorithm this Python cannot do)."""
    if algorithm == SHA256:
        return Tagger(key)
    if algorithm == BLAKE3:
        return Blake3Tagger(key)
    raise ValueError(f"unknown tag algorithm {algorithm!r}")


def cannot_check(algorithm: str, who: str = "this dollyC") -> str | None:
    """Why this Python cannot check `algorithm`'s tags (None when it can)."""
    if algorithm in AVAILABLE:
        return None
    if algorithm in ALGORITHMS:
        return (f"{who} cannot check {algorithm} tags: its Python has no {algorithm} module (it checks "
                f"{', '.join(AVAILABLE)}: run dollyS with --tag {SHA256}, or install {algorithm} here)")
    return f"{who} does not know the tag algorithm {algorithm!r} (it knows {', '.join(ALGORITHMS)})"
