"""boot.transport: multicast: pxelinux's configs name tftm:// URLs (GRUB's stay on TFTP), and atftpd, run by
MulticastTftpServer in a server namespace, sends the payload once to several nodes that ask at the same time
(RFC 2090), reads nothing but the payload and takes no writes; its start is refused without a multicast route."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from provision.inventory import load_inventory
from provision.lab import netns
from provision.render import PXE_LOADER, multicast_payload, render_files
from provision.services.dhcpd import check_config_text, find_dhcpd
from tests.conftest import REPO, require_root, require_tool
from tests.fixtures.inventories import write

MIXED_TFTP = REPO / "tests" / "fixtures" / "mixed-firmware-tftp.yaml"
BIOS_PXELINUX = "tftpboot/pxelinux.cfg/01-02-00-00-00-00-01"
UEFI_GRUB = "tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"

# In the server's namespace: atftpd through MulticastTftpServer until stdin closes.
SERVE = """import sys
from pathlib import Path
from provision.services.multicast_tftp import MulticastTftpServer
server = MulticastTftpServer(Path(sys.argv[1]), ["boot/initrd.img"], sys.argv[2], Path(sys.argv[3]))
try:
    server.start()
except Exception as exc:
    print("refused:", exc, flush=True)
    raise SystemExit(1)
print("serving", server.root, flush=True)
sys.stdin.read()
server.stop()
print("stopped", server.root, flush=True)
"""


def multicast_inventory(tmp_path: Path):
    return load_inventory(write(tmp_path, MIXED_TFTP.read_text().replace("transport: tftp", "transport: multicast")))


def test_multicast_names_tftm_urls_for_pxelinux_and_tftp_paths_for_grub(tmp_path):
    inv = multicast_inventory(tmp_path)
    files = render_files(inv)
    assert ("  KERNEL tftm://10.9.0.1:1069/boot/vmlinuz\n  INITRD tftm://10.9.0.1:1069/boot/initrd.img\n"
            in files[BIOS_PXELINUX])
    assert "  linux /boot/vmlinuz " in files[UEFI_GRUB] and "initrd /boot/initrd.img\n" in files[UEFI_GRUB]
    assert files["dhcpd.conf"].count(f'filename "{PXE_LOADER}";') == 2  # pxelinux.0 hands tftm:// to iPXE
    if find_dhcpd():
        check_config_text(files["dhcpd.conf"], label="multicast dhcpd.conf")
    assert multicast_payload(inv, with_diskless=False) == ["boot/vmlinuz", "boot/initrd.img"]
    assert multicast_payload(inv, with_diskless=True)[2:] == ["boot/diskless/vmlinuz", "boot/diskless/initrd.img"]


def tx_bytes(net: netns.Network, host: netns.Host) -> int:
    return int(net.run(host, ["cat", f"/sys/class/net/{host.iface}/statistics/tx_bytes"]).stdout)


@pytest.mark.root
def test_nodes_asking_together_share_one_multicast_stream(tmp_path):
    require_root()
    require_tool("atftpd")
    atftp = require_tool("atftp")
    root = tmp_path / "tftpboot"  # under pytest's 0700 directories: atftpd (nobody) reads its own staged copy
    (root / "boot").mkdir(parents=True)
    payload = os.urandom(2_400_000)
    (root / "boot" / "initrd.img").write_bytes(payload)
    (root / "pxelinux.cfg").mkdir()
    (root / "pxelinux.cfg" / "default").write_text("DEFAULT local\n")
    net = netns.Network(f"pvmc-{uuid.uuid4().hex[:5]}", rate="10mbit")
    server_proc = None
    try:
        server = net.add_host("srv", address="10.79.1.1/24")
        nodes = [net.add_host(f"n{i}", address=f"10.79.1.{10 + i}/24") for i in range(1, 5)]
        server_proc = net.popen(server, [sys.executable, "-c", SERVE, str(root), "10.79.1.1",
                                         str(tmp_path / "atftpd.log")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        started = server_proc.stdout.readline().split()
        assert started[0] == "serving", started
        staged = Path(started[1])
        assert oct(staged.stat().st_mode & 0o777) == "0o755" and staged.stat().st_uid == 0
        before = tx_bytes(net, server)

        def fetch(node: netns.Host, remote: str, local: Path, put: bool = False) -> subprocess.Popen:
            verb = ["-p", "-l", str(local), "-r", remote] if put else ["-g", "-r", remote, "-l", str(local)]
            return net.popen(node, [atftp, "--option", "multicast", "--option", "blksize 1432", *verb,
                                    "10.79.1.1", "1069"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        fetches = [fetch(node, "boot/initrd.img", tmp_path / f"{node.name}.img") for node in nodes]
        outputs = [p.communicate(timeout=120)[0] for p in fetches]
        assert [p.returncode for p in fetches] == [0] * len(nodes), outputs
        digest = hashlib.sha256(payload).hexdigest()
        assert {hashlib.sha256((tmp_path / f"{n.name}.img").read_bytes()).hexdigest() for n in nodes} == {digest}
        sent = tx_bytes(net, server) - before
        assert sent < 2 * len(payload), f"{sent} bytes sent for {len(nodes)} nodes: not shared"

        (tmp_path / "evil").write_bytes(b"x" * 100)
        refused = [fetch(nodes[0], "pxelinux.cfg/default", tmp_path / "cfg"),  # not part of the payload
                   fetch(nodes[0], "../../etc/passwd", tmp_path / "passwd"),
                   fetch(nodes[0], "boot/initrd.img", tmp_path / "evil", put=True),
                   fetch(nodes[0], "boot/new", tmp_path / "evil", put=True)]
        outputs = [p.communicate(timeout=60)[0] for p in refused]
        assert all(p.returncode != 0 for p in refused), outputs
        assert (root / "boot" / "initrd.img").read_bytes() == payload
        assert sorted(p.name for p in staged.rglob("*")) == ["boot", "initrd.img"]
        log = (tmp_path / "atftpd.log").read_text()
        assert sum(f"Serving boot/initrd.img to 10.79.1.{10 + i}:" in log for i in range(1, 5)) == 4, log[-3000:]
        server_proc.stdin.close()
        assert server_proc.stdout.readline().split()[0] == "stopped"
        assert server_proc.wait(timeout=10) == 0 and not staged.exists()
    finally:
        if server_proc is not None and server_proc.poll() is None:
            server_proc.kill()
            server_proc.wait()
        net.teardown()
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(net.prefix)]


@pytest.mark.root
def test_start_is_refused_when_multicast_would_not_leave_by_the_install_network(tmp_path):
    require_root()
    require_tool("atftpd")
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "initrd.img").write_bytes(b"initrd")
    net = netns.Network(f"pvmc-{uuid.uuid4().hex[:5]}")
    try:
        server = net.add_host("srv", address="10.79.2.1/24")
        net.run(server, ["ip", "route", "del", "224.0.0.0/4", "dev", server.iface])
        out = net.run(server, [sys.executable, "-c", SERVE, str(tmp_path), "10.79.2.1", str(tmp_path / "log")],
                      check=False, input="", cwd=REPO)
        assert out.returncode == 1, out.stdout + out.stderr
        assert ("refused: boot.transport multicast: multicast to 239.255.69.1 goes nowhere (no route), not through "
                "eth0 (10.79.2.1): `ip route add 239.255.69.0/24 dev eth0`") in out.stdout, out.stdout + out.stderr
    finally:
        net.teardown()
