"""The VM lab (root, QEMU under TCG): `provision lab up --vm` builds QEMU machines with real firmware on taps in
the lab's namespaces; `provision install` in the server namespace serves them; `lab off` / `lab down` leave
nothing behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from provision.errors import InputError
from provision.lab import (clone_checks, cluster as lab, netns, vm as lab_vm, vm_demo as lab_vm_demo, vm_discover,
                           vm_watch)
from provision.cli import main
from provision.cluster import ClusterFiles
from provision.images.cache import Cache
from provision.images.initrd import MARKER
from provision.inventory import load_inventory
from provision.model import Firmware
from tests.conftest import REPO, require_tool
from tests.fixtures.inventories import write
from tests.vm_rig import require_vm

vm = pytest.mark.vm
LAB_FILES = "/var/lib/provision/lab-vm"


@pytest.fixture
def vm_lab(tmp_path):
    """inventory/lab-vm.yaml with its lab files under tmp_path (only the nodes in `keep`, if given; the DHCP
    server `dhcp`, if given), a private state dir and namespace prefix, the shared build cache; everything of
    the lab removed afterwards."""
    require_vm(Firmware.UEFI, "mmdebstrap", "mksquashfs", "ipmi_sim", "ipmitool")  # UEFI machines too; BMCs
    env = {"PROVISION_STATE_DIR": str(tmp_path / "state"), "PROVISION_LAB_PREFIX": f"pvv-{uuid.uuid4().hex[:5]}",
           "PROVISION_CACHE": str(Cache.of(os.environ).root)}

    def inventory(keep: tuple[str, ...] | None = None, dhcp: str | None = None) -> Path:
        text = (REPO / "inventory" / "lab-vm.yaml").read_text().replace(LAB_FILES, str(tmp_path / "files"))
        if dhcp is not None:
            text += f"dhcp: {{server: {dhcp}}}\n"
        if keep is not None:  # node entries may span lines (n02's disk): filter the parsed list
            data = yaml.safe_load(text)
            data["nodes"] = [node for node in data["nodes"] if node["name"] in keep]
            assert [node["name"] for node in data["nodes"]] == list(keep)
            text = yaml.safe_dump(data, sort_keys=False)
        path = tmp_path / "lab-vm.yaml"
        path.write_text(text)
        return path

    try:
        yield inventory, env
    finally:
        lab.lab_down(env)
        netns.teardown_prefix(env["PROVISION_LAB_PREFIX"])


def _serial(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@vm
@pytest.mark.root
def test_vm_lab_pxe_boots_our_installer_then_off_and_down_leave_nothing(vm_lab, tmp_path, capsys):
    """A BIOS and a UEFI machine in the lab: both get their lease from our Kea (the VM run of the Kea path;
    make demo-vm boots through dhcpd), their loader from our TFTP server and come up in our installer with the
    inventory's address; `lab off` kills one QEMU, `lab down` removes the machines, taps, disks, links and
    namespaces."""
    require_tool("kea-dhcp4")
    make_inventory, env = vm_lab
    inv_path = make_inventory(keep=("n01", "n03"), dhcp="kea")
    inv = load_inventory(inv_path)
    assert main(["lab", "up", "--vm", "--inventory", str(inv_path)], env) == 0
    built = lab.load_lab(env)
    assert built.vm and [(n.name, n.firmware) for n in built.nodes] == [("n01", "bios"), ("n03", "uefi")]
    key = tmp_path / "files" / "ssh" / "id_ed25519"
    assert key.is_file() and key.with_suffix(".pub").read_text().startswith("ssh-ed25519 ")  # the lab's key pair
    capsys.readouterr()
    assert main(["lab", "status", "--json"], env) == 0
    status = json.loads(capsys.readouterr().out)
    for node in status["nodes"]:
        disk = Path(node["disk_image"])
        assert disk.stat().st_size == 4 << 30 and disk.stat().st_blocks == 0  # sparse, blank
        assert node["qemu_pids"] == [] and node["up"]
    install_log = tmp_path / "install.log"
    with open(install_log, "wb") as log:
        subprocess.Popen(netns.ns_argv(built.server_ns, [
            sys.executable, "-m", "provision", "install", "--inventory", str(inv_path), "--wait", "600", "-v"]),
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    while "kea-dhcp4 serving" not in install_log.read_text():
        time.sleep(0.2)
    started = time.monotonic()
    assert main(["lab", "boot"], env) == 0
    serials = {n.name: Path(n.work) / "serial.log" for n in built.nodes}
    seconds = {}
    while len(seconds) < len(serials):
        for node in inv.nodes:
            if node.name not in seconds and f"network eth0 {node.ip}/24" in _serial(serials[node.name]):
                seconds[node.name] = time.monotonic() - started
        assert time.monotonic() - started < 600, {n: _serial(p)[-2000:] for n, p in serials.items()}
        time.sleep(1)
    for node in inv.nodes:
        assert MARKER in _serial(serials[node.name])
    served = install_log.read_text()
    assert re.search(rf"sent l?pxelinux\.0 to {inv.node('n01').ip}:", served), served[-3000:]  # l: boot.transport http
    assert re.search(rf"sent grub/x86_64-efi/core\.efi to {inv.node('n03').ip}:", served), served[-3000:]
    leases = (tmp_path / "state" / "clusters" / "lab-vm" / "kea" / "kea-leases4.csv").read_text()
    assert all(f"{node.ip},{node.mac}" in leases for node in inv.nodes), leases

    capsys.readouterr()
    assert main(["lab", "status", "--json"], env) == 0
    pids = {n["name"]: n["qemu_pids"] for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert all(len(p) == 1 for p in pids.values()), pids
    assert main(["lab", "off", "n01"], env) == 0
    assert not Path(f"/proc/{pids['n01'][0]}/cmdline").exists() or _zombie(pids["n01"][0])
    assert main(["lab", "down"], env) == 0
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(env["PROVISION_LAB_PREFIX"])]
    for pid in pids["n03"]:
        assert not Path(f"/proc/{pid}/cmdline").exists() or _zombie(pid)
    assert not (tmp_path / "state" / "lab" / "disks").exists()
    assert not (tmp_path / "files" / "rootfs.ext4").is_symlink() and not key.exists()
    print("\nVM lab, 2 machines at once (TCG): lab boot to installer network up: "
          + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def _assert_served_loaders(inv, install_log: Path) -> None:
    served = install_log.read_text()
    for node in inv.nodes:
        loader = r"grub/x86_64-efi/core\.efi" if node.firmware == "uefi" else r"l?pxelinux\.0"
        assert re.search(rf"sent /?{loader} to {node.ip}:", served), served[-3000:]


@vm
@pytest.mark.root
def test_demo_vm_installs_three_machines_that_boot_their_own_disks(vm_lab, tmp_path):
    """`make demo-vm`, no human step: `provision install --power-cycle` powers 2 BIOS + 1 UEFI machines on
    through their BMCs (ipmi_sim, IPMI over LAN); they install over the network, reboot from their own disks and
    answer over SSH as themselves; the clones hold the golden image's files byte for byte. Then the diskless
    round: a BIOS and the UEFI machine, flipped to diskless and powered on through their BMCs, run the golden
    squashfs from RAM as themselves with their disks untouched, and flipped back to local boot their disks."""
    make_inventory, env = vm_lab
    inv = load_inventory(make_inventory())
    result = lab_vm_demo.run_vm_demo(inv, env=env, show=print, logs=tmp_path / "logs")
    summary = lab_vm_demo.summary(result)
    served = (tmp_path / "logs" / "install.log").read_text()
    for node in inv.nodes:  # powered on by the install, through the node's own BMC (no `lab boot`)
        assert f"{node.name}: next boot from the network; power cycled through {node.bmc.where}" in served, \
            served[-3000:]
    assert result.install_status == 0 and result.verify_status == 0, summary
    for node in result.nodes:
        assert (node.state, node.boot) == ("done", "local"), summary
        assert node.verified, summary          # hostname and IP, asked over SSH
        assert node.identical, summary         # sha256 of the golden marker files
        assert node.booted_from_disk, summary  # /proc/cmdline of the disk's GRUB entry, not the installer's
        assert node.installs == 1, summary     # no second installer fetch after the flip
    _assert_served_loaders(inv, tmp_path / "logs" / "install.log")
    for node in inv.nodes:  # and `verify` ran with --host-key-policy reject: each clone holds the keys it got
        assert f"sent ssh_host_ed25519_key of {node.name} to {node.ip}" in served, served[-3000:]
    assert [(o.name, o.firmware) for o in result.diskless] == [("n01", "bios"), ("n03", "uefi")], summary
    for diskless in result.diskless:
        assert diskless.verified is not None, summary  # verify over SSH: host name, address, the kept host key
        assert diskless.image_verified, summary        # the initramfs checked the squashfs's sha256
        assert diskless.identical, summary             # golden files byte for byte
        assert diskless.root == "overlay", summary     # tmpfs over the squashfs, not the disk
        assert diskless.disk_untouched, summary        # sha256 of the disk image before = after
        assert diskless.back_on_disk, summary          # flip-to-local: its own disk again, verified
    assert result.ok
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(env["PROVISION_LAB_PREFIX"])]
    print("\n" + summary)


@vm
@pytest.mark.root
def test_demo_vm_discovered_then_one_machine_killed_mid_clone(vm_lab, tmp_path):
    """The install's inventory has no nodes (`nodes: []`): `provision discover --bmc-range` (beside the running
    dhcpd) powers the three machines on one at a time through their BMCs and appends them as the lab has them
    (n03's DHCPDISCOVER says UEFI: firmware uefi); `provision install --power-cycle` installs them. n02's QEMU is
    killed while the ring feeds it: n01 and n03 finish and boot from disk; n02 is reported failed and stays on
    install boot."""
    make_inventory, env = vm_lab
    inv = load_inventory(make_inventory())
    result = lab_vm_demo.run_vm_demo(inv, kill="n02", env=env, show=print, logs=tmp_path / "logs",
                                     discover=("n01", "n02", "n03"))
    summary = lab_vm_demo.summary(result)
    assert result.discovered == ("n01 02:78:00:00:00:01 10.78.0.11 bios 10.78.0.111",
                                 "n02 02:78:00:00:00:02 10.78.0.12 bios 10.78.0.112",
                                 "n03 02:78:00:00:00:03 10.78.0.13 uefi 10.78.0.113"), summary
    inv = load_inventory(tmp_path / "logs" / "discovered.yaml")  # what the install used
    assert result.install_status == 1 and not result.diskless, summary
    outcome = {n.name: n for n in result.nodes}
    for name in ("n01", "n03"):
        node = outcome[name]
        assert (node.state, node.boot, node.verified, node.identical, node.booted_from_disk) == \
            ("done", "local", True, True, True), summary
    assert (outcome["n02"].state, outcome["n02"].boot) == ("failed", "install"), summary
    assert outcome["n02"].error, summary
    pxe = ClusterFiles.of(inv, env).tftp_root / "pxelinux.cfg" / inv.node("n02").pxelinux_name
    assert "DEFAULT install" in pxe.read_text()
    assert result.ok
    print("\n" + summary)


CHECKS_OUTPUT = """== n01 (10.78.0.11): exit 0
a132511c232b09f61823e49754e08255ea200ed956cdf0346d3968c5de2c398c  /etc/provision-golden
26f2e57c99338feaf71c46fa4babdc7e1a6c115943002d109fdb746667104f5f  /vmlinuz
BOOT_IMAGE=/vmlinuz root=LABEL=root ro console=ttyS0,115200 net.ifnames=0
disk gpt 4225761280 4225761280
== n02 (10.78.0.12): ERROR ssh: timed out
1 of 2 node(s) ok
"""


def test_parse_checks_takes_sums_and_command_line_per_node():
    checks = clone_checks.parse_checks(CHECKS_OUTPUT)
    sums, cmdline = checks["n01"]
    assert sums == {"/etc/provision-golden": "a132511c232b09f61823e49754e08255ea200ed956cdf0346d3968c5de2c398c",
                    "/vmlinuz": "26f2e57c99338feaf71c46fa4babdc7e1a6c115943002d109fdb746667104f5f"}
    assert cmdline.startswith("BOOT_IMAGE=/vmlinuz root=LABEL=root")
    assert checks["n02"] == ({}, "")
    assert clone_checks.parse_disks(CHECKS_OUTPUT) == {"n01": ("gpt", 4225761280, 4225761280)}


def test_disk_command_prints_file_system_bytes_as_an_integer(tmp_path):
    """The DISK_COMMAND's dumpe2fs | awk part on a 4031 MiB file system (awk must not print 4.22681e+09)."""
    require_tool("dumpe2fs")
    image = tmp_path / "root.img"
    with open(image, "wb") as out:
        out.truncate(4031 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    pipeline = clone_checks.DISK_COMMAND[clone_checks.DISK_COMMAND.rindex("$(dumpe2fs"):][2:-1]
    out = subprocess.run(["sh", "-c", pipeline], env={"root": str(image), "PATH": "/usr/sbin:/sbin:/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    assert out == f"{4031 << 20}\n"


def test_a_clone_is_as_expected_only_grown_on_its_inventory_disk_label():
    done = dict(state="done", boot="local", error=None, killed=False, verified=True, identical=True,
                booted_from_disk=True, installs=1)
    assert lab_vm_demo.VmOutcome("n03", "uefi", **done, table="gpt", grown=True, disk_label="gpt").as_expected
    assert lab_vm_demo.VmOutcome("n01", "bios", **done, table="dos", grown=True, disk_label="msdos").as_expected
    assert lab_vm_demo.VmOutcome("n02", "bios", **done, table="gpt", grown=True, disk_label="gpt").as_expected
    assert not lab_vm_demo.VmOutcome("n03", "uefi", **done, table="dos", grown=True, disk_label="gpt").as_expected
    assert not lab_vm_demo.VmOutcome("n02", "bios", **done, table="dos", grown=True, disk_label="gpt").as_expected
    assert not lab_vm_demo.VmOutcome("n01", "bios", **done, table="dos", grown=False).as_expected


def test_timing_table_shows_each_phase_or_a_dash():
    outcome = lab_vm_demo.VmOutcome("n01", "uefi", "failed", "install", "dead", True, False, False, False, 1)
    clock = vm_watch.NodeClock("n01", 100.0, {"firmware": 14.2, "installer up": 31.0})
    result = lab_vm_demo.VmDemoResult(1, 1, (outcome,), (clock,), 60.0, Path("/logs"))
    header, row = lab_vm_demo.timing_table(result).splitlines()
    assert header.split()[:3] == ["node", "fw", "firmware"]
    assert row.split()[:10] == ["n01", "uefi", "14", "31", "-", "-", "-", "-", "-", "killed"]
    assert result.ok  # the killed machine failed and stayed on install boot


def test_lab_bmcs_need_ipmi_on_a_free_address_of_the_lab_subnet(tmp_path):
    text = (REPO / "inventory" / "lab-vm.yaml").read_text()
    assert lab_vm.check_bmcs(load_inventory(write(tmp_path, text, "lab-vm.yaml")), 3) is None
    for old, new, message in (
            ("bmc: {address: 10.78.0.112}", "bmc: {address: 10.79.0.112}", "n02: bmc.address: outside the lab's "
             "subnet 10.78.0.0/24: 10.79.0.112"),
            ("bmc: {address: 10.78.0.112}", "bmc: {address: 10.78.0.11}", "n02: bmc.address: n01 has it already: "
             "10.78.0.11"),
            ("bmc: {address: 10.78.0.112}", "bmc: {address: bmc2.lab.test}", "n02: bmc.address: the VM lab needs an "
             "IPv4 address: bmc2.lab.test"),
            ("bmc: {address: 10.78.0.112}", "bmc: {type: redfish, address: 10.78.0.112}", "n02: bmc.type: the VM "
             "lab's BMCs speak ipmi (ipmi_sim), not redfish")):
        inv = load_inventory(write(tmp_path, text.replace(old, new), "lab-vm.yaml"))
        with pytest.raises(InputError, match=re.escape(message)):
            lab_vm.check_bmcs(inv, 3)
    assert lab_vm.check_bmcs(inv, 1) is None  # only the machines the lab builds


def test_demo_discovery_forgets_the_last_nodes_and_spans_their_bmcs(tmp_path):
    inv = load_inventory(write(tmp_path, (REPO / "inventory" / "lab-vm.yaml").read_text(), "lab-vm.yaml"))
    path = vm_discover.forget(inv, ["n02", "n03"], tmp_path / "found.yaml")
    assert [n.name for n in load_inventory(path).nodes] == ["n01"]
    everything = vm_discover.forget(inv, ["n01", "n02", "n03"], tmp_path / "none.yaml")
    assert "nodes: []" in everything.read_text() and load_inventory(everything).nodes == ()
    with pytest.raises(InputError, match="give the last node"):
        vm_discover.forget(inv, ["n01"], tmp_path / "x.yaml")
    assert vm_discover.bmc_range(inv.nodes) == "10.78.0.111-10.78.0.113"
    with pytest.raises(InputError, match="consecutive BMC addresses"):
        vm_discover.bmc_range([inv.nodes[0], inv.nodes[2]])
