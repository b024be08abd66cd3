"""Rendering: exact layout, golden files, boot modes, site templates, template errors, atomic writes.

Golden files: tests/golden/<inventory>/<rendered path>. After an intended template change, regenerate with
`UPDATE_GOLDEN=1 pytest tests/test_render.py` and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from provision.bootmode import BootMode
from provision.cli import main
from provision.errors import ExitStatus, InputError
from provision.inventory import load_inventory
from provision.render import render_files, render_to
from tests.fixtures.inventories import EXAMPLE, LAB, REPO, inventory_yaml, snapshot, write

GOLDEN = Path(__file__).resolve().parent / "golden"
MIXED_FIRMWARE = REPO / "tests" / "fixtures" / "mixed-firmware.yaml"
MIXED_FIRMWARE_TFTP = REPO / "tests" / "fixtures" / "mixed-firmware-tftp.yaml"
# (golden set, inventory, boot modes, rendered files kept as golden)
GOLDEN_CASES = [
    ("example", EXAMPLE, {}, ["dhcpd.conf", "dolly.conf", "tftpboot/pxelinux.cfg/01-00-16-3e-10-00-01",
                             "kickstart/n001.ks"]),
    ("example-n002-local", EXAMPLE, {"n002": BootMode.LOCAL},
     ["dhcpd.conf", "tftpboot/pxelinux.cfg/01-00-16-3e-10-00-02"]),
    ("lab", LAB, {}, ["kickstart/n01.ks", "tftpboot/pxelinux.cfg/01-02-77-00-00-00-01", "dolly.conf"]),
    ("mixed-firmware", MIXED_FIRMWARE, {}, ["dhcpd.conf", "tftpboot/pxelinux.cfg/01-02-00-00-00-00-01",
                                            "tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"]),
    ("mixed-firmware-local", MIXED_FIRMWARE, {"uefi1": BootMode.LOCAL},
     ["tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"]),
    ("mixed-firmware-tftp", MIXED_FIRMWARE_TFTP, {}, ["dhcpd.conf", "tftpboot/pxelinux.cfg/01-02-00-00-00-00-01",
                                                       "tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"]),
    ("mixed-firmware-diskless", MIXED_FIRMWARE, {"bios1": BootMode.DISKLESS, "uefi1": BootMode.DISKLESS},
     ["dhcpd.conf", "tftpboot/pxelinux.cfg/01-02-00-00-00-00-01", "tftpboot/grub/grub.cfg-01-02-00-00-00-00-02",
      "kickstart/uefi1.identity"]),
    ("mixed-firmware-tftp-diskless", MIXED_FIRMWARE_TFTP, {"bios1": BootMode.DISKLESS, "uefi1": BootMode.DISKLESS},
     ["tftpboot/pxelinux.cfg/01-02-00-00-00-00-01", "tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"]),
]


@pytest.mark.parametrize("case, inventory, modes, kept", GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_golden_files(case, inventory, modes, kept):
    files = render_files(load_inventory(inventory), boot_modes=modes)
    for rel in kept:
        golden = GOLDEN / case / rel
        if os.environ.get("UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(files[rel])
        assert files[rel] == golden.read_text(), f"{rel} differs from {golden}"


def test_layout_is_exactly_the_fixed_one():
    inv = load_inventory(EXAMPLE)
    files = render_files(inv)
    expected = {"dhcpd.conf", "dolly.conf"}
    for node in inv.nodes:
        expected.add("tftpboot/pxelinux.cfg/01-" + node.mac.replace(":", "-"))
        expected.add(f"kickstart/{node.name}.ks")
    assert set(files) == expected
    assert "tftpboot/pxelinux.cfg/01-00-16-3e-10-00-14" in files  # n020: lower-case hex, dashes


def test_dolly_conf_follows_ring_order_and_writes_non_default_ports(tmp_path):
    extra = '  - {name: odd, mac: "02:00:00:00:09:09", ip: 10.9.0.99, dolly_port: 9100}\n'
    text = inventory_yaml(2, extra_nodes=extra).replace("  ip: 10.9.0.1\n", "  ip: 10.9.0.1\n  dolly_port: 9200\n")
    files = render_files(load_inventory(write(tmp_path, text)))
    assert files["dolly.conf"] == (
        "iofiles 1\n/srv/image.raw > /dev/sda1\nserver srv:9200\nfirstclient node001\nlastclient odd:9100\n"
        "clients 3\nnode001\nnode002\nodd:9100\nendconfig\n"
    )
    # dollyC listens on the node's own address and port, never on every address
    assert '--listen "${DOLLY_LISTEN:-10.9.0.99:9100}"' in files["kickstart/odd.ks"]
    assert '--listen "${DOLLY_LISTEN:-10.9.0.2:9998}"' in files["kickstart/node001.ks"]


def test_boot_mode_is_one_variable_per_node():
    inv = load_inventory(EXAMPLE)
    install = render_files(inv)
    flipped = render_files(inv, boot_modes={"n003": BootMode.LOCAL})
    changed = {rel for rel in install if install[rel] != flipped[rel]}
    assert changed == {"dhcpd.conf", "tftpboot/pxelinux.cfg/01-00-16-3e-10-00-03"}
    assert "LOCALBOOT 0" in flipped["tftpboot/pxelinux.cfg/01-00-16-3e-10-00-03"]
    assert "KERNEL" not in flipped["tftpboot/pxelinux.cfg/01-00-16-3e-10-00-03"]
    assert "host n003 {\n  # boot: local\n" in flipped["dhcpd.conf"]
    assert render_files(inv, boot_modes={"n003": "install"}) == install  # and back


def test_diskless_mode_changes_only_that_nodes_loader_configs_and_dhcp_comment():
    inv = load_inventory(MIXED_FIRMWARE)
    install = render_files(inv)
    diskless = render_files(inv, boot_modes={"uefi1": BootMode.DISKLESS})
    changed = {rel for rel in diskless if install.get(rel) != diskless[rel]}
    assert changed == {"dhcpd.conf", "tftpboot/pxelinux.cfg/01-02-00-00-00-00-02",
                       "tftpboot/grub/grub.cfg-01-02-00-00-00-00-02", "kickstart/uefi1.identity"}
    assert set(diskless) - set(install) == {"kickstart/uefi1.identity"}  # only a diskless node has one
    grub = diskless["tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"]
    assert "linux (http,10.9.0.1:8080)/boot/diskless/vmlinuz provision.root=" in grub
    assert "provision.identity=http://10.9.0.1:8080/api/nodes/uefi1/identity" in grub
    assert "inst.ks=" not in grub and "installer" not in grub
    assert "host uefi1 {\n  # boot: diskless\n" in diskless["dhcpd.conf"]
    for mode in (BootMode.LOCAL, BootMode.INSTALL):  # every flip out of diskless renders that mode's files
        back = render_files(inv, boot_modes={"uefi1": mode})
        assert "diskless" not in back["tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"]
        assert "kickstart/uefi1.identity" not in back
    assert render_files(inv, boot_modes={"uefi1": "install"}) == install


def test_unknown_boot_mode_names_all_three():
    with pytest.raises(InputError, match="unknown boot mode 'ramdisk' \\(install, local or diskless\\)"):
        render_files(load_inventory(EXAMPLE), boot_modes={"n001": "ramdisk"})


def test_boot_mode_for_unknown_node_is_an_error():
    with pytest.raises(InputError, match="unknown node 'n999'"):
        render_files(load_inventory(EXAMPLE), boot_modes={"n999": BootMode.LOCAL})


def _site_override(site: Path) -> None:
    (site / "kickstart").mkdir(parents=True)
    (site / "kickstart" / "node.ks.j2").write_text(
        '{% extends "shipped/kickstart/node.ks.j2" %}\n'
        "{% block dolly_post %}\n"
        "echo site hook for {{ node.name }} >> /var/log/site-hook.log\n"
        "{% endblock %}\n"
    )


def test_site_override_of_dolly_post_block_shows_up(tmp_path):
    site = tmp_path / "site"
    _site_override(site)
    files = render_files(load_inventory(EXAMPLE), site_templates=site)
    ks = files["kickstart/n004.ks"]
    assert "%post --nochroot --interpreter=/bin/bash --erroronfail\necho site hook for n004 >>" in ks
    assert "dollyC" not in ks  # the whole shipped hook was replaced ...
    assert "rootpw --iscrypted $6$" in ks  # ... and the rest of the shipped kickstart kept


def test_site_template_shadows_shipped_one_by_name(tmp_path):
    site = tmp_path / "site"
    (site / "pxelinux").mkdir(parents=True)
    (site / "pxelinux" / "local.cfg.j2").write_text("DEFAULT site-local\n# {{ node.name }}\n")
    files = render_files(load_inventory(EXAMPLE), site_templates=site, boot_modes={"n001": "local"})
    assert files["tftpboot/pxelinux.cfg/01-00-16-3e-10-00-01"] == "DEFAULT site-local\n# n001\n"


def test_undefined_variable_names_template_file_and_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "dolly.conf.j2").write_text("iofiles 1\n\nserver {{ inv.server.nmae }}\n")
    with pytest.raises(InputError) as caught:
        render_files(load_inventory(EXAMPLE), site_templates=site)
    assert f"{site}/dolly.conf.j2:3: template error:" in str(caught.value)
    assert "nmae" in str(caught.value)


def test_template_syntax_error_names_file_and_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "dolly.conf.j2").write_text("iofiles 1\n{% for x in %}\n")
    with pytest.raises(InputError, match=rf"{site}/dolly.conf.j2:2: template syntax error"):
        render_files(load_inventory(EXAMPLE), site_templates=site)


def test_failed_render_leaves_previous_output_untouched(tmp_path):
    out = tmp_path / "out"
    render_to(out, load_inventory(EXAMPLE))
    before = snapshot(out)
    site = tmp_path / "site"
    (site / "kickstart").mkdir(parents=True)
    (site / "kickstart" / "node.ks.j2").write_text("{{ node.nonexistent }}\n")
    with pytest.raises(InputError):
        render_to(out, load_inventory(EXAMPLE), site_templates=site)
    assert snapshot(out) == before


def test_rerender_rewrites_only_changes_and_prunes_removed_nodes(tmp_path):
    out = tmp_path / "out"
    first = render_to(out, load_inventory(write(tmp_path, inventory_yaml(3))))
    assert len(first.files.written) == 3 * 2 + 2
    before = snapshot(out)
    (out / "kickstart" / ".node001.ks.123.provision-tmp").write_text("left by a crash")
    (out / "kickstart" / "README").write_text("not ours: kept")
    second = render_to(out, load_inventory(write(tmp_path, inventory_yaml(2))))
    assert second.files.written == ("dolly.conf", "dhcpd.conf")
    assert second.files.removed == (
        "tftpboot/pxelinux.cfg/01-02-00-00-00-00-03", "kickstart/.node001.ks.123.provision-tmp", "kickstart/node003.ks"
    )
    after = snapshot(out)
    assert after["kickstart/node001.ks"] == before["kickstart/node001.ks"]  # same bytes, same inode
    assert "kickstart/README" in after and "kickstart/node003.ks" not in after


def test_switching_the_dhcp_server_removes_the_other_ones_config(tmp_path):
    out = tmp_path / "out"
    render_to(out, load_inventory(write(tmp_path, inventory_yaml(2))), check_dhcpd=False)
    kea = render_to(out, load_inventory(write(tmp_path, inventory_yaml(2) + "dhcp: {server: kea}\n")),
                    check_dhcpd=False)
    assert "kea-dhcp4.conf" in kea.files.written and kea.files.removed == ("dhcpd.conf",)
    assert kea.dhcp_config == "kea-dhcp4.conf" and not kea.dhcp_checked
    isc = render_to(out, load_inventory(write(tmp_path, inventory_yaml(2))), check_dhcpd=False)
    assert "dhcpd.conf" in isc.files.written and isc.files.removed == ("kea-dhcp4.conf",)


def test_cli_render(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["render", "--inventory", str(EXAMPLE), "--out", str(out)], env={})
    assert status == ExitStatus.SUCCESS
    assert "rendered 20 nodes of kek-example" in capsys.readouterr().out
    assert (out / "kickstart" / "n020.ks").is_file() and (out / "dolly.conf").is_file()


def test_cli_render_takes_inventory_from_environment(tmp_path):
    out = tmp_path / "out"
    assert main(["render", "--out", str(out)], env={"PROVISION_INVENTORY": str(LAB)}) == ExitStatus.SUCCESS
    assert (out / "kickstart" / "n16.ks").is_file()


def test_cli_render_missing_template_dir_is_bad_input(tmp_path, capsys):
    argv = ["render", "--inventory", str(EXAMPLE), "--out", str(tmp_path / "out"), "--templates", str(tmp_path / "x")]
    assert main(argv, env={}) == ExitStatus.BAD_INPUT
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_wheel_ships_templates_and_renders_from_elsewhere(tmp_path):
    """Build the wheel, unpack it, render from another directory: the templates come from inside it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=120,
    )
    wheel = next(tmp_path.glob("provision-*.whl"))
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "provision" / "templates" / "kickstart" / "node.ks.j2").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import provision.render as r; print(r.shipped_templates_dir());"
            "from provision.cli import main; raise SystemExit(main())")
    result = subprocess.run(
        [sys.executable, "-c", code, "render", "--inventory", str(EXAMPLE), "--out", "out"],
        cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(site / "provision" / "templates")
    assert (elsewhere / "out" / "kickstart" / "n001.ks").read_text() == (GOLDEN / "example" / "kickstart" / "n001.ks").read_text()
