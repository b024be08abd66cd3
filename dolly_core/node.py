"""A ring member (dollyC): receive into the window, write/cook to the local targets, forward to
the successor, all concurrently; then verify and put its verdict into the END report (verdicts.py).

Verdict semantics: a file's tag list (digest.py) holds the tags of exactly the pieces this node handed
to its target, each checked against its bytes when it arrived and added only after the write call for
its chunk succeeded (a hole counts as its HOLE frame, whose zeros the target made: a hole in a fresh
file, zeroed on a block device), and the file is fsync'ed before the verdict is made; the verdict needs
the list to equal the server's, and a failed write, fsync, decompressor or untar makes it false. For a
cooked (`>>`) file the list is that of the received compressed stream (comparable with the server's of
IN), and the verdict additionally needs the decompressor and untar to succeed. A verified file reports
the server's plain digest of IN (its sha256 or blake3, as dollyS --digest chose; equal lists mean equal
bytes); a failed one reports null there. A piece is hashed once, when its tag is checked, and nothing is
read back from the disk.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from dolly_core import verdicts
from dolly_core.cook import open_target
from dolly_core.digest import TagList
from dolly_core.downlink import Aborted, CutOut, Downlink
from dolly_core.protocol import HEADER_LEN
from dolly_core.ring import RunSetup
from dolly_core.uplink import Uplink
from dolly_core.window import Window, WindowClosed

WINDOW_KEEP_BYTES = 96 << 20
WINDOW_AHEAD_BYTES = 16 << 20


def make_window(setup: RunSetup, consumers: tuple[str, ...] = ("write", "forward")) -> Window:
    keep = max(4, -(-WINDOW_KEEP_BYTES // setup.chunk_size))
    ahead = max(2, -(-WINDOW_AHEAD_BYTES // setup.chunk_size))
    margins = {"forward": keep, "write": 0}
    return Window(setup.chunk_size, keep, ahead, {c: margins[c] for c in consumers})


def target_path(root: str | None, out: str) -> str:
    if root is None:
        return out
    full = os.path.normpath(os.path.join(root, out.lstrip("/")))
    if os.path.commonpath([full, os.path.normpath(root)]) != os.path.normpath(root):
        raise OSError(f"{out!r} escapes the root directory {root!r}")
    return full


@dataclass
class FileResult:
    path: str
    digest: str  # tag list of what was written
    error: str | None


class Writer:
    """Consumes the window in order and writes every file; lists the tags of what was written."""

    def __init__(self, setup: RunSetup, window: Window, root: str | None, log):
        self.setup, self.window, self.root, self.log = setup, window, root, log
        self.results: list[FileResult] = []
        self.written = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except WindowClosed:
            pass
        finally:
            self.done.set()

    def _run(self) -> None:
        seq = 0
        for f in self.setup.files:
            tags, error, target = TagList(), None, None
            try:
                path = target_path(self.root, f.out)
                target = open_target(path, f.source, f.size, f.cook)
            except (OSError, ValueError) as exc:
                error = f"cannot open {f.out}: {exc}"
            for _ in range(self.setup.file_chunks(f)):
                entry = self.window.get(seq)
                self.window.wait_done(entry)
                seq += 1
                if error is None:
                    try:
                        for hole, start, length in entry.runs():
                            if hole:
                                target.hole(length)
                            else:
                                target.write(entry.payload[start:start + length])
                        for wire, _, _ in entry.pieces:
                            tags.add(wire[HEADER_LEN:])
                        self.written += entry.header.length
                    except OSError as exc:
                        error = f"writing {f.out}: {exc}"
                        target.abandon()
                self.window.advance("write", seq)
            if error is None:
                try:
                    target.close()
                except OSError as exc:
                    error = f"finishing {f.out}: {exc}"
            if error:
                self.log.error("%s", error)
            self.results.append(FileResult(f.out, tags.hexdigest(), error))


class Node:
    def __init__(self, listener, secret: bytes | None, root: str | None, log):
        self.listener, self.secret, self.root, self.log = listener, secret, root, log
        self.end_in: dict = {}
        self.end_ready = threading.Event()
        self.got_end = threading.Event()
        self.verdict: dict | None = None
        self.started = time.monotonic()
        self.uplink = Uplink(listener, secret, log, window_for=make_window, on_end=self._on_end,
                             progress=self._progress)
        self.writer: Writer | None = None
        self.downlink: Downlink | None = None

    def _on_end(self, body: dict) -> None:
        self.end_in = body
        self.got_end.set()
        threading.Thread(target=self._make_verdict, daemon=True).start()

    def _make_verdict(self) -> None:
        self.writer.done.wait()
        server = self.end_in.get("server", {})
        digests = server.get("digest", [])
        plain = verdicts.plain_digests(server)
        files, errors = [], []
        for i, r in enumerate(self.writer.results):
            same = i < len(digests) and digests[i] == r.digest
            if r.error:
                errors.append(r.error)
            elif not same:
                errors.append(f"{r.path}: tag list {r.digest} differs from the server's")
            ok = same and not r.error
            files.append({"path": r.path, **{name: values[i] if ok and i < len(values) else None
                                             for name, values in plain.items()}})
        self.verdict = {"ok": not errors, "error": "; ".join(errors) or None,
                        "bytes": self.writer.written, "seconds": round(time.monotonic() - self.started, 3),
                        "files": files}
        if errors:
            self.log.error("verification failed: %s", self.verdict["error"])
        else:
            self.log.info("verified %d file(s)", len(files))
        self.end_ready.set()

    def _end_body(self, skipped: dict[int, str]) -> dict:
        """END as it goes on: with our verdict (compact when it is a verified one: verdicts.py) and one for
        each successor we short-cut."""
        setup = self.uplink.setup
        body = verdicts.add(self.end_in, self.uplink.me, self.verdict, setup)
        me = setup.ring.name(self.uplink.me)
        progress = self.downlink.progress if self.downlink else {}
        whole = body.get("verdicts")
        whole = dict(whole) if isinstance(whole, dict) else {}
        for index, reason in skipped.items():
            whole.setdefault(str(index), {"ok": False, "error": f"dead (seen by {me}): {reason}",
                                          "bytes": progress.get(index, [0])[0], "seconds": None, "files": []})
        body["verdicts"] = whole
        return body

    def _progress(self) -> dict:
        mine = {}
        if self.uplink.me is not None:
            entry = [self.uplink.bytes, "done" if self.end_ready.is_set() else "receiving"]
            if self.verdict is not None and not self.verdict["ok"]:
                entry = [self.uplink.bytes, "failed", self.verdict["error"]]
            mine[str(self.uplink.me)] = entry
        if self.downlink is not None:
            progress = dict(self.downlink.progress)  # one atomic copy: the monitor thread updates it
            theirs = {str(k): v for k, v in progress.items()}
            return {**theirs, **mine}
        return mine

    def serve(self, wait: float | None) -> int:
        """Serve one run; 0 only if this node verified every file and its verdict went on."""
        self.uplink.start()
        try:
            setup = self.uplink.wait_for_run(None if wait is None else time.monotonic() + wait)
        except TimeoutError:
            why = f"; last rejected: {self.uplink.last_refusal}" if self.uplink.last_refusal else ""
            self.log.error("no run started within %g s%s", wait, why)
            return 1
        self.started = time.monotonic()
        me = self.uplink.me
        self.log.info("joined run %s as %s (%d of %d), %d file(s), %d chunks", setup.run,
                      setup.ring.name(me), me, len(setup.ring.clients), len(setup.files), setup.chunks)
        self.writer = Writer(setup, self.uplink.window, self.root, self.log)
        self.downlink = Downlink(setup, me, self.uplink.window, self.secret, self.log, self.end_ready,
                                 self._end_body, self.uplink.upstream_ok)
        self.uplink.relay = self.downlink.relay
        up_error: list[str] = []

        def receive() -> None:
            # the writer is started here, not before the dial below: a thread's start waits until it runs, and
            # the ring's start-up waits for every member's dial, one after another
            threading.Thread(target=self.writer.run, name="writer", daemon=True).start()
            try:
                self.uplink.run()
            except Aborted as exc:
                up_error.append(str(exc))
        threading.Thread(target=receive, name="receiver", daemon=True).start()
        try:
            self.downlink.run()
        except Aborted as exc:
            reason = up_error[0] if up_error else str(exc)
            self.log.error("run aborted: %s", reason)
            self.downlink.send_abort(reason)
            self.uplink.abort_upstream(reason)
            self.uplink.window.close(reason)
            return 1
        except CutOut as exc:
            self.log.error("cut out of the ring: %s", exc)
            return 1
        self.uplink.ack_end()
        ok = bool(self.verdict and self.verdict["ok"])
        self.log.info("run finished: %s", "verified" if ok else "FAILED")
        return 0 if ok else 1
