"""HTTP trust on the install network: NodeAuth (a node's requests bound to its address and token) and
HttpLimits (request line, headers, body, slow and flooding clients), with real servers and sockets on loopback.

Every client binds its own loopback source address: n01 is 127.0.0.1, n02 127.0.0.2, n03 127.0.0.3 (on the
inventory, not installing); anything else in 127.0.0.0/8 is a stranger on the install network.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import threading
import time

import pytest

from provision.credentials import RunCredentials
from provision.services.http import MAX_BODY, TOKEN_HEADER, HttpLimits, HttpServer, NodeAuth
from provision.state import NodeState, StateStore
from tests.conftest import logged

ADDRESSES = {"n01": "127.0.0.1", "n02": "127.0.0.2", "n03": "127.0.0.3"}
TOKENS = {"n01": "t1" * 16, "n02": "t2" * 16}  # n03 is not being installed: no token, no credentials
RING_SECRET = "r" * 32
STRANGER = "127.0.0.9"
KICKSTART = "%post\necho n01\n%end\n"
IDENTITY = "set -e\necho n01 > \"$1/etc/hostname\"\n"  # n01 is in diskless boot, n02 is not


class Cluster:
    """One HttpServer over a state store; `reports` are the calls that reached on_report."""

    def __init__(self, tmp_path, node_auth: NodeAuth | None, limits: HttpLimits, boot_dir=None):
        ks = tmp_path / "kickstart"
        ks.mkdir(exist_ok=True)
        (ks / "n01.ks").write_text(KICKSTART)
        (ks / "n02.ks").write_text("%post\necho n02\n%end\n")
        (ks / "n01.identity").write_text(IDENTITY)
        self.store = StateStore(tmp_path / "nodes.json")
        self.store.ensure(["n01", "n02", "n03"])
        self.credentials = RunCredentials(RING_SECRET, dict(TOKENS))
        self.reports: list[tuple] = []
        self.server = HttpServer(ks, nodes=["n01", "n02", "n03"], on_report=self.report, host="127.0.0.1", port=0,
                                 states=lambda: [r.to_json() for r in self.store.load().values()],
                                 boot_of=lambda name: str(self.store.load()[name].boot), boot_dir=boot_dir,
                                 credentials=self.credentials.deliver, node_auth=node_auth, limits=limits)

    def report(self, name: str, state: NodeState, message: str) -> None:
        self.reports.append((name, state, message))
        self.store.report(name, state, message)

    def state(self, name: str) -> NodeState:
        return self.store.load()[name].state

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
def cluster_of(tmp_path):
    """Start a Cluster with the given NodeAuth (default: enforced, with the nodes' tokens) and limits."""
    started = []

    def make(node_auth: NodeAuth | None = NodeAuth(ADDRESSES, TOKENS), limits: HttpLimits = HttpLimits(),
             boot_dir=None) -> Cluster:
        cluster = Cluster(tmp_path, node_auth, limits, boot_dir)
        cluster.server.start()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.server.stop()


@pytest.fixture
def cluster(cluster_of) -> Cluster:
    return cluster_of()


def call(cluster: Cluster, method: str, path: str, source: str = "127.0.0.1", body: object = None,
         headers: dict | None = None, timeout: float = 10) -> tuple[int, object]:
    """One request from `source`: (status, the JSON reply, or the raw body when it is not JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=timeout, source_address=(source, 0))
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.getheader("Content-Type") == "application/json" and method != "HEAD":
            return resp.status, json.loads(raw)
        return resp.status, raw
    finally:
        conn.close()


def token(cluster: Cluster, name: str = "n01") -> dict:
    return {TOKEN_HEADER: TOKENS[name]}


def warnings_naming(caplog, address: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "provision.http" and r.levelno >= logging.WARNING and address in r.getMessage()]


# --- NodeAuth: a node's requests from its own address only ---

ROUTES = {  # route -> (method, path, body, needs the token, the 403 message for n01 asked from elsewhere)
    "kickstart": ("GET", "/kickstart/n01.ks", None, False, "the kickstart of n01 goes only to 127.0.0.1"),
    "boot query": ("GET", "/api/nodes/n01/boot", None, False, "the boot query of n01 is answered only to 127.0.0.1"),
    "report": ("POST", "/api/nodes/n01/state", {"state": "ready", "message": "listening"}, True,
               "reports for n01 come only from 127.0.0.1"),
    "credentials": ("GET", "/api/nodes/n01/credentials", None, False, "the credentials of n01 go only to 127.0.0.1"),
    "identity": ("GET", "/api/nodes/n01/identity", None, False, "the identity of n01 goes only to 127.0.0.1"),
}


@pytest.mark.parametrize("route", ROUTES)
def test_a_node_request_from_another_address_is_403_and_changes_nothing(cluster, caplog, route):
    method, path, body, tokened, message = ROUTES[route]
    caplog.set_level(logging.INFO, "provision.http")
    headers = token(cluster)  # the right token: the address alone is what is refused
    for stranger in (STRANGER, "127.0.0.2"):  # an unknown host, and another node
        status, reply = call(cluster, method, path, source=stranger, body=body, headers=headers)
        assert (status, reply) == (403, {"ok": False, "error": message})
        assert warnings_naming(caplog, stranger) == [f"http: {stranger} {method} {path}: {message}"]
    assert cluster.reports == [] and cluster.state("n01") is NodeState.WAITING
    status, reply = call(cluster, method, path, body=body, headers=headers if tokened else None)
    assert status == 200  # the node itself: not used up or blocked by the strangers' tries
    expected = {"kickstart": KICKSTART.encode(), "boot query": {"name": "n01", "boot": "install"},
                "report": {"ok": True}, "identity": IDENTITY.encode(),
                "credentials": {"name": "n01", "token": TOKENS["n01"], "ring_secret": RING_SECRET}}[route]
    assert reply == expected
    if route == "report":
        assert cluster.reports == [("n01", NodeState.READY, "listening")]
        assert cluster.state("n01") is NodeState.READY


def test_the_identity_of_a_node_not_in_diskless_boot_is_404(cluster):
    status, reply = call(cluster, "GET", "/api/nodes/n02/identity", source="127.0.0.2")
    assert (status, reply) == (404, {"ok": False, "error": "no identity for node 'n02' (not in diskless boot)"})
    assert call(cluster, "GET", "/api/nodes/n09/identity")[0] == 404


@pytest.mark.parametrize("headers, message", [
    ({}, f"the state report of n01 needs its {TOKEN_HEADER} header"),
    ({TOKEN_HEADER: "t2" * 16}, f"wrong {TOKEN_HEADER} for the state report of n01"),  # n02's token
    ({TOKEN_HEADER: "t1" * 16 + "x"}, f"wrong {TOKEN_HEADER} for the state report of n01"),
    ({TOKEN_HEADER: ""}, f"wrong {TOKEN_HEADER} for the state report of n01"),
    ({TOKEN_HEADER: "t1" * 15 + "\xe9\xff"}, f"wrong {TOKEN_HEADER} for the state report of n01"),  # not ASCII
])
def test_a_report_without_its_token_is_403_and_changes_nothing(cluster, caplog, headers, message):
    caplog.set_level(logging.INFO, "provision.http")
    status, reply = call(cluster, "POST", "/api/nodes/n01/state", body={"state": "failed", "message": "forged"},
                         headers=headers)
    assert (status, reply) == (403, {"ok": False, "error": message})
    assert cluster.reports == [] and cluster.state("n01") is NodeState.WAITING
    assert len(warnings_naming(caplog, "127.0.0.1")) == 1
    status, reply = call(cluster, "POST", "/api/nodes/n01/state", body={"state": "cloning", "message": "m"},
                         headers=token(cluster))
    assert (status, reply) == (200, {"ok": True}) and cluster.state("n01") is NodeState.CLONING


def test_credentials_are_delivered_once(cluster):
    assert call(cluster, "HEAD", "/api/nodes/n01/credentials")[0] == 404  # a HEAD does not use them up
    status, reply = call(cluster, "GET", "/api/nodes/n01/credentials")
    assert (status, reply) == (200, {"name": "n01", "token": "t1" * 16, "ring_secret": "r" * 32})
    status, reply = call(cluster, "GET", "/api/nodes/n01/credentials")
    assert (status, reply) == (403, {"ok": False,
                                     "error": "the credentials of n01 were fetched before in this install"})
    assert call(cluster, "GET", "/api/nodes/n02/credentials", source="127.0.0.2")[0] == 200  # each node its own
    status, reply = call(cluster, "GET", "/api/nodes/n03/credentials", source="127.0.0.3")
    assert (status, reply) == (404, {"ok": False, "error": "n03 is not being installed: no credentials"})
    assert call(cluster, "GET", "/api/nodes/n99/credentials")[0] == 404


def test_without_node_auth_credentials_go_to_nobody(cluster_of):
    cluster = cluster_of(node_auth=None)
    status, reply = call(cluster, "GET", "/api/nodes/n01/credentials")
    assert (status, reply) == (403, {"ok": False, "error": "no address of n01 is known: its credentials is refused"})
    assert call(cluster, "GET", "/kickstart/n01.ks", source=STRANGER)[0] == 200  # no addresses: nothing else bound


def test_node_auth_off_lets_another_address_in(cluster_of, caplog):
    caplog.set_level(logging.INFO, "provision.http")
    cluster = cluster_of(node_auth=NodeAuth(ADDRESSES, {"n01": "t1" * 16}, enforce=False))
    assert "http: node_auth is off" in caplog.text
    status, reply = call(cluster, "POST", "/api/nodes/n01/state", source=STRANGER,
                         body={"state": "done", "message": "from anywhere"})  # no token either
    assert (status, reply) == (200, {"ok": True})
    assert cluster.reports == [("n01", NodeState.DONE, "from anywhere")] and cluster.state("n01") is NodeState.DONE
    assert call(cluster, "GET", "/kickstart/n01.ks", source=STRANGER) == (200, KICKSTART.encode())
    assert call(cluster, "GET", "/api/nodes/n01/boot", source=STRANGER)[0] == 200


def test_a_deeply_nested_report_body_is_400_not_a_traceback(cluster, caplog, capfd):
    caplog.set_level(logging.INFO, "provision.http")
    status, reply = call(cluster, "POST", "/api/nodes/n01/state", body=b"[" * 60000, headers=token(cluster))
    assert (status, reply) == (400, {"ok": False, "error": 'body must be JSON {"state": ..., "message": ...}'})
    body = b'{"state": "ready", "message": ' + b"[" * 30000 + b"]" * 30000 + b"}"  # nested inside a valid shape
    assert call(cluster, "POST", "/api/nodes/n01/state", body=body, headers=token(cluster))[0] == 400
    assert cluster.reports == [] and cluster.state("n01") is NodeState.WAITING
    assert call(cluster, "GET", "/kickstart/n01.ks")[0] == 200
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- HttpLimits: what one client can hold ---

def raw_exchange(cluster: Cluster, data: bytes, source: str = "127.0.0.1", timeout: float = 10) -> bytes:
    """Send `data` as it is, read until the server closes (or `timeout`): what came back."""
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        reply = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # the unread rest of the request: a reset after the reply
                break
            if not chunk:
                break
            reply += chunk
        return reply


REQUEST_LINE, HEADER_LINE, HEADERS = HttpLimits().request_line, HttpLimits().header_line, HttpLimits().headers
OVERSIZED = {
    "request line": (b"GET /" + b"a" * REQUEST_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "header line": (b"GET /kickstart/n01.ks HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * HEADER_LINE + b"\r\n\r\n", 431),
    "header count": (b"GET /kickstart/n01.ks HTTP/1.1\r\n"
                     + b"".join(b"X-H%d: v\r\n" % i for i in range(HEADERS + 1)) + b"\r\n", 431),
    "body": (b"POST /api/nodes/n01/state HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"X-Provision-Token: " + b"t1" * 16 + b"\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
             + b'{"state": "done", "message": "' + b"m" * (MAX_BODY - 30) + b'"}', 413),
}


@pytest.mark.parametrize("what", OVERSIZED)
def test_an_oversized_request_is_refused_and_the_server_serves_on(cluster, what):
    data, status = OVERSIZED[what]
    reply = raw_exchange(cluster, data)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:100]
    assert cluster.reports == [] and cluster.state("n01") is NodeState.WAITING
    assert call(cluster, "GET", "/kickstart/n01.ks") == (200, KICKSTART.encode())


def test_requests_just_within_the_limits_are_served(cluster):
    """The other side of the oversized cases: the limits refuse only what is over them."""
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(HEADERS - 2))
    reply = raw_exchange(cluster, b"GET /kickstart/n01.ks?" + b"q" * (REQUEST_LINE - 40) + b" HTTP/1.1\r\n"
                         + b"Host: x\r\nConnection: close\r\n" + headers + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(KICKSTART.encode())
    message = b"m" * (MAX_BODY - 100)
    body = b'{"state": "ready", "message": "' + message + b'"}'
    status, reply = call(cluster, "POST", "/api/nodes/n01/state", body=body, headers=token(cluster))
    assert status == 200 and cluster.reports == [("n01", NodeState.READY, message.decode())]


def trickle(cluster: Cluster, source: str, data: bytes, every: float, result: dict) -> None:
    """Send `data` a byte at a time, `every` seconds apart, watching for the server's reply or close:
    result["cut"] (seconds after the first byte when the server closed) or result["answer"] (its reply)."""
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10, source_address=(source, 0)) as sock:
        began = time.monotonic()
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
                readable = select.select([sock], [], [], every)[0]
                reply = sock.recv(4096) if readable else None
            except (BrokenPipeError, ConnectionResetError):
                reply = b""
            if reply == b"":
                result["cut"] = time.monotonic() - began
                return
            if reply:
                result["answer"] = reply
                return
        result["answer"] = b"(all sent, no reply)"


def test_a_slow_client_is_cut_after_request_seconds_and_holds_up_nobody(cluster_of, caplog):
    caplog.set_level(logging.INFO, "provision.http")
    cluster = cluster_of(limits=HttpLimits(request_seconds=1))
    result: dict = {}
    request = b"GET /api/nodes HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 10 + b"\r\n\r\n"  # ~10 s at 0.2 s a byte
    slow = threading.Thread(target=trickle, args=(cluster, "127.0.0.5", request, 0.2, result))
    slow.start()
    try:
        time.sleep(0.3)
        began = time.monotonic()
        status, reply = call(cluster, "GET", "/api/nodes")  # while the slow one trickles
        assert status == 200 and [n["name"] for n in reply["nodes"]] == ["n01", "n02", "n03"]
        assert time.monotonic() - began < 0.5 and not result  # served at once, the slow one still connected
    finally:
        slow.join(15)
    assert "answer" not in result, result
    assert 0.9 <= result["cut"] <= 2.5, result
    assert logged(caplog, "http: 127.0.0.5 too slow (the request was not in within 1 s): connection closed")


def test_a_stalled_reply_is_cut_after_send_idle_seconds(cluster_of, tmp_path, caplog):
    """A client that asks for a big boot file and stops reading: the server gives up after send_idle_seconds."""
    caplog.set_level(logging.INFO, "provision.http")
    boot = tmp_path / "boot"
    boot.mkdir()
    size = 64 << 20
    with open(boot / "big", "wb") as f:
        f.truncate(size)  # sparse: no 64 MiB written
    cluster = cluster_of(limits=HttpLimits(send_idle_seconds=1), boot_dir=boot)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", cluster.port))
        sock.sendall(b"GET /boot/big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
        began = time.monotonic()  # and read no more
        assert logged(caplog, "http: boot/big to 127.0.0.1 cut (timed out)", within=15)
        assert 0.8 <= time.monotonic() - began < 10
        received = 0
        deadline = time.monotonic() + 20
        try:
            while (chunk := sock.recv(1 << 20)) and time.monotonic() < deadline:
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < size
    assert call(cluster, "GET", "/kickstart/n01.ks")[0] == 200


def hold(cluster: Cluster, source: str, count: int) -> list[http.client.HTTPConnection]:
    """`count` kept-alive connections from `source`, each admitted (it got an answer) and left open."""
    held = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10, source_address=(source, 0))
        conn.request("GET", "/api/nodes")
        resp = conn.getresponse()
        assert resp.status == 200 and not resp.will_close
        resp.read()
        held.append(conn)
    return held


def refused(cluster: Cluster, source: str) -> bool:
    """Whether a connection from `source` is closed without an answer."""
    try:
        status, _ = call(cluster, "GET", "/api/nodes", source=source, timeout=5)
    except ConnectionError:  # closed (RemoteDisconnected), reset, or the request could not be sent
        return True
    assert status == 200
    return False


def served_again(cluster: Cluster, source: str, within: float = 5.0) -> bool:
    """Whether `source` is served within `within` seconds (its closed connections are released as the server
    notices them)."""
    deadline = time.monotonic() + within
    while refused(cluster, source):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_connection_flood_from_one_address_is_capped_per_client(cluster_of, caplog):
    caplog.set_level(logging.INFO, "provision.http")
    cluster = cluster_of(limits=HttpLimits(per_client=4, connections=8))
    flood = hold(cluster, "127.0.0.5", 4)
    try:
        assert [refused(cluster, "127.0.0.5") for _ in range(3)] == [True] * 3
        assert not refused(cluster, "127.0.0.6")  # another address is served meanwhile
        assert not refused(cluster, "127.0.0.1")
        for conn in flood:  # the held ones still work
            conn.request("GET", "/api/nodes")
            assert conn.getresponse().read()
        refusals = [m for m in warnings_naming(caplog, "127.0.0.5") if "refusing" in m]
        assert refusals == ["http: refusing connections (4 connections open from 127.0.0.5, its cap): "
                            "first from 127.0.0.5"]  # once per run, not per connection
    finally:
        for conn in flood:
            conn.close()
    assert served_again(cluster, "127.0.0.5")
    assert "http: accepting connections from 127.0.0.5 again, after refusing" in caplog.text


def test_connections_are_capped_in_total(cluster_of, caplog):
    caplog.set_level(logging.INFO, "provision.http")
    cluster = cluster_of(limits=HttpLimits(per_client=4, connections=8))
    flood = hold(cluster, "127.0.0.5", 4) + hold(cluster, "127.0.0.6", 4)
    try:
        assert refused(cluster, "127.0.0.7") and refused(cluster, "127.0.0.1")
        assert "http: refusing connections (8 connections open, the cap): first from 127.0.0.7" in caplog.text
        for conn in flood[:4]:
            conn.close()
        assert served_again(cluster, "127.0.0.7")
        assert not refused(cluster, "127.0.0.1")
    finally:
        for conn in flood:
            conn.close()
