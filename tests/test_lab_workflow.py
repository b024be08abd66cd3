"""The whole workflow on the simulated cluster (root): `provision install` in the lab's server namespace,
8 lab nodes booting with real DHCP/TFTP/HTTP clients, one node's plug pulled in the middle of the clone.
The 7 others must end byte-identical, personalised and on local boot; the dead one failed, on install."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provision.lab import cluster as lab, demo as lab_demo, netns
from provision.cli import main
from provision.cluster import ClusterFiles
from provision.host_keys import KEY_FILES, HostKeyStore
from provision.inventory import load_inventory
from provision.state import NodeState
from tests.conftest import REPO, require_tool
from tests.fixtures.diskless import diskless_dir
from tests.fixtures.inventories import lab_copy
from tests.test_host_keys import known

pytestmark = pytest.mark.root


@pytest.fixture
def lab_inventory(tmp_path, request):
    """inventory/lab.yaml with its lab files under tmp_path; a private namespace prefix and state dir. With
    param "kea", the cluster's DHCP server is Kea."""
    kea = getattr(request, "param", "isc") == "kea"
    for tool in ("kea-dhcp4" if kea else "dhcpd", "busybox", "tftp", "curl"):
        require_tool(tool)
    inventory, env = lab_copy(tmp_path, extra="dhcp: {server: kea}\n" if kea else "")
    try:
        yield load_inventory(inventory), env
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])


def test_eight_nodes_one_killed_mid_clone(lab_inventory, tmp_path):
    inv, env = lab_inventory
    log = tmp_path / "install.log"
    result = lab_demo.run_demo(inv, nodes=8, kill="n04", image_mib=48, ring_timeout=5.0, env=env,
                               show=lambda line: None, install_log=log, reboot_seconds=0.5)
    install_output = log.read_text()
    summary = lab_demo.summary(result)
    assert result.install_status == 1, install_output[-4000:]  # one node failed: non-zero
    survivors = [n for n in result.nodes if n.name != "n04"]
    for node in survivors:
        assert (node.state, node.boot) == ("done", "local"), summary
        assert node.identical, summary
        assert node.hostname == node.name, summary
        assert node.lab_boot_ok, summary  # its firmware found local boot after the reboot
    [dead] = [n for n in result.nodes if n.name == "n04"]
    assert (dead.state, dead.boot) == ("failed", "install"), summary
    assert dead.error, summary
    assert result.ok

    # the real services did the work: leases from our dhcpd, PXE configs from our TFTP server
    files = ClusterFiles.of(inv, env)
    dhcpd_log = (files.root / "dhcpd" / "dhcpd.log").read_text()
    for node in inv.nodes[:8]:
        assert f"DHCPACK on {node.ip} to {node.mac}" in dhcpd_log
        assert f"sent pxelinux.cfg/01-{node.mac.replace(':', '-')} to {node.ip}:" in install_output
        assert f"tftp: sent lpxelinux.0 to {node.ip}:" in install_output  # the loader of boot.transport: http
        # ... which fetches the installer from our HTTP server (curl in the lab's firmware)
        assert re.search(rf"http: sent boot/initrd\.img to {node.ip}: \d+ bytes", install_output)
    assert not re.search(r"tftp: sent /?boot/", install_output)  # only the small files over TFTP
    # the server made every installed node's SSH host keys and trusts them for its IP
    keys = HostKeyStore(files.host_keys)
    for node in inv.nodes[:8]:
        assert keys.has(node.name)
        public = [keys.read(node.name, f).decode().split() for f in KEY_FILES if f.endswith(".pub")]
        assert known(files.known_hosts, str(node.ip)) == {kind: key for kind, key, *_ in public}
    # the dead node's PXE config still installs; the others boot locally
    pxe = files.tftp_root / "pxelinux.cfg"
    assert "DEFAULT install" in (pxe / f"01-{inv.node('n04').mac.replace(':', '-')}").read_text()
    assert "LOCALBOOT 0" in (pxe / f"01-{inv.node('n05').mac.replace(':', '-')}").read_text()
    # lab down removed everything the lab made
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(env["PROVISION_LAB_PREFIX"])]


