"""The receiving side of a ring member: accepts authenticated upstream connections (the first one,
and later short-cuts from nodes further back), tells each where to resume, receives chunks straight
into the window, checks every piece's tag, and heartbeats back. Used by clients and by the server's tail,
which needs no pieces: it tells every upstream to resume at the END report.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from dolly_core import link
from dolly_core import protocol as p
from dolly_core import tags
from dolly_core.downlink import Aborted
from dolly_core.ring import RunSetup
from dolly_core.window import Entry, Window, WindowClosed


class Upstream:
    def __init__(self, sock: socket.socket, sender: int, peer: str, keys: p.FrameKeys | None):
        self.sock = sock
        self.sender = sender
        self.peer = peer
        self.keys = keys
        self.out = link.Sender(sock, keys)
        self.resumed = False  # RESUME sent: the dialer reads it first, so heartbeats wait for it


MAX_ADMITTING = 32  # connections in their handshake or SETUP at once; beyond, closed unread


class Uplink:
    def __init__(self, listener: socket.socket, secret: bytes | None, log,
                 window_for: Callable[[RunSetup], Window | None],
                 on_end: Callable[[dict], None], progress: Callable[[], dict],
                 setup: RunSetup | None = None, me: int | None = None, pieces: bool = True):
        """pieces=False: the server's tail (given its setup), which asks for no pieces, only END."""
        self.listener = listener
        self.secret = secret
        self.log = log
        self.window_for = window_for
        self.on_end = on_end
        self.progress = progress
        self.setup = setup
        self.me = me
        self.piece_tags = tags.piece_tagger(setup.tag, p.run_key(secret, setup.run)) if setup is not None else None
        self.window: Window | None = None
        self.cond = threading.Condition()
        self.current: Upstream | None = None
        self.pending: Upstream | None = None
        self.gave_up: str | None = None
        self.finished = False
        self.got_end = False
        self.next_seq = 0 if pieces else setup.chunks
        self.filled = 0  # verified bytes of chunk next_seq
        self.entry: Entry | None = None
        self.discarding = False  # a piece failed: drop what follows until the RESEND is answered
        self.relay: Callable[[Entry, int], bool] | None = None  # the downlink's, once it streams (window.py)
        self.bytes = 0
        self.last_refusal: str | None = None  # of a connection refused: a wrong secret, a run we cannot check
        self._admitting = threading.BoundedSemaphore(MAX_ADMITTING)
        self._turned_away = 0

    # ---- admission --------------------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self.finished:
            try:
                sock, addr = self.listener.accept()
            except OSError:
                return
            if not self._admitting.acquire(blocking=False):
                self._turned_away += 1
                if self._turned_away == 1:  # once: a flood must not flood the log too
                    self.log.warning("turning connections away: %d are in their handshake (first: %s:%s)",
                                     MAX_ADMITTING, *addr[:2])
                sock.close()
                continue
            threading.Thread(target=self._admit_one, args=(sock, f"{addr[0]}:{addr[1]}"),
                             name="admit", daemon=True).start()

    def _admit_one(self, sock: socket.socket, peer: str) -> None:
        try:
            self._admit(sock, peer)
        finally:
            self._admitting.release()

    def _admit(self, sock: socket.socket, peer: str) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keys = link.handshake_as_listener(sock, self.secret)
            header, payload = link.read_frame(sock, keys)
            if header.kind is not p.Kind.SETUP:
                raise p.ProtocolError(f"expected SETUP, got {header.kind.name}")
            setup, sender, target = parse_setup(p.parse_control(header, payload))
        except p.AuthError as exc:
            self.last_refusal = f"{peer}: {exc}"
            self.log.error("rejected connection from %s: %s", peer, exc)
            sock.close()
            return
        except (link.PeerGone, p.ProtocolError, socket.timeout, OSError, KeyError, ValueError, TypeError) as exc:
            self.log.warning("dropped connection from %s: %s", peer, exc or type(exc).__name__)
            sock.close()
            return
        why = tags.cannot_check(setup.tag)
        if why is not None:
            self.last_refusal = f"{peer}: {why}"
            self.log.error("refused run %s from %s: %s", setup.run, peer, why)
            link.Sender(sock, keys).send_quietly(p.Kind.REFUSED, {"reason": why})
            sock.close()
            return
        with self.cond:
            refusal = self._refusal(setup, sender, target)
            if refusal:
                self.log.warning("refused %s (%s): %s", setup.ring.name(sender), peer, refusal)
                link.Sender(sock, keys).send_quietly(p.Kind.ABORT, {"reason": refusal})
                sock.close()
                return
            if self.setup is None:
                self.setup, self.me = setup, target
                self.piece_tags = tags.piece_tagger(setup.tag, p.run_key(self.secret, setup.run))
                self.window = self.window_for(setup)
            old = self.current
            if old is not None and old.sender != sender:
                old.out.send_quietly(p.Kind.REPLACED, {"by": sender})
            if self.pending is not None:
                self.pending.sock.close()
            self.pending = Upstream(sock, sender, peer, keys)
            if old is not None:
                try:
                    old.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.cond.notify_all()

    def _refusal(self, setup: RunSetup, sender: int, target: int) -> str | None:
        if self.setup is None:
            return None
        if setup.run != self.setup.run:
            return "busy with another run"
        if target != self.me:
            return f"this is {self.setup.ring.name(self.me)}, not {setup.ring.name(target)}"
        if sender >= self.me:
            return "a sender must come before us in the ring"
        if self.current is not None and sender > self.current.sender:
            return f"our upstream is {self.setup.ring.name(self.current.sender)}, which is alive"
        return None

    def _wait_pending(self, deadline: float | None) -> None:
        """With self.cond held: wait until an upstream is pending (TimeoutError past `deadline`)."""
        while self.pending is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            self.cond.wait(remaining if remaining is not None else 1.0)

    def _take_upstream(self, deadline: float | None) -> Upstream:
        with self.cond:
            self._wait_pending(deadline)
            self.current, self.pending = self.pending, None
            return self.current

    def upstream_ok(self) -> bool:
        """For the downlink: may we short-cut? (raises once we gave up on our upstream)."""
        if self.gave_up:
            raise Aborted(self.gave_up)
        return self.current is not None or self.pending is not None or self.got_end

    # ---- receiving --------------------------------------------------------------------------
    def wait_for_run(self, deadline: float | None) -> RunSetup:
        with self.cond:
            self._wait_pending(deadline)
            return self.setup

    def run(self) -> None:
        """Receive until END arrived and was acknowledged; raises Aborted when the ring is broken."""
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        deadline = None
        while not self.finished:
            try:
                up = self._take_upstream(deadline)
            except TimeoutError:
                self._give_up("our upstream stopped and no node took over within "
                              f"{3 * self.setup.timeout + 2:g} s: the server is gone or the ring is broken")
            self.log.info("upstream is %s (%s)", self.setup.ring.name(up.sender), up.peer)
            try:
                resume = self.next_seq if not self.got_end else self.setup.chunks + 1
                up.out.send(p.Kind.RESUME, {"next": resume, "at": self.filled})
                up.resumed = True
                link.kernel_timeout(up.sock, self.setup.timeout)
                self._receive(up)
            except (link.PeerGone, socket.timeout, OSError, p.ProtocolError) as exc:
                with self.cond:
                    lost = self.current is up
                    if lost:
                        self.current = None
                up.sock.close()
                if self.finished or not lost:
                    continue
                reason = "silent for too long" if isinstance(exc, socket.timeout) else str(exc)
                if self.got_end:
                    deadline = None  # everything is here; a late short-cut only needs its END_ACK
                    continue
                if up.sender == 0:
                    self._give_up(f"lost the server ({reason}): the server is gone")
                self.log.warning("upstream %s lost: %s; waiting for a short-cut",
                                 self.setup.ring.name(up.sender), reason)
                deadline = time.monotonic() + 3 * self.setup.timeout + 2
            except WindowClosed as exc:
                raise Aborted(str(exc)) from None

    def _give_up(self, reason: str) -> None:
        self.gave_up = reason
        if self.window is not None:
            self.window.close(reason)
        raise Aborted(reason)

    def _receive(self, up: Upstream) -> None:
        reader = link.FrameReader(up.sock)
        self.discarding = False
        scratch = memoryview(bytearray(self.setup.chunk_size))
        control = p.Tagger(up.keys and up.keys.recv)
        while True:
            wire = reader.header()
            h = p.unpack_header(wire[:p.HEADER_LEN])
            if h.kind in (p.Kind.CHUNK, p.Kind.HOLE):
                self._piece(up, reader, h, wire, scratch)
                continue
            if h.length > p.MAX_CONTROL_LEN:  # before a buffer of that size is made
                raise p.ProtocolError(f"{h.kind.name} frame of {h.length} bytes")
            payload = bytearray(h.length)
            reader.payload(memoryview(payload))
            if not control.ok(wire[:p.HEADER_LEN], wire[p.HEADER_LEN:], payload):
                raise p.ProtocolError(f"{h.kind.name} frame failed its "
                                      f"{'authentication' if up.keys is not None else 'tag'}")
            if h.kind is not p.Kind.PING:
                self._obey(h, p.parse_control(h, payload))

    def _obey(self, h: p.Header, body: dict) -> None:
        if h.kind is p.Kind.END:
            if not self.got_end and self.next_seq == self.setup.chunks:
                self.got_end = True
                self.on_end(body)
        elif h.kind is p.Kind.ABORT:
            self._give_up(body.get("reason", "aborted by the ring"))
        else:
            raise p.ProtocolError(f"unexpected {h.kind.name} from upstream")

    def _piece(self, up: Upstream, reader: link.FrameReader, h: p.Header, wire: bytes,
               scratch: memoryview) -> None:
        """Receive one piece into its chunk's buffer and check its tag; a piece out of place (in flight before
        our RESEND or RESUME) is read and dropped, a bad one asked for again."""
        size = p.payload_length(h)
        if size > min(p.PIECE, len(scratch)) or h.seq >= len(self.setup.plan):
            raise p.ProtocolError(f"bad piece: chunk {h.seq}, {size} bytes")
        file, offset, length = self.setup.plan[h.seq]
        if h.seq != self.next_seq or h.offset != offset + self.filled or h.file != file:
            reader.payload(scratch[:size])
            return
        entry = self.entry or self._new_entry(h, file, offset, length)
        start = self.filled
        view = memoryview(entry.buf)[start:start + size] if entry.buf is not None else scratch[:size]
        reader.payload(view)
        if not self.piece_tags.ok(wire[:p.HEADER_LEN], wire[p.HEADER_LEN:], view if size else None) or (
                start + h.length > length) or (entry.header.kind is p.Kind.HOLE and h.length != length):
            if not self.discarding:
                self.log.error("chunk %d from %s failed its tag; asking for a re-send", h.seq,
                               self.setup.ring.name(up.sender))
                up.out.send(p.Kind.RESEND, {"next": self.next_seq, "at": self.filled})
            self.discarding = True
            return
        self.discarding = False
        if self.window is not None:
            self.window.add_piece(entry, wire, start, h.length, self.relay)
        self.filled += h.length
        self.bytes += h.length
        if self.filled >= length:
            self.next_seq += 1
            self.filled = 0
            self.entry = None

    def _new_entry(self, h: p.Header, file: int, offset: int, length: int) -> Entry:
        """The entry of the chunk a piece starts: a chunk that is one hole keeps no buffer (a partial hole is a
        piece of a chunk with one)."""
        kind = p.Kind.HOLE if h.kind is p.Kind.HOLE and h.length == length else p.Kind.CHUNK
        buf = None
        if self.window is not None and kind is p.Kind.CHUNK:
            buf = self.window.acquire()
        elif self.window is not None:
            self.window.reserve_hole()
        self.entry = Entry(p.Header(kind, 0, file, h.seq, offset, length, 0), buf)
        if self.window is not None:
            self.window.append(self.entry)
        return self.entry

    def _heartbeat(self) -> None:
        period = min(0.5, self.setup.timeout / 4)
        while not self.finished:
            up = self.current
            if up is not None and up.resumed:
                up.out.send_quietly(p.Kind.PING, {"p": self.progress()})
            time.sleep(period)

    def ack_end(self) -> None:
        """The END report went on (or we are the tail): acknowledge to whoever is upstream now."""
        self.finished = True
        deadline = time.monotonic() + self.setup.timeout
        while self.current is None and self.pending is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.cond:
            up = self.current or self.pending
        if up is not None:
            up.out.send_quietly(p.Kind.END_ACK, {})
            try:
                up.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def abort_upstream(self, reason: str) -> None:
        up = self.current
        if up is not None:
            up.out.send_quietly(p.Kind.ABORT, {"reason": reason})


def parse_setup(body: dict) -> tuple[RunSetup, int, int]:
    """A SETUP's run, sender and target, all checked before anything is used (ValueError, TypeError or
    KeyError when it is not a SETUP)."""
    setup, sender, target = RunSetup.from_body(body), body["sender"], body["target"]
    if not (type(sender) is int and type(target) is int and 0 <= sender < target <= setup.ring.tail):
        raise ValueError(f"sender {sender!r} and target {target!r} in a ring of {len(setup.ring.members)}")
    return setup, sender, target
