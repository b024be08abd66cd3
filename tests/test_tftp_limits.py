"""TFTP caps on transfers at once, per client address and in all: silent clients flooding read requests from
their own loopback addresses (127.0.0.5, 127.0.0.6, ...), real tftp-hpa clients (from 127.0.0.1) beside them."""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import subprocess
import time

import pytest

from provision.errors import ProvisionError
from provision.services.tftp import MAX_PER_CLIENT, MAX_TRANSFERS, TftpServer
from tests.conftest import require_tool

DATA, ACK = 3, 4
CONFIG = "pxelinux.cfg/01-52-54-00-00-00-01"
TIMEOUT, RETRIES = 1.0, 3  # a silent client's transfer ends after about TIMEOUT * RETRIES


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tftpboot"
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / CONFIG).write_text("DEFAULT install\n")
    (root / "kernel").write_bytes(b"k" * (256 * 1024 + 7))
    return root


@pytest.fixture
def serve(tree):
    """Start a TftpServer on 127.0.0.1 with the given caps; `transfers` are its records."""
    servers = []

    def start(**caps) -> TftpServer:
        transfers = []
        server = TftpServer(tree, host="127.0.0.1", port=0, timeout=TIMEOUT, retries=RETRIES,
                            on_transfer=transfers.append, **caps).start()
        server.transfers = transfers
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=0.1)


def flood(server: TftpServer, source: str, count: int) -> list[socket.socket]:
    """`count` clients on `source`, each asking once for the kernel and never answering."""
    clients = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", server.port))
        clients.append(sock)
    return clients


def answered(clients: list[socket.socket], within: float) -> list[socket.socket]:
    """The clients that got DATA 1 within `within` seconds (well before a time-out sends it again)."""
    got = []
    with selectors.DefaultSelector() as selector:
        for sock in clients:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while len(got) < len(clients) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                packet = key.fileobj.recv(2048)
                assert struct.unpack("!HH", packet[:4]) == (DATA, 1)
                selector.unregister(key.fileobj)
                got.append(key.fileobj)
    return got