# In a lab node's namespace: the first router advertisement heard on eth0 (M, O, router lifetime).
SNIFF_RA = """import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.layers.inet6 import ICMPv6ND_RA
from scapy.sendrecv import sniff
print("sniffing", flush=True)
for p in sniff(iface="eth0", lfilter=lambda p: p.haslayer(ICMPv6ND_RA), count=1, timeout=60):
    print("RA", p[ICMPv6ND_RA].M, p[ICMPv6ND_RA].O, p[ICMPv6ND_RA].routerlifetime, flush=True)
"""


def test_thirty_two_nodes_of_the_scale_lab(tmp_path):
    """inventory/lab-scale.yaml: a lab past the old cap of 16 (bench/scale_bench.py runs it up to 100 nodes);
    its time-outs grow with the nodes sharing this machine's cores; every node's kernel and initrd come by
    multicast TFTP (boot.transport: multicast: atftpd, played iPXE's tftm:// with atftp)."""
    for tool in ("dhcpd", "busybox", "tftp", "curl", "atftpd", "atftp"):
        require_tool(tool)
    inventory, env = lab_copy(tmp_path, "lab-scale.yaml")
    assert (lab_demo.shared_cores_factor(16), lab_demo.shared_cores_factor(32)) == (1.0, 2.0)
    try:
        result = lab_demo.run_demo(load_inventory(inventory), nodes=32, image_mib=8, env=env,
                                   show=lambda line: None, install_log=tmp_path / "install.log")
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])
    assert result.ok and len(result.nodes) == 32, lab_demo.summary(result)
    install_log = (tmp_path / "install.log").read_text()
    assert "32 node(s) ready" in install_log, install_log[-3000:]
    atftpd_log = (Path(env["PROVISION_STATE_DIR"]) / "clusters" / "lab-scale" / "atftpd.log").read_text()
    served = set(re.findall(r"Serving boot/initrd\.img to (10\.77\.0\.\d+):", atftpd_log))
    assert served == {str(node.ip) for node in load_inventory(inventory).nodes[:32]}, atftpd_log[-3000:]


@pytest.mark.parametrize("lab_inventory", ["kea"], indirect=True)
def test_four_nodes_install_through_kea(lab_inventory, tmp_path):
    """The whole workflow with Kea as the cluster's DHCP server: leases and boot files from Kea, every flip
    applied with config-reload (one kea-dhcp4 process from the first lease to the last flip)."""
    inv, env = lab_inventory
    log = tmp_path / "install.log"
    result = lab_demo.run_demo(inv, nodes=4, image_mib=16, ring_timeout=5.0, env=env, show=lambda line: None,
                               install_log=log, reboot_seconds=0.5)
    install_output = log.read_text()
    summary = lab_demo.summary(result)
    assert result.install_status == 0 and result.ok, install_output[-4000:] + summary
    assert all((n.state, n.boot, n.identical, n.lab_boot_ok) == ("done", "local", True, True)
               for n in result.nodes), summary
    files = ClusterFiles.of(inv, env)
    assert "kea-dhcp4 serving 10.77.0.0/24" in install_output
    assert not (files.root / "dhcpd").exists()
    leases = (files.root / "kea" / "kea-leases4.csv").read_text()
    kea_log = (files.root / "kea" / "kea-dhcp4.log").read_text()
    for node in inv.nodes[:4]:
        assert f"{node.ip},{node.mac}" in leases, leases
    assert kea_log.count("DHCP4_CONFIG_COMPLETE") >= 2  # started once, then reloaded for the flips
    assert kea_log.count("DHCP4_STARTED") == 1, kea_log[-3000:]


