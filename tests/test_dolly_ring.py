"""The ring with real dollyS/dollyC processes on loopback (clients on distinct 127.0.0.x addresses)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import shutil
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
CHUNK = 256 << 10


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dolly(tool: str, *args, env=None, stdlib_only=False, **kw) -> subprocess.Popen:
    """dollyS or dollyC; stdlib_only: on this Python without its site-packages (no blake3), as on an installer
    whose initrd does not ship it."""
    python = [sys.executable, "-S"] if stdlib_only else [sys.executable]
    return subprocess.Popen([*python, "-m", "dolly_core.cli", tool, *map(str, args)], cwd=REPO,
                            env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True, **kw)


class Ring:
    """n clients on 127.0.0.2.., one server on 127.0.0.1, each client with its own root dir."""

    def __init__(self, tmp: Path, n: int, files: list[tuple[Path, str, str]], env=None):
        self.tmp, self.env = tmp, env or {}
        self.addrs = [f"127.0.0.{i + 2}:{free_port(f'127.0.0.{i + 2}')}" for i in range(n)]
        self.roots = [tmp / f"node{i + 1}" for i in range(n)]
        server = f"127.0.0.1:{free_port('127.0.0.1')}"
        lines = [f"iofiles {len(files)}", *(f"{src} {op} {out}" for src, op, out in files), f"server {server}",
                 f"firstclient {self.addrs[0]}", f"lastclient {self.addrs[-1]}", f"clients {n}", *self.addrs,
                 "endconfig"]
        self.config = tmp / "dolly.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.report_path = tmp / "report.json"
        self.progress_path = tmp / "progress.json"
        self.clients: list[subprocess.Popen] = []

    def start_clients(self, *extra, env=None) -> None:
        self.clients = [dolly("client", "-v", "--listen", a, "--root", r, *extra, env={**self.env, **(env or {})})
                        for a, r in zip(self.addrs, self.roots)]

    def start_server(self, *extra, env=None) -> subprocess.Popen:
        return dolly("server", "-v", "-f", self.config, "--chunk-size", CHUNK, "--json", self.report_path,
                     "--progress", self.progress_path, "--timeout", 4, *extra, env={**self.env, **(env or {})})

    def run(self, *extra, env=None) -> tuple[int, str]:
        server = self.start_server(*extra, env=env)
        _, err = server.communicate(timeout=90)
        return server.returncode, err

    def finish_clients(self) -> list[tuple[int, str]]:
        return [(c.wait(timeout=60), c.stderr.read()) for c in self.clients]

    def report(self) -> dict:
        return json.loads(self.report_path.read_text())

    def progress(self) -> dict:
        return json.loads(self.progress_path.read_text())

    def stop(self) -> None:
        for c in self.clients:
            if c.poll() is None:
                c.kill()
                c.wait()


@pytest.fixture
def rings():
    made: list[Ring] = []

    def make(*args, **kw) -> Ring:
        made.append(Ring(*args, **kw))
        return made[-1]
    yield make
    for r in made:
        r.stop()


def make_image(path: Path, size: int) -> Path:
    """Random data with a zero run in the middle (sent as a hole)."""
    zeros = min(size // 4, 1 << 20)
    path.write_bytes(os.urandom((size - zeros) // 2) + bytes(zeros) + os.urandom(size - zeros - (size - zeros) // 2))
    return path


def test_one_client(tmp_path, rings):
    image = make_image(tmp_path / "disk.img", 3_000_001)
    ring = rings(tmp_path, 1, [(image, ">", "/disk.img")])
    ring.start_clients()
    rc, err = ring.run()
    assert rc == 0, err
    assert ring.finish_clients()[0][0] == 0
    assert sha(ring.roots[0] / "disk.img") == sha(image)
    report = ring.report()
    assert report["files"][0]["sha256"] == sha(image) and report["seconds"] > 0
    assert report["tag"] == "blake3" and report["digest"] == "sha256"  # the defaults where dollyS has blake3
    node = report["nodes"][0]
    assert node["ok"] and node["error"] is None and node["bytes"] == 3_000_001
    assert node["files"] == [{"path": "/disk.img", "sha256": sha(image)}]


def test_eight_clients_several_files_and_cooking(tmp_path, rings):
    image = make_image(tmp_path / "disk.img", 5_000_000)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    text = os.urandom(300_000).hex().encode()
    (tmp_path / "data.gz").write_bytes(gzip.compress(text))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("etc/hostname", b"golden\n"), ("boot/vmlinuz", os.urandom(700_000))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "boot.tar.gz").write_bytes(buf.getvalue())
    files = [(image, ">", "/dev/sda"), (empty, ">", "/empty"), (tmp_path / "data.gz", ">>", "/data/file"),
             (tmp_path / "boot.tar.gz", ">>", "/sysroot")]
    ring = rings(tmp_path, 8, files)
    ring.start_clients()
    rc, err = ring.run()
    assert rc == 0, err
    assert [r for r, _ in ring.finish_clients()] == [0] * 8
    for root in ring.roots:
        assert sha(root / "dev/sda") == sha(image)
        assert (root / "empty").read_bytes() == b""
        assert (root / "data/file").read_bytes() == text
        assert (root / "sysroot/etc/hostname").read_bytes() == b"golden\n"
        assert (root / "sysroot/boot/vmlinuz").stat().st_size == 700_000
    report = ring.report()
    total = sum(f["bytes"] for f in report["files"])
    assert [f["sha256"] for f in report["files"]] == [sha(src) for src, _, _ in files]
    # every verdict whole, as the members made them (a cooked file's sha256 is that of the compressed stream)
    assert [{k: v for k, v in n.items() if k != "seconds"} for n in report["nodes"]] == [
        {"name": a, "address": a, "ok": True, "error": None, "bytes": total,
         "files": [{"path": out, "sha256": sha(src)} for src, _, out in files]} for a in ring.addrs]
    seconds = [n["seconds"] for n in report["nodes"]]
    assert all(0 < s <= report["seconds"] for s in seconds)
    # END reached the tail with the verified members' seconds only (protocol 4: dolly_core/verdicts.py)
    from dolly_core import protocol as p
    server = {"sha256": [f["sha256"] for f in report["files"]], "digest": ["0" * 64] * 4}  # tag lists: SHA-256 hex
    assert report["end_bytes"] == len(p.control(p.Kind.END, {"server": server, "verdicts": {},
                                                             "verified": f"1:{','.join(map(repr, seconds))}"}))
    final = ring.progress()
    assert final["total_bytes"] == total and final["seconds"] == report["seconds"]
    assert [(n["name"], n["address"], n["state"], n["bytes"], n["error"]) for n in final["nodes"]] == [
        (a, a, "done", total, None) for a in ring.addrs]
    assert all(n["mb_per_s"] > 0 for n in final["nodes"])


def test_tar_path_escape_is_refused(tmp_path, rings):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    (tmp_path / "evil.tar.gz").write_bytes(buf.getvalue())
    ring = rings(tmp_path, 1, [(tmp_path / "evil.tar.gz", ">>", "/root")])
    ring.start_clients()
    rc, _ = ring.run()
    assert rc == 1
    assert not (tmp_path / "escaped").exists() and not (ring.roots[0] / "escaped").exists()
    assert "untar" in ring.report()["nodes"][0]["error"]
    assert ring.finish_clients()[0][0] == 1


def wait_for_bytes(path: Path, size: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not (path.exists() and path.stat().st_size >= size):
        assert proc.poll() is None and time.monotonic() < deadline, "the transfer never got going"
        time.sleep(0.02)


@pytest.mark.parametrize("victims, secret", [([0], ""), ([2], ""), ([3], ""), ([1, 2], ""), ([1, 2], "s3cret")],
                         ids=["first", "middle", "last", "two-adjacent", "two-adjacent-authenticated"])
def test_killed_clients_are_short_cut(tmp_path, rings, victims, secret):
    """With a secret, the short-cut's new connection has keys of its own and the window's pieces keep their tags."""
    image = make_image(tmp_path / "disk.img", 12 << 20)
    ring = rings(tmp_path, 4, [(image, ">", "/disk.img")], env={"DOLLY_SECRET": secret})
    ring.start_clients()
    server = ring.start_server("--rate", 6e6)
    for v in victims:
        wait_for_bytes(ring.roots[v] / "disk.img", 2 << 20, server)
        ring.clients[v].send_signal(signal.SIGKILL)
    live = ring.progress()  # replaced atomically while the run goes on: always whole JSON
    assert live["total_bytes"] == 12 << 20 and [n["name"] for n in live["nodes"]] == ring.addrs
    _, err = server.communicate(timeout=90)
    assert server.returncode == 1, err
    results = ring.finish_clients()
    report = ring.report()
    final = ring.progress()["nodes"]
    for i, node in enumerate(report["nodes"]):
        if i in victims:
            assert not node["ok"] and "dead" in node["error"], node
            assert node["name"] in err
            assert final[i]["state"] == "dead" and final[i]["error"] == node["error"]
        else:
            assert node["ok"], node
            assert results[i][0] == 0, results[i][1]
            assert sha(ring.roots[i] / "disk.img") == sha(image)
            assert final[i]["state"] == "done" and final[i]["bytes"] == 12 << 20


def test_server_death_makes_every_client_fail(tmp_path, rings):
    image = make_image(tmp_path / "disk.img", 8 << 20)
    ring = rings(tmp_path, 3, [(image, ">", "/disk.img")])
    ring.start_clients()
    server = ring.start_server("--rate", 4e6)
    wait_for_bytes(ring.roots[2] / "disk.img", 1 << 20, server)
    server.kill()
    server.wait()
    for rc, err in ring.finish_clients():
        assert rc == 1
        assert "server is gone" in err, err


def test_garbage_on_a_client_port_is_dropped(tmp_path, rings):
    image = make_image(tmp_path / "disk.img", 1_000_000)
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")])
    ring.start_clients()
    host, port = ring.addrs[1].split(":")
    for _ in range(30):
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(200))
            break
        except ConnectionRefusedError:
            time.sleep(0.1)
    rc, err = ring.run()
    assert rc == 0, err
    results = ring.finish_clients()
    assert results[1][0] == 0 and "dropped connection from 127.0.0.1" in results[1][1]
    assert sha(ring.roots[1] / "disk.img") == sha(image)


def test_a_member_of_another_protocol_version_is_refused_by_name(tmp_path, rings):
    """An old dollyC as the second node is short-cut, its predecessor naming both versions; an old dialer
    at a dollyC is dropped, named the same way."""
    from dolly_core import protocol as p

    old = p.MAGIC[:-1] + bytes([p.MAGIC[-1] - 1])
    image = make_image(tmp_path / "disk.img", 1_000_000)
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")])
    host, port = ring.addrs[1].split(":")
    old_node = socket.create_server((host, int(port)))

    def greet_as_old() -> None:
        conn, _ = old_node.accept()
        with conn:
            conn.sendall(old + bytes(1 + p.NONCE_LEN))
            conn.recv(1024)
    threading.Thread(target=greet_as_old, daemon=True).start()
    ring.clients = [dolly("client", "-v", "--listen", ring.addrs[0], "--root", ring.roots[0])]
    host, port = ring.addrs[0].split(":")
    for _ in range(50):
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                hello = s.recv(p.HELLO_LEN)
                s.sendall(old + hello[len(old):len(old) + 1 + p.NONCE_LEN] + bytes(p.MAC_LEN))
                s.recv(1024)
            break
        except ConnectionRefusedError:
            time.sleep(0.1)
    try:
        rc, err = ring.run()
    finally:
        old_node.close()
    [(code, client_err)] = ring.finish_clients()
    message = f"the peer speaks dolly protocol version {old[-1]}, we speak version {p.MAGIC[-1]}"
    assert rc == 1 and code == 0, (err, client_err)
    assert "dropped connection from 127.0.0.1" in client_err and message in client_err
    first, second = ring.report()["nodes"]
    assert first["ok"] and not second["ok"] and message in second["error"]


def test_a_member_that_cannot_check_the_runs_tags_refuses_it_by_name(tmp_path, rings):
    """A dollyC on a Python without blake3 (as on an installer whose initrd lacks it) refuses a BLAKE3 run,
    saying why in its log and to its predecessor, which short-cuts it; the same ring with --tag sha256 runs
    on it, authenticated."""
    image = make_image(tmp_path / "disk.img", 1_000_000)
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")], env={"DOLLY_SECRET": "s3cret"})

    def start(wait: float) -> None:
        ring.clients = [dolly("client", "-v", "--listen", ring.addrs[0], "--root", ring.roots[0], env=ring.env),
                        dolly("client", "-v", "--listen", ring.addrs[1], "--root", ring.roots[1], "--wait", wait,
                              env=ring.env, stdlib_only=True)]
    start(4)
    rc, err = ring.run()
    (first_rc, _), (second_rc, second_err) = ring.finish_clients()
    why = ("this dollyC cannot check blake3 tags: its Python has no blake3 module (it checks sha256: "
           "run dollyS with --tag sha256, or install blake3 here)")
    assert rc == 1 and first_rc == 0 and second_rc == 1, (err, second_err)
    assert f"refused run {ring.report()['run']} from 127.0.0.1" in second_err and why in second_err
    assert "no run started within 4 s; last rejected: 127.0.0.1:" in second_err
    first, second = ring.report()["nodes"]
    assert first["ok"] and not second["ok"] and f"{ring.addrs[1]} refused the run: {why}" in second["error"]
    assert sha(ring.roots[0] / "disk.img") == sha(image) and not (ring.roots[1] / "disk.img").exists()
    start(60)
    rc, err = ring.run("--tag", "sha256")
    assert rc == 0 and [r for r, _ in ring.finish_clients()] == [0, 0], err
    assert ring.report()["tag"] == "sha256" and sha(ring.roots[1] / "disk.img") == sha(image)


def test_dolly_s_without_blake3_tags_with_sha256_and_refuses_to_be_asked_for_blake3(tmp_path, rings):
    image = make_image(tmp_path / "disk.img", 300_000)
    ring = rings(tmp_path, 1, [(image, ">", "/disk.img")])
    ring.start_clients()
    server = dolly("server", "-f", ring.config, "--json", ring.report_path, stdlib_only=True)
    _, err = server.communicate(timeout=90)
    assert server.returncode == 0 and ring.finish_clients()[0][0] == 0, err
    assert ring.report()["tag"] == "sha256" and sha(ring.roots[0] / "disk.img") == sha(image)
    server = dolly("server", "-f", ring.config, "--tag", "blake3", stdlib_only=True)
    _, err = server.communicate(timeout=30)
    assert server.returncode == 3 and "this dollyS cannot check blake3 tags: its Python has no blake3" in err
    server = dolly("server", "-f", ring.config, "--digest", "blake3", stdlib_only=True)
    _, err = server.communicate(timeout=30)
    assert server.returncode == 3 and "this dollyS cannot make blake3 digests: its Python has no blake3" in err


@pytest.mark.parametrize("server_secret, client_secret", [("alpha", "beta"), ("alpha", ""), ("", "beta")])
def test_secret_mismatch_is_an_error_on_both_sides(tmp_path, rings, server_secret, client_secret):
    image = make_image(tmp_path / "disk.img", 100_000)
    ring = rings(tmp_path, 1, [(image, ">", "/disk.img")])
    ring.start_clients("--wait", 3, env={"DOLLY_SECRET": client_secret})
    rc, err = ring.run(env={"DOLLY_SECRET": server_secret})
    assert rc == 1
    node = ring.report()["nodes"][0]
    assert not node["ok"] and "authentication failed" in node["error"] and "secret" in node["error"]
    [(client_rc, client_err)] = ring.finish_clients()
    assert client_rc == 1 and "rejected connection" in client_err and "no run started" in client_err
    assert not (ring.roots[0] / "disk.img").exists()


def test_shared_secret_from_file_and_env(tmp_path, rings):
    image = make_image(tmp_path / "disk.img", 200_000)
    (tmp_path / "secret").write_text("s3cret\n")
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")])
    ring.start_clients(env={"DOLLY_SECRET": "s3cret"})
    rc, err = ring.run("--secret-file", tmp_path / "secret")
    assert rc == 0, err
    assert [r for r, _ in ring.finish_clients()] == [0, 0]


@pytest.mark.parametrize("tag", ["sha256", "blake3"])
@pytest.mark.parametrize("secret", ["", "s3cret-of-the-run"], ids=["digest", "keyed"])
def test_corrupted_chunk_is_detected_and_sent_again(tmp_path, rings, secret, tag):
    """The piece's tag catches the flipped byte: its SHA-256 or BLAKE3 without a secret, its HMAC or keyed
    BLAKE3 with one."""
    image = make_image(tmp_path / "disk.img", 3_000_000)
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")], env={"DOLLY_SECRET": secret})
    ring.start_clients()
    rc, err = ring.run("--tag", tag, env={"DOLLY_FAULT_FLIP_CHUNK": "3"})
    assert rc == 0, (err, ring.finish_clients())
    assert "flipping a byte of chunk 3" in err
    results = ring.finish_clients()
    assert "chunk 3 from 127.0.0.1 failed its tag" in results[0][1]
    assert all(sha(root / "disk.img") == sha(image) for root in ring.roots)


@pytest.mark.parametrize("digest", ["blake3", "none"])
def test_the_reports_plain_digest_is_the_sites_choice_and_every_byte_is_still_checked(tmp_path, rings, digest):
    """dollyS --digest blake3 reports each file's plain BLAKE3 (as b3sum prints it) instead of its SHA-256,
    --digest none neither; the nodes check every piece's tag and the tag list all the same: a byte flipped in
    flight is caught and sent again, and both clones are the image."""
    from blake3 import blake3

    image = make_image(tmp_path / "disk.img", 3_000_000)
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")], env={"DOLLY_SECRET": "s3cret"})
    ring.start_clients()
    rc, err = ring.run("--digest", digest, env={"DOLLY_FAULT_FLIP_CHUNK": "3"})
    results = ring.finish_clients()
    assert rc == 0 and [r for r, _ in results] == [0, 0], (err, results)
    assert "chunk 3 from 127.0.0.1 failed its tag" in results[0][1]
    assert all(sha(root / "disk.img") == sha(image) for root in ring.roots)
    report = ring.report()
    plain = {"blake3": blake3(image.read_bytes()).hexdigest()} if digest == "blake3" else {}
    assert report["digest"] == digest and report["tag"] == "blake3"
    assert {k: v for k, v in report["files"][0].items() if k in ("sha256", "blake3")} == plain
    assert [n["files"] for n in report["nodes"]] == [[{"path": "/disk.img", **plain}]] * 2


def test_a_chunk_of_more_pieces_than_one_sendmsg_takes_goes_in_several(tmp_path, rings):
    """A 72 MiB chunk is 576 pieces, 1,152 buffers: more than one sendmsg takes (IOV_MAX, 1024), and the
    server hands a chunk's pieces to its sender all at once."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(80 << 20))
    ring = rings(tmp_path, 1, [(image, ">", "/disk.img")])
    ring.start_clients()
    rc, err = ring.run("--chunk-size", 72 << 20)
    assert rc == 0 and ring.finish_clients()[0][0] == 0, err
    assert sha(ring.roots[0] / "disk.img") == sha(image)


