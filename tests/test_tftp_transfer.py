"""The TFTP data phase: a TransferPool against scripted clients on loopback (lost, duplicated and stale
ACKs, silent, vanished and refusing clients), and the pool behind TftpServer with real clients."""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from provision.services.tftp import TftpServer
from provision.services.tftp_transfer import Outcome, TransferPool
from tests.conftest import require_tool

DATA, ACK, ERROR = 3, 4, 5


def ack(block: int) -> bytes:
    return struct.pack("!HH", ACK, block & 0xFFFF)


class Rig:
    """A server socket whose first packet went out, handed to a one-worker TransferPool, and the client's socket."""

    def __init__(self, tmp_path, content: bytes, blksize: int = 512, oack: bool = False,
                 timeout: float = 0.3, retries: int = 4):
        path = tmp_path / "file"
        path.write_bytes(content)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(5)
        block, first = (0, b"\x00\x06blksize\x00%d\x00" % blksize) if oack else \
            (1, struct.pack("!HH", DATA, 1) + content[:blksize])
        self.pool = TransferPool(timeout, retries, workers=1).start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, path.open("rb") as file:
            server.bind(("127.0.0.1", 0))
            self.address = server.getsockname()
            server.sendto(first, self.client.getsockname())
            self.ident = self.pool.submit(server, self.client.getsockname(), file, blksize, block, first)

    def receive(self) -> tuple[int, int, bytes]:
        packet, _ = self.client.recvfrom(65536)
        opcode, block = struct.unpack("!HH", packet[:4])
        return opcode, block, packet[4:]

    def send(self, packet: bytes) -> None:
        self.client.sendto(packet, self.address)

    def finish(self) -> Outcome | None:
        """The transfer's Outcome (None if it has not ended within 10 s); stops the pool."""
        try:
            worker = self.pool.sockets[0]
            if not select.select([worker], [], [], 10)[0]:
                return None
            [(ident, outcome)] = self.pool.collect(worker)
            assert ident == self.ident
            return outcome
        finally:
            self.pool.stop()
            self.client.close()


def fetch(rig: Rig, blksize: int, drop_first_ack_of=(), stale_every: int = 0) -> tuple[bytes, int]:
    """A client that ACKs every DATA twice (a duplicating network), drops the first ACK of some blocks
    (the server must send them again), and every `stale_every` blocks also re-ACKs the previous block
    (as firmware does when its own timer fires). Returns the file and the DATA packets received."""
    blocks: dict[int, bytes] = {}
    packets = 0
    while True:
        opcode, number, payload = rig.receive()
        if opcode == 6:  # OACK
            rig.send(ack(0))
            continue
        assert opcode == DATA
        packets += 1
        first_time = number not in blocks
        blocks[number] = payload
        if first_time and number in drop_first_ack_of:
            continue
        rig.send(ack(number))
        rig.send(ack(number))
        if stale_every and number % stale_every == 0:
            rig.send(ack(number - 1))
        if len(payload) < blksize:
            return b"".join(blocks[i] for i in sorted(blocks)), packets


def test_lost_duplicated_and_stale_acks_still_give_the_same_bytes(tmp_path):
    content = os.urandom(40 * 512 - 100)  # 40 blocks
    rig = Rig(tmp_path, content)
    got, packets = fetch(rig, 512, drop_first_ack_of=(5, 20, 40), stale_every=7)
    assert got == content
    assert rig.finish() == Outcome(len(content), None)
    assert packets == 40 + 3  # each lost ACK costs one re-send; duplicate and stale ACKs none


def test_acks_that_come_at_once_or_late_each_get_the_next_block_once(tmp_path):
    """A lone transfer polls for quick ACKs and sleeps through slow ones: a client that answers most
    blocks at once and some after a few milliseconds gets every block exactly once."""
    content = os.urandom(300 * 512 + 1)
    rig = Rig(tmp_path, content)
    blocks = []
    while True:
        opcode, number, payload = rig.receive()
        assert opcode == DATA
        blocks.append(number)
        if number % 40 == 0:
            time.sleep(0.003)
        rig.send(ack(number))
        if len(payload) < 512:
            break
    assert blocks == list(range(1, 302))
    assert rig.finish() == Outcome(len(content), None)


