"""HTTP service: kickstarts and node reports, with real HTTP requests on loopback."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import logging
import os
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from provision.errors import ProvisionError
from provision.host_keys import HostKeyKeeper, HostKeyStore, KeyedNode
from provision.services.http import HttpLimits, HttpServer, NodeAuth, byte_range
from provision.state import NodeState, StateStore
from tests.conftest import logged, require_tool


KERNEL = os.urandom(3 << 20) + b"end"  # an installer kernel stand-in: several sendfile rounds, odd size


@pytest.fixture
def served(tmp_path):
    ks = tmp_path / "kickstart"
    ks.mkdir()
    (ks / "n01.ks").write_text("%post\necho n01\n%end\n")
    (ks / "stale.ks").write_text("not a node any more\n")
    boot = tmp_path / "tftpboot" / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz").write_bytes(KERNEL)
    (boot / "empty").write_bytes(b"")
    (boot / "outside").symlink_to(tmp_path / "nodes.json")
    store = StateStore(tmp_path / "nodes.json")
    store.ensure(["n01", "n02"])
    server = HttpServer(ks, nodes=["n01", "n02"], on_report=store.report, host="127.0.0.1", port=0,
                        states=lambda: [r.to_json() for r in store.load().values()],
                        boot_of=lambda name: store.load()[name].boot, boot_dir=boot).start()
    server.store = store
    try:
        yield server
    finally:
        server.stop()


def request(server, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_kickstart_is_served(served):
    assert request(served, "/kickstart/n01.ks") == (200, b"%post\necho n01\n%end\n")


@pytest.mark.parametrize("path", ["/kickstart/n02.ks", "/kickstart/stale.ks", "/kickstart/../nodes.json",
                                  "/kickstart/%2e%2e/nodes.json", "/nodes.json", "/"])
def test_other_paths_are_not_found(served, path):
    assert request(served, path)[0] == 404


def test_report_is_stored(served):
    status, body = request(served, "/api/nodes/n01/state", {"state": "ready", "message": "listening"})
    assert (status, json.loads(body)) == (200, {"ok": True})
    record = served.store.load()["n01"]
    assert record.state is NodeState.READY and record.message == "listening"
    request(served, "/api/nodes/n02/state", {"state": "failed", "message": "dollyC exited with status 1"})
    assert served.store.load()["n02"].error == "dollyC exited with status 1"
    status, body = request(served, "/api/nodes")
    assert [n["state"] for n in json.loads(body)["nodes"]] == ["ready", "failed"]


def test_unknown_node_is_refused(served):
    status, body = request(served, "/api/nodes/n99/state", {"state": "done", "message": ""})
    assert status == 404 and "unknown node 'n99'" in json.loads(body)["error"]
    assert "n99" not in served.store.load()


@pytest.mark.parametrize("raw", [b'{"state": "finished"}', b'{"state": "waiting"}', b"not json", b"[1]",
                                 b'{"message": "no state"}', b'{"state": "done", "message": 5}'])
def test_bad_report_is_400(served, raw):
    assert request(served, "/api/nodes/n01/state", raw=raw)[0] == 400
    assert served.store.load()["n01"].state is NodeState.WAITING


def test_report_with_curl_as_the_kickstart_sends_it(served):
    curl = require_tool("curl")
    url = f"http://127.0.0.1:{served.port}/api/nodes/n01/state"
    subprocess.run([curl, "-fsS", "-m", "10", "-o", "/dev/null", "-H", "Content-Type: application/json",
                    "-d", '{"state": "done", "message": "cloned"}', url], check=True, timeout=20)
    assert served.store.load()["n01"].state is NodeState.DONE
    bad = subprocess.run([curl, "-fsS", "-m", "10", "-o", "/dev/null", "-d", '{"state": "done"}',
                          url.replace("n01", "n77")], capture_output=True, timeout=20)
    assert bad.returncode != 0


def test_bind_error_is_clear(served):
    with pytest.raises(ProvisionError, match="HTTP cannot bind"):
        HttpServer(served.kickstart_dir, [], print, host="127.0.0.1", port=served.port).start()


def test_installer_asks_whether_it_is_due_for_install(served):
    assert json.loads(request(served, "/api/nodes/n01/boot")[1]) == {"name": "n01", "boot": "install"}
    served.store.set_boot(["n01"], "local")
    assert json.loads(request(served, "/api/nodes/n01/boot")[1]) == {"name": "n01", "boot": "local"}
    assert request(served, "/api/nodes/n99/boot")[0] == 404


def raw_request(server, method, path, headers=None):
    """One request with the path exactly as given (no client-side normalisation of `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_boot_file_is_sent_whole_with_its_length(served, caplog):
    with caplog.at_level(logging.INFO, logger="provision.http"):
        status, headers, body = raw_request(served, "GET", "/boot/vmlinuz")
        assert status == 200 and body == KERNEL and headers["Content-Length"] == str(len(KERNEL))
        # the server logs once sendfile returns, which may be just after the client has read the last byte
        assert logged(caplog, f"http: sent boot/vmlinuz to 127.0.0.1: {len(KERNEL)} bytes in")
    assert raw_request(served, "GET", "/boot/empty")[::2] == (200, b"")


def test_a_reset_keep_alive_connection_is_a_log_line_not_a_traceback(served, caplog, capfd):
    """iPXE fetches the kernel and initrd on one kept-alive connection and resets it when the kernel starts."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    with caplog.at_level(logging.INFO, logger="provision.http"):
        conn.request("GET", "/boot/empty")
        assert conn.getresponse().read() == b""
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: a reset, while the server waits for the next request
        deadline = time.monotonic() + 5
        while "closed the connection" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "http: 127.0.0.1 closed the connection (Connection reset by peer)" in caplog.text
    assert "Traceback" not in capfd.readouterr().err


def test_boot_file_head_and_range(served):
    status, headers, body = raw_request(served, "HEAD", "/boot/vmlinuz")
    assert (status, headers["Content-Length"], body) == (200, str(len(KERNEL)), b"")
    status, headers, body = raw_request(served, "GET", "/boot/vmlinuz", {"Range": "bytes=1000-"})
    assert status == 206 and body == KERNEL[1000:]
    assert headers["Content-Range"] == f"bytes 1000-{len(KERNEL) - 1}/{len(KERNEL)}"
    assert raw_request(served, "GET", "/boot/vmlinuz", {"Range": "bytes=5-9"})[::2] == (206, KERNEL[5:10])
    assert raw_request(served, "GET", "/boot/vmlinuz", {"Range": f"bytes={len(KERNEL)}-"})[0] == 416


def test_boot_file_over_curl_keeps_the_connection_for_the_next(served):
    curl = require_tool("curl")
    url = f"http://127.0.0.1:{served.port}/boot/vmlinuz"
    out = subprocess.run([curl, "-fsS", "-m", "20", url, url], capture_output=True, timeout=30, check=True).stdout
    assert out == KERNEL + KERNEL


@pytest.mark.parametrize("path", ["/boot/initrd.img", "/boot/", "/boot/nothing/../vmlinuz.gz"])
def test_missing_boot_file_is_404(served, path):
    assert raw_request(served, "GET", path)[0] == 404


@pytest.mark.parametrize("path", ["/boot/../kickstart/n01.ks", "/boot/%2e%2e/nodes.json", "/boot/..%2fnodes.json",
                                  "/boot/outside", "/boot//etc/passwd", "/boot/%2fetc%2fpasswd"])
def test_boot_file_path_escape_is_refused(served, path):
    status, _, body = raw_request(served, "GET", path)
    assert status == 403 and b"outside the boot files" in body


def test_no_boot_files_without_a_boot_dir(tmp_path):
    server = HttpServer(tmp_path, nodes=[], on_report=print, host="127.0.0.1", port=0).start()
    try:
        assert raw_request(server, "GET", "/boot/vmlinuz")[0] == 404
    finally:
        server.stop()


@pytest.mark.parametrize("header, expected", [
    (None, (0, 100)), ("bytes=0-", (0, 100)), ("bytes=10-19", (10, 10)), ("bytes=90-200", (90, 10)),
    ("bytes=-30", (70, 30)), ("bytes=100-", None), ("bytes=20-10", None), ("bytes=-0", None),
    ("bytes=1-2,5-6", (0, 100)), ("lines=1-2", (0, 100)),
])
def test_byte_range(header, expected):
    assert byte_range(header, 100) == expected


def test_boot_storm_every_client_gets_the_whole_file(served, tmp_path):
    """48 curl clients at once, each from its own address (a cluster powered on together): each gets every byte."""
    curl = require_tool("curl")
    url = f"http://127.0.0.1:{served.port}/boot/vmlinuz"
    clients = [subprocess.Popen([curl, "-fsS", "-m", "60", "--interface", f"127.0.1.{i + 1}",
                                 "-o", str(tmp_path / f"k{i}"), url]) for i in range(48)]
    assert [c.wait(timeout=90) for c in clients] == [0] * 48
    assert all((tmp_path / f"k{i}").read_bytes() == KERNEL for i in range(48))


def get_from(server, path: str, source: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_host_keys_go_only_to_their_node(tmp_path, caplog):
    """n01 is 127.0.0.1 (the test's own address), n02 is 127.0.0.2, n03 is not being installed."""
    require_tool("ssh-keygen")
    store = HostKeyStore(tmp_path / "host-keys")
    keeper = HostKeyKeeper(store, tmp_path / "known_hosts", [KeyedNode("n01", "127.0.0.1", "root@n01"),
                                                             KeyedNode("n02", "127.0.0.2", "root@n02")])
    server = HttpServer(tmp_path, nodes=["n01", "n02", "n03"], on_report=lambda *a: None, host="127.0.0.1",
                        port=0, host_key=keeper.key_file,
                        node_auth=NodeAuth({"n01": "127.0.0.1", "n02": "127.0.0.2", "n03": "127.0.0.3"})).start()
    caplog.set_level(logging.INFO, "provision.http")
    try:
        base = "/api/nodes/{}/host-keys/{}"
        status, body = get_from(server, base.format("n01", "ssh_host_rsa_key"), "127.0.0.1")
        assert status == 200 and body == (store.node_dir("n01") / "ssh_host_rsa_key").read_bytes()
        assert body.startswith(b"-----BEGIN OPENSSH PRIVATE KEY")
        assert "sent ssh_host_rsa_key of n01 to 127.0.0.1" in caplog.text
        status, body = get_from(server, base.format("n02", "ssh_host_rsa_key"), "127.0.0.1")
        assert status == 403 and b"the host keys of n02 go only to 127.0.0.2" in body
        assert get_from(server, base.format("n02", "ssh_host_ed25519_key.pub"), "127.0.0.2")[0] == 200
        status, body = get_from(server, base.format("n01", "authorized_keys"), "127.0.0.1")
        assert status == 404 and b"no host key file 'authorized_keys'" in body
        status, body = get_from(server, base.format("n03", "ssh_host_rsa_key"), "127.0.0.3")
        assert status == 503 and b"n03 is not being installed" in body
        assert get_from(server, base.format("n04", "ssh_host_rsa_key"), "127.0.0.1")[0] == 404
    finally:
        server.stop()
        keeper.close()


def test_an_idle_connection_the_server_gives_up_on_is_reset_not_half_closed(tmp_path):
    """GRUB jumps into its kernel with its connection open: the server ends it with a reset after
    request_seconds, so no unacknowledged FIN keeps the address and port pair the machine's next boot uses."""
    server = HttpServer(tmp_path, nodes=[], on_report=print, host="127.0.0.1", port=0,
                        limits=HttpLimits(request_seconds=0.3)).start()
    try:
        ss = require_tool("ss")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            try:
                assert client.recv(1) == b""  # the server gave up on the request
            except ConnectionResetError:
                pass
            time.sleep(0.2)
            # a plain close would leave the server's end in FIN-WAIT-2 for as long as this client stays open
            ours = subprocess.run([ss, "-Htan", f"sport = :{server.port}"], capture_output=True, text=True).stdout
            assert [line.split()[0] for line in ours.splitlines()] == ["LISTEN"], ours
    finally:
        server.stop()


def test_many_clients_fetch_a_diskless_root_in_ranges_and_verify_it(tmp_path):
    """A boot storm of diskless nodes: 32 clients at once, each fetching the squashfs in four Range requests
    on one connection, get the bytes whose sha256 the server publishes."""
    root = os.urandom(8 << 20) + b"squashfs"
    boot = tmp_path / "boot"
    (boot / "diskless").mkdir(parents=True)
    (boot / "diskless" / "root.squashfs").write_bytes(root)
    (boot / "diskless" / "root.squashfs.sha256").write_text(f"{hashlib.sha256(root).hexdigest()}  root.squashfs\n")
    server = HttpServer(tmp_path, nodes=[], on_report=print, host="127.0.0.1", port=0, boot_dir=boot,
                        limits=HttpLimits(per_client=64)).start()  # every client is 127.0.0.1

    def fetch(_: int) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.request("GET", "/boot/diskless/root.squashfs.sha256")
            published = conn.getresponse().read().split()[0].decode()
            quarter, parts = len(root) // 4, []
            for i in range(4):
                last = len(root) - 1 if i == 3 else (i + 1) * quarter - 1
                conn.request("GET", "/boot/diskless/root.squashfs", headers={"Range": f"bytes={i * quarter}-{last}"})
                resp = conn.getresponse()
                assert resp.status == 206
                parts.append(resp.read())
            return hashlib.sha256(b"".join(parts)).hexdigest() == published
        finally:
            conn.close()

    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            assert all(pool.map(fetch, range(32)))
    finally:
        server.stop()
