"""The data phase of TFTP reads: a few worker processes, each serving many transfers with one epoll loop.

tftpy answers a request and sends its first packet (the OACK, or DATA 1 without options); then
`TransferPool.submit` connects the transfer's socket to the client and hands it with the open file to
the least busy worker (the descriptors travel over a Unix socket). A worker answers each ACK of the
block in flight with the next DATA packet: one receive and one send per block, the header packed into
one reused packet buffer and the payload read straight into it (a worker with a single transfer waits
on that transfer's socket alone: no epoll call per packet; while the pool runs no more transfers than
there are cores, it first polls a few microseconds for the ACK, so a quick client never waits for this
process to be woken). An older (duplicate) ACK or any stray packet is ignored, as RFC 1123 (4.2.3.1)
asks against the sorcerer's apprentice: a packet goes out again only when its ACK has not come for a
whole time-out, at most `retries` times in all. Each transfer's `Outcome` goes back over the worker's
Unix socket.

A few workers per core, not tftpd-hpa's process per transfer: with many clients a wake-up often finds
several ACKs waiting, and the cores do not switch between dozens of Python processes (each switch and
wake-up costs more CPU than the packet it serves). Not one worker per core either: on a machine busy
with other work the kernel shares the CPU per process, and one per core then gets too small a share
(measured: bench/tftp_bench.py --load).
"""

from __future__ import annotations

import gc
import itertools
import json
import mmap
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

DATA, ACK, ERROR = 3, 4, 5
_HEADER = struct.Struct("!HH")  # opcode, block number (or error code)
_ERROR_OPCODE = ERROR.to_bytes(2, "big")
_REPLY_SIZE = 4 + 200  # an ACK, or an ERROR with the part of its message that gets reported
_HANDOFF = struct.Struct("!QHI")  # transfer id, blksize, block number of the packet already sent
_MAX_HANDOFF = _HANDOFF.size + 4 + 65535
_READ_BUFFER = 64 * 1024  # file read-ahead per transfer
_ALONE_WAIT = 0.002  # a lone transfer's receive time-out: how soon its worker looks for a new transfer
_POLL = 50e-6  # how long a lone transfer polls for an ACK before it sleeps
_POLL_PAUSE = 64  # ACKs awaited asleep after one that took longer than _POLL
_COUNT = struct.Struct("=I")  # the pool's running transfers, in memory shared with the workers


@dataclass(frozen=True)
class Outcome:
    """How a transfer ended: `bytes` the client acknowledged, `error` None when the whole file went out."""

    bytes: int
    error: str | None