def test_rerun_after_a_crash_does_not_clone_finished_nodes(lab_inventory, tmp_path):
    """n01 finished in an earlier run (done, flipped to local boot) before provision died: installing
    again clones only n02, and n01's disk is not touched. The inventory asks for `network.ipv6_ra`: the
    install's router advertisement reaches n01's namespace."""
    inv, env = lab_inventory
    Path(inv.path).write_text(Path(inv.path).read_text().replace("  domain: lab.test", "  ipv6_ra: true\n  domain: lab.test"))
    inv = load_inventory(inv.path)
    built = lab.lab_up(inv, nodes=2, env=env, image_mib=4)
    assert main(["flip-to-local", "--inventory", str(inv.path), "n01"], env) == 0
    ClusterFiles.of(inv, env).store().update("n01", state=NodeState.DONE)
    sniffer = subprocess.Popen(netns.ns_argv(built.node("n01").ns, [sys.executable, "-c", SNIFF_RA]),
                               stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert sniffer.stdout.readline().strip() == "sniffing"
    install = subprocess.Popen(
        netns.ns_argv(built.server_ns, [sys.executable, "-m", "provision", "install", "--inventory", str(inv.path),
                                        "--nodes", "n01,n02", "--wait", "60", "--finish-wait", "60",
                                        "--linger", "2"]),
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    booted = lab.boot_nodes(built, ["n02"], reboot_seconds=0.5)
    output, _ = install.communicate(timeout=180)
    heard, _ = sniffer.communicate(timeout=60)
    assert heard.strip() == "RA 0 0 0", heard  # offers nothing: no managed/other config, not a router
    assert "IPv6 router advertisements on eth0" in output, output
    assert booted["n02"].wait(timeout=60) == 0
    assert install.returncode == 0, output
    assert "1 node(s) to install, 1 done before" in output
    assert "ring of 1 node(s): lab-srv -> n02" in output
    n01, n02 = built.nodes
    assert not (Path(n01.disk) / "dev" / "sda1").exists()
    image = (tmp_path / "files" / "image.raw").read_bytes()
    assert (Path(n02.disk) / "dev" / "sda1").read_bytes() == image
    records = ClusterFiles.of(inv, env).store().load()
    assert [(records[n].state, records[n].boot) for n in ("n01", "n02")] == [("done", "local")] * 2


def test_a_diskless_node_boots_from_a_running_install(lab_inventory, tmp_path):
    """n03 is in diskless boot while `provision install` installs n01 and n02: the install's own DHCP, TFTP and
    HTTP serve its diskless boot (loader config, kernel and initramfs, the squashfs checked against its sha256,
    its identity, its kept host keys) while the others install; n01 and n02 end done, cloned and on local
    boot, n03 is never in the ring and stays in diskless boot."""
    inv, env = lab_inventory
    text = Path(inv.path).read_text()
    Path(inv.path).write_text(text.replace("  transport: http ", f"  diskless: {diskless_dir(tmp_path)}\n  transport: http "))
    inv = load_inventory(inv.path)
    built = lab.lab_up(inv, nodes=3, env=env, image_mib=8)
    assert main(["flip-to-diskless", "--inventory", str(inv.path), "n03"], env) == 0
    install = subprocess.Popen(
        netns.ns_argv(built.server_ns, [sys.executable, "-m", "provision", "install", "--inventory", str(inv.path),
                                        "--nodes", "n01,n02", "--wait", "120", "--finish-wait", "60",
                                        "--linger", "15", "-v"]),  # serving n03 even if n01 and n02 are quick
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    booted = lab.boot_nodes(built, ["n01", "n02"], reboot_seconds=0.5)
    n03 = built.node("n03")
    subprocess.run(["ip", "-n", n03.ns, "link", "set", netns.HOST_IFACE, "up"], check=True)
    work = tmp_path / "n03-diskless"
    diskless = subprocess.run(netns.ns_argv(n03.ns, [
        sys.executable, "-m", "provision.lab.diskless_node", "--name", "n03", "--mac", n03.mac, "--work", str(work),
        "--tries", "30", "--retry-seconds", "1"]), cwd=REPO, capture_output=True, text=True, timeout=300)
    running = install.poll() is None  # n03 was served while the install still ran
    output, _ = install.communicate(timeout=300)
    result = json.loads((work / "result.json").read_text())
    assert diskless.returncode == 0 and result["ok"], diskless.stdout + diskless.stderr + output[-3000:]
    assert running, output[-3000:]
    assert [s["step"] for s in result["steps"]] == ["dhcp", "pxe", "kernel", "fetch", "identity"], result
    assert "image verified (sha256" in result["steps"][3]["detail"], result
    assert (work / "root" / "etc" / "hostname").read_text() == "n03\n"
    assert [booted[n].wait(timeout=60) for n in ("n01", "n02")] == [0, 0], output
    assert install.returncode == 0, output
    assert "ring of 2 node(s): lab-srv -> n01 -> n02" in output, output
    assert re.search(r"http: sent /?boot/diskless/root\.squashfs to 10\.77\.0\.13: \d+ bytes", output), output
    records = ClusterFiles.of(inv, env).store().load()
    assert [(records[n].state, records[n].boot) for n in ("n01", "n02")] == [("done", "local")] * 2
    assert records["n03"].boot == "diskless", records["n03"]
    image = (tmp_path / "files" / "image.raw").read_bytes()
    assert all((Path(built.node(n).disk) / "dev" / "sda1").read_bytes() == image for n in ("n01", "n02"))


def test_enough_ready_nodes_start_the_ring_without_the_rest(lab_inventory, tmp_path):
    """--enough 2 with three nodes of which only two are powered on: the ring starts with those two, the
    silent third is failed with the reason and stays on install boot; exit status non-zero."""
    inv, env = lab_inventory
    built = lab.lab_up(inv, nodes=3, env=env, image_mib=4)
    install = subprocess.Popen(
        netns.ns_argv(built.server_ns, [sys.executable, "-m", "provision", "install", "--inventory", str(inv.path),
                                        "--nodes", "n01,n02,n03", "--enough", "2", "--wait", "120",
                                        "--finish-wait", "60", "--linger", "1"]),
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    booted = lab.boot_nodes(built, ["n01", "n02"], reboot_seconds=0.5)
    output, _ = install.communicate(timeout=180)
    assert [booted[n].wait(timeout=60) for n in ("n01", "n02")] == [0, 0], output
    assert install.returncode == 1, output
    assert "ring of 2 node(s): lab-srv -> n01 -> n02" in output
    records = ClusterFiles.of(inv, env).store().load()
    assert [(records[n].state, records[n].boot) for n in ("n01", "n02")] == [("done", "local")] * 2
    assert (records["n03"].state, records["n03"].boot) == ("failed", "install")
    assert "not ready when the ring started with 2 node(s) (--enough 2)" in records["n03"].error


def test_no_install_loop_when_a_flip_did_not_reach_the_pxe_config(lab_inventory, tmp_path):
    """n01 is done and on local boot, but its PXE config still says install (a flip that never reached
    the TFTP root): its installer asks the server first, hears `local`, and leaves the disk alone."""
    inv, env = lab_inventory
    built = lab.lab_up(inv, nodes=2, env=env, image_mib=4)
    files = ClusterFiles.of(inv, env)
    assert main(["flip-to-local", "--inventory", str(inv.path), "n01"], env) == 0
    files.store().update("n01", state=NodeState.DONE)
    install = subprocess.Popen(
        netns.ns_argv(built.server_ns, [sys.executable, "-m", "provision", "install", "--inventory", str(inv.path),
                                        "--nodes", "n01,n02", "--wait", "60", "--finish-wait", "60", "--linger", "3"]),
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in install.stdout:  # install has rendered n01 as local and serves ...
        if "dhcpd serving" in line:
            break
    n01_pxe = files.tftp_root / "pxelinux.cfg" / f"01-{inv.node('n01').mac.replace(':', '-')}"
    n02_pxe = files.tftp_root / "pxelinux.cfg" / f"01-{inv.node('n02').mac.replace(':', '-')}"
    assert "LOCALBOOT" in n01_pxe.read_text()
    n01_pxe.write_text(n02_pxe.read_text().replace("n02", "n01"))  # ... but the flip "did not reach" it
    booted = lab.boot_nodes(built, ["n01"], reboot_seconds=0.5)
    assert booted["n01"].wait(timeout=60) == 0
    booted.update(lab.boot_nodes(built, ["n02"], reboot_seconds=0.5))
    output, _ = install.communicate(timeout=180)
    assert install.returncode == 0, output
    assert booted["n02"].wait(timeout=60) == 0
    n01, n02 = built.nodes
    result = json.loads((Path(n01.work) / "result.json").read_text())
    assert result["first_entry"] == "install" and result["install_skipped"] is True, result
    assert not any(Path(n01.disk).iterdir())  # the disk was not touched
    assert json.loads((Path(n02.work) / "result.json").read_text())["install_skipped"] is False
