"""Inventory field `ssh_authorized_keys` (root's SSH public keys on the clone, for `provision run` / `verify`):
key lines or files of them, checked at load (lines) and at render (files), written by the kickstart."""

from __future__ import annotations

import subprocess

import pytest

from provision.errors import InputError
from provision.inventory import load_inventory
from provision.render import render_files
from tests.conftest import require_tool
from tests.fixtures.inventories import inventory_yaml, write
from tests.test_kickstart import parse


@pytest.fixture
def key_pair(tmp_path):
    require_tool("ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab key", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


def _inventory(tmp_path, keys: str):
    return write(tmp_path, inventory_yaml(2, defaults=f"ssh_authorized_keys: {keys}"))


def test_key_lines_and_key_files_reach_the_kickstart(tmp_path, key_pair):
    key, line = key_pair
    other = "ssh-ed25519 " + line.split()[1]  # a second entry: inline, without comment
    inv = load_inventory(_inventory(tmp_path, f'["{other}", {key}.pub]'))
    assert inv.nodes[0].ssh_authorized_keys == (other, f"{key}.pub")
    kickstart = render_files(inv)["kickstart/node001.ks"]
    (post,) = parse(kickstart).scripts
    root = tmp_path / "root"
    block = post.script[post.script.index('mkdir -p "$SYSIMAGE/root/.ssh"'):]
    block = block[:block.index("PROVISION_EOF\n", block.index("PROVISION_EOF") + 1) + len("PROVISION_EOF\n")]
    block += 'chmod 600 "$SYSIMAGE/root/.ssh/authorized_keys"\n'
    subprocess.run(["bash", "-euc", block], env={"SYSIMAGE": str(root), "PATH": "/usr/bin:/bin"}, check=True)
    authorized = root / "root" / ".ssh" / "authorized_keys"
    assert authorized.read_text() == f"{other}\n{line}\n"
    assert authorized.stat().st_mode & 0o777 == 0o600 and authorized.parent.stat().st_mode & 0o777 == 0o700


def test_no_keys_render_no_authorized_keys(tmp_path):
    kickstart = render_files(load_inventory(write(tmp_path, inventory_yaml(1))))["kickstart/node001.ks"]
    assert "authorized_keys" not in kickstart


@pytest.mark.parametrize("entry, message", [
    ('"ssh-dss AAAAB3NzaC1kc3M="', "unknown key type 'ssh-dss'"),
    ('"ssh-ed25519 AAAAC3NzaC1lZDI1NTE"', "not valid base64"),
    ('"ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB"', "not a ssh-ed25519 key"),
    ('"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA $(reboot)"', "not an OpenSSH public key line"),
    ("relative/key.pub", "not an OpenSSH public key line"),
    ("/keys/a key.pub", "invalid path of a public key file"),
])
def test_bad_entries_are_named_at_load(tmp_path, entry, message):
    path = _inventory(tmp_path, f"[{entry}]")
    with pytest.raises(InputError) as exc:
        load_inventory(path)
    assert f"{path}:" in str(exc.value) and "defaults.ssh_authorized_keys[0]" in str(exc.value)
    assert message in str(exc.value)


def test_a_missing_or_bad_key_file_is_an_error_at_render(tmp_path, key_pair):
    missing = load_inventory(_inventory(tmp_path, f"[{tmp_path}/nothing.pub]"))
    with pytest.raises(InputError, match=r"ssh_authorized_keys of node001: cannot read .*nothing\.pub"):
        render_files(missing)
    key, _ = key_pair
    bad = load_inventory(_inventory(tmp_path, f"[{key}]"))  # the private half
    with pytest.raises(InputError, match=r"ssh_authorized_keys of node001: .*id_ed25519: unknown key type '-----BEGIN'"):
        render_files(bad)
