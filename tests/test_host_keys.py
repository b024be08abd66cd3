"""Nodes' SSH host keys made by the server with the real ssh-keygen, and trusted in known_hosts."""

from __future__ import annotations

import stat

import paramiko
import pytest

from provision.errors import ProvisionError
from provision.host_keys import KEY_FILES, HostKeyKeeper, HostKeyStore, KeyedNode
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
