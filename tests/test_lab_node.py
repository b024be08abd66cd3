"""The lab firmware/installer's pure parts: pxelinux configs, search order, kickstart URL, %post."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from provision.errors import ProvisionError
from provision.inventory import load_inventory
from provision.lab_node import kickstart_url, parse_pxelinux, post_scripts, pxelinux_search_order
from provision.render import render_files

INSTALL = """# n01: install
DEFAULT install
PROMPT 0
LABEL local
  LOCALBOOT 0
LABEL install
  KERNEL boot/vmlinuz
  INITRD boot/initrd.img
  APPEND inst.ks=http://10.77.0.1:8080/kickstart/n01.ks ip=dhcp console=ttyS0,115200
  IPAPPEND 2
"""


def test_default_label_decides():
    entry = parse_pxelinux(INSTALL)
    assert (entry.label, entry.localboot, entry.kernel, entry.initrd) == \
        ("install", False, "boot/vmlinuz", "boot/initrd.img")
    assert kickstart_url(entry.append) == "http://10.77.0.1:8080/kickstart/n01.ks"
    local = parse_pxelinux(INSTALL.replace("DEFAULT install", "default local"))
    assert local.localboot and local.kernel is None


def test_initrd_in_append_and_first_label_without_default():
    entry = parse_pxelinux("label x\n linux vmlinuz\n append initrd=initrd.gz ks=http://s/ks\n")
    assert (entry.kernel, entry.initrd, kickstart_url(entry.append)) == ("vmlinuz", "initrd.gz", "http://s/ks")


@pytest.mark.parametrize("text, message", [
    ("DEFAULT x\n", "no LABEL"),
    ("DEFAULT y\nLABEL x\n LOCALBOOT 0\n", "DEFAULT y names no LABEL"),
    ("LABEL x\n APPEND quiet\n", "neither KERNEL nor LOCALBOOT"),
])
def test_broken_configs_are_errors(text, message):
    with pytest.raises(ProvisionError, match=message):
        parse_pxelinux(text)


def test_search_order_is_pxelinux_s():
    order = pxelinux_search_order("02:77:00:00:00:0A", ipaddress.IPv4Address("10.77.0.11"))
    assert order[:3] == ["pxelinux.cfg/01-02-77-00-00-00-0a", "pxelinux.cfg/0A4D000B", "pxelinux.cfg/0A4D000"]
    assert order[-2:] == ["pxelinux.cfg/0", "pxelinux.cfg/default"]


def test_rendered_lab_files_are_understood():
    inv = load_inventory(Path(__file__).resolve().parent.parent / "inventory" / "lab.yaml")
    files = render_files(inv)
    node = inv.nodes[0]
    entry = parse_pxelinux(files[f"tftpboot/pxelinux.cfg/{node.pxelinux_name}"])
    assert entry.kernel == inv.boot.kernel_tftp_path and entry.initrd == inv.boot.initrd_tftp_path
    assert kickstart_url(entry.append) == f"http://{inv.server.ip}:{inv.server.http_port}/kickstart/{node.name}.ks"
    (post,) = post_scripts(files[f"kickstart/{node.name}.ks"])
    assert not post.in_chroot and post.error_on_fail and post.interpreter == "/bin/bash"
    assert 'dollyC -v --root "${DOLLY_ROOT:-$SYSIMAGE}"' in post.script
    local = render_files(inv, boot_modes={node.name: "local"})
    assert parse_pxelinux(local[f"tftpboot/pxelinux.cfg/{node.pxelinux_name}"]).localboot
