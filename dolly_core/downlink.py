"""The forwarding side of a ring member: streams the window to the successor, watches its
heartbeats, and short-cuts past a dead successor (connect to the next node, ask which chunk it
needs next, re-send from the window). Used by every client and by the server's head.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from dolly_core import link
from dolly_core import protocol as p
from dolly_core.ring import Ring, RunSetup
from dolly_core.window import ChunkGone, Entry, Window, WindowClosed

POLL = 0.5
SEND_PIECES = 64  # pieces per sendmsg at most: 128 buffers (sendmsg takes up to IOV_MAX, 1024), 8 MiB


class SuccessorDead(Exception):
    """The current successor stopped (reason in the message)."""


class CutOut(Exception):
    """Our successor told us that a node before us short-cut past us."""


class Aborted(Exception):
    """The run is over for everybody (the server is gone)."""


class Downlink:
    def __init__(self, setup: RunSetup, me: int, window: Window, secret: bytes | None, log,
                 end_ready: threading.Event, end_body: Callable[[dict[int, str]], dict],
                 upstream_ok: Callable[[], bool], rate: float = 0.0):
        self.setup = setup
        self.ring: Ring = setup.ring
        self.me = me
        self.window = window
        self.secret = secret
        self.log = log
        self.end_ready = end_ready
        self.end_body = end_body
        self.upstream_ok = upstream_ok
        self.rate = rate
        self.skipped: dict[int, str] = {}
        self.progress: dict[int, list] = {}
        self.sock: socket.socket | None = None
        self.send_key: bytes | None = None  # tags the control frames we send on `sock` (with a secret)
        self.target = me + 1
        self.send_lock = threading.Lock()  # whoever sends on `sock`: the forwarder, or the receiver's relay
        self.at: tuple[int, int] | None = None  # (chunk, piece) the stream stands at, while it streams
        self.unsent: list[memoryview] = []  # the rest of a frame the relay began
        self.relayed = 0.0  # when the relay last sent
        self.flip_chunk = int(os.environ.get("DOLLY_FAULT_FLIP_CHUNK", "-1")) if me == 0 else -1
        self._reset_monitor()

    # ---- connection to one successor ------------------------------------------------------
    def _reset_monitor(self) -> None:
        self.last_heard = time.monotonic()
        self.dead: str | None = None
        self.rewind: tuple[int, int] | None = None
        self.end_ack = threading.Event()
        self.cut_out: str | None = None
        self.abort: str | None = None

    def _connect(self, index: int, wait: float) -> int:
        """Connect, authenticate, send the run, return the successor's next needed seq."""
        host, port = self.ring.address(index)
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.setup.timeout)
            try:
                sock.connect((host, port))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise SuccessorDead(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
                time.sleep(0.2)
        try:
            body = self.setup.to_body(sender=self.me, target=index)
            keys = link.handshake_as_dialer(sock, self.secret,  # SETUP right behind AUTH
                                            lambda keys: p.control(p.Kind.SETUP, body, keys and keys.send))
            header, payload = link.read_frame(sock, keys)
            if header.kind is p.Kind.ABORT:
                raise Aborted(p.parse_control(header, payload).get("reason", "aborted"))
            if header.kind is p.Kind.REFUSED:
                sock.close()
                why = p.parse_control(header, payload).get("reason")
                raise SuccessorDead(f"{host}:{port} refused the run: {why}")
            if header.kind is not p.Kind.RESUME:
                raise p.ProtocolError(f"expected RESUME, got {header.kind.name}")
            body = p.parse_control(header, payload)
            resume = int(body["next"]), int(body.get("at", 0))
        except (link.PeerGone, socket.timeout, OSError, p.ProtocolError, KeyError, ValueError) as exc:
            sock.close()
            if isinstance(exc, p.AuthError):
                raise
            raise SuccessorDead(f"{host}:{port} failed the handshake: {exc}") from None
        link.kernel_timeout(sock, POLL)
        self.sock, self.send_key = sock, keys and keys.send
        self._reset_monitor()
        threading.Thread(target=self._monitor, args=(sock, keys), name="downlink-monitor", daemon=True).start()
        return resume

    def _monitor(self, sock: socket.socket, keys: p.FrameKeys | None) -> None:
        """Read what the successor sends back: heartbeats, re-send requests, END_ACK."""
        while self.sock is sock:
            try:
                header, payload = link.read_frame(sock, keys)
                body = p.parse_control(header, payload)
            except socket.timeout:
                continue
            except (link.PeerGone, p.ProtocolError, OSError) as exc:
                if self.sock is sock:
                    self.dead = str(exc)
                return
            self.last_heard = time.monotonic()
            if header.kind is p.Kind.PING:
                self.progress.update({int(k): v for k, v in body.get("p", {}).items()})
            elif header.kind is p.Kind.RESEND:
                self.log.warning("successor asks to re-send from chunk %s (a piece failed its check)", body["next"])
                self.rewind = (int(body["next"]), int(body.get("at", 0)))
            elif header.kind is p.Kind.END_ACK:
                self.end_ack.set()
            elif header.kind is p.Kind.REPLACED:
                self.cut_out = f"node {self.ring.name(int(body['by']))} short-cut past us"
            elif header.kind is p.Kind.ABORT:
                self.abort = body.get("reason", "aborted")

    def _check(self) -> None:
        self.upstream_ok()  # raises Aborted once our own side gave up
        if self.abort:
            raise Aborted(self.abort)
        if self.cut_out:
            raise CutOut(self.cut_out)
        if self.dead:
            raise SuccessorDead(self.dead)
        silent = time.monotonic() - self.last_heard
        if silent > self.setup.timeout:
            raise SuccessorDead(f"no heartbeat for {silent:.1f} s (time-out {self.setup.timeout:g} s)")

    def _send(self, parts: list) -> None:
        """Send whole frames; the caller holds send_lock."""
        views = [memoryview(x) for x in parts if len(x)]
        while views:
            try:
                n = self.sock.sendmsg(views)
            except (socket.timeout, BlockingIOError):
                self._check()
                continue
            except OSError as exc:
                raise SuccessorDead(f"send failed: {exc.strerror or exc}") from None
            views = unsent(views, n)

    def _control(self, kind: p.Kind, body: dict) -> None:
        with self.send_lock:
            self._send([p.control(kind, body, self.send_key)])

    def _close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    # ---- streaming ------------------------------------------------------------------------
    def _stream(self, seq: int, at: int) -> None:
        """Send chunks from byte `at` of chunk `seq` on, as their pieces are verified: every piece there is
        of the current chunk (up to SEND_PIECES) in one sendmsg. While the stream waits for a piece, the
        receiving thread may send it as it arrives (relay); `at` is where the stream stands, whoever sent last."""
        total = self.setup.chunks
        started, sent_bytes, last_send = time.monotonic(), 0, time.monotonic()
        with self.send_lock:
            self.at, self.unsent = (seq, at // p.PIECE), []
        self.window.advance("forward", seq)
        try:
            while True:
                with self.send_lock:
                    if self.unsent:  # what the relay could not finish goes first
                        self._send(self.unsent)
                        self.unsent = []
                    if self.rewind is not None:
                        (seq, at), self.rewind = self.rewind, None
                        self.at = (seq, at // p.PIECE)
                    seq, k = self.at
                if seq >= total:
                    return
                self._check()
                entry = self.window.get(seq, timeout=POLL)
                pieces = self.window.pieces(entry, k, timeout=POLL)[:SEND_PIECES] if entry else []
                if not pieces:
                    if time.monotonic() - max(last_send, self.relayed) > POLL:
                        self._control(p.Kind.PING, {})
                        last_send = time.monotonic()
                    continue
                with self.send_lock:
                    if self.at != (seq, k) or self.unsent:
                        continue  # the relay sent some of them meanwhile
                    self._send([part for piece in pieces for part in self._frame(entry, piece)])
                    self._passed(entry, len(pieces))
                if self.rate:
                    sent_bytes += sum(length for _, _, length in pieces)
                    self._pace(sent_bytes / self.rate + started)
                last_send = time.monotonic()
        finally:
            with self.send_lock:
                self.at = None

    def _pace(self, until: float) -> None:
        """--rate: wait until `until` (when the bytes sent so far are due), with a PING every POLL seconds: a
        chunk at a low rate may take longer than the time-out, and a silent upstream is taken for dead."""
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(left, POLL))
            if left > POLL:
                self._check()
                self._control(p.Kind.PING, {})

    def _passed(self, entry: Entry, count: int) -> None:
        """With send_lock held: the stream went past `count` more pieces of entry."""
        seq, k = self.at
        _, start, length = entry.pieces[k + count - 1]
        if start + length < entry.header.length:
            self.at = (seq, k + count)
            return
        self.at = (seq + 1, 0)
        self.window.advance("forward", seq + 1)

    def relay(self, entry: Entry, k: int) -> bool:
        """From the receiving thread, just after piece k of entry arrived: send it at once if the stream
        waits for exactly that piece and the socket takes it without waiting, which spares the forwarder a
        wake-up per piece. False when it did not send all of it: then the forwarder must be woken."""
        if self.at != (entry.header.seq, k) or not self.send_lock.acquire(blocking=False):
            return False
        try:
            if self.at != (entry.header.seq, k) or self.unsent or self.rewind is not None:
                return False
            views = [memoryview(x) for x in self._frame(entry, entry.pieces[k]) if len(x)]
            try:
                n = self.sock.sendmsg(views, [], socket.MSG_DONTWAIT)
            except OSError:  # no room (the forwarder will wait for it) or a failure (the forwarder will see it)
                return False
            self.unsent = unsent(views, n)
            self._passed(entry, 1)
            self.relayed = time.monotonic()
            return not self.unsent
        finally:
            self.send_lock.release()

    def _frame(self, entry: Entry, piece: tuple[bytes, int, int]) -> list:
        """A piece as it goes on the wire: its header (with tag), and its payload unless it is a hole."""
        header, start, length = piece
        if entry.buf is None or p.is_hole(header):
            return [header]
        payload = memoryview(entry.buf)[start:start + length]
        if entry.header.seq == self.flip_chunk and length:
            self.flip_chunk = -1
            payload = bytearray(payload)
            payload[length // 2] ^= 0xFF
            self.log.warning("fault injection: flipping a byte of chunk %d in flight", entry.header.seq)
        return [header, payload]

    def _deliver(self, seq: int, at: int) -> None:
        """Stream from seq, then END (once our verdict is ready), until the successor acknowledges."""
        while True:
            if seq <= self.setup.chunks:
                self._stream(seq, at)
                while not self.end_ready.wait(POLL):  # END waits for our verdict; keep the link alive
                    self._check()
                    self._control(p.Kind.PING, {})
                self._control(p.Kind.END, self.end_body(self.skipped))
            while not self.end_ack.wait(POLL):
                self._check()
                if self.rewind is not None:  # a chunk failed its check after we sent everything
                    break
                self._control(p.Kind.PING, {})
            else:
                return
            (seq, at), self.rewind = self.rewind, None

    def run(self) -> None:
        """Deliver everything and the END report to the next live node; raises Aborted/CutOut."""
        wait = self.setup.wait  # the first successor may not be listening yet
        while True:
            if self.target > self.ring.tail:
                raise Aborted("the server's tail is unreachable: the server is gone")
            try:
                next_seq, at = self._connect(self.target, wait)
                if next_seq < self.setup.chunks and not self.window.holds(next_seq):
                    raise SuccessorDead(f"needs chunk {next_seq}, which no longer is in our window")
                if self.target != self.me + 1 or self.skipped:
                    self.log.warning("short-cut: now sending to %s from chunk %d",
                                     self.ring.name(self.target), next_seq)
                self._deliver(next_seq, at)
                self._close()
                return
            except SuccessorDead as exc:
                self._close()
                if self.target == self.ring.tail:
                    raise Aborted(f"the server is gone (its tail stopped: {exc})") from None
                self._skip(str(exc))
            except ChunkGone as exc:
                self._close()
                self._skip(str(exc))
            except WindowClosed as exc:
                self._close()
                raise Aborted(str(exc)) from None
            except p.AuthError as exc:
                self._close()
                if self.target == self.ring.tail:
                    raise Aborted(f"the server's tail refused us: {exc}") from None
                self._skip(f"authentication failed: {exc}")
            wait = 0.0

    def _skip(self, reason: str) -> None:
        name = self.ring.name(self.target)
        self.log.error("successor %s is dead: %s; short-cutting", name, reason)
        self.skipped[self.target] = reason
        self.progress[self.target] = [self.progress.get(self.target, [0])[0], "dead",
                                      f"dead (seen by {self.ring.name(self.me)}): {reason}"]
        while not self.upstream_ok():  # a node cut off from its own upstream must not cut others
            time.sleep(POLL)
        self.target += 1

    def send_abort(self, reason: str) -> None:
        sock = self.sock
        if sock is not None:
            try:
                sock.settimeout(1.0)
                with self.send_lock:
                    sock.sendall(p.control(p.Kind.ABORT, {"reason": reason}, self.send_key))
            except OSError:
                pass
        self._close()


def unsent(views: list[memoryview], sent: int) -> list[memoryview]:
    """What is left of views after the first `sent` bytes went."""
    while sent:
        if sent < len(views[0]):
            return [views[0][sent:], *views[1:]]
        sent -= len(views[0])
        views = views[1:]
    return views
