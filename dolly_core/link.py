"""Socket side of the protocol: exact reads, the authenticated handshake, frame I/O."""

from __future__ import annotations

import os
import socket
import threading

from dolly_core import protocol as p

HANDSHAKE_TIMEOUT = 10.0


class PeerGone(Exception):
    """The connection ended (EOF, reset, time-out)."""


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    got, size = 0, len(view)
    while got < size:
        try:
            n = sock.recv_into(view[got:], size - got)
        except socket.timeout:
            raise
        except OSError as exc:
            raise PeerGone(f"connection lost: {exc.strerror or exc}") from None
        if n == 0:
            raise PeerGone("connection closed by peer")
        got += n


def recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    recv_into_exact(sock, memoryview(buf))
    return buf


def read_frame(sock: socket.socket) -> tuple[p.Header, bytes]:
    """Read one control frame (the data path reads pieces straight into the window instead); its length is
    checked before a buffer is made for it."""
    header = p.unpack_header(recv_exact(sock, p.HEADER_LEN))
    size = p.payload_length(header)
    if size > (p.PIECE if header.kind in (p.Kind.CHUNK, p.Kind.HOLE) else p.MAX_CONTROL_LEN):
        raise p.ProtocolError(f"{header.kind.name} frame of {size} bytes")
    return header, bytes(recv_exact(sock, size)) if size else b""


def handshake_as_listener(sock: socket.socket, secret: bytes | None) -> None:
    """Greet, check the dialer's proof, answer with ours. Raises ProtocolError/AuthError/PeerGone."""
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


def handshake_as_dialer(sock: socket.socket, secret: bytes | None) -> None:
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        hello = recv_exact(sock, p.HELLO_LEN)
    except socket.timeout:
        raise PeerGone("no greeting from peer") from None
    peer_has_secret, nonce_l = p.parse_hello(bytes(hello))
    nonce_d = os.urandom(p.NONCE_LEN)
    try:
        sock.sendall(p.make_auth(secret, nonce_l, nonce_d))
        result = recv_exact(sock, p.RESULT_LEN)
    except (socket.timeout, OSError) as exc:
        raise PeerGone(f"handshake failed: {exc}") from None
    p.check_result(secret, nonce_l, nonce_d, bytes(result))
    if peer_has_secret != (secret is not None):  # the listener already said so; be explicit anyway
        raise p.AuthError("shared secret mismatch")


class Sender:
    """Serialised writes of whole frames on one socket (several threads send control frames)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def send_quietly(self, data: bytes) -> bool:
        try:
            self.send(data)
            return True
        except OSError:
            return False
