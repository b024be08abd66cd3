"""TFTP server: real tftp-hpa / busybox clients on loopback against our tftpy wrapper."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from provision.errors import ProvisionError
from provision.model import Boot
from provision.services.tftp import PXELINUX_FILES, SYSLINUX_MODULES, TftpServer, install_boot_files
from tests.conftest import require_tool, skip_or_fail

SECRET = b"secret outside the root\n"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tftpboot"
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "pxelinux.cfg" / "01-52-54-00-00-00-01").write_text("DEFAULT local\n")
    (root / "kernel").write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    (tmp_path / "secret").write_bytes(SECRET)
    (root / "out-link").symlink_to(tmp_path / "secret")
    (root / "out-dir").symlink_to(tmp_path)
    (root / "in-link").symlink_to("kernel")
    return root


@pytest.fixture
def server(tree):
    transfers = []
    srv = TftpServer(tree, host="127.0.0.1", port=0, on_transfer=transfers.append).start()
    srv.transfers = transfers
    try:
        yield srv
    finally:
        srv.stop()


def logged(server, count: int, timeout: float = 10.0) -> list:
    """The server's transfer records once `count` are in: a transfer process reports its record to the
    server after the client already has its last packet."""
    deadline = time.monotonic() + timeout
    while len(server.transfers) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.transfers


def tftp_get(port: int, remote: str, local: Path) -> str:
    """tftp-hpa exits 0 even on errors: return its output, the caller checks the file."""
    tftp = require_tool("tftp")
    proc = subprocess.run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "get", remote, str(local)],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def test_get_with_tftp_hpa_is_byte_identical_and_logged(server, tree, tmp_path):
    out = tftp_get(server.port, "pxelinux.cfg/01-52-54-00-00-00-01", tmp_path / "cfg")
    assert "Error" not in out
    assert (tmp_path / "cfg").read_text() == "DEFAULT local\n"
    tftp_get(server.port, "in-link", tmp_path / "k")  # a symlink inside the root is fine
    assert (tmp_path / "k").read_bytes() == (tree / "kernel").read_bytes()
    done = {t.filename: t for t in logged(server, 2)}
    assert done["pxelinux.cfg/01-52-54-00-00-00-01"].error is None
    assert done["pxelinux.cfg/01-52-54-00-00-00-01"].bytes == len("DEFAULT local\n")
    assert done["in-link"].client.startswith("127.0.0.1:")


def test_write_request_is_an_access_violation(server, tree, tmp_path):
    tftp = require_tool("tftp")
    upload = tmp_path / "upload"
    upload.write_bytes(b"overwrite")
    proc = subprocess.run([tftp, "127.0.0.1", str(server.port), "-m", "binary", "-c", "put", str(upload), "kernel"],
                          capture_output=True, text=True, timeout=30)
    assert "Access violation" in proc.stdout + proc.stderr
    proc = subprocess.run([tftp, "127.0.0.1", str(server.port), "-m", "binary", "-c", "put", str(upload), "new"],
                          capture_output=True, text=True, timeout=30)
    assert "Access violation" in proc.stdout + proc.stderr
    assert not (tree / "new").exists()
    assert (tree / "kernel").stat().st_size == 3 * 1024 * 1024 + 123
    assert all(t.error and "refused" in t.error for t in logged(server, 2))


@pytest.mark.parametrize("remote, message", [
    ("../secret", "Illegal TFTP operation"),
    ("pxelinux.cfg/../../secret", "Illegal TFTP operation"),
    ("out-link", "Access violation"),
    ("out-dir/secret", "Access violation"),
    ("pxelinux.cfg", "Access violation"),
])
def test_escapes_are_refused(server, tmp_path, remote, message):
    out = tftp_get(server.port, remote, tmp_path / "got")
    assert message in out
    assert not (tmp_path / "got").exists() or SECRET not in (tmp_path / "got").read_bytes()
    assert logged(server, 1)[-1].error is not None


def test_absolute_path_stays_inside_the_root(server, tmp_path):
    out = tftp_get(server.port, str(tmp_path / "secret"), tmp_path / "got")
    assert "File not found" in out


def test_sixteen_clients_at_once(tree, tmp_path):
    """All from 127.0.0.1 (the tftp clients cannot bind another address): a per-client cap of 16 lets them in
    at once (with the default, 8, the other 8 would wait for their time-out to ask again)."""
    transfers = []
    server = TftpServer(tree, host="127.0.0.1", port=0, on_transfer=transfers.append, max_per_client=16).start()
    server.transfers = transfers
    want = (tree / "kernel").read_bytes()
    try:
        with ThreadPoolExecutor(16) as pool:
            outs = list(pool.map(lambda i: tftp_get(server.port, "kernel", tmp_path / f"k{i}"), range(16)))
    finally:
        server.stop()
    assert not [o for o in outs if "Error" in o or "timed out" in o]
    assert all((tmp_path / f"k{i}").read_bytes() == want for i in range(16))
    ok = [t for t in logged(server, 16) if t.filename == "kernel" and t.error is None]
    assert len(ok) == 16 and len({t.client for t in ok}) == 16


def test_big_file_with_blksize_1468_via_busybox(server, tree, tmp_path):
    busybox = require_tool("busybox")
    subprocess.run([busybox, "tftp", "-g", "-b", "1468", "-r", "kernel", "-l", str(tmp_path / "k"),
                    "127.0.0.1", str(server.port)], check=True, capture_output=True, timeout=60)
    assert (tmp_path / "k").read_bytes() == (tree / "kernel").read_bytes()


def test_blksize_and_tsize_are_negotiated(server, tree):
    size = (tree / "kernel").stat().st_size
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"\x00\x01kernel\x00octet\x00blksize\x001468\x00tsize\x000\x00", ("127.0.0.1", server.port))
        reply, peer = sock.recvfrom(2048)
        assert struct.unpack("!H", reply[:2])[0] == 6  # OACK
        fields = reply[2:].split(b"\x00")
        options = dict(zip(fields[0::2], fields[1::2]))
        assert options[b"blksize"] == b"1468" and options[b"tsize"] == str(size).encode()
        sock.sendto(b"\x00\x04\x00\x00", peer)  # ACK 0 -> first block of the negotiated size
        block, _ = sock.recvfrom(2048)
        assert struct.unpack("!HH", block[:4]) == (3, 1) and len(block) == 4 + 1468
        sock.sendto(b"\x00\x05\x00\x00done\x00", peer)  # abort politely


def test_stop_ends_serving(tree, tmp_path):
    srv = TftpServer(tree, host="127.0.0.1", port=0).start()
    port = srv.port
    srv.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        sock.sendto(b"\x00\x01kernel\x00octet\x00", ("127.0.0.1", port))
        with pytest.raises(OSError):  # refused (ICMP port unreachable) or no answer
            sock.recvfrom(2048)


def test_bind_error_is_clear(server, tree):
    with pytest.raises(ProvisionError, match="cannot bind 127.0.0.1"):
        TftpServer(tree, host="127.0.0.1", port=server.port).start()


def test_install_boot_files(tmp_path):
    if not Path("/usr/lib/PXELINUX/pxelinux.0").is_file():
        skip_or_fail("needs Debian's pxelinux and syslinux-common packages")
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"K" * 100)
    initrd.write_bytes(b"I" * 100)
    root = tmp_path / "tftpboot"
    boot = Boot(kernel=str(kernel), initrd=str(initrd))
    installed = install_boot_files(root, boot)
    assert {str(p.relative_to(root)) for p in installed} == {
        *PXELINUX_FILES, *SYSLINUX_MODULES, boot.kernel_tftp_path, boot.initrd_tftp_path}
    assert (root / "pxelinux.0").read_bytes() == Path("/usr/lib/PXELINUX/pxelinux.0").read_bytes()
    assert (root / boot.kernel_tftp_path).read_bytes() == b"K" * 100


def test_missing_boot_file_is_named(tmp_path):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"I")
    with pytest.raises(ProvisionError, match=r"missing .*/nokernel \(the inventory's boot.kernel\)"):
        install_boot_files(tmp_path / "root", Boot(kernel=str(tmp_path / "nokernel"), initrd=str(initrd)))
    with pytest.raises(ProvisionError, match=r"missing /nonexistent/pxelinux.0 \(Debian package pxelinux\)"):
        install_boot_files(tmp_path / "root", Boot(kernel=str(initrd), initrd=str(initrd)),
                           pxelinux_dir=Path("/nonexistent"))
    assert not (tmp_path / "root").exists()
