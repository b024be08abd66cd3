"""The ring's head and tail (dollyS): resolve the ring, read the IN files into the window (hashing
them for the report as --digest says, tagging every piece; holes and all-zero chunks travel as HOLE
frames), stream them to the first client, take the END report back at the tail (which asks for no
pieces) and turn it into the final report (every member's verdict whole: verdicts.py)."""

from __future__ import annotations

import errno
import mmap
import os
import socket
import stat
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dolly_core import protocol as p
from dolly_core import tags
from dolly_core.config import DEFAULT_PORT, DollyConfig, Endpoint
from dolly_core.cook import cook_plan
from dolly_core.digest import NONE, SHA256, TagList, file_hasher
from dolly_core.downlink import Aborted, Downlink
from dolly_core.node import make_window
from dolly_core.ring import FileSpec, Member, Ring, RunSetup
from dolly_core.uplink import Uplink
from dolly_core.verdicts import read as read_verdicts
from dolly_core.window import Entry, Window, WindowClosed


ZERO = bytes(p.PIECE)


class SetupError(Exception):
    """The run cannot start (unresolvable name, unreadable file, port in use); message says which."""


@dataclass(frozen=True)
class Settings:
    chunk_size: int = 4 << 20
    timeout: float = 10.0
    connect_wait: float = 60.0
    rate: float = 0.0
    tag: str = tags.DEFAULT  # the pieces' tag algorithm (tags.py)
    digest: str = SHA256  # the files' plain digest in the report (digest.py): sha256, blake3 or none


def resolve(endpoint: Endpoint, what: str) -> str:
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SetupError(f"cannot resolve {what} {endpoint.host!r}: {exc.strerror}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return infos[0][4][0]


def file_size(path: str) -> int:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISBLK(mode):
                return f.seek(0, os.SEEK_END)
            if not stat.S_ISREG(mode):
                raise SetupError(f"{path}: not a regular file or block device")
            return os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror}") from None


def plan_run(config: DollyConfig, settings: Settings) -> RunSetup:
    files = []
    for f in config.files:
        if f.cook:
            try:
                cook_plan(f.source)
            except ValueError as exc:
                raise SetupError(str(exc)) from None
        files.append(FileSpec(f.source, f.target, f.cook, file_size(f.source)))
    server_ip = resolve(config.server, "server")
    members = [Member(config.server.host, server_ip, 0)]
    members += [Member(c.host if c.port == DEFAULT_PORT else str(c), resolve(c, "client"), c.port)
                for c in config.clients]
    members.append(Member(f"{config.server.host} (tail)", server_ip, config.server.port))
    if settings.tag not in tags.AVAILABLE:
        raise SetupError(tags.cannot_check(settings.tag, "this dollyS"))
    try:
        file_hasher(settings.digest)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    return RunSetup(uuid.uuid4().hex, Ring(tuple(members)), tuple(files), settings.chunk_size, settings.timeout,
                    settings.connect_wait, settings.tag)