def authenticated_upstream(address: str, tail: socket.socket, secret: bytes, out: str, size: int, tag: str):
    """Connect to a dollyC as a ring's server would, with the right secret: handshake, SETUP (a ring of the
    server, this client and `tail`, which listens but does not answer for 10 s), RESUME. Returns the socket,
    its frame keys and the run."""
    from dolly_core import link, protocol as p
    from dolly_core.ring import FileSpec, Member, Ring, RunSetup

    host, port = address.split(":")
    ring = Ring((Member("server", "127.0.0.1", 1), Member("n1", host, int(port)),
                 Member("tail", *tail.getsockname())))
    setup = RunSetup("run-" + os.urandom(4).hex(), ring, (FileSpec("src", out, False, size),), CHUNK, 3.0, 0.0, tag)
    for _ in range(50):
        try:
            sock = socket.create_connection((host, int(port)), timeout=5)
            break
        except ConnectionRefusedError:
            time.sleep(0.1)
    keys = link.handshake_as_dialer(sock, secret)
    sock.sendall(p.control(p.Kind.SETUP, setup.to_body(sender=0, target=1), keys.send))
    header, _ = link.read_frame(sock, keys)
    assert header.kind is p.Kind.RESUME
    return sock, keys, setup


@pytest.mark.parametrize("secret", [b"s3cret", None])
def test_the_dialers_first_frame_goes_with_its_auth_before_the_listeners_answer(secret):
    """The ring's start-up dials one member after another: a dialer sends its SETUP right behind AUTH, so the
    listener has it without waiting for another round trip (here it reads it before it answers at all), tagged
    with the connection's keys."""
    from dolly_core import link, protocol as p

    dialer, listener = socket.socketpair()
    listener.settimeout(5)
    nonce_l = os.urandom(p.NONCE_LEN)
    listener.sendall(p.make_hello(nonce_l, secret is not None))
    done: list = []
    dialling = threading.Thread(target=lambda: done.append(link.handshake_as_dialer(
        dialer, secret, lambda keys: p.control(p.Kind.SETUP, {"hello": "ring"}, keys and keys.send))))
    dialling.start()
    status, nonce_d = p.check_auth(secret, nonce_l, bytes(link.recv_exact(listener, p.AUTH_LEN)))
    keys = p.frame_keys(secret, nonce_l, nonce_d, dialer=False)
    header, payload = link.read_frame(listener, keys)  # before any RESULT went back
    assert header.kind is p.Kind.SETUP and p.parse_control(header, payload) == {"hello": "ring"}
    assert not done
    listener.sendall(p.make_result(status, secret, nonce_l, nonce_d))
    dialling.join(5)
    assert done == [p.frame_keys(secret, nonce_l, nonce_d, dialer=True)]
    dialer.close()
    listener.close()


