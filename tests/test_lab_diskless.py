"""A diskless lab node against `provision serve` in namespaces (root): real dhcpd, TFTP and HTTP on the
server side; udhcpc, tftp-hpa, curl and the diskless initramfs's own fetch script under busybox (wget,
sha256sum) on the node. It fetches the right files in the right order (loader config -> kernel + initramfs ->
sha256 + squashfs -> identity -> host keys), verifies the image and applies its identity; a corrupt image
and a missing one are refused, with the reason, and nothing after them is fetched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from provision.cli import main
from provision.lab import netns
from tests.conftest import REPO, require_tool
from tests.fixtures.diskless import diskless_dir

pytestmark = pytest.mark.root

MAC = "02:78:00:00:00:01"
INVENTORY = """cluster: dl
server: {{name: srv, ip: 10.78.0.1}}
network: {{subnet: 10.78.0.0/24, domain: lab.test}}
boot:
  kernel: {boot}/vmlinuz
  initrd: {boot}/initrd.img
  append: console=ttyS0,115200
  transport: {transport}
  diskless: {diskless}
images:
  - {{source: /srv/image.raw, target: /dev/vda1}}
nodes:
  - {{name: n01, mac: "{mac}", ip: 10.78.0.11, ssh_authorized_keys: ["{key}"]}}
  - {{name: n02, mac: "02:78:00:00:00:02", ip: 10.78.0.12}}