@pytest.mark.parametrize("size", [0, 2 * 1468])
def test_a_size_of_whole_blocks_ends_with_an_empty_block(tmp_path, size):
    content = os.urandom(size)
    rig = Rig(tmp_path, content, blksize=1468, oack=True)
    got, packets = fetch(rig, 1468)
    assert got == content and packets == size // 1468 + 1
    assert rig.finish() == Outcome(size, None)


def test_a_silent_client_times_out(tmp_path):
    rig = Rig(tmp_path, os.urandom(2000), timeout=0.1, retries=3)
    assert [rig.receive()[:2] for _ in range(3)] == [(DATA, 1)] * 3
    assert rig.finish() == Outcome(0, "no answer after 3 tries")


def test_a_vanished_client_ends_the_transfer_at_once(tmp_path):
    rig = Rig(tmp_path, os.urandom(2000), timeout=5)
    rig.receive()
    rig.send(ack(1))
    rig.client.close()  # DATA 2 meets a closed port: ICMP port unreachable
    assert rig.finish() == Outcome(512, "socket error: Connection refused")


def test_stale_acks_do_not_hold_off_the_time_out(tmp_path):
    """A client that only ever re-ACKs the block before the one in flight gets that block again once
    per time-out, never once per stale ACK, until the tries run out."""
    rig = Rig(tmp_path, os.urandom(2000), timeout=0.2, retries=2)
    rig.client.settimeout(0.02)
    got = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        rig.send(ack(0))
        try:
            got.append(rig.receive()[:2])
        except TimeoutError:
            pass
    assert got == [(DATA, 1)] * 2
    assert rig.finish() == Outcome(0, "no answer after 2 tries")


def test_an_error_from_the_client_ends_the_transfer(tmp_path):
    rig = Rig(tmp_path, os.urandom(2000))
    rig.receive()
    rig.send(struct.pack("!HH", ERROR, 0) + b"disk full\x00")
    assert rig.finish() == Outcome(0, "client sent error 0: disk full")


# --- forked transfers behind TftpServer -----------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tftpboot"
    root.mkdir()
    (root / "kernel").write_bytes(os.urandom(2 * 1024 * 1024 + 7))
    return root


