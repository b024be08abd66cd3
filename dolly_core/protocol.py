"""Wire format of the ring: handshake with HMAC challenge/response, framed messages, chunk checksums.

Pure byte building and parsing; no sockets (see link.py for those).

Handshake on every TCP connection, before anything else (the dialer is always the upstream side):
    listener -> dialer   HELLO  = MAGIC, has_secret (1 byte), nonce_l (32)
    dialer   -> listener AUTH   = MAGIC, has_secret (1 byte), nonce_d (32), mac_d (32)
    listener -> dialer   RESULT = status (1 byte), mac_l (32)
mac_d = HMAC-SHA256(secret, "dolly-up" nonce_l nonce_d) proves the dialer, mac_l = HMAC(secret,
"dolly-down" nonce_d nonce_l) proves the listener. Without a secret on both sides the macs are zero.
A secret on one side only is a mismatch, reported on both sides.

After the handshake both directions carry frames: a 32-byte header, a 16-byte tag and `length` payload
bytes (below).
A chunk (the unit of the window, of writes and of re-sends; --chunk-size) travels as pieces of
PIECE bytes, each a CHUNK frame with its own file offset and tag, so a node forwards a piece as
soon as it has checked it instead of waiting for the whole chunk (store-and-forward of 4 MiB would
add a chunk time per hop).
    header = type u8, flags u8, reserved u16, file u32, seq u64, offset u64, length u32, crc u32
Offsets are 64-bit. A HOLE frame stands for `length` zero bytes and carries no payload: a whole chunk
or one piece of it (sparse images cost only their data). Control frames (SETUP, RESUME, PING, END, ...)
carry JSON payloads and a crc: CRC-32 of the payload, continued over the header with crc=0; a piece's
crc is 0 (its tag is its check).

tag = a control frame's: HMAC-SHA256(key, header payload) cut to 16 bytes with a secret, SHA-256 without;
a piece's: the same, or keyed BLAKE3 (plain BLAKE3 without a secret), as the run's SETUP says (tags.py).
A piece is hashed once on every member: the tag is checked before the piece is stored, written or
forwarded, and the tags of a file's pieces make its end-to-end hash list (digest.py).
A control frame's key belongs to its connection and direction: HMAC(secret, "dolly-frames-up" or
"dolly-frames-down" nonce_l nonce_d), so a frame cannot be moved into another connection or sent back.
A piece's key belongs to the run: HMAC(secret, "dolly-run" run id), so the server tags each piece once
and every node checks it and forwards it with its tag unchanged; the header's file, chunk and offset are
under the tag, so a piece can only stand where the server put it, in this run. A member that cannot check
the run's tag algorithm answers SETUP with REFUSED, saying why.

MAGIC ends in the protocol version: a member of another version is refused in the handshake, naming both.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from dolly_core.tags import TAG_LEN, Blake3Tagger, Tagger

MAGIC = b"DOLLY\x04"  # the last byte is the protocol version
NONCE_LEN = 32
MAC_LEN = 32
HELLO_LEN = len(MAGIC) + 1 + NONCE_LEN
AUTH_LEN = len(MAGIC) + 1 + NONCE_LEN + MAC_LEN
RESULT_LEN = 1 + MAC_LEN
HEADER = struct.Struct("!BBHIQQII")
HEADER_LEN = HEADER.size
WIRE_HEADER_LEN = HEADER_LEN + TAG_LEN  # a header as it travels: with its tag
MAX_CONTROL_LEN = 16 << 20
PIECE = 128 << 10  # chunks travel as pieces of this size, each checked and forwarded on arrival


class ProtocolError(Exception):
    """The peer sent something that is not this protocol (or not from a ring member)."""


class AuthError(ProtocolError):
    """The handshake failed: wrong secret, or a secret on one side only."""


class Kind(enum.IntEnum):
    CHUNK = 1      # file data; payload = bytes at (file, offset)
    HOLE = 2       # `length` zero bytes at (file, offset); no payload
    SETUP = 3      # dialer -> listener: the run (ring, files, settings) and who is sending
    RESUME = 4     # listener -> dialer: {"next": seq, "at": byte in that chunk} where to go on
    PING = 5       # downstream -> upstream heartbeat with progress of itself and the nodes after it
    END = 6        # after the last chunk: {"server", "verified", "verdicts"}: each member adds its verdict
    END_ACK = 7    # downstream -> upstream: END reached the server's tail
    ABORT = 8      # {"reason": text}: the run cannot finish (server gone); travels both ways
    RESEND = 9     # downstream -> upstream: {"next": seq, "at": byte} a piece failed its checksum
    REPLACED = 10  # downstream -> old upstream: {"by": index} you were short-cut out of the ring
    REFUSED = 11   # listener -> dialer, instead of RESUME: {"reason": text} it cannot take this run


class Status(enum.IntEnum):
    OK = 0
    SECRET_MISMATCH = 1  # one side has a secret, the other has none
    BAD_MAC = 2          # both have secrets, they differ


class Header(NamedTuple):
    kind: Kind
    flags: int
    file: int
    seq: int
    offset: int
    length: int
    crc: int


def make_hello(nonce: bytes, has_secret: bool) -> bytes:
    return MAGIC + bytes([has_secret]) + nonce


def check_magic(data: bytes, what: str) -> None:
    """Raise ProtocolError unless data starts with our MAGIC; a dolly of another version is named as such."""
    if data.startswith(MAGIC):
        return
    if data.startswith(MAGIC[:-1]) and len(data) >= len(MAGIC):
        raise ProtocolError(f"the peer speaks dolly protocol version {data[len(MAGIC) - 1]}, we speak version "
                            f"{MAGIC[-1]}: every ring member must run the same dolly_core")
    raise ProtocolError(f"not a dolly {what}")


def parse_hello(data: bytes) -> tuple[bool, bytes]:
    check_magic(data, "greeting")
    if len(data) != HELLO_LEN or data[len(MAGIC)] > 1:
        raise ProtocolError("not a dolly greeting")
    return bool(data[len(MAGIC)]), data[len(MAGIC) + 1:]


def _mac(secret: bytes | None, label: bytes, a: bytes, b: bytes) -> bytes:
    if secret is None:
        return bytes(MAC_LEN)
    return hmac.new(secret, label + a + b, hashlib.sha256).digest()


@dataclass(frozen=True)
class FrameKeys:
    """One authenticated connection's control-frame keys: ours to tag what we send, the peer's to check
    what we receive."""

    send: bytes
    recv: bytes


def frame_keys(secret: bytes | None, nonce_l: bytes, nonce_d: bytes, dialer: bool) -> FrameKeys | None:
    """The keys of a connection whose handshake passed (None without a secret: frames carry no tag)."""
    if secret is None:
        return None
    up, down = (_mac(secret, label, nonce_l, nonce_d) for label in (b"dolly-frames-up", b"dolly-frames-down"))
    return FrameKeys(send=up, recv=down) if dialer else FrameKeys(send=down, recv=up)


def run_key(secret: bytes | None, run: str) -> bytes | None:
    """The key that tags the run's pieces (None without a secret)."""
    if secret is None:
        return None
    return hmac.new(secret, b"dolly-run" + run.encode(), hashlib.sha256).digest()


