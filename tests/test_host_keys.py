"""Nodes' SSH host keys made by the server with the real ssh-keygen, and trusted in known_hosts."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import paramiko
import pytest

from provision.errors import ProvisionError
from provision.host_keys import BACKGROUND_NICE, KEY_FILES, HostKeyKeeper, HostKeyStore, KeyedNode
from provision.ssh import KnownHosts
from tests.conftest import require_tool


@pytest.fixture(autouse=True)
def _keygen():
    require_tool("ssh-keygen")


def known(path, host: str) -> dict[str, str]:
    """key type -> base64 of the keys known_hosts holds for `host`."""
    return {kind: key.get_base64() for kind, key in (paramiko.HostKeys(str(path)).lookup(host) or {}).items()}


def test_a_node_keeps_its_keys_and_a_broken_set_is_made_again(tmp_path):
    store = HostKeyStore(tmp_path / "host-keys")
    first = store.ensure("n01", "root@n01.lab")
    assert [line.split()[0] for line in first] == ["ssh-rsa", "ecdsa-sha2-nistp256", "ssh-ed25519"]
    assert all(line.endswith(" root@n01.lab") for line in first)
    node = store.node_dir("n01")
    assert sorted(p.name for p in node.iterdir()) == sorted(KEY_FILES)  # no work directory left behind
    assert stat.S_IMODE(node.stat().st_mode) == 0o700
    assert store.ensure("n01", "root@n01.lab") == first  # a reinstall: the same keys
    assert store.ensure("n02", "root@n02.lab") != first
    (node / "ssh_host_rsa_key").unlink()
    again = store.ensure("n01", "root@n01.lab")
    assert again != first and store.has("n01")
    with pytest.raises(KeyError):
        store.read("n01", "../n02/ssh_host_rsa_key")


def test_trust_replaces_what_known_hosts_had_for_that_host(tmp_path):
    store = HostKeyStore(tmp_path / "host-keys")
    old, new = store.ensure("old", "old"), store.ensure("new", "new")
    known_hosts = tmp_path / "known_hosts"
    first = KnownHosts(known_hosts)
    first.trust("10.0.0.11", old)
    first.trust("10.0.0.12", old)
    assert not known_hosts.exists()  # in memory until saved
    first.save()
    second = KnownHosts(known_hosts)
    second.trust("10.0.0.11", new)
    second.save()
    assert known(known_hosts, "10.0.0.11") == {line.split()[0]: line.split()[1] for line in new}
    assert known(known_hosts, "10.0.0.12") == {line.split()[0]: line.split()[1] for line in old}
    with pytest.raises(ValueError, match="not an SSH public key line"):
        KnownHosts(known_hosts).trust("10.0.0.13", ["garbage"])


def test_keeper_makes_every_pending_nodes_keys_and_trusts_them(tmp_path):
    store = HostKeyStore(tmp_path / "host-keys")
    known_hosts = tmp_path / "known_hosts"
    nodes = [KeyedNode("n01", "10.0.0.11", "root@n01.lab"), KeyedNode("n02", "10.0.0.12", "root@n02.lab")]
    keeper = HostKeyKeeper(store, known_hosts, nodes).start()
    private = keeper.key_file("n02", "ssh_host_ed25519_key")  # asked for first: made on demand
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY")
    keeper.close()  # after the background made n01's: known_hosts written
    for node in nodes:
        public = store.ensure(node.name, node.comment)
        assert known(known_hosts, node.ip) == {line.split()[0]: line.split()[1] for line in public}
    with pytest.raises(KeyError):
        keeper.key_file("n01", "authorized_keys")
    with pytest.raises(ProvisionError, match="n03 is not being installed"):
        keeper.key_file("n03", "ssh_host_rsa_key")


def keygens() -> dict[int, int]:
    """pid -> nice of the ssh-keygen processes this test process runs now (its threads' children)."""
    found = {}
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if text[text.index("(") + 1:text.rindex(")")] == "ssh-keygen":
                found[int(pid)] = int(text[text.rindex(")") + 2:].split()[16])  # state is field 0, nice 16
    return found


def watch_keygens(until: threading.Event) -> list[dict[int, int]]:
    """Samples of keygens() every 5 ms until `until` is set (run on a thread; the list fills as it runs)."""
    samples: list[dict[int, int]] = []

    def sample() -> None:
        while not until.is_set():
            samples.append(keygens())
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    return samples


def test_the_pool_makes_every_nodes_keys_ahead_of_need(tmp_path):
    """From start() on, a pool of min(cores, nodes) niced ssh-keygen makes every node's keys, several at a
    time; a node that asks afterwards gets the keys made for it, and no ssh-keygen runs for it."""
    store = HostKeyStore(tmp_path / "host-keys")
    nodes = [KeyedNode(f"n{i:02}", f"10.0.0.{10 + i}", f"root@n{i:02}.lab") for i in range(1, 5)]
    done = threading.Event()
    samples = watch_keygens(done)
    keeper = HostKeyKeeper(store, tmp_path / "known_hosts", nodes).start()
    keeper.wait()
    done.set()
    assert all(store.has(node.name) for node in nodes)
    seen = [s for s in samples if s]
    assert seen, "no ssh-keygen seen running"
    pool = min(os.cpu_count() or 1, len(nodes))
    assert max(len(s) for s in seen) == pool  # several at a time, never more than the pool
    assert {nice for s in seen for nice in s.values()} == {BACKGROUND_NICE}
    made = {node.name: store.read(node.name, "ssh_host_rsa_key") for node in nodes}
    done.clear()
    samples = watch_keygens(done)
    assert [keeper.key_file(node.name, "ssh_host_rsa_key") for node in nodes] == list(made.values())
    done.set()
    assert not any(samples)
    keeper.close()
    assert all(known(tmp_path / "known_hosts", node.ip) for node in nodes)


def test_a_node_that_asks_first_has_its_keys_made_at_normal_priority(tmp_path):
    store = HostKeyStore(tmp_path / "host-keys")
    keeper = HostKeyKeeper(store, tmp_path / "known_hosts", [KeyedNode("n01", "10.0.0.11", "root@n01.lab")])
    done = threading.Event()
    samples = watch_keygens(done)
    keeper.key_file("n01", "ssh_host_ed25519_key")  # no pool started: made on demand
    done.set()
    assert any(samples), "no ssh-keygen seen running"
    assert {nice for s in samples for nice in s.values()} == {os.getpriority(os.PRIO_PROCESS, 0)}


@pytest.mark.root
def test_a_node_asking_raises_the_niced_ssh_keygen_making_its_keys(tmp_path):
    """The pool is making n01's RSA key, niced, when n01 asks: that ssh-keygen goes on at normal priority
    (raising a priority needs root)."""
    store = HostKeyStore(tmp_path / "host-keys")
    keeper = HostKeyKeeper(store, tmp_path / "known_hosts", [KeyedNode("n01", "10.0.0.11", "root@n01.lab")]).start()
    deadline = time.monotonic() + 60
    while not (running := keygens()):
        assert time.monotonic() < deadline, "the pool started no ssh-keygen"
        time.sleep(0.001)
    [(pid, nice)] = running.items()  # the pool's first: n01's RSA key, 0.3 s of CPU or more
    assert nice == BACKGROUND_NICE
    asking = threading.Thread(target=keeper.key_file, args=("n01", "ssh_host_rsa_key"))
    asking.start()
    while (nice := keygens().get(pid)) == BACKGROUND_NICE and time.monotonic() < deadline:
        time.sleep(0.001)
    asking.join()
    keeper.close()
    assert nice == 0, "the ssh-keygen ended before it was seen at normal priority"
    assert store.has("n01")


def test_keys_that_cannot_be_made_are_a_per_node_error(tmp_path):
    store = HostKeyStore(tmp_path / "host-keys")
    store.directory.mkdir()
    (store.directory / "n02").write_text("not a directory")  # n02's keys cannot be put in place
    errors: list[tuple[str, str]] = []
    nodes = [KeyedNode("n01", "10.0.0.11", "root@n01.lab"), KeyedNode("n02", "10.0.0.12", "root@n02.lab")]
    keeper = HostKeyKeeper(store, tmp_path / "known_hosts", nodes, on_error=lambda *e: errors.append(e)).start()
    keeper.wait()
    keeper.close()
    assert store.has("n01") and not store.has("n02")
    [(name, message)] = errors
    assert name == "n02" and message.startswith("host keys of n02: ") and "Not a directory" in message
