"""provision.ssh against a real OpenSSH server (Debian's sshd) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from provision.ssh import HostKeyPolicy, SshSettings, Target, run_command
from tests.conftest import require_root, require_tool

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _start_sshd(tmp: Path, host_key: Path, port: int) -> subprocess.Popen:
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        + "".join(f"ListenAddress {a}\n" for a in ADDRESSES)
        + f"HostKey {host_key}\nAuthorizedKeysFile {tmp}/authorized_keys\nPidFile {tmp}/sshd.pid\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "StrictModes no\nUsePAM no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([require_tool("sshd"), "-D", "-e", "-f", str(config)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((ADDRESSES[0], port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {proc.stderr.read()}")
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sshd did not start listening")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    require_root()  # sshd needs root to log anybody in but itself
    require_tool("ssh-keygen")
    tmp = tmp_path_factory.mktemp("sshd")
    os.chmod(tmp, 0o700)
    _keygen(tmp / "host_key")
    _keygen(tmp / "user_key")
    (tmp / "authorized_keys").write_text((tmp / "user_key.pub").read_text())
    port = _free_port()
    proc = _start_sshd(tmp, tmp / "host_key", port)
    yield tmp, port
    proc.terminate()
    proc.wait(timeout=10)


def _targets() -> list[Target]:
    return [Target(f"n{i:02d}", a) for i, a in enumerate(ADDRESSES, 1)]


def test_runs_in_parallel_with_results_in_order(sshd):
    tmp, port = sshd
    settings = SshSettings(port=port, key_files=(tmp / "user_key",), known_hosts=tmp / "kh-order",
                           policy=HostKeyPolicy.ACCEPT_NEW)
    results = run_command(_targets(), "echo out-$SSH_CONNECTION; echo err >&2; exit 3", settings)
    assert [r.name for r in results] == ["n01", "n02", "n03"]
    for r, address in zip(results, ADDRESSES):
        assert r.error is None
        assert r.exit_status == 3 and not r.ok
        assert f" {address} {port}" in r.stdout
        assert r.stderr == "err\n"


def test_accept_new_learns_keys_then_reject_trusts_them(sshd):
    tmp, port = sshd
    known = tmp / "kh-learn"
    strict = SshSettings(port=port, key_files=(tmp / "user_key",), known_hosts=known,
                         policy=HostKeyPolicy.REJECT)
    first = run_command(_targets(), "true", strict)
    assert all(not r.ok and "not in" in r.error for r in first)
    assert not known.exists()

    learn = SshSettings(port=port, key_files=(tmp / "user_key",), known_hosts=known,
                        policy=HostKeyPolicy.ACCEPT_NEW)
    assert all(r.ok for r in run_command(_targets(), "true", learn))
    assert len(known.read_text().splitlines()) == len(ADDRESSES)
    assert all(r.ok for r in run_command(_targets(), "true", strict))


def test_changed_host_key_is_refused(sshd):
    tmp, port = sshd
    known = tmp / "kh-changed"
    _keygen(tmp / "other_host_key")
    other = (tmp / "other_host_key.pub").read_text().split()
    known.write_text(f"[{ADDRESSES[0]}]:{port} {other[0]} {other[1]}\n")
    settings = SshSettings(port=port, key_files=(tmp / "user_key",), known_hosts=known,
                           policy=HostKeyPolicy.ACCEPT_NEW)
    [result] = run_command(_targets()[:1], "true", settings)
    assert not result.ok and "host key changed" in result.error


def test_wrong_key_and_closed_port_are_clear_per_node_errors(sshd, tmp_path):
    tmp, port = sshd
    _keygen(tmp_path / "stranger")
    settings = SshSettings(port=port, key_files=(tmp_path / "stranger",),
                           policy=HostKeyPolicy.IGNORE, connect_timeout=5)
    [denied] = run_command(_targets()[:1], "true", settings)
    assert not denied.ok and "authentication failed as root" in denied.error

    closed = SshSettings(port=_free_port(), key_files=(tmp / "user_key",), policy=HostKeyPolicy.IGNORE)
    [refused] = run_command([Target("n09", "127.0.0.9")], "true", closed)
    assert not refused.ok and "cannot connect to 127.0.0.9" in refused.error


def test_forget_hosts_drops_only_the_reinstalled_nodes(tmp_path):
    import paramiko

    from provision.ssh import forget_hosts

    known = tmp_path / "known_hosts"
    keys = paramiko.HostKeys()
    for host in ("10.0.0.11", "10.0.0.12"):
        keys.add(host, "ssh-ed25519", paramiko.Ed25519Key.from_private_key_file(str(_ed25519(tmp_path, host))))
    keys.save(str(known))
    assert forget_hosts(known, ["10.0.0.11", "10.0.0.99"]) == ["10.0.0.11"]
    left = paramiko.HostKeys(str(known))
    assert left.lookup("10.0.0.11") is None and left.lookup("10.0.0.12") is not None
    assert forget_hosts(tmp_path / "absent", ["10.0.0.11"]) == []


def _ed25519(tmp_path: Path, name: str) -> Path:
    require_tool("ssh-keygen")
    path = tmp_path / f"key-{name}"
    _keygen(path)
    return path