def frame_tag(key: bytes | None, header, payload=None) -> bytes:
    return Tagger(key).tag(header, payload)


def tag_ok(key: bytes | None, header, tag, payload=None) -> bool:
    return Tagger(key).ok(header, tag, payload)


def make_auth(secret: bytes | None, nonce_l: bytes, nonce_d: bytes) -> bytes:
    return MAGIC + bytes([secret is not None]) + nonce_d + _mac(secret, b"dolly-up", nonce_l, nonce_d)


def check_auth(secret: bytes | None, nonce_l: bytes, data: bytes) -> tuple[Status, bytes]:
    """Listener side: judge the dialer's AUTH; returns (status, nonce_d)."""
    check_magic(data, "authentication message")
    if len(data) != AUTH_LEN or data[len(MAGIC)] > 1:
        raise ProtocolError("not a dolly authentication message")
    has_secret = bool(data[len(MAGIC)])
    nonce_d = data[len(MAGIC) + 1:len(MAGIC) + 1 + NONCE_LEN]
    if has_secret != (secret is not None):
        return Status.SECRET_MISMATCH, nonce_d
    expected = _mac(secret, b"dolly-up", nonce_l, nonce_d)
    if not hmac.compare_digest(expected, data[-MAC_LEN:]):
        return Status.BAD_MAC, nonce_d
    return Status.OK, nonce_d