class _Transfer:
    """One transfer inside a worker: its socket (connected to the client), its file, the packet in flight."""

    __slots__ = ("ident", "sock", "file", "recv", "send", "readinto", "blksize", "block", "last", "packet",
                 "payload", "out", "expected", "tries", "deadline")

    def __init__(self, ident: int, sock: socket.socket, file: BinaryIO, blksize: int, block: int, sent: bytes,
                 deadline: float):
        self.ident, self.sock, self.file, self.blksize = ident, sock, file, blksize
        self.recv, self.send, self.readinto = sock.recv, sock.send, file.readinto
        self.packet = bytearray(4 + blksize)
        self.payload = memoryview(self.packet)[4:]
        file.seek(block * blksize)  # the payload of the block after `block`
        self.block, self.out, self.tries, self.deadline = block, sent, 1, deadline
        self.last = block > 0 and len(sent) < 4 + blksize  # a short block is the last one
        self.expected = _HEADER.pack(ACK, block)

    def acked(self) -> int:
        """Bytes the client acknowledged while the packet in flight is not (every earlier block was full)."""
        return max(self.block - 1, 0) * self.blksize

    def on_readable(self, now: float, timeout: float, flags: int = 0) -> Outcome | None:
        """Take the client's packet: the ACK of the block in flight sends the next block (or ends the
        transfer), an ERROR ends it, anything else is left to the time-out. Raises BlockingIOError when
        no packet waits (`flags` MSG_DONTWAIT, or the receive time-out)."""
        try:
            reply = self.recv(_REPLY_SIZE, flags)
            if reply[:4] != self.expected:
                if len(reply) >= 4 and reply[:2] == _ERROR_OPCODE:
                    message = reply[4:].split(b"\0")[0].decode("ascii", "replace")
                    return Outcome(self.acked(), f"client sent error {_HEADER.unpack_from(reply)[1]}: {message}")
                return None
            if self.last:
                return Outcome(self.acked() + len(self.out) - 4, None)
            self.block = block = self.block + 1
            _HEADER.pack_into(self.packet, 0, DATA, block & 0xFFFF)
            length = self.readinto(self.payload)
            self.out = self.packet if length == self.blksize else self.packet[:4 + length]
            self.last = length < self.blksize
            self.expected = _HEADER.pack(ACK, block & 0xFFFF)
            self.tries, self.deadline = 1, now + timeout
            self.send(self.out)
        except BlockingIOError:  # nothing waits: the caller's to handle, not a socket error
            raise
        except OSError as exc:  # ICMP port unreachable (the client is gone), a block too big for UDP, ...
            return Outcome(self.acked(), f"socket error: {exc.strerror}")
        return None

    def poll(self, until: float, now: float, timeout: float) -> tuple[bool, Outcome | None]:
        """`on_readable` without sleeping, tried until a packet comes or `until` (time.monotonic) passes:
        whether one came, and its outcome."""
        while True:
            try:
                return True, self.on_readable(now, timeout, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.monotonic() >= until:
                    return False, None

    def on_timeout(self, now: float, timeout: float, retries: int) -> Outcome | None:
        """No ACK for a whole time-out: send the packet in flight again, or give up after `retries` tries."""
        if self.tries >= retries:
            return Outcome(self.acked(), f"no answer after {retries} tries")
        self.tries, self.deadline = self.tries + 1, now + timeout
        try:
            self.send(self.out)
        except OSError as exc:
            return Outcome(self.acked(), f"socket error: {exc.strerror}")
        return None


def _work(control: socket.socket, timeout: float, retries: int, running: mmap.mmap, cores: int) -> None:
    """A worker: take transfers from `control`, serve them, report each Outcome on it as JSON
    [id, bytes, error]; returns when the server closes its end. A lone transfer polls for its ACKs
    while the pool runs no more transfers (`running`) than there are `cores` (see `_serve_alone`)."""
    transfers: dict[int, _Transfer] = {}  # by socket descriptor
    tick = timeout / 8  # how often the time-outs are looked at
    next_check = 0.0
    with select.epoll() as epoll:
        epoll.register(control, select.EPOLLIN)

        def end(transfer: _Transfer, outcome: Outcome) -> None:
            del transfers[transfer.sock.fileno()]
            epoll.unregister(transfer.sock)
            transfer.sock.close()
            transfer.file.close()
            control.send(json.dumps([transfer.ident, outcome.bytes, outcome.error]).encode())

        while True:
            if len(transfers) == 1:
                [transfer] = transfers.values()
                outcome = _serve_alone(transfer, epoll, control.fileno(), timeout, retries,
                                       lambda: _COUNT.unpack_from(running)[0] <= cores)
                if outcome is not None:
                    end(transfer, outcome)
                    continue
            events = epoll.poll(tick if transfers else -1)
            now = time.monotonic()
            for fd, _ in events:
                transfer = transfers.get(fd)
                if transfer is None:  # the control socket: a new transfer, or the server is gone
                    message, fds, _, _ = socket.recv_fds(control, _MAX_HANDOFF, 2)
                    if not message:
                        return
                    ident, blksize, block = _HANDOFF.unpack_from(message)
                    sock = socket.socket(fileno=fds[0])
                    sock.settimeout(None)  # blocking, with a kernel time-out: recv is one system call
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                    struct.pack("ll", 0, int(_ALONE_WAIT * 1e6)))
                    file = open(fds[1], "rb", buffering=_READ_BUFFER)
                    transfers[fds[0]] = _Transfer(ident, sock, file, blksize, block, message[_HANDOFF.size:],
                                                  now + timeout)
                    epoll.register(fds[0], select.EPOLLIN)
                else:
                    try:
                        outcome = transfer.on_readable(now, timeout)
                    except BlockingIOError:  # woken for nothing
                        continue
                    if outcome is not None:
                        end(transfer, outcome)
            if now >= next_check:
                next_check = now + tick
                for transfer in [t for t in transfers.values() if now >= t.deadline]:
                    if (outcome := transfer.on_timeout(now, timeout, retries)) is not None:
                        end(transfer, outcome)