@pytest.mark.parametrize("tag", ["sha256", "blake3"])
def test_frames_without_a_valid_tag_are_never_acted_on(tmp_path, tag):
    """On a connection that passed the handshake, frames injected by someone without the secret (their tags
    made with a guessed key) are not written and not obeyed: a forged piece is asked for again, a forged
    control frame ends the connection; a piece tagged with the run's key is written."""
    from dolly_core import link, protocol as p
    from dolly_core.tags import piece_tagger

    secret = b"s3cret-of-the-run"
    address = f"127.0.0.2:{free_port('127.0.0.2')}"
    client = dolly("client", "-v", "--listen", address, "--root", tmp_path / "root", "--wait", 10,
                   env={"DOLLY_SECRET": secret.decode()})
    tail = socket.create_server(("127.0.0.1", 0))
    try:
        sock, keys, setup = authenticated_upstream(address, tail, secret, "/disk.img", 4096, tag)
        forged, good = b"evil" * 1024, b"good" * 1024
        guessed = piece_tagger(tag, p.run_key(b"a guessed secret", setup.run))
        sock.sendall(p.pack_piece(guessed, p.Kind.CHUNK, 0, 0, 0, len(forged), forged) + forged)
        header, body = link.read_frame(sock, keys)
        while header.kind is p.Kind.PING:
            header, body = link.read_frame(sock, keys)
        assert header.kind is p.Kind.RESEND and p.parse_control(header, body)["next"] == 0
        sock.sendall(p.pack_piece(piece_tagger(tag, p.run_key(secret, setup.run)), p.Kind.CHUNK, 0, 0, 0,
                                  len(good), good) + good)
        written = tmp_path / "root" / "disk.img"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (written.exists() and written.read_bytes() == good):
            time.sleep(0.05)
        sock.sendall(p.control(p.Kind.ABORT, {"reason": "forged"}, key=bytes(32)))
        deadline = time.monotonic() + 10
        with pytest.raises(link.PeerGone):  # the forged ABORT ended the connection, unheeded
            while time.monotonic() < deadline:
                link.read_frame(sock, keys)
        sock.close()
        _, err = client.communicate(timeout=60)
    finally:
        tail.close()
        if client.poll() is None:
            client.kill()
            client.wait()
    assert "chunk 0 from server failed its tag" in err and "ABORT frame failed its authentication" in err
    assert "forged" not in err  # the ABORT's reason was never read
    assert written.read_bytes() == good