"""
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOr6JRlhrvbdPgYrrFq3Z0TmZ8Fo7/Vf9XcW3m3x9aAp lab@test"


@pytest.fixture
def lab(tmp_path, request):
    transport = getattr(request, "param", "http")  # boot.transport (indirect parametrization)
    for tool in ("dhcpd", "tftp", "curl", "busybox", "unsquashfs", "ssh-keygen",
                 *(("atftpd", "atftp") if transport == "multicast" else ())):
        require_tool(tool)
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz").write_bytes(b"installer kernel\n")
    (boot / "initrd.img").write_bytes(b"installer initrd\n")
    inventory = tmp_path / "dl.yaml"
    inventory.write_text(INVENTORY.format(boot=boot, diskless=diskless_dir(tmp_path), mac=MAC, key=KEY,
                                          transport=transport))
    env = {**os.environ, "PROVISION_STATE_DIR": str(tmp_path / "state")}
    assert main(["flip-to-diskless", "--inventory", str(inventory), "n01"], env) == 0
    net = netns.Network(f"pvd-{uuid.uuid4().hex[:5]}")
    server_log = open(tmp_path / "serve.log", "w")
    try:
        srv = net.add_host("srv", address="10.78.0.1/24")
        node = net.add_host("n01", mac=MAC)
        serving = net.popen(srv, [sys.executable, "-m", "provision", "serve", "-v", "--inventory", str(inventory)],
                            env=env, cwd=REPO, stdout=server_log, stderr=subprocess.STDOUT)

        def boot(work: str, tries: int = 1) -> tuple[int, dict]:
            proc = net.run(node, [sys.executable, "-m", "provision.lab.diskless_node", "--name", "n01", "--mac", MAC,
                                  "--work", str(tmp_path / work), "--tries", str(tries), "--retry-seconds", "0.2"],
                           check=False, cwd=REPO, timeout=300)
            return proc.returncode, json.loads((tmp_path / work / "result.json").read_text())
        yield boot, tmp_path
        serving.send_signal(signal.SIGTERM)
        assert serving.wait(30) == 0, (tmp_path / "serve.log").read_text()
        net.run(srv, [sys.executable, "-m", "provision", "dhcp", "stop", "--inventory", str(inventory)],
                check=False, env=env, cwd=REPO)
    finally:
        server_log.close()
        net.teardown()


def http_requests(log: str) -> list[str]:
    """The paths of the HTTP requests the server logged, in order (one line per request)."""
    return [line.split('"GET ')[1].split(" ")[0] for line in log.splitlines() if '"GET ' in line]


def test_diskless_node_fetches_in_order_verifies_and_refuses_a_corrupt_or_missing_image(lab):
    boot, tmp = lab
    rc, result = boot("good")
    assert rc == 0 and result["ok"], result
    assert [s["step"] for s in result["steps"]] == ["dhcp", "pxe", "kernel", "fetch", "identity"]
    assert result["first_entry"] == "diskless"
    assert "image verified (sha256" in result["steps"][3]["detail"]
    assert "SSH host keys from the server" in result["steps"][4]["detail"]
    assert http_requests((tmp / "serve.log").read_text()) == [
        "/boot/diskless/vmlinuz", "/boot/diskless/initrd.img", "/boot/diskless/root.squashfs.sha256",
        "/boot/diskless/root.squashfs", "/api/nodes/n01/identity",
        *(f"/api/nodes/n01/host-keys/ssh_host_{kind}_key{suffix}" for kind in ("rsa", "ecdsa", "ed25519")
          for suffix in ("", ".pub"))]
    log = (tmp / "serve.log").read_text()
    assert log.index("tftp: sent pxelinux.cfg/01-02-78-00-00-00-01") < log.index('"GET /boot/diskless/vmlinuz')
    root = tmp / "good" / "root"
    assert (root / "etc" / "provision-golden").read_text() == "golden\n"  # the image itself
    assert (root / "etc" / "hostname").read_text() == "n01\n"
    assert "10.78.0.11 n01.lab.test n01 # provision" in (root / "etc" / "hosts").read_text()
    assert "address 10.78.0.11/24" in (root / "etc" / "network" / "interfaces").read_text()
    assert (root / "root" / ".ssh" / "authorized_keys").read_text() == KEY + "\n"
    kept = tmp / "state" / "clusters" / "dl" / "host-keys" / "n01" / "ssh_host_ed25519_key.pub"
    assert (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_bytes() == kept.read_bytes()
    assert oct((root / "etc" / "ssh" / "ssh_host_ed25519_key").stat().st_mode & 0o777) == "0o600"
    assert not (tmp / "good" / "no-disk").exists()  # nothing written to a disk

    served = tmp / "state" / "clusters" / "dl" / "rendered" / "tftpboot" / "boot" / "diskless" / "root.squashfs"
    corrupt = bytearray(served.read_bytes())
    corrupt[-1] ^= 0xFF
    replacement = served.with_name("corrupt.tmp")
    replacement.write_bytes(bytes(corrupt))
    replacement.replace(served)  # a new file: the fixture's image stays as it was
    before = len(http_requests((tmp / "serve.log").read_text()))
    rc, result = boot("corrupt", tries=2)
    assert rc != 0 and not result["ok"]
    assert result["error"].count("image refused: http://10.78.0.1:8080/boot/diskless/root.squashfs has sha256") == 2
    assert "giving up after 2 tries" in result["error"]
    assert not (tmp / "corrupt" / "diskless" / "root.squashfs").exists() and not (tmp / "corrupt" / "root").exists()
    after = http_requests((tmp / "serve.log").read_text())[before:]
    assert "/api/nodes/n01/identity" not in after and after.count("/boot/diskless/root.squashfs") == 2

    served.with_name("root.squashfs.sha256").unlink()
    rc, result = boot("missing")
    assert rc != 0 and "no image: cannot fetch http://10.78.0.1:8080/boot/diskless/root.squashfs.sha256" in result["error"]


@pytest.mark.parametrize("lab", ["multicast"], indirect=True)
def test_diskless_kernel_and_initramfs_by_multicast_from_provision_serve(lab):
    """boot.transport: multicast: `provision serve` runs atftpd too, the node's kernel and initramfs come as
    tftm:// URLs from it, the rest over HTTP as before."""
    boot, tmp = lab
    rc, result = boot("multicast")
    assert rc == 0 and result["ok"], result
    atftpd_log = (tmp / "state" / "clusters" / "dl" / "atftpd.log").read_text()
    for name in ("vmlinuz", "initrd.img"):
        assert f"Serving boot/diskless/{name} to 10.78.0.11:" in atftpd_log, atftpd_log[-2000:]
    assert "multicast option -> 239.255.69." in atftpd_log
    requests = http_requests((tmp / "serve.log").read_text())
    assert requests[:2] == ["/boot/diskless/root.squashfs.sha256", "/boot/diskless/root.squashfs"], requests
    assert "TFTP (and multicast TFTP) and HTTP serving dl" in (tmp / "serve.log").read_text()
