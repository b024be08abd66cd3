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
    GET  /api/nodes/<name>/identity    a diskless node's identity script (<kickstart_dir>/<name>.identity, rendered
                                       for diskless nodes only; else 404), to the node's own address only
    GET  /api/nodes/<name>/credentials {"name", "token", "ring_secret"}: the node's credentials for this install, if a
                                       `credentials` callable was given; once per node and run (403 after), only
                                       to the node's own address under node_auth; 404 for a node not installing
    GET  /boot/<file>                  a boot file (installer kernel, initrd) from `boot_dir`, if one was given:
                                       sendfile from the page cache, Content-Length, one Range (GRUB seeks with
                                       it), HEAD; missing file 404; a path leaving `boot_dir` (.., symlinks) 403;
                                       one log line per file sent

With `node_auth` (NodeAuth) a node's kickstart, boot query, state reports and host keys are served to and taken
from that node's inventory address only, and its reports and host-key requests must carry its per-install token
(header X-Provision-Token) where it has one: else 403 and one log line. `NodeAuth(..., enforce=False)` lets
anyone in (one warning at start). GET /api/nodes and /boot/ stay open.

Every request is bounded (HttpLimits): its request line, header lines and count, its body (MAX_BODY), the time
it may take to arrive (the whole request, not each recv: a client trickling bytes is cut), the time a reply may
stall; connections are capped in total and per client address (beyond, closed at once, logged once per run).

    server = HttpServer("build/kickstart", nodes=inv.node_names, on_report=store.report,
                        host=str(inv.server.ip), port=inv.server.http_port, boot_dir="build/tftpboot/boot",
                        node_auth=NodeAuth(addresses={"n01": "10.0.0.11"}, tokens={"n01": "..."})).start()
"""

from __future__ import annotations

import hmac
import http.client
import io
import json
import logging
import math
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from provision.credentials import CredentialsTaken
from provision.errors import ProvisionError
from provision.services.admission import Admission, Wording
from provision.state import REPORTABLE, NodeState

log = logging.getLogger("provision.http")

MAX_BODY = 64 * 1024
_KICKSTART = re.compile(r"^/kickstart/([A-Za-z0-9][A-Za-z0-9.-]*)\.ks$")
_REPORT = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/state$")
_BOOT = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/boot$")
_CREDENTIALS = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/credentials$")
_IDENTITY = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/identity$")
_HOST_KEY = re.compile(r"^/api/nodes/([A-Za-z0-9][A-Za-z0-9.-]*)/host-keys/([A-Za-z0-9_.-]+)$")
BOOT_FILES = "/boot/"  # URL prefix of the boot files (the same relative paths as in the TFTP root)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

TOKEN_HEADER = "X-Provision-Token"
_CONNECTIONS = Wording("http", "connections open", "from", "refusing connections", "accepting connections", "refusing")

Report = Callable[[str, NodeState, str], object]
HostKey = Callable[[str, str], bytes]  # (node, file name) -> the file; KeyError for a name that is no key file
Credentials = Callable[[str], dict]  # node -> its credentials; KeyError: not installing; CredentialsTaken: given

# What a node asks for itself; the 403 message for a request from another address
KICKSTART, REPORT, BOOT_QUERY, HOST_KEYS, CREDENTIALS, IDENTITY = (
    "kickstart", "state report", "boot query", "host keys", "credentials", "identity")
_ELSEWHERE = {KICKSTART: "the kickstart of {name} goes only to {address}",
              REPORT: "reports for {name} come only from {address}",
              BOOT_QUERY: "the boot query of {name} is answered only to {address}",
              HOST_KEYS: "the host keys of {name} go only to {address}",
              CREDENTIALS: "the credentials of {name} go only to {address}",
              IDENTITY: "the identity of {name} goes only to {address}"}
_TOKENED = frozenset({REPORT, HOST_KEYS})  # the node has its token (from the kickstart) when it asks these


@dataclass(frozen=True)
class NodeAuth:
    """Who may ask for a node's kickstart, boot query and host keys and report its state: only its inventory
    address (`addresses`, node -> IPv4), and for reports and host keys only with its per-install token
    (`tokens`, node -> token, sent as X-Provision-Token) where it has one. `enforce=False`: anyone may."""

    addresses: Mapping[str, str]
    tokens: Mapping[str, str] = field(default_factory=dict)
    enforce: bool = True


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on what one client can hold: a request (line, headers, body) must have arrived within
    `request_seconds` of when the server began waiting for it; a reply that cannot send for `send_idle_seconds`
    is cut (a big boot file on a slow link is fine while it moves); at most `connections` open, `per_client`
    from one address."""

    request_seconds: float = 30.0
    send_idle_seconds: float = 60.0
    connections: int = 512
    per_client: int = 16
    request_line: int = 8192
    header_line: int = 8192
    headers: int = 64