class DataMap:
    """The data ranges of a regular file, found with SEEK_DATA/SEEK_HOLE; the rest are holes (zeros that
    need not be read). The last extent found is kept: SEEK_HOLE scans to the next hole (on tmpfs page by
    page), so asking it again for every chunk of a dense file would cost the server more than reading it."""

    def __init__(self, fd: int):
        self.fd = fd
        self.extent = (0, 0, 0)  # [asked, data) is a hole, [data, hole) is data

    def ranges(self, start: int, end: int) -> list[tuple[int, int]]:
        """The (start, end) data ranges of [start, end). Where the file system cannot tell, all of it."""
        ranges, pos = [], start
        while pos < end:
            asked, data, hole = self.extent
            if not asked <= pos < hole:
                try:
                    data = os.lseek(self.fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # nothing but a hole from pos to the end of the file
                        self.extent = (pos, 1 << 63, 1 << 63)
                        break
                    if exc.errno == errno.EINVAL:  # no SEEK_DATA here: read it all
                        return ranges + [(pos, end)]
                    raise
                hole = os.lseek(self.fd, data, os.SEEK_HOLE)
                self.extent = (pos, data, hole)
            data = max(data, pos)
            if data >= end:
                break
            ranges.append((data, min(hole, end)))
            pos = min(hole, end)
        return ranges


def read_exactly(fd: int, view: memoryview, offset: int, path: str) -> None:
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if not n:
            raise OSError(f"{path} shrank while reading (at byte {offset + got})")
        got += n


def is_zero(view: memoryview) -> bool:
    """All bytes zero? (Compared as bytes, by memcmp: comparing memoryviews goes byte by byte.)"""
    return not any(view[:16]) and view.tobytes() == ZERO[:len(view)]


class Source:
    """Reads every IN into the window in chunk order; hashes each file on the way (its plain digest for
    the report, `digest`: SHA-256, BLAKE3 or none, on a thread beside the tagging) and tags each piece (the
    tag list the nodes check, see digest.py). A regular file's holes (SEEK_DATA/SEEK_HOLE) are never read:
    a chunk inside a hole travels as a HOLE frame, a partly covered chunk reads only its data ranges; both
    hashes count holes as zeros."""

    def __init__(self, setup: RunSetup, window: Window, piece_key: bytes | None, digest: str = SHA256):
        self.setup, self.window, self.digest = setup, window, digest
        self.tagger = tags.piece_tagger(setup.tag, piece_key)  # tags every piece (the run's key, with a secret)
        self.file_digests: list[str] = []  # each file's plain digest (hex), none with `none`
        self.digests: list[str] = []  # tag lists (digest.py)
        self.tags = TagList()  # of the file being read
        self.data_bytes: list[int] = []  # bytes read from each IN (the rest were holes)
        self.error: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except WindowClosed:
            pass
        except OSError as exc:
            self.error = f"reading the source: {exc}"
            self.window.close(self.error)
        finally:
            self.done.set()

    def _run(self) -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="digest") as hasher:  # its thread starts at the first use
            self._read_files(hasher)

    def _read_files(self, hasher: ThreadPoolExecutor) -> None:
        """The files' plain digest runs on `hasher`, beside the tagging of the same chunk (hashlib and blake3
        release the GIL): the two hashes of a chunk take two cores, not one; the chunk's buffer is reused only
        after both."""
        seq, size = 0, self.setup.chunk_size
        zero = memoryview(bytes(size))
        for index, f in enumerate(self.setup.files):
            digest, self.tags, read = file_hasher(self.digest), TagList(), 0
            with open(f.source, "rb", buffering=0) as src:
                fd = src.fileno()
                sparse = stat.S_ISREG(os.fstat(fd).st_mode)
                extents = DataMap(fd)
                offset = 0
                for _ in range(self.setup.file_chunks(f)):
                    length = min(size, f.size - offset)
                    ranges = extents.ranges(offset, offset + length) if sparse else [(offset, offset + length)]
                    if length and not ranges:
                        if digest is not None:
                            digest.update(zero[:length])
                        self._hole(index, seq, offset, length)
                    else:
                        buf = self.window.acquire()
                        view = memoryview(buf)
                        pos = offset
                        for start, end in ranges:
                            view[pos - offset:start - offset] = zero[:start - pos]
                            read_exactly(fd, view[start - offset:end - offset], start, f.source)
                            read += end - start
                            pos = end
                        view[pos - offset:length] = zero[:offset + length - pos]
                        hashed = hasher.submit(digest.update, view[:length]) if digest is not None else None
                        holes = [is_zero(view[start:start + p.PIECE]) for start in range(0, length, p.PIECE)]
                        if length and all(holes):
                            if hashed is not None:
                                hashed.result()
                            self.window.release(buf)
                            self._hole(index, seq, offset, length)
                        else:
                            self._chunk(index, seq, offset, buf, length, holes)
                            if hashed is not None:
                                hashed.result()
                    seq += 1
                    offset += length
                if sparse and os.fstat(fd).st_size < f.size:  # a hole past the new end is no zeros
                    raise OSError(f"{f.source} shrank while reading (to {os.fstat(fd).st_size} bytes)")
            if digest is not None:
                self.file_digests.append(digest.hexdigest())
            self.digests.append(self.tags.hexdigest())
            self.data_bytes.append(read)

    def _hole(self, index: int, seq: int, offset: int, length: int) -> None:
        self.window.reserve_hole()
        entry = self.window.append(Entry(p.Header(p.Kind.HOLE, 0, index, seq, offset, length, 0), None))
        self._pieces(entry, [(p.pack_piece(self.tagger, p.Kind.HOLE, index, seq, offset, length), 0, length)])

    def _chunk(self, index: int, seq: int, offset: int, buf: mmap.mmap, length: int, holes: list[bool]) -> None:
        """A chunk with data; its all-zero pieces travel as HOLE frames."""
        entry = self.window.append(Entry(p.Header(p.Kind.CHUNK, 0, index, seq, offset, length, 0), buf))
        data, pieces = memoryview(buf)[:length], []
        for k, start in enumerate(range(0, max(length, 1), p.PIECE)):
            piece = data[start:start + p.PIECE]
            if length and holes[k]:
                wire = p.pack_piece(self.tagger, p.Kind.HOLE, index, seq, offset + start, len(piece))
            else:
                wire = p.pack_piece(self.tagger, p.Kind.CHUNK, index, seq, offset + start, len(piece), piece)
            pieces.append((wire, start, len(piece)))
        self._pieces(entry, pieces)

    def _pieces(self, entry: Entry, pieces: list[tuple[bytes, int, int]]) -> None:
        """A chunk's tagged pieces into its tag list and, all at once, to the head (one wake-up per chunk)."""
        for wire, _, _ in pieces:
            self.tags.add(wire[p.HEADER_LEN:])
        self.window.add_pieces(entry, pieces)


