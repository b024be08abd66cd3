"""The data phase of a TFTP read, lean and in a process of its own (tftpd-hpa's model, in Python).

tftpy parses the request, checks it and sends the first packet (the OACK, or DATA 1 without options);
from there `send_file` serves the blocks: each DATA header packed with struct and its payload read
straight into one reused packet buffer, a UDP socket connected to the client, a blocking receive
with a kernel time-out (SO_RCVTIMEO, one system call per ACK). Only the ACK of the block in flight
moves the transfer on. An older (duplicate) ACK is ignored, as RFC 1123 (4.2.3.1) asks against the
sorcerer's apprentice, unless such ACKs have kept coming for a whole time-out: then the block goes out
again, as on a time-out.

`serve` is a transfer after its first packet; `fork_send` runs it in a forked child, so transfers
use every core and a slow one never holds up another. The child writes its `Outcome` to a pipe that
the server watches and `collect`s.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass
from typing import BinaryIO

DATA, ACK, ERROR = 3, 4, 5
_HEADER = struct.Struct("!HH")  # opcode, block number (or error code)
_MAX_PACKET = 65536 + 4


@dataclass(frozen=True)
class Outcome:
    """How a transfer ended: `bytes` the client acknowledged, `error` None when the whole file went out."""

    bytes: int
    error: str | None


class TransferFailed(Exception):
    """A transfer ended early; `acked` bytes had been acknowledged."""

    def __init__(self, message: str, acked: int):
        super().__init__(message)
        self.acked = acked


def send_file(sock: socket.socket, file: BinaryIO, blksize: int, block: int, sent: bytes,
              timeout: float, retries: int) -> int:
    """Serve `file` to the peer of the connected, blocking `sock` whose receive time-out is `timeout`,
    after `sent` went out: the OACK (`block` 0) or DATA `block` (1). Each packet goes out at most
    `retries` times. Returns the bytes the client acknowledged (the whole file); raises TransferFailed."""
    packet, buffer = bytearray(4 + blksize), bytearray(_MAX_PACKET)
    payload = memoryview(packet)[4:]
    file.seek(block * blksize)  # the payload of the block after `block`
    send, recv_into = sock.send, sock.recv_into
    pack_into, unpack_from = _HEADER.pack_into, _HEADER.unpack_from
    out, tries, resend_at = sent, 1, None
    acked, last = 0, block > 0 and len(sent) < 4 + blksize  # a short block is the last one
    try:
        while True:
            try:
                size = recv_into(buffer)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                size = 0
            opcode, number = unpack_from(buffer) if size >= 4 else (0, 0)
            if opcode == ACK and number == block & 0xFFFF:
                if block > 0:
                    acked += len(out) - 4
                if last:
                    return acked
                block += 1
                pack_into(packet, 0, DATA, block & 0xFFFF)
                length = file.readinto(payload)
                out = packet if length == blksize else packet[:4 + length]
                tries, resend_at, last = 1, None, length < blksize
                send(out)
                continue
            if opcode == ERROR:
                message = bytes(buffer[4:min(size, 204)]).split(b"\0")[0].decode("ascii", "replace")
                raise TransferFailed(f"client sent error {number}: {message}", acked)
            if size:  # a stale ACK or a stray packet: re-send once they have come for a whole time-out
                resend_at = resend_at or time.monotonic() + timeout
                if time.monotonic() < resend_at:
                    continue
            if tries >= retries:
                raise TransferFailed(f"no answer after {retries} tries", acked)
            tries, resend_at = tries + 1, None
            send(out)
    except OSError as exc:  # ICMP port unreachable (the client is gone), a block too big for UDP, ...
        raise TransferFailed(f"socket error: {exc.strerror}", acked) from None


def serve(sock: socket.socket, client: tuple[str, int], file: BinaryIO, blksize: int, block: int,
          sent: bytes, timeout: float, retries: int) -> Outcome:
    """The rest of a transfer whose first packet `sent` (OACK: `block` 0, else DATA `block`) went
    out of `sock`: connect `sock` to `client`, set its receive time-out, `send_file`."""
    sock.settimeout(None)
    seconds, micros = divmod(int(timeout * 1e6), 1_000_000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micros))
    sock.connect(client)
    try:
        return Outcome(send_file(sock, file, blksize, block, sent, timeout, retries), None)
    except TransferFailed as exc:
        return Outcome(exc.acked, str(exc))


def fork_send(sock: socket.socket, client: tuple[str, int], file: BinaryIO, blksize: int, block: int,
              sent: bytes, timeout: float, retries: int) -> tuple[int, int]:
    """`serve` in a forked child that keeps only the socket, the file and its pipe; returns (child
    pid, read end of the pipe its Outcome arrives on). The caller closes its own socket and file."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code
        status = 1
        try:
            gc.freeze()  # the collector never walks (and so copies) the parent's objects
            _close_fds_except(sock.fileno(), file.fileno(), write_end)
            outcome = serve(sock, client, file, blksize, block, sent, timeout, retries)
            os.write(write_end, json.dumps({"bytes": outcome.bytes, "error": outcome.error}).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def collect(pid: int, read_end: int, kill: bool = False) -> Outcome:
    """The Outcome of the child `pid` (with `kill`, end it first); waits for it, closes the pipe."""
    if kill:
        os.kill(pid, signal.SIGKILL)
    message = os.read(read_end, 4096)  # the child's one short write (atomic: below PIPE_BUF), or EOF
    os.close(read_end)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if message:
        return Outcome(**json.loads(message))
    return Outcome(0, "server stopped" if kill else f"transfer process died (exit status {status})")


def _close_fds_except(*keep: int) -> None:
    """Close every inherited descriptor but stdio and `keep` (other threads' pipes and sockets
    must not stay open for as long as a transfer runs)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
