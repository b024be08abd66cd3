"""`provision flip-to-local` / `flip-to-install` / `flip-to-diskless` and `provision status`, in-process through provision.cli.main,
with the real `dhcpd -t` checking every flip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.cli import main
from tests.conftest import REPO, require_tool
from tests.fixtures.diskless import diskless_dir

LAB = str(REPO / "inventory" / "lab.yaml")
N01_PXE = "clusters/lab/rendered/tftpboot/pxelinux.cfg/01-02-77-00-00-00-01"
N02_PXE = "clusters/lab/rendered/tftpboot/pxelinux.cfg/01-02-77-00-00-00-02"
DHCPD = "clusters/lab/rendered/dhcpd.conf"
N01_IDENTITY = "clusters/lab/rendered/kickstart/n01.identity"
LIVE_DHCPD = "clusters/lab/dhcpd/dhcpd.conf"


@pytest.fixture
def env(tmp_path):
    require_tool("dhcpd")
    return {"PROVISION_STATE_DIR": str(tmp_path)}


@pytest.fixture
def lab_diskless(tmp_path) -> str:
    """The lab inventory with boot.diskless naming a directory of diskless files."""
    files = diskless_dir(tmp_path)
    inventory = tmp_path / "lab.yaml"
    text = Path(LAB).read_text()
    inventory.write_text(text.replace("boot:\n", f"boot:\n  diskless: {files}\n", 1))
    return str(inventory)


def status(env, capsys) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["status", "--inventory", LAB, "--json"], env) == 0
    return {n["name"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def host_entry(text: str, name: str) -> str:
    start = text.index(f"host {name} {{")
    return text[start:text.index("}\n", start)]


def test_status_json_lists_every_node_waiting_on_install(env, capsys):
    nodes = status(env, capsys)
    assert list(nodes) == [f"n{i:02d}" for i in range(1, 17)]
    assert all((n["state"], n["boot"], n["error"]) == ("waiting", "install", None) for n in nodes.values())


def test_flip_to_local_and_back_rerenders_pxe_and_dhcpd(env, tmp_path, capsys):
    assert main(["flip-to-local", "--inventory", LAB, "n01"], env) == 0
    assert "LOCALBOOT 0" in (tmp_path / N01_PXE).read_text()
    assert "DEFAULT install" in (tmp_path / N02_PXE).read_text()
    live = (tmp_path / LIVE_DHCPD).read_text()
    assert live == (tmp_path / DHCPD).read_text()  # checked, then made the live config
    assert "# boot: local" in host_entry(live, "n01") and "# boot: install" in host_entry(live, "n02")
    nodes = status(env, capsys)
    assert nodes["n01"]["boot"] == "local" and nodes["n02"]["boot"] == "install"

    assert main(["flip-to-install", "--inventory", LAB, "--all"], env) == 0
    assert "DEFAULT install" in (tmp_path / N01_PXE).read_text()
    assert all(n["boot"] == "install" for n in status(env, capsys).values())


MODE_MARK = {"install": "DEFAULT install", "local": "LOCALBOOT 0", "diskless": "DEFAULT diskless"}


@pytest.mark.parametrize("start, goal", [(a, b) for a in MODE_MARK for b in MODE_MARK if a != b])
def test_every_flip_between_the_three_modes(env, tmp_path, capsys, lab_diskless, start, goal):
    """Each of the six flips re-renders the node's loader config and the live dhcpd.conf (checked by dhcpd -t)
    and records the mode; the other nodes keep theirs."""
    assert main([f"flip-to-{start}", "--inventory", lab_diskless, "n01"], env) == 0
    capsys.readouterr()
    assert main([f"flip-to-{goal}", "--inventory", lab_diskless, "n01"], env) == 0
    assert f"{goal} boot: 1 node(s) switched (n01)" in capsys.readouterr().out
    pxe = (tmp_path / N01_PXE).read_text()
    assert MODE_MARK[goal] in pxe and all(MODE_MARK[m] not in pxe for m in MODE_MARK if m != goal)
    assert "DEFAULT install" in (tmp_path / N02_PXE).read_text()
    assert (tmp_path / N01_IDENTITY).is_file() == (goal == "diskless")  # a flip out of diskless removes it
    live = (tmp_path / LIVE_DHCPD).read_text()
    assert live == (tmp_path / DHCPD).read_text()
    assert f"# boot: {goal}" in host_entry(live, "n01") and "# boot: install" in host_entry(live, "n02")
    nodes = status(env, capsys)
    assert nodes["n01"]["boot"] == goal and nodes["n02"]["boot"] == "install"


def test_flip_to_diskless_all_names_the_golden_kernel_and_root(env, tmp_path, capsys, lab_diskless):
    assert main(["flip-to-diskless", "--inventory", lab_diskless, "--all"], env) == 0
    assert "diskless boot: 16 node(s) switched" in capsys.readouterr().out
    pxe = (tmp_path / N02_PXE).read_text()
    assert "KERNEL http://10.77.0.1:8080/boot/diskless/vmlinuz" in pxe
    assert "INITRD http://10.77.0.1:8080/boot/diskless/initrd.img" in pxe
    assert "provision.root=http://10.77.0.1:8080/boot/diskless/root.squashfs" in pxe
    assert "provision.identity=http://10.77.0.1:8080/api/nodes/n02/identity" in pxe
    assert all(n["boot"] == "diskless" for n in status(env, capsys).values())
    staged = tmp_path / "clusters" / "lab" / "rendered" / "tftpboot" / "boot" / "diskless"
    assert sorted(p.name for p in staged.iterdir()) == ["initrd.img", "root.squashfs", "root.squashfs.sha256",
                                                        "vmlinuz"]
    for file in staged.iterdir():
        assert file.read_bytes() == (tmp_path / "diskless" / file.name).read_bytes()


def test_flip_to_diskless_needs_boot_diskless_and_changes_nothing_without(env, tmp_path, capsys, lab_diskless):
    assert main(["flip-to-local", "--inventory", LAB, "n01"], env) == 0
    before = snapshot(tmp_path / "clusters")
    capsys.readouterr()
    assert main(["flip-to-diskless", "--inventory", LAB, "n01", "n02"], env) == 3
    err = capsys.readouterr().err
    assert "boot.diskless: needed by the node(s) in diskless boot (n01, n02)" in err, err
    (tmp_path / "diskless" / "root.squashfs.sha256").write_text("not a digest  root.squashfs\n")
    assert main(["flip-to-diskless", "--inventory", lab_diskless, "n01"], env) == 3
    assert "root.squashfs.sha256: not one line '<64 hex digits>  root.squashfs'" in capsys.readouterr().err
    (tmp_path / "diskless" / "root.squashfs").unlink()
    assert main(["flip-to-diskless", "--inventory", lab_diskless, "n01"], env) == 3
    assert f"missing {tmp_path / 'diskless' / 'root.squashfs'}" in capsys.readouterr().err
    assert snapshot(tmp_path / "clusters") == before
    assert status(env, capsys)["n01"]["boot"] == "local"


def test_flip_to_diskless_rejected_by_dhcpd_never_goes_live(env, tmp_path, capsys, lab_diskless):
    site = tmp_path / "site"
    site.mkdir()
    (site / "dhcpd.conf.j2").write_text(
        '{% extends "shipped/dhcpd.conf.j2" %}\n'
        "{% block host_boot %}{% if mode == 'diskless' %}  no-such-statement 42;\n"
        "{% else %}{{ super() }}{% endif %}{% endblock %}\n")
    assert main(["flip-to-local", "--inventory", lab_diskless, "n01"], env) == 0
    before = snapshot(tmp_path / "clusters")
    assert main(["flip-to-diskless", "--inventory", lab_diskless, "--templates", str(site), "n01"], env) == 3
    assert "rejected by dhcpd -t" in capsys.readouterr().err
    assert snapshot(tmp_path / "clusters") == before
    assert status(env, capsys)["n01"]["boot"] == "local"


def test_flip_is_idempotent(env, tmp_path, capsys):
    assert main(["flip-to-local", "--inventory", LAB, "n01", "n02"], env) == 0
    before = snapshot(tmp_path / "clusters")
    capsys.readouterr()
    assert main(["flip-to-local", "--inventory", LAB, "n02", "n01"], env) == 0
    assert "0 node(s) switched, 2 already there" in capsys.readouterr().out
    after = snapshot(tmp_path / "clusters")
    assert {k: v for k, v in after.items() if "nodes.json" not in k} == \
        {k: v for k, v in before.items() if "nodes.json" not in k}


def test_unknown_node_changes_nothing(env, tmp_path, capsys):
    assert main(["flip-to-local", "--inventory", LAB, "n01"], env) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["flip-to-install", "--inventory", LAB, "n01", "n99", "bogus"], env) == 3
    err = capsys.readouterr().err
    assert "n99" in err and "bogus" in err and "nothing was changed" in err
    assert snapshot(tmp_path) == before


def test_flip_needs_nodes_or_all(env, capsys):
    assert main(["flip-to-local", "--inventory", LAB], env) == 3
    assert "--all" in capsys.readouterr().err


def test_flip_rejected_by_dhcpd_never_goes_live(env, tmp_path, capsys):
    """A site template whose local-boot host entry dhcpd refuses: the flip fails, nothing changes."""
    assert main(["flip-to-local", "--inventory", LAB, "n01"], env) == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "dhcpd.conf.j2").write_text(
        '{% extends "shipped/dhcpd.conf.j2" %}\n'
        "{% block host_boot %}{% if mode == 'local' %}  no-such-statement 42;\n"
        "{% else %}{{ super() }}{% endif %}{% endblock %}\n")
    before = snapshot(tmp_path / "clusters")
    assert main(["flip-to-local", "--inventory", LAB, "--templates", str(site), "n02"], env) == 3
    assert "rejected by dhcpd -t" in capsys.readouterr().err
    assert snapshot(tmp_path / "clusters") == before
    assert status(env, capsys)["n02"]["boot"] == "install"


def test_inventory_from_environment_then_last_install(env, tmp_path, capsys):
    assert main(["status", "--json"], {**env, "PROVISION_INVENTORY": LAB}) == 0
    capsys.readouterr()
    assert main(["status"], env) == 3  # no --inventory, no variable, no install recorded yet
    assert "no inventory given" in capsys.readouterr().err
    (tmp_path / "last-install.json").write_text(json.dumps({"inventory": LAB}))
    assert main(["flip-to-local", "n03"], env) == 0
    assert status(env, capsys)["n03"]["boot"] == "local"