def test_bad_config_line_exits_3_naming_the_line(tmp_path):
    config = tmp_path / "dolly.conf"
    config.write_text("iofiles 1\n/x -> /y\n")
    proc = dolly("server", "-f", config)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert f"{config}:2: expected 'IN > OUT' or 'IN >> OUT', found '/x -> /y'" in err


def test_hung_client_is_short_cut_after_the_timeout(tmp_path, rings):
    """A middle client stopped with SIGSTOP keeps its sockets open: only the time-out can tell."""
    image = make_image(tmp_path / "disk.img", 12 << 20)
    ring = rings(tmp_path, 4, [(image, ">", "/disk.img")])
    ring.start_clients()
    server = ring.start_server("--rate", 6e6)
    hung = ring.clients[1]
    try:
        wait_for_bytes(ring.roots[1] / "disk.img", 2 << 20, server)
        hung.send_signal(signal.SIGSTOP)
        _, err = server.communicate(timeout=90)
        assert hung.poll() is None  # still there, only frozen
    finally:
        hung.send_signal(signal.SIGCONT)
        hung.kill()
    assert server.returncode == 1, err
    results = ring.finish_clients()
    report = ring.report()
    for i, node in enumerate(report["nodes"]):
        if i == 1:
            assert not node["ok"] and "no heartbeat" in node["error"], node
            assert f"node {node['name']} failed" in err
        else:
            assert node["ok"], node
            assert results[i][0] == 0, results[i][1]
            assert sha(ring.roots[i] / "disk.img") == sha(image)