@dataclass(frozen=True)
class _Policy:
    """NodeAuth as the handler applies it: `bound` are the routes checked against `addresses` and `tokens`."""

    addresses: Mapping[str, str]
    tokens: Mapping[str, str]
    bound: frozenset[str]

    @classmethod
    def of(cls, node_auth: NodeAuth | None) -> _Policy:
        if node_auth is None:  # no node's address known: its secrets go to nobody
            return cls({}, {}, frozenset({HOST_KEYS, CREDENTIALS}))
        bound = frozenset(_ELSEWHERE) if node_auth.enforce else frozenset()
        return cls(dict(node_auth.addresses), dict(node_auth.tokens), bound)

    def refusal(self, route: str, name: str, client: str, token: str | None) -> str | None:
        """Why the request for `route` of node `name` from `client` (with `token`, if any) is refused, or None."""
        if route not in self.bound:
            return None
        address = self.addresses.get(name)
        if address is None:
            return f"no address of {name} is known: its {route} is refused"
        if client != address:
            return _ELSEWHERE[route].format(name=name, address=address)
        expected = self.tokens.get(name)
        if not expected or route not in _TOKENED:
            return None
        if token is None:
            return f"the {route} of {name} needs its {TOKEN_HEADER} header"
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode()):
            return f"wrong {TOKEN_HEADER} for the {route} of {name}"
        return None


class _LateRequest(TimeoutError):
    """The request was not all in by its deadline."""


class _Deadline(io.RawIOBase):
    """The receiving side of a connection, to a deadline (`begin`): a recv waits only until then, then
    TimeoutError; between recvs the socket's timeout is `send_idle` (for the reply)."""

    def __init__(self, sock: socket.socket, send_idle: float):
        self.sock, self.send_idle = sock, send_idle
        self.deadline, self.allowed = math.inf, math.inf

    def begin(self, seconds: float) -> None:
        self.deadline, self.allowed = time.monotonic() + seconds, seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            return self.sock.recv_into(buffer)
        except TimeoutError:
            raise _LateRequest(f"the request was not in within {self.allowed:g} s") from None
        finally:
            self.sock.settimeout(self.send_idle)