def until(condition, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def fetch_config(sock: socket.socket, port: int, ask: bool = True) -> bytes:
    """A scripted client on `sock`: (ask for and) take the one-block config file, ACK it."""
    if ask:
        sock.sendto(f"\x00\x01{CONFIG}\x00octet\x00".encode(), ("127.0.0.1", port))
    sock.settimeout(5)
    packet, peer = sock.recvfrom(2048)
    assert struct.unpack("!HH", packet[:4]) == (DATA, 1)
    sock.sendto(struct.pack("!HH", ACK, 1), peer)
    return packet[4:]


def tftp_hpa(port: int, remote: str, local, rexmt: int = 1, total: int = 20) -> subprocess.CompletedProcess:
    """tftp-hpa from 127.0.0.1, sending its request again every `rexmt` s for up to `total` s."""
    tftp = require_tool("tftp")
    commands = f"binary\nrexmt {rexmt}\ntimeout {total}\nget {remote} {local}\nquit\n"
    return subprocess.run([tftp, "127.0.0.1", str(port)], input=commands, capture_output=True, text=True,
                          timeout=total + 30)


def drops(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "provision.tftp" and r.levelno >= logging.WARNING]


def test_one_address_gets_only_its_cap_of_transfers_and_others_are_served(serve, tree, tmp_path, caplog):
    caplog.set_level(logging.INFO, "provision.tftp")
    server = serve(max_per_client=4, max_transfers=64)
    clients = flood(server, "127.0.0.5", 40)
    try:
        began = time.monotonic()
        running = answered(clients, within=0.8)
        assert len(running) == 4
        assert until(lambda: server.running("127.0.0.5") == 4) and server.running() == 4
        assert drops(caplog) == ["tftp: dropping requests (4 transfers running for 127.0.0.5, its cap): "
                                 "first from 127.0.0.5"]  # one line for 36 drops
        for sock in [sock for sock in clients if sock not in running][:8]:  # asking again while capped: dropped
            sock.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", server.port))

        out = tftp_hpa(server.port, CONFIG, tmp_path / "cfg")  # another address meanwhile: served at once
        assert (tmp_path / "cfg").read_text() == "DEFAULT install\n", out.stdout + out.stderr
        assert time.monotonic() - began < TIMEOUT * RETRIES - 0.5 and server.running("127.0.0.5") == 4
        assert len(drops(caplog)) == 1

        # the flood's transfers time out; then the address is served again, also a client that was dropped
        assert until(lambda: len([t for t in server.transfers if t.client.startswith("127.0.0.5:")]) == 4)
        assert {t.error for t in server.transfers if t.client.startswith("127.0.0.5:")} == {
            f"no answer after {RETRIES} tries"}
        assert server.running() == 0
        dropped = next(sock for sock in clients if sock not in running)
        assert fetch_config(dropped, server.port) == b"DEFAULT install\n"
        assert "tftp: serving requests from 127.0.0.5 again, after dropping 44" in caplog.text
    finally:
        for sock in clients:
            sock.close()
    assert until(lambda: len(server.transfers) == 6)
    assert [t.error for t in server.transfers if t.client.startswith("127.0.0.1:")] == [None]  # tftp-hpa's
    assert server.transfers[-1].client.startswith("127.0.0.5:") and server.transfers[-1].error is None


def test_the_total_cap_drops_everyone_until_a_transfer_ends(serve, tmp_path, caplog):
    caplog.set_level(logging.INFO, "provision.tftp")
    server = serve(max_per_client=4, max_transfers=6)
    clients = flood(server, "127.0.0.5", 10)
    try:
        assert len(answered(clients, within=0.5)) == 4
        more = flood(server, "127.0.0.6", 10)
        clients += more
        assert len(answered(more, within=0.5)) == 2
        assert until(lambda: server.running() == 6)
        began = time.monotonic()
        out = tftp_hpa(server.port, CONFIG, tmp_path / "cfg", rexmt=1)  # dropped, asks again each second
        waited = time.monotonic() - began
        assert (tmp_path / "cfg").read_text() == "DEFAULT install\n", out.stdout + out.stderr
        assert waited >= 0.9  # not served before the flood's transfers ended
    finally:
        for sock in clients:
            sock.close()
    assert drops(caplog) == [
        "tftp: dropping requests (4 transfers running for 127.0.0.5, its cap): first from 127.0.0.5",
        "tftp: dropping requests (6 transfers running, the cap): first from 127.0.0.6"]
    assert "tftp: serving requests again, after dropping" in caplog.text
    assert until(lambda: len(server.transfers) == 7)
    flooded = [t for t in server.transfers if not t.client.startswith("127.0.0.1:")]
    assert len(flooded) == 6 and all(t.error for t in flooded)
    served = server.transfers.index(next(t for t in server.transfers if t.client.startswith("127.0.0.1:")))
    assert server.transfers[served].error is None and served > 0  # after a flood transfer ended


def test_a_client_asking_again_is_not_counted_twice(serve):
    """A request re-sent from the same port while its transfer runs is neither a second transfer nor a drop."""
    server = serve(max_per_client=2, max_transfers=2)
    [first] = flood(server, "127.0.0.5", 1)
    try:
        assert answered([first], within=1)
        for _ in range(5):
            first.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", server.port))
        [other] = flood(server, "127.0.0.5", 1)  # the second place is still free
        assert answered([other], within=1) and until(lambda: server.running("127.0.0.5") == 2)
        other.close()
    finally:
        first.close()


def not_from(sock: socket.socket, *peers) -> tuple[bytes, tuple]:
    """The next packet from a peer other than `peers` (the old transfer keeps sending its unacknowledged block)."""
    while True:
        packet, peer = sock.recvfrom(2048)
        if peer not in peers:
            return packet, peer


def test_a_client_that_starts_over_from_the_same_port_is_served_at_once(serve, tree, caplog):
    """A machine reset mid-transfer: its loader asks again from the same port (GRUB, iPXE) and gives up if not
    answered soon. The same request a time-out later, or another file at once, gets a new transfer while the old
    one is still timing out; a copy re-sent at once does not."""
    caplog.set_level(logging.INFO, logger="provision.tftp")
    server = serve()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.7", 0))
    sock.settimeout(5)
    try:
        sock.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", server.port))
        packet, old = sock.recvfrom(2048)
        assert struct.unpack("!HH", packet[:4]) == (DATA, 1)
        sock.sendto(struct.pack("!HH", ACK, 1), old)  # a block taken, then the machine is reset
        sock.recvfrom(2048)  # DATA 2, never acknowledged
        time.sleep(TIMEOUT * 1.2)  # the reset machine's loader asks again (the old transfer still runs)
        assert server.running("127.0.0.7") == 1
        sock.sendto(f"\x00\x01{CONFIG}\x00octet\x00".encode(), ("127.0.0.1", server.port))  # another file
        packet, config = not_from(sock, old)
        assert struct.unpack("!HH", packet[:4]) == (DATA, 1) and packet[4:] == b"DEFAULT install\n"
        sock.sendto(struct.pack("!HH", ACK, 1), config)
        sock.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", server.port))  # the same file again
        packet, new = not_from(sock, old, config)
        assert struct.unpack("!HH", packet[:4]) == (DATA, 1)
        data, block = packet[4:], 1
        while True:
            sock.sendto(struct.pack("!HH", ACK, block), new)
            if len(packet) < 4 + 512:
                break
            packet, peer = sock.recvfrom(2048)
            if peer != new or struct.unpack("!HH", packet[:4])[1] != block + 1:
                continue  # the old transfer's re-sends, or a repeat
            block += 1
            data += packet[4:]
        assert data == (tree / "kernel").read_bytes()
        assert until(lambda: len(server.transfers) == 3, within=TIMEOUT * RETRIES + 5)
        outcomes = {(t.filename, t.client, t.error is None) for t in server.transfers}
        client = f"127.0.0.7:{sock.getsockname()[1]}"
        assert outcomes == {("kernel", client, True), ("kernel", client, False), (CONFIG, client, True)}
        assert f"tftp: {client} asked again while its transfer ran: serving the new request" in caplog.text
    finally:
        sock.close()


def test_caps_have_sensible_defaults_and_must_be_positive(tree):
    server = TftpServer(tree, host="127.0.0.1", port=0)
    assert (server.max_per_client, server.max_transfers) == (MAX_PER_CLIENT, MAX_TRANSFERS) == (8, 1024)
    with pytest.raises(ProvisionError, match="at least 1"):
        TftpServer(tree, host="127.0.0.1", port=0, max_per_client=0)
