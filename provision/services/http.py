"""HTTP for the nodes: their kickstarts, and the state reports their %post hook sends.

    GET  /kickstart/<name>.ks          the rendered kickstart of an inventory node (else 404)
    POST /api/nodes/<name>/state       JSON {"state": "ready|cloning|done|failed", "message": "..."}
                                       -> 200 {"ok": true}; unknown node 404; bad body or state 400
    GET  /api/nodes                    the current records, if a `states` callable was given
    GET  /api/nodes/<name>/boot        {"name", "boot": "install"|"local"}: asked by a node's installer before
                                       it touches the disk (no install loops), if a `boot_of` callable was given
    GET  /api/nodes/<name>/host-keys/<file>
                                       one of the node's SSH host key files (ssh_host_<type>_key[.pub]), if a
                                       `host_key` callable was given: only to the node's own address (403 for
                                       any other), 503 when its keys cannot be made (the node makes its own)
    GET  /boot/<file>                  a boot file (installer kernel, initrd) from `boot_dir`, if one was given:
                                       sendfile from the page cache, Content-Length, one Range (GRUB seeks with
                                       it), HEAD; missing file 404; a path leaving `boot_dir` (.., symlinks) 403;
                                       one log line per file sent

    server = HttpServer("build/kickstart", nodes=inv.node_names, on_report=store.report,
                        host=str(inv.server.ip), port=inv.server.http_port, boot_dir="build/tftpboot/boot").start()
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from provision.errors import ProvisionError
from provision.state import REPORTABLE, NodeState

log = logging.getLogger("provision.http")

MAX_BODY = 64 * 1024
_KICKSTART = re.compile(r"^/kickstart/([A-Za-z0-9][A-Za-z0-9.-]*)\.ks$")
_REPORT = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/state$")
_BOOT = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/boot$")
_HOST_KEY = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/host-keys/([A-Za-z0-9_.-]+)$")
BOOT_FILES = "/boot/"  # URL prefix of the boot files (the same relative paths as in the TFTP root)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

Report = Callable[[str, NodeState, str], object]
HostKey = Callable[[str, str], bytes]  # (node, file name) -> the file; KeyError for a name that is no key file


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "provision"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request through logging, not stderr
        log.info("http: %s %s", self.client_address[0], fmt % args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, data: object) -> None:
        self._send(status, json.dumps(data).encode() + b"\n", "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        log.warning("http: %s %s %s: %s", self.client_address[0], self.command, self.path, message)
        self._json(status, {"ok": False, "error": message})

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith(BOOT_FILES) and self.server.boot_dir is not None:
            return self._boot_file(path[len(BOOT_FILES):])
        if m := _KICKSTART.match(path):
            name = m.group(1)
            file = self.server.kickstart_dir / f"{name}.ks"
            if name not in self.server.nodes or not file.is_file():
                return self._error(HTTPStatus.NOT_FOUND, f"no kickstart for node {name!r}")
            return self._send(HTTPStatus.OK, file.read_bytes(), "text/plain; charset=utf-8")
        if path == "/api/nodes" and self.server.states is not None:
            return self._json(HTTPStatus.OK, {"nodes": self.server.states()})
        if (m := _BOOT.match(path)) and self.server.boot_of is not None:
            name = m.group(1)
            if name not in self.server.nodes:
                return self._error(HTTPStatus.NOT_FOUND, f"unknown node {name!r}")
            return self._json(HTTPStatus.OK, {"name": name, "boot": str(self.server.boot_of(name))})
        if (m := _HOST_KEY.match(path)) and self.server.host_key is not None:
            return self._host_key(*m.groups())
        self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def _host_key(self, name: str, filename: str) -> None:
        """A node's host key file, to that node's own address only."""
        address = self.server.node_ips.get(name)
        if name not in self.server.nodes or address is None:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown node {name!r}")
        if self.client_address[0] != address:
            return self._error(HTTPStatus.FORBIDDEN, f"the host keys of {name} go only to {address}")
        try:
            data = self.server.host_key(name, filename)
        except KeyError:
            return self._error(HTTPStatus.NOT_FOUND, f"no host key file {filename!r}")
        except (ProvisionError, OSError) as exc:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"no host keys for {name}: {exc}")
        log.info("http: sent %s of %s to %s", filename, name, address)  # before: the client may read the log next
        self._send(HTTPStatus.OK, data, "application/octet-stream")

    def _boot_file(self, name: str) -> None:
        """Send one file of the boot directory (its contents straight from the page cache with sendfile)."""
        root = self.server.boot_dir
        relative = urllib.parse.unquote(name)
        try:
            file = (root / relative).resolve()  # `..` and symlinks resolved before the containment check
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
            return self._error(HTTPStatus.NOT_FOUND, f"no boot file {relative!r}")
        if not file.is_relative_to(root):
            return self._error(HTTPStatus.FORBIDDEN, f"{relative!r} is outside the boot files")
        if not file.is_file():  # missing, a directory, a FIFO, ...
            return self._error(HTTPStatus.NOT_FOUND, f"no boot file {relative!r}")
        try:
            f = open(file, "rb")
        except OSError as exc:
            return self._error(HTTPStatus.NOT_FOUND, f"boot file {relative!r}: {exc.strerror}")
        with f:
            size = os.fstat(f.fileno()).st_size
            span = byte_range(self.headers.get("Range"), size)
            if span is None:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, count = span
            partial = count != size
            self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(count))
            self.send_header("Accept-Ranges", "bytes")
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{start + count - 1}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            self.wfile.flush()
            began = time.monotonic()
            try:
                sent = self.connection.sendfile(f, start, count) if count else 0
            except OSError as exc:
                sent, problem = 0, str(exc)
            else:
                problem = "" if sent == count else "the file shrank"
            if problem:
                self.close_connection = True
                log.warning("http: boot/%s to %s cut (%s)", relative, self.client_address[0], problem)
                return
        seconds = time.monotonic() - began
        log.info("http: sent boot/%s to %s: %d bytes in %.2f s%s", relative, self.client_address[0], sent, seconds,
                 f" (bytes {start}-)" if partial else "")

    def do_POST(self):
        m = _REPORT.match(self.path)
        if not m:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        name = m.group(1)
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if not 0 <= length <= MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        body = self.rfile.read(length)
        if name not in self.server.nodes:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown node {name!r}: report refused")
        try:
            data = json.loads(body)
            state, message = data["state"], data.get("message", "")
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._error(HTTPStatus.BAD_REQUEST, 'body must be JSON {"state": ..., "message": ...}')
        if state not in [str(s) for s in REPORTABLE]:
            return self._error(HTTPStatus.BAD_REQUEST, f"bad state {state!r}: one of "
                               + ", ".join(str(s) for s in REPORTABLE))
        if not isinstance(message, str):
            return self._error(HTTPStatus.BAD_REQUEST, "message must be a string")
        try:
            self.server.on_report(name, NodeState(state), message)
        except Exception as exc:  # the store failed: tell the node, keep serving
            log.exception("http: storing the report of %s failed", name)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"report not stored: {exc}")
        log.info("http: node %s reports %s: %s", name, state, message)
        self._json(HTTPStatus.OK, {"ok": True})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: a whole cluster asks for its kernel at once (socketserver's is 5)
    kickstart_dir: Path
    nodes: frozenset[str]
    on_report: Report
    states: Callable[[], list] | None
    boot_of: Callable[[str], str] | None
    boot_dir: Path | None
    host_key: HostKey | None
    node_ips: Mapping[str, str]

    def handle_error(self, request, client_address) -> None:
        """A client that drops its connection (iPXE resets its keep-alive one when the kernel starts) is
        one log line, not a traceback; anything else is socketserver's report."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            log.info("http: %s closed the connection (%s)", client_address[0], sys.exc_info()[1].strerror)
        else:
            super().handle_error(request, client_address)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first byte, count) that a Range header asks of a `size`-byte file: the whole file without one (or
    with one this server does not take: several ranges, other units), None if it cannot be satisfied."""
    m = _RANGE.match(header.strip()) if header else None
    if m is None or m.groups() == ("", ""):
        return 0, size
    first, last = m.groups()
    if first == "":  # the last N bytes
        count = min(int(last), size)
        return (size - count, count) if count else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end - start + 1


class HttpServer:
    """Serves kickstarts from `kickstart_dir` for `nodes` and passes their reports to `on_report(name,
    state, message)`; with `boot_dir`, also the files in it under /boot/; with `host_key` and `node_ips`
    (name -> IP), each node's SSH host keys to that node. `start()` binds (port 0 = any free port, see
    `.port`) and serves in a thread."""

    def __init__(self, kickstart_dir: str | os.PathLike, nodes: Collection[str], on_report: Report,
                 host: str = "0.0.0.0", port: int = 8080, states: Callable[[], list] | None = None,
                 boot_of: Callable[[str], str] | None = None, boot_dir: str | os.PathLike | None = None,
                 host_key: HostKey | None = None, node_ips: Mapping[str, str] | None = None):
        self.kickstart_dir = Path(kickstart_dir)
        self.boot_dir = Path(boot_dir).resolve() if boot_dir is not None else None
        self.nodes = frozenset(nodes)
        self.on_report, self.states, self.boot_of = on_report, states, boot_of
        self.host_key, self.node_ips = host_key, dict(node_ips or {})
        self.host, self._requested_port = host, port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("HTTP server is not bound yet")
        return self._httpd.server_address[1]

    def start(self) -> HttpServer:
        try:
            httpd = _Server((self.host, self._requested_port), _Handler)
        except OSError as exc:
            raise ProvisionError(f"HTTP cannot bind {self.host}:{self._requested_port}: {exc.strerror}") from exc
        httpd.kickstart_dir, httpd.nodes = self.kickstart_dir, self.nodes
        httpd.on_report, httpd.states, httpd.boot_of = self.on_report, self.states, self.boot_of
        httpd.boot_dir = self.boot_dir
        httpd.host_key, httpd.node_ips = self.host_key, self.node_ips
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http", daemon=True)
        self._thread.start()
        log.info("http: serving kickstarts and node reports%s on %s:%d",
                 f", boot files from {self.boot_dir}" if self.boot_dir else "", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = self._thread = None