def _serve_alone(transfer: _Transfer, epoll: select.epoll, control: int, timeout: float, retries: int,
                 may_poll: Callable[[], bool]) -> Outcome | None:
    """Serve a worker's only transfer until it ends (its Outcome) or a new transfer waits on the
    `control` descriptor (None); `epoll` watches both. While `may_poll()` (asked every `_ALONE_WAIT`: the
    pool runs no more transfers than cores), each ACK is first polled for (`_POLL`), then waited for asleep (SO_RCVTIMEO): a
    client that answers within microseconds then never has to wake this process, a wake-up that costs
    more than the poll where idle cores sleep deeply (or are virtual). After an ACK that came later, the
    next `_POLL_PAUSE` are awaited asleep right away, so a slow client costs no polling."""
    look_at = 0.0
    pause = polling = 0
    while True:
        now = time.monotonic()
        if now >= look_at:
            look_at = now + _ALONE_WAIT
            if any(fd == control for fd, _ in epoll.poll(0)):
                return None
            polling = may_poll()
        try:
            if now >= transfer.deadline:
                outcome = transfer.on_timeout(now, timeout, retries)
            elif pause:
                pause -= 1
                outcome = transfer.on_readable(now, timeout)
            elif not polling:
                outcome = transfer.on_readable(now, timeout)
            else:
                came, outcome = transfer.poll(now + _POLL, now, timeout)
                if not came:
                    pause = _POLL_PAUSE
                    outcome = transfer.on_readable(now, timeout)
        except BlockingIOError:  # no packet within the receive time-out
            continue
        if outcome is not None:
            return outcome


@dataclass
class _Worker:
    pid: int
    control: socket.socket
    running: set[int] = field(default_factory=set)  # ids of the transfers it serves


class TransferPool:
    """`workers` processes serving transfers (`submit`); the caller watches `sockets` and calls
    `collect` on one when it is readable. `stop` ends the workers and every transfer they serve."""

    def __init__(self, timeout: float, retries: int, workers: int):
        self.timeout, self.retries, self.size = timeout, retries, workers
        self._workers: list[_Worker] = []
        self._running = mmap.mmap(-1, _COUNT.size)  # shared with the workers (they are forked)
        self._cores = len(os.sched_getaffinity(0))
        self._ids = itertools.count(1)

    def start(self) -> TransferPool:
        self._workers = [self._fork() for _ in range(self.size)]
        return self

    @property
    def sockets(self) -> list[socket.socket]:
        return [worker.control for worker in self._workers]

    def submit(self, sock: socket.socket, client: tuple[str, int], file: BinaryIO, blksize: int, block: int,
               sent: bytes) -> int:
        """Hand over the transfer whose first packet `sent` (OACK: `block` 0, else DATA `block`) went
        out of `sock` to `client`; returns its id. The caller closes its own socket and file."""
        sock.connect(client)
        worker = min(self._workers, key=lambda w: len(w.running))
        ident = next(self._ids)
        try:
            socket.send_fds(worker.control, [_HANDOFF.pack(ident, blksize, block) + sent],
                            [sock.fileno(), file.fileno()])
        except OSError as exc:  # it died (`collect` will replace it); the client asks again after its time-out
            raise OSError(f"transfer process died: {exc.strerror}") from None
        worker.running.add(ident)
        self._count()
        return ident

    def collect(self, control: socket.socket) -> list[tuple[int, Outcome]]:
        """The transfers that ended, from the worker whose socket `control` is readable. A worker that
        died takes its transfers with it; a new one takes its place in `sockets`."""
        worker = next(w for w in self._workers if w.control is control)
        try:
            message = control.recv(4096)
        except ConnectionResetError:
            message = b""
        if message:
            ident, acked, error = json.loads(message)
            worker.running.discard(ident)
            self._count()
            return [(ident, Outcome(acked, error))]
        status = self._end(worker, kill=False)
        self._workers[self._workers.index(worker)] = self._fork()
        self._count()
        return [(ident, Outcome(0, f"transfer process died (exit status {status})")) for ident in worker.running]

    def stop(self) -> None:
        """Kill the workers; their transfers end where they are."""
        for worker in self._workers:
            self._end(worker, kill=True)
        self._workers = []

    def _count(self) -> None:
        _COUNT.pack_into(self._running, 0, sum(len(w.running) for w in self._workers))

    @staticmethod
    def _end(worker: _Worker, kill: bool) -> int:
        if kill:
            os.kill(worker.pid, signal.SIGKILL)
        worker.control.close()
        return os.waitstatus_to_exitcode(os.waitpid(worker.pid, 0)[1])

    def _fork(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the worker: never return into the caller's code
            status = 1
            try:
                gc.freeze()  # the collector never walks (and so copies) the parent's objects
                _close_fds_except(theirs.fileno())
                _work(theirs, self.timeout, self.retries, self._running, self._cores)
                status = 0
            finally:
                os._exit(status)
        theirs.close()
        return _Worker(pid, ours)


def _close_fds_except(*keep: int) -> None:
    """Close every inherited descriptor but stdio and `keep` (the server's sockets and other threads'
    pipes must not stay open in a worker)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