def test_a_rate_that_makes_a_chunk_outlast_the_timeout_keeps_the_ring_alive(tmp_path, rings):
    """dollyS --rate paces the head after each sendmsg; a 4 MiB chunk at 2 MB/s takes 2.1 s, twice the time-out:
    the head must PING meanwhile, or its successor takes it for dead."""
    image = make_image(tmp_path / "disk.img", 6 << 20)
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")])
    ring.start_clients()
    rc, err = ring.run("--chunk-size", 4 << 20, "--rate", 2e6, "--timeout", 1)
    assert rc == 0, err
    assert [rc for rc, _ in ring.finish_clients()] == [0, 0]
    report = ring.report()
    assert report["seconds"] >= (6 << 20) / 2e6 * 0.9  # the rate was kept
    assert all(sha(root / "disk.img") == sha(image) for root in ring.roots)


def allocated(path: Path) -> list[tuple[int, int]]:
    """The (start, end) ranges of a file that hold data (SEEK_DATA/SEEK_HOLE); the rest read as zeros."""
    ranges, pos, size = [], 0, path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, pos))
    finally:
        os.close(fd)
    return ranges


def same_sparse_bytes(a: Path, b: Path) -> bool:
    """Byte-identical, reading only what either file holds as data (holes are zeros in both)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in allocated(a) + allocated(b):
            fa.seek(start)
            fb.seek(start)
            if fa.read(end - start) != fb.read(end - start):
                return False
    return True


def sha_of_file(path: Path) -> str:
    digest, buf = hashlib.sha256(), memoryview(bytearray(16 << 20))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(buf[:n])
    return digest.hexdigest()


def test_sparse_image_holes_are_neither_read_nor_sent_nor_allocated(tmp_path, rings):
    """1 GiB logical, 4 MiB of data: the data at the start, straddling chunk boundaries, at a
    chunk's end, and a trailing hole."""
    image = tmp_path / "sparse.img"
    data = {0: 1 << 20, (300 << 20) + (128 << 10): 1 << 20, (700 << 20) - (512 << 10): 512 << 10,
            900 << 20: (1 << 20) + (512 << 10)}
    with open(image, "wb") as f:
        f.truncate(1 << 30)
        for offset, length in data.items():
            f.seek(offset)
            f.write(os.urandom(length))
    ring = rings(tmp_path, 2, [(image, ">", "/disk.img")])
    ring.start_clients()
    rc, err = ring.run()
    assert rc == 0, err
    assert [r for r, _ in ring.finish_clients()] == [0, 0]
    [file] = ring.report()["files"]
    assert file["sha256"] == sha_of_file(image) and file["bytes"] == 1 << 30
    assert file["data_bytes"] == sum(data.values())  # nothing in a hole was read
    for root in ring.roots:
        clone = root / "disk.img"
        assert clone.stat().st_size == 1 << 30
        assert clone.stat().st_blocks * 512 < 5 << 20  # holes stayed holes, also inside chunks
        assert same_sparse_bytes(clone, image)


