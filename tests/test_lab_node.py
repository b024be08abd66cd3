"""The lab firmware/installer's pure parts: pxelinux configs, search order, kickstart URL, %post (the last two
with the installer's code, as a lab node reads them)."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from provision.errors import ProvisionError
from provision.installer.cmdline import kickstart_url
from provision.installer.kickstart import post_scripts, read_kickstart
from provision.inventory import load_inventory, parse_inventory
from provision.lab import netns
from provision.lab.node import LabNode, parse_pxelinux, pxelinux_search_order
from provision.render import render_files
from provision.services.http import HttpServer
from tests.conftest import REPO, logged, require_root, require_tool

LAB = Path(__file__).resolve().parent.parent / "inventory" / "lab.yaml"

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
    inv = load_inventory(LAB)
    files = render_files(inv)
    node = inv.nodes[0]
    entry = parse_pxelinux(files[f"tftpboot/pxelinux.cfg/{node.pxelinux_name}"])
    assert entry.kernel == f"http://{inv.server.ip}:{inv.server.http_port}/{inv.boot.kernel_tftp_path}"
    assert entry.initrd == f"http://{inv.server.ip}:{inv.server.http_port}/{inv.boot.initrd_tftp_path}"
    assert kickstart_url(entry.append) == f"http://{inv.server.ip}:{inv.server.http_port}/kickstart/{node.name}.ks"
    (post,) = post_scripts(read_kickstart(files[f"kickstart/{node.name}.ks"]))
    assert not post.in_chroot and post.error_on_fail and post.interpreter == "/bin/bash"
    assert 'dollyC -v --root "${DOLLY_ROOT:-$SYSIMAGE}"' in post.script
    local = render_files(inv, boot_modes={node.name: "local"})
    assert parse_pxelinux(local[f"tftpboot/pxelinux.cfg/{node.pxelinux_name}"]).localboot


def test_rendered_tftp_transport_names_files_in_the_tftp_root():
    text = LAB.read_text().replace("  transport: http", "  transport: tftp")
    inv = parse_inventory(text, LAB)
    node = inv.nodes[0]
    entry = parse_pxelinux(render_files(inv)[f"tftpboot/pxelinux.cfg/{node.pxelinux_name}"])
    assert (entry.kernel, entry.initrd) == (inv.boot.kernel_tftp_path, inv.boot.initrd_tftp_path)


def test_lab_firmware_fetches_http_boot_files_with_curl(tmp_path, caplog):
    """An http:// KERNEL goes to our HTTP server through curl (its log shows the file sent); a missing one
    is an error naming the URL."""
    require_tool("curl")
    require_tool("tftp")
    boot = tmp_path / "tftpboot" / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz").write_bytes(b"K" * 100_000)
    server = HttpServer(tmp_path, nodes=[], on_report=print, host="127.0.0.1", port=0, boot_dir=boot).start()
    node = LabNode("n01", "02:77:00:00:00:01", tmp_path / "disk", tmp_path / "work", 1.0, io.StringIO())
    url = f"http://127.0.0.1:{server.port}/boot"
    try:
        with caplog.at_level(logging.INFO, logger="provision.http"):
            node.fetch_boot_file("127.0.0.1", f"{url}/vmlinuz")
            assert logged(caplog, "http: sent boot/vmlinuz to 127.0.0.1: 100000 bytes")
            with pytest.raises(ProvisionError, match=f"HTTP {url}/initrd.img failed: .*404"):
                node.fetch_boot_file("127.0.0.1", f"{url}/initrd.img")
    finally:
        server.stop()
    assert (tmp_path / "work" / "http" / "vmlinuz").read_bytes() == b"K" * 100_000


@pytest.mark.root
def test_an_armed_node_waits_for_its_reset(tmp_path):
    """--armed: the player loads, writes <work>/armed and does nothing until SIGUSR1 (the reset button), then
    runs its firmware (here: DHCP in a namespace with no server, so it fails after --dhcp-wait)."""
    require_root()
    require_tool("busybox")
    net = netns.Network(f"pvar-{uuid.uuid4().hex[:5]}")
    try:
        host = net.add_host("n01", mac="02:79:00:00:00:21")
        proc = net.popen(host, [sys.executable, "-m", "provision.lab.node", "--armed", "--name", "n01", "--mac",
                                "02:79:00:00:00:21", "--disk", str(tmp_path / "disk"), "--work", str(tmp_path),
                                "--dhcp-wait", "0.5"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (tmp_path / "armed").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None and (tmp_path / "armed").exists() and not (tmp_path / "result.json").exists()
        proc.send_signal(signal.SIGUSR1)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, out
        result = json.loads((tmp_path / "result.json").read_text())
        assert not result["ok"] and "DHCP" in result["error"], result
    finally:
        net.teardown()