class Server:
    def __init__(self, config: DollyConfig, settings: Settings, secret: bytes | None, log):
        self.config, self.settings, self.secret, self.log = config, settings, secret, log
        self.setup = plan_run(config, settings)
        self.end_report: dict | None = None
        self.end_bytes: int | None = None  # the END frame that reached the tail: header, tag and JSON
        self.got_end = threading.Event()
        self.abort: str | None = None
        host, port = self.setup.ring.address(self.setup.ring.tail)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
        except OSError as exc:
            raise SetupError(f"cannot listen on {host}:{port} for the ring's tail: {exc.strerror}") from None
        self.listener.listen(16)
        self.window = make_window(self.setup, consumers=("forward",))
        self.source = Source(self.setup, self.window, p.run_key(secret, self.setup.run), settings.digest)
        self.tail = Uplink(self.listener, secret, log, window_for=lambda s: None, on_end=self._on_end,
                           progress=dict, setup=self.setup, me=self.setup.ring.tail, pieces=False)
        self.head = Downlink(self.setup, 0, self.window, secret, log, self.source.done, self._end_body,
                             upstream_ok=lambda: True, rate=settings.rate)
        self.started = time.monotonic()
        self.seconds = 0.0

    def _end_body(self, skipped: dict[int, str]) -> dict:
        if self.source.error:
            raise Aborted(self.source.error)
        verdicts = {str(i): {"ok": False, "error": f"dead (seen by the server): {why}", "bytes": 0,
                             "seconds": None, "files": []} for i, why in skipped.items()}
        return {"server": {**self.plain_digests(), "digest": self.source.digests}, "verdicts": verdicts}

    def plain_digests(self) -> dict[str, list[str]]:
        """{algorithm: each file's plain digest} as END and the report carry them; {} for --digest none."""
        return {} if self.settings.digest == NONE else {self.settings.digest: self.source.file_digests}

    def _on_end(self, body: dict) -> None:
        self.end_report = body
        self.end_bytes = len(p.control(p.Kind.END, body))  # as it came: our encoder wrote it, JSON reads back
        self.seconds = time.monotonic() - self.started
        self.got_end.set()

    def progress(self) -> dict[int, list]:
        return dict(self.head.progress)

    def run(self, on_tick=None) -> dict:
        """Run the ring; returns the report (see report())."""
        self.started = time.monotonic()
        threading.Thread(target=self.source.run, name="source", daemon=True).start()
        self.tail.start()

        def receive_tail() -> None:
            try:
                self.tail.run()
            except Aborted:
                pass
        threading.Thread(target=receive_tail, name="tail", daemon=True).start()
        head_done = threading.Event()

        def stream() -> None:
            try:
                self.head.run()
            except Aborted as exc:
                self.abort = str(exc)
            finally:
                head_done.set()
        threading.Thread(target=stream, name="head", daemon=True).start()
        while not self.got_end.wait(0.25):
            if on_tick:
                on_tick(self)
            if self.abort and not self.got_end.is_set():
                break
        if self.got_end.is_set():
            self.tail.ack_end()
            head_done.wait(self.setup.timeout + 2)  # let END_ACKs travel back so clients exit cleanly
        if on_tick:
            on_tick(self)
        if self.abort and not self.got_end.is_set():
            self.head.send_abort(self.abort)
        self.window.close("run finished")
        return self.report()

    def report(self) -> dict:
        verdicts = read_verdicts(self.end_report or {}, self.setup)
        progress = self.head.progress
        nodes = []
        for index in self.setup.ring.clients:
            member = self.setup.ring.members[index]
            v = verdicts.get(str(index))
            if v is None:
                why = self.abort or "no verdict reached the server"
                v = {"ok": False, "error": why, "bytes": progress.get(index, [0])[0], "seconds": None, "files": []}
            nodes.append({"name": member.name, "address": f"{member.host}:{member.port}", "ok": bool(v["ok"]),
                          "error": v.get("error"), "bytes": v.get("bytes", 0), "seconds": v.get("seconds"),
                          "files": v.get("files", [])})
        plain = self.plain_digests()
        files = [{"path": f.source, "out": f.out, "cook": f.cook, "bytes": f.size, "data_bytes": read,
                  **{name: values[i] for name, values in plain.items()}}
                 for i, (f, read) in enumerate(zip(self.setup.files, self.source.data_bytes))]
        return {"ok": all(n["ok"] for n in nodes) and self.got_end.is_set(), "run": self.setup.run,
                "seconds": round(self.seconds or time.monotonic() - self.started, 3),
                "chunk_size": self.setup.chunk_size, "tag": self.setup.tag, "digest": self.settings.digest,
                "files": files, "nodes": nodes, "end_bytes": self.end_bytes,
                "error": None if self.got_end.is_set() else (self.abort or "the END report never came back")}