def wait_for(transfers: list, count: int) -> None:
    deadline = time.monotonic() + 20
    while len(transfers) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def silent_client(port: int) -> socket.socket:
    """Asks for the kernel, takes DATA 1 and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", port))
    assert struct.unpack("!HH", sock.recv(2048)[:4]) == (DATA, 1)
    return sock


def test_a_vanished_client_times_out_and_does_not_hold_up_another(tree, tmp_path):
    """Both transfers run in the one worker: the silent client's time-outs, the other's blocks."""
    tftp = require_tool("tftp")
    transfers = []
    server = TftpServer(tree, host="127.0.0.1", port=0, timeout=0.2, retries=2, on_transfer=transfers.append,
                        workers=1)
    try:
        with silent_client(server.start().port) as silent:
            subprocess.run([tftp, "127.0.0.1", str(server.port), "-m", "binary", "-c", "get", "kernel",
                            str(tmp_path / "k")], check=False, capture_output=True, timeout=60)
            wait_for(transfers, 2)
            by_client = {t.client: t for t in transfers}
            lost = by_client.pop(f"127.0.0.1:{silent.getsockname()[1]}")
    finally:
        server.stop()
    assert (lost.error, lost.bytes) == ("no answer after 2 tries", 0)
    assert [t.error for t in by_client.values()] == [None]
    assert (tmp_path / "k").read_bytes() == (tree / "kernel").read_bytes()


def fetch_at_once(busybox: str, port: int, name: str, blksize: int, into: Path, clients: int,
                  timeout: float) -> list[Path]:
    """`clients` busybox tftp clients fetch `name` at the same time; returns their copies."""
    copies = [into / f"{name}.{i}" for i in range(clients)]

    def get(copy: Path) -> None:
        subprocess.run([busybox, "tftp", "-g", "-b", str(blksize), "-r", name, "-l", str(copy), "127.0.0.1",
                        str(port)], check=True, capture_output=True, timeout=timeout)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(get, copies))
    return copies


def test_one_worker_serves_many_clients_at_once(tree, tmp_path):
    busybox = require_tool("busybox")
    transfers = []
    server = TftpServer(tree, host="127.0.0.1", port=0, on_transfer=transfers.append, workers=1,
                        max_per_client=12).start()  # all 12 from 127.0.0.1: at once, not re-asking past the cap
    try:
        copies = fetch_at_once(busybox, server.port, "kernel", 1468, tmp_path, 12, timeout=60)
        wait_for(transfers, 12)
    finally:
        server.stop()
    assert all(copy.read_bytes() == (tree / "kernel").read_bytes() for copy in copies)
    assert [t.error for t in transfers] == [None] * 12
    assert {t.bytes for t in transfers} == {(tree / "kernel").stat().st_size}


def children() -> set[int]:
    """This process's child processes (the TFTP servers' workers, and whatever earlier tests left running)."""
    return {int(pid) for task in Path("/proc/self/task").iterdir()
            for pid in (task / "children").read_text().split()}


def test_a_dead_worker_fails_its_transfers_and_another_takes_its_place(tree, tmp_path):
    busybox = require_tool("busybox")
    transfers = []
    others = children()
    server = TftpServer(tree, host="127.0.0.1", port=0, timeout=0.3, retries=10, on_transfer=transfers.append,
                        workers=1).start()
    try:
        with silent_client(server.port) as client:
            client.recv(2048)  # DATA 1 again, now from the worker (after a time-out)
            [worker] = children() - others
            os.kill(worker, signal.SIGKILL)
            wait_for(transfers, 1)
        assert [t.error for t in transfers] == ["transfer process died (exit status -9)"]
        subprocess.run([busybox, "tftp", "-g", "-b", "1468", "-r", "kernel", "-l", str(tmp_path / "k"),
                        "127.0.0.1", str(server.port)], check=True, capture_output=True, timeout=60)
        wait_for(transfers, 2)
        assert len(children() - others - {worker}) == 1
    finally:
        server.stop()
    assert (tmp_path / "k").read_bytes() == (tree / "kernel").read_bytes()
    assert transfers[1].error is None
    assert children() <= others


def test_stop_ends_running_transfers(tree):
    transfers = []
    server = TftpServer(tree, host="127.0.0.1", port=0, on_transfer=transfers.append).start()
    with silent_client(server.port):
        server.stop(grace=0.1)
    assert [t.error for t in transfers] == ["server stopped"]


def test_block_numbers_roll_over_and_clients_run_in_parallel(tree, tmp_path):
    busybox = require_tool("busybox")
    (tree / "big").write_bytes(os.urandom(65536 * 64 + 10))  # 65537 blocks of 64 bytes
    transfers = []
    server = TftpServer(tree, host="127.0.0.1", port=0, on_transfer=transfers.append).start()
    try:
        copies = fetch_at_once(busybox, server.port, "big", 64, tmp_path, 2, timeout=120)
        wait_for(transfers, 2)
    finally:
        server.stop()
    assert all(copy.read_bytes() == (tree / "big").read_bytes() for copy in copies)
    assert [t.error for t in transfers] == [None, None]


def test_a_boot_storm_gets_one_transfer_per_client(tree, tmp_path):
    """Clients that all ask at once re-send their requests while the server forks: a request sent
    before its transfer ended is a duplicate, even when the server reads it later."""
    busybox = require_tool("busybox")
    (tree / "small").write_bytes(os.urandom(64 * 1024))
    transfers = []
    server = TftpServer(tree, host="127.0.0.1", port=0, on_transfer=transfers.append, max_per_client=48).start()

    def get(i):
        subprocess.run([busybox, "tftp", "-g", "-b", "1468", "-r", "small", "-l", str(tmp_path / f"s{i}"),
                        "127.0.0.1", str(server.port)], check=True, capture_output=True, timeout=60)
    try:
        with ThreadPoolExecutor(48) as pool:
            list(pool.map(get, range(48)))
        wait_for(transfers, 48)
        time.sleep(0.5)  # room for any transfer of a late duplicate request to show up
    finally:
        server.stop(grace=0.1)
    assert all((tmp_path / f"s{i}").read_bytes() == (tree / "small").read_bytes() for i in range(48))
    assert len(transfers) == 48 and [t for t in transfers if t.error] == []


def test_a_long_error_message_from_a_client_is_cut_short(tree):
    transfers = []
    server = TftpServer(tree, host="127.0.0.1", port=0, on_transfer=transfers.append).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", server.port))
            _, peer = client.recvfrom(2048)  # DATA 1, from the transfer's own port
            client.sendto(struct.pack("!HH", ERROR, 3) + b"x" * 5000 + b"\0", peer)
            wait_for(transfers, 1)
    finally:
        server.stop()
    assert [t.error for t in transfers] == ["client sent error 3: " + "x" * 200]