@pytest.mark.root
def test_block_device_target_has_no_stale_blocks(tmp_path, rings):
    """A sparse image onto a loop device full of 0xff: the holes read back as zeros (zeroed by the device
    with BLKZEROOUT, or written), the data as sent."""
    losetup = require_tool("losetup")
    backing = tmp_path / "device.img"
    backing.write_bytes(b"\xff" * (8 << 20))
    device = subprocess.run([losetup, "--find", "--show", str(backing)], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        image = tmp_path / "sparse.img"
        with open(image, "wb") as f:
            f.truncate(8 << 20)
            f.seek(1 << 20)
            f.write(os.urandom(300_000))
            f.seek(6 << 20)
            f.write(os.urandom(100_000))
        ring = rings(tmp_path, 1, [(image, ">", device)])
        ring.roots = [Path("/")]  # OUT is the device itself
        ring.start_clients()
        rc, err = ring.run()
        assert rc == 0, err
        assert ring.finish_clients()[0][0] == 0
        with open(device, "rb") as dev:
            assert hashlib.sha256(dev.read(8 << 20)).hexdigest() == sha(image)
    finally:
        subprocess.run([losetup, "-d", device], check=False)


@pytest.mark.root
def test_missing_device_target_is_an_error_not_a_file_in_dev(tmp_path, rings):
    """OUT /dev/<missing> (a disk not there, a partition not made): the node fails naming the device, and
    nothing is made in /dev (devtmpfs would hold the image in RAM and the install would look done)."""
    missing = Path(f"/dev/provision-test-{os.getpid()}")
    image = make_image(tmp_path / "image.raw", 1 << 20)
    (tmp_path / "image.raw.gz").write_bytes(gzip.compress(image.read_bytes()))
    ring = rings(tmp_path, 1, [(image, ">", missing), (tmp_path / "image.raw.gz", ">>", missing / "part1")])
    ring.roots = [Path("/")]
    try:
        ring.start_clients()
        rc, _ = ring.run()
        assert rc == 1
        assert ring.finish_clients()[0][0] == 1
        error = ring.report()["nodes"][0]["error"]
        assert f"no such device {missing}" in error and f"no such device {missing}/part1" in error, error
        assert not missing.exists()
    finally:
        if missing.is_dir():
            (missing / "part1").unlink(missing_ok=True)
            missing.rmdir()
        missing.unlink(missing_ok=True)


def test_a_root_in_dev_shm_gets_files(tmp_path, rings):
    """/dev/shm is a tmpfs for files (ring_bench keeps its nodes' roots there), not a device directory."""
    image = make_image(tmp_path / "disk.img", 300_000)
    ring = rings(tmp_path, 1, [(image, ">", "/disk.img")])
    root = Path(f"/dev/shm/provision-test-{os.getpid()}")
    ring.roots = [root]
    try:
        ring.start_clients()
        rc, err = ring.run()
        assert rc == 0, err
        assert ring.finish_clients()[0][0] == 0
        assert sha(root / "disk.img") == sha(image)
    finally:
        shutil.rmtree(root, ignore_errors=True)