def make_result(status: Status, secret: bytes | None, nonce_l: bytes, nonce_d: bytes) -> bytes:
    mac = _mac(secret, b"dolly-down", nonce_d, nonce_l) if status is Status.OK else bytes(MAC_LEN)
    return bytes([status]) + mac


def check_result(secret: bytes | None, nonce_l: bytes, nonce_d: bytes, data: bytes) -> None:
    """Dialer side: raise AuthError unless the listener accepted us and proved the same secret."""
    if len(data) != RESULT_LEN or data[0] not in set(Status):
        raise ProtocolError("not a dolly handshake result")
    status = Status(data[0])
    if status is Status.SECRET_MISMATCH:
        raise AuthError("shared secret mismatch: " + (
            "we have a secret, the peer has none" if secret else "the peer has a secret, we have none"))
    if status is Status.BAD_MAC:
        raise AuthError("the peer rejected our shared secret (wrong secret)")
    if not hmac.compare_digest(_mac(secret, b"dolly-down", nonce_d, nonce_l), data[1:]):
        raise AuthError("the peer failed to prove the shared secret (wrong secret)")


def frame_crc(header_fields: tuple, payload) -> int:
    crc = zlib.crc32(payload) if payload is not None else 0
    return zlib.crc32(HEADER.pack(*header_fields[:-1], 0), crc)


def pack_header(kind: Kind, file: int, seq: int, offset: int, length: int,
                payload=None, flags: int = 0, key: bytes | None = None) -> bytes:
    """The header as it goes on the wire, followed by the frame's tag (under `key`, if any); a piece's crc
    is 0, a control frame's its CRC-32."""
    fields = (kind, flags, 0, file, seq, offset, length, 0)
    crc = 0 if kind in (Kind.CHUNK, Kind.HOLE) else frame_crc(fields, payload)
    header = HEADER.pack(*fields[:-1], crc)
    return header + frame_tag(key, header, payload)


def pack_piece(tagger: Tagger | Blake3Tagger, kind: Kind, file: int, seq: int, offset: int, length: int,
               payload=None) -> bytes:
    """A piece's header as it goes on the wire, with its tag under the run's `tagger` (tags.piece_tagger)."""
    header = HEADER.pack(kind, 0, 0, file, seq, offset, length, 0)
    return header + tagger.tag(header, payload)


def unpack_header(data) -> Header:
    kind, flags, _, file, seq, offset, length, crc = HEADER.unpack(data)
    try:
        kind = Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame type {kind}") from None
    return Header(kind, flags, file, seq, offset, length, crc)


def is_hole(wire_header: bytes) -> bool:
    """A packed header of a HOLE frame (a piece without payload)?"""
    return wire_header[0] == Kind.HOLE


def payload_length(header: Header) -> int:
    """Bytes that follow the header on the wire."""
    return 0 if header.kind is Kind.HOLE else header.length


def crc_ok(header: Header, payload) -> bool:
    fields = (header.kind, header.flags, 0, header.file, header.seq, header.offset, header.length, 0)
    return frame_crc(fields, payload) == header.crc


def control(kind: Kind, body: dict, key: bytes | None = None) -> bytes:
    """A control frame; tagged with `key` (the connection's send key) when the run has a secret."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    return pack_header(kind, 0, 0, 0, len(payload), payload, key=key) + payload


def parse_control(header: Header, payload) -> dict:
    if header.length > MAX_CONTROL_LEN:
        raise ProtocolError(f"control frame of {header.length} bytes")
    if not crc_ok(header, payload):
        raise ProtocolError(f"{header.kind.name} frame failed its checksum")
    try:
        body = json.loads(bytes(payload))
    except (ValueError, RecursionError):  # RecursionError: [[[[... nested past the parser's stack
        raise ProtocolError(f"{header.kind.name} frame is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{header.kind.name} frame is not a JSON object")
    return body