class _RequestInput:
    """The handler's rfile: the connection buffered, each request to its deadline, its header lines bounded
    (http.server's parse_request answers 431 to the exceptions `readline` raises)."""

    def __init__(self, sock: socket.socket, limits: HttpLimits):
        self.limits = limits
        self._raw = _Deadline(sock, limits.send_idle_seconds)
        self._buffer = io.BufferedReader(self._raw)
        self._lines = 0

    def request_line(self) -> bytes:
        """The next request's first line (at most one byte over the limit): its deadline starts now."""
        self._raw.begin(self.limits.request_seconds)
        self._lines = 0
        return self._buffer.readline(self.limits.request_line + 1)

    def readline(self, size: int = -1) -> bytes:  # http.client.parse_headers reads the header lines with this
        self._lines += 1
        if self._lines > self.limits.headers + 1:  # + the empty line that ends them
            raise http.client.HTTPException(f"more than {self.limits.headers} header lines")
        line = self._buffer.readline(self.limits.header_line + 1)
        if len(line) > self.limits.header_line:
            raise http.client.LineTooLong(f"header line over {self.limits.header_line} bytes")
        return line

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def close(self) -> None:
        self._buffer.close()  # the socket stays: socketserver closes it


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "provision"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request through logging, not stderr
        log.info("http: %s %s", self.client_address[0], fmt % args)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # socketserver's unbounded reader, replaced by one with a deadline and limits
        self.rfile = _RequestInput(self.connection, self.server.limits)
        self.connection.settimeout(self.server.limits.send_idle_seconds)

    def handle_one_request(self) -> None:
        """http.server's, with the limits: request line (414), header lines (431, in `rfile`), a deadline for
        the whole request and a stall limit for the reply (TimeoutError: the connection is closed)."""
        try:
            self.raw_requestline = self.rfile.request_line()
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > self.server.limits.request_line:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                self.close_connection = True
                return
            if not self.parse_request():  # it sent the error
                return
            method = getattr(self, f"do_{self.command}", None)
            if method is None:
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")
                return
            method()
            self.wfile.flush()
        except TimeoutError as exc:
            why = exc if isinstance(exc, _LateRequest) else \
                f"its reply did not move for {self.server.limits.send_idle_seconds:g} s"
            log.warning("http: %s too slow (%s): connection closed", self.client_address[0], why)
            self.close_connection = True
            # closed with a reset, not a FIN: a loader that jumped into its kernel (GRUB) never closes its side,
            # and a FIN nobody acknowledges keeps the address and port pair, which its next boot uses again
            # (a UEFI machine rebooted within minutes: GRUB's "connection timeout" fetching the initrd)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _refused(self, route: str, name: str) -> bool:
        """Answer 403 (one log line) if the request for `route` of node `name` is not the node's own."""
        why = self.server.policy.refusal(route, name, self.client_address[0], self.headers.get(TOKEN_HEADER))
        if why is not None:
            self._error(HTTPStatus.FORBIDDEN, why)
        return why is not None

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
            if self._refused(KICKSTART, name):
                return None
            return self._send(HTTPStatus.OK, file.read_bytes(), "text/plain; charset=utf-8")
        if m := _IDENTITY.match(path):
            name = m.group(1)
            file = self.server.kickstart_dir / f"{name}.identity"
            if name not in self.server.nodes or not file.is_file():
                return self._error(HTTPStatus.NOT_FOUND, f"no identity for node {name!r} (not in diskless boot)")
            if self._refused(IDENTITY, name):
                return None
            return self._send(HTTPStatus.OK, file.read_bytes(), "text/plain; charset=utf-8")
        if path == "/api/nodes" and self.server.states is not None:
            return self._json(HTTPStatus.OK, {"nodes": self.server.states()})
        if (m := _BOOT.match(path)) and self.server.boot_of is not None:
            name = m.group(1)
            if name not in self.server.nodes:
                return self._error(HTTPStatus.NOT_FOUND, f"unknown node {name!r}")
            if self._refused(BOOT_QUERY, name):
                return None
            return self._json(HTTPStatus.OK, {"name": name, "boot": str(self.server.boot_of(name))})
        if (m := _HOST_KEY.match(path)) and self.server.host_key is not None:
            return self._host_key(*m.groups())
        if (m := _CREDENTIALS.match(path)) and self.server.credentials is not None and self.command == "GET":
            return self._credentials(m.group(1))
        self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def _host_key(self, name: str, filename: str) -> None:
        """A node's host key file, to that node's own address only (with its token, if it has one)."""
        if name not in self.server.nodes:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown node {name!r}")
        if self._refused(HOST_KEYS, name):
            return None
        try:
            data = self.server.host_key(name, filename)
        except KeyError:
            return self._error(HTTPStatus.NOT_FOUND, f"no host key file {filename!r}")
        except (ProvisionError, OSError) as exc:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"no host keys for {name}: {exc}")
        log.info("http: sent %s of %s to %s", filename, name, self.client_address[0])  # before: the client may read the log next
        self._send(HTTPStatus.OK, data, "application/octet-stream")

    def _credentials(self, name: str) -> None:
        """The node's token and ring secret for this install: once, to its own address."""
        if name not in self.server.nodes:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown node {name!r}")
        if self._refused(CREDENTIALS, name):
            return None
        try:
            data = self.server.credentials(name)
        except KeyError:
            return self._error(HTTPStatus.NOT_FOUND, f"{name} is not being installed: no credentials")
        except CredentialsTaken as exc:
            return self._error(HTTPStatus.FORBIDDEN, str(exc))
        log.info("http: sent the credentials of %s to %s", name, self.client_address[0])
        self._json(HTTPStatus.OK, data)

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
            self.close_connection = True  # its body, if any, is not read
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        body = self.rfile.read(length)
        if name not in self.server.nodes:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown node {name!r}: report refused")
        if self._refused(REPORT, name):
            return None
        try:
            data = json.loads(body)
            state, message = data["state"], data.get("message", "")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # RecursionError: [[[[...
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
    credentials: Credentials | None
    policy: _Policy
    limits: HttpLimits
    connections: Admission

    def verify_request(self, request, client_address) -> bool:
        return self.connections.admit(client_address[0])

    def process_request(self, request, client_address) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread: socketserver closes the connection
            self.connections.release(client_address[0])
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(client_address[0])

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
    state, message)`; with `boot_dir`, also the files in it under /boot/; with `host_key`, each node's SSH
    host keys to that node; with `credentials`, each node's install credentials, once. `node_auth` binds each
    node's requests to its address and token; without it, host keys and credentials go to nobody.
    `limits` bound what one client can hold. `start()` binds (port 0 = any free port, see `.port`) and
    serves in a thread."""

    def __init__(self, kickstart_dir: str | os.PathLike, nodes: Collection[str], on_report: Report,
                 host: str = "0.0.0.0", port: int = 8080, states: Callable[[], list] | None = None,
                 boot_of: Callable[[str], str] | None = None, boot_dir: str | os.PathLike | None = None,
                 host_key: HostKey | None = None, *,
                 node_auth: NodeAuth | None = None, credentials: Credentials | None = None,
                 limits: HttpLimits = HttpLimits()):
        self.kickstart_dir = Path(kickstart_dir)
        self.boot_dir = Path(boot_dir).resolve() if boot_dir is not None else None
        self.nodes = frozenset(nodes)
        self.on_report, self.states, self.boot_of = on_report, states, boot_of
        self.host_key, self.policy, self.limits = host_key, _Policy.of(node_auth), limits
        self.node_auth, self.credentials = node_auth, credentials
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
        httpd.boot_dir, httpd.credentials = self.boot_dir, self.credentials
        httpd.host_key, httpd.policy, httpd.limits = self.host_key, self.policy, self.limits
        httpd.connections = Admission(self.limits.connections, self.limits.per_client, _CONNECTIONS, log)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http", daemon=True)
        self._thread.start()
        log.info("http: serving kickstarts and node reports%s on %s:%d",
                 f", boot files from {self.boot_dir}" if self.boot_dir else "", self.host, self.port)
        if self.node_auth is not None and not self.node_auth.enforce:
            log.warning("http: node_auth is off (server.node_auth: false): kickstarts, boot queries, state "
                        "reports and host keys are served to and taken from any address, without tokens")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = self._thread = None
