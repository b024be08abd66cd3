"""Socket side of the protocol: exact reads, the authenticated handshake, frame I/O."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable

from dolly_core import protocol as p

HANDSHAKE_TIMEOUT = 10.0


class PeerGone(Exception):
    """The connection ended (EOF, reset, time-out)."""


def kernel_timeout(sock: socket.socket, seconds: float) -> None:
    """Make sock blocking, its time-outs kept by the kernel (SO_RCVTIMEO, SO_SNDTIMEO): Python's own
    time-out polls before every call, doubling the data path's system calls. A receive that times out
    raises socket.timeout from recv_into_exact, a send BlockingIOError."""
    sock.settimeout(None)
    timeval = struct.pack("ll", int(seconds), int(seconds % 1 * 1e6))
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        sock.setsockopt(socket.SOL_SOCKET, option, timeval)


def _recv(sock: socket.socket, buffers: list[memoryview]) -> int:
    """One receive call into buffers, in order; bytes received (PeerGone at EOF or on an error)."""
    try:
        n = sock.recvmsg_into(buffers)[0]
    except socket.timeout:
        raise
    except BlockingIOError:  # a kernel time-out (kernel_timeout)
        raise socket.timeout("timed out") from None
    except OSError as exc:
        raise PeerGone(f"connection lost: {exc.strerror or exc}") from None
    if n == 0:
        raise PeerGone("connection closed by peer")
    return n


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        got += _recv(sock, [view[got:]])


class FrameReader:
    """Reads a connection's frames: a header (with its tag), then its payload into the caller's buffer,
    taking with the payload what has arrived of the next header. Every frame is at least a header long, so
    that never reads past the next frame, and a piece costs one receive call instead of two."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.next = bytearray(p.WIRE_HEADER_LEN)
        self.view = memoryview(self.next)
        self.have = 0  # bytes of the next header already read

    def header(self) -> bytes:
        if self.have < p.WIRE_HEADER_LEN:
            recv_into_exact(self.sock, self.view[self.have:])
        self.have = 0
        return bytes(self.next)

    def payload(self, view: memoryview) -> None:
        got, size = 0, len(view)
        while got < size:
            got += _recv(self.sock, [view[got:], self.view])
        self.have = got - size


def recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    recv_into_exact(sock, memoryview(buf))
    return buf


def read_frame(sock: socket.socket, keys: p.FrameKeys | None = None) -> tuple[p.Header, bytes]:
    """Read one control frame (the data path reads pieces straight into the window instead); its length is
    checked before a buffer is made for it, its tag (under `keys.recv`, if any) before it is parsed."""
    wire = recv_exact(sock, p.WIRE_HEADER_LEN)
    header = p.unpack_header(wire[:p.HEADER_LEN])
    size = p.payload_length(header)
    if size > (p.PIECE if header.kind in (p.Kind.CHUNK, p.Kind.HOLE) else p.MAX_CONTROL_LEN):
        raise p.ProtocolError(f"{header.kind.name} frame of {size} bytes")
    payload = bytes(recv_exact(sock, size)) if size else b""
    if not p.tag_ok(keys and keys.recv, wire[:p.HEADER_LEN], wire[p.HEADER_LEN:], payload):
        raise p.ProtocolError(f"{header.kind.name} frame failed its "
                              f"{'authentication' if keys is not None else 'tag'}")
    return header, payload


def handshake_as_listener(sock: socket.socket, secret: bytes | None) -> p.FrameKeys | None:
    """Greet, check the dialer's proof, answer with ours; the connection's frame keys (None without a
    secret). Raises ProtocolError/AuthError/PeerGone."""
    sock.settimeout(HANDSHAKE_TIMEOUT)
    nonce_l = os.urandom(p.NONCE_LEN)
    try:
        sock.sendall(p.make_hello(nonce_l, secret is not None))
        data = recv_exact(sock, p.AUTH_LEN)
    except (socket.timeout, OSError) as exc:
        raise PeerGone(f"handshake failed: {exc}") from None
    status, nonce_d = p.check_auth(secret, nonce_l, bytes(data))
    try:
        sock.sendall(p.make_result(status, secret, nonce_l, nonce_d))
    except OSError:
        pass
    if status is p.Status.SECRET_MISMATCH:
        raise p.AuthError("shared secret mismatch: " + (
            "we have a secret, the peer has none" if secret else "the peer has a secret, we have none"))
    if status is p.Status.BAD_MAC:
        raise p.AuthError("the peer does not know our shared secret (wrong secret or a stranger)")
    return p.frame_keys(secret, nonce_l, nonce_d, dialer=False)


def handshake_as_dialer(sock: socket.socket, secret: bytes | None,
                        first: Callable[[p.FrameKeys | None], bytes] | None = None) -> p.FrameKeys | None:
    """Prove the secret, check the listener's proof; the connection's frame keys (None without a secret).
    `first(keys)`, if given, is the dialer's first frame: it goes right behind AUTH, not after RESULT, which
    saves a round trip (the ring's start-up makes one connection after another); a listener that refuses
    AUTH never reads it, and nothing else is sent before RESULT was checked."""
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        hello = recv_exact(sock, p.HELLO_LEN)
    except socket.timeout:
        raise PeerGone("no greeting from peer") from None
    peer_has_secret, nonce_l = p.parse_hello(bytes(hello))
    nonce_d = os.urandom(p.NONCE_LEN)
    keys = p.frame_keys(secret, nonce_l, nonce_d, dialer=True)
    try:
        sock.sendall(p.make_auth(secret, nonce_l, nonce_d) + (first(keys) if first else b""))
        result = recv_exact(sock, p.RESULT_LEN)
    except (socket.timeout, OSError) as exc:
        raise PeerGone(f"handshake failed: {exc}") from None
    p.check_result(secret, nonce_l, nonce_d, bytes(result))
    if peer_has_secret != (secret is not None):  # the listener already said so; be explicit anyway
        raise p.AuthError("shared secret mismatch")
    return keys


class Sender:
    """Serialised writes of whole control frames on one socket (several threads send them), tagged with the
    connection's send key when it has keys."""

    def __init__(self, sock: socket.socket, keys: p.FrameKeys | None):
        self.sock = sock
        self.key = keys.send if keys is not None else None
        self.lock = threading.Lock()

    def send(self, kind: p.Kind, body: dict) -> None:
        frame = p.control(kind, body, self.key)
        with self.lock:
            self.sock.sendall(frame)

    def send_quietly(self, kind: p.Kind, body: dict) -> bool:
        try:
            self.send(kind, body)
            return True
        except OSError:
            return False
