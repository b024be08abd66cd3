"""Kickstarts: every rendered one passes pykickstart for current RHEL; the %post hook runs for real in bash."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pykickstart.errors import KickstartDeprecationWarning, KickstartParseWarning
from pykickstart.parser import KickstartParser
from pykickstart.version import RHEL9, makeVersion

from provision import installer
from provision.host_keys import KEY_FILES, HostKeyKeeper, HostKeyStore, KeyedNode
from provision.inventory import load_inventory
from provision.render import render_files
from provision.services.http import HttpServer
from tests.conftest import require_tool
from tests.test_host_keys import known
from tests.fixtures.inventories import EXAMPLE, HASH, LAB, inventory_yaml, write

VERSIONS = [RHEL9]
try:  # validate against the newest RHEL this pykickstart knows, too
    from pykickstart.version import RHEL10

    VERSIONS.append(RHEL10)
except ImportError:  # pragma: no cover - older pykickstart
    pass


def parse(text: str, version=RHEL9):
    """Parse like ksvalidator, with pykickstart's warnings (deprecated or ignored options) as errors."""
    handler = makeVersion(version)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KickstartDeprecationWarning)
        warnings.simplefilter("error", KickstartParseWarning)
        KickstartParser(handler).readKickstartFromString(text)
    return handler


VARIANTS = {
    "example-lilo-redhat": lambda tmp: EXAMPLE,
    "lab-none-debian": lambda tmp: LAB,
    "grub2-redhat": lambda tmp: write(tmp, inventory_yaml(3)),
    "grub2-debian-no-password": lambda tmp: write(
        tmp, inventory_yaml(2, defaults="os_family: debian\ndisk: {device: vda, partitions: [{mount: /, fstype: "
                               "ext3, size: 2000, grow: true}, {mount: swap, fstype: swap, size: 512}]}")
        .replace(f"  root_password_hash: {HASH}\n", "")),
    "mixed-firmware": lambda tmp: Path(__file__).parent / "fixtures" / "mixed-firmware.yaml",  # GPT for uefi
    "bios-gpt-and-uefi-msdos": lambda tmp: write(tmp, inventory_yaml(1, extra_nodes=(
        '  - {name: biosgpt, mac: "02:00:00:00:01:01", ip: 10.9.0.201, disk: {label: gpt, partitions: [\n'
        "      {mount: /, fstype: ext4, size: 1600, grow: true}, {mount: swap, fstype: swap, size: 64},\n"
        "      {fstype: biosboot}]}}\n"
        '  - {name: uefimbr, mac: "02:00:00:00:01:02", ip: 10.9.0.202, firmware: uefi,\n'
        "     disk: {label: msdos, partitions: [{mount: /, fstype: ext4, size: 100}]}}\n"))),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_kickstart_validates(tmp_path, variant, version):
    inv = load_inventory(VARIANTS[variant](tmp_path))
    files = render_files(inv)
    for node in inv.nodes:
        handler = parse(files[f"kickstart/{node.name}.ks"], version)
        assert [p.mountpoint for p in handler.partition.partitions] == [p.mount for p in node.disk.partitions]
        assert {p.disk for p in handler.partition.partitions} == {node.disk.device}
        assert handler.clearpart.disklabel == node.disk_label
        if node.root_password_hash:
            assert handler.rootpw.isCrypted and handler.rootpw.password == node.root_password_hash
        else:
            assert handler.rootpw.lock
        (net,) = handler.network.network
        assert (net.device, net.ip, net.hostname) == (node.mac, str(node.ip), inv.fqdn(node.name))
        (post,) = handler.scripts
        assert post.inChroot is False and post.interp == "/bin/bash" and post.errorOnFail
        bash = subprocess.run(["bash", "-n"], input=post.script, capture_output=True, text=True, check=False)
        assert bash.returncode == 0, bash.stderr


def test_a_bios_node_on_gpt_gets_a_biosboot_part_that_the_installer_plans(tmp_path):
    """The inventory's disk.label and biosboot partition, through the kickstart, to the installer's disk plan."""
    inv = load_inventory(VARIANTS["bios-gpt-and-uefi-msdos"](tmp_path))
    files = render_files(inv)
    text = files["kickstart/biosgpt.ks"]
    assert "clearpart --all --initlabel --drives=sda --disklabel=gpt\n" in text
    assert "part biosboot --fstype=biosboot --size=1 --ondisk=sda --label=biosboot\n" in text
    assert "biosboot" not in text.split("/etc/fstab")[1]  # the fstab lists / and swap only
    plan = installer.plan_disk(parse(text), 4 << 21, uefi=False)  # a 4 GiB disk on a BIOS machine
    assert (plan.label, [p.role for p in plan.partitions]) == ("gpt", ["linux", "swap", "biosboot"])
    assert plan.biosboot.sectors == installer.MIB_SECTORS and plan.mounted_at("/").number == 1
    mbr = installer.plan_disk(parse(files["kickstart/uefimbr.ks"]), 4 << 21, uefi=True)
    assert mbr.label == "msdos"
    assert "--disklabel=msdos" in files["kickstart/node001.ks"]  # a BIOS node's default is unchanged


def test_bootloader_follows_the_inventory(tmp_path):
    lilo = render_files(load_inventory(EXAMPLE))["kickstart/n001.ks"]
    assert "bootloader --location=none" in lilo and 'chroot "$SYSIMAGE" /sbin/lilo' in lilo
    grub = render_files(load_inventory(write(tmp_path, inventory_yaml(1))))["kickstart/node001.ks"]
    assert "bootloader --location=mbr --boot-drive=sda" in grub
    assert 'chroot "$SYSIMAGE" grub2-install /dev/sda' in grub
    none = render_files(load_inventory(LAB))["kickstart/n01.ks"]
    assert "grub" not in none and "lilo" not in none


class _Reports:
    """A real HTTP server on loopback that records the node reports the %post hook POSTs."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/api/nodes/{node}/state"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def reports():
    require_tool("curl")
    server = _Reports()
    yield server
    server.close()


def run_post(kickstart: str, sysimage: Path, report_url: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    (post,) = parse(kickstart).scripts
    env = {"PATH": path, "SYSIMAGE": str(sysimage), "PROVISION_REPORT_URL": report_url, "LC_ALL": "C"}
    return subprocess.run([post.interp, "-c", post.script], env=env, capture_output=True, text=True, timeout=60)


def test_post_reports_failed_when_dollyc_cannot_start(tmp_path, reports):
    inv = load_inventory(LAB)
    ks = render_files(inv)["kickstart/n03.ks"]
    result = run_post(ks, tmp_path / "root", reports.url("n03"))  # PATH without dollyC
    assert result.returncode != 0
    path, last = reports.received[-1]
    assert path == "/api/nodes/n03/state"
    assert last["state"] == "failed" and "dollyC" in last["message"]
    assert not (tmp_path / "root" / "etc").exists()  # nothing personalised without an image


@pytest.mark.parametrize("inventory", ["lab", "redhat", "bios-gpt"])
def test_post_writes_identity_onto_the_clone(tmp_path, reports, inventory):
    """The shipped %post for real, with the site hook replacing only the ring receive (covered by lab tests)."""
    site = tmp_path / "site"
    (site / "kickstart").mkdir(parents=True)
    (site / "kickstart" / "node.ks.j2").write_text(
        '{% extends "shipped/kickstart/node.ks.j2" %}\n{% block dolly_receive %}\n'
        'mkdir -p "$SYSIMAGE/etc"\n'
        "printf 'root:!old:19000:0:99999:7:::\\nuser:x:19000::::::\\n' > \"$SYSIMAGE/etc/shadow\"\n"
        "printf '127.0.0.1 localhost\\n10.0.0.1 stale # provision\\n' > \"$SYSIMAGE/etc/hosts\"\n"
        'mkdir -p "$SYSIMAGE/etc/ssh"\n'
        'echo golden > "$SYSIMAGE/etc/ssh/ssh_host_ed25519_key"\n'
        'echo golden-machine-id > "$SYSIMAGE/etc/machine-id"\n'
        'report ready "test: image given"\n{% endblock %}\n'
    )
    path = LAB if inventory == "lab" else write(tmp_path, inventory_yaml(3, defaults="bootloader: none" + (
        "\ndisk: {label: gpt, partitions: [{mount: /, fstype: ext4, size: 9}, {mount: swap, fstype: swap, size: 1},"
        " {fstype: biosboot}]}" if inventory == "bios-gpt" else "")))
    inv = load_inventory(path)
    node = inv.nodes[1]
    root = tmp_path / "root"
    result = run_post(render_files(inv, site_templates=site)[f"kickstart/{node.name}.ks"], root,
                      reports.url(node.name))
    assert result.returncode == 0, result.stderr
    assert [r[1]["state"] for r in reports.received] == ["ready", "cloning", "done"]
    etc = root / "etc"
    fqdn = inv.fqdn(node.name)
    assert (etc / "hosts").read_text() == f"127.0.0.1 localhost\n{node.ip} {fqdn} {node.name} # provision\n"
    assert (etc / "shadow").read_text().splitlines()[0] == f"root:{node.root_password_hash}:19000:0:99999:7:::"
    assert f"nameserver {inv.network.dns[0]}" in (etc / "resolv.conf").read_text()
    fstab = [line.split() for line in (etc / "fstab").read_text().splitlines() if not line.startswith("#")]
    assert [f[1] for f in fstab] == [p.fstab_mount for p in node.disk.partitions if not p.is_biosboot]
    assert [f[2] for f in fstab if f[2] in ("biosboot", "swap")] == (["swap"] if inventory == "bios-gpt" else [])
    if inventory == "lab":
        assert (etc / "hostname").read_text() == f"{node.name}\n"
        assert f"address {node.ip}/24" in (etc / "network" / "interfaces").read_text()
    else:
        assert (etc / "hostname").read_text() == f"{fqdn}\n"
        ifcfg = (etc / "sysconfig" / "network-scripts" / "ifcfg-eth0").read_text()
        assert f"IPADDR={node.ip}\n" in ifcfg and f"HWADDR={node.mac}\n" in ifcfg
    assert os.listdir(root) == ["etc"]
    # the clone's own SSH host keys and an empty machine-id, not the golden image's
    assert (etc / "machine-id").read_text() == ""
    assert (etc / "ssh" / "ssh_host_ed25519_key").read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY")


@pytest.mark.parametrize("node_ip", ["127.0.0.1", "127.0.0.2"], ids=["from-the-server", "refused-elsewhere"])
def test_post_puts_the_servers_host_keys_on_the_clone(tmp_path, node_ip):
    """The real HTTP server and key store: the clone gets the node's keys (private 0600), known_hosts trusts
    them; where the server refuses (the node asks from another address), the clone makes its own."""
    require_tool("curl")
    require_tool("ssh-keygen")
    site = tmp_path / "site"
    (site / "kickstart").mkdir(parents=True)
    (site / "kickstart" / "node.ks.j2").write_text(
        '{% extends "shipped/kickstart/node.ks.j2" %}\n{% block dolly_receive %}\n'
        'mkdir -p "$SYSIMAGE/etc/ssh"\necho golden > "$SYSIMAGE/etc/ssh/ssh_host_rsa_key"\n{% endblock %}\n')
    inv = load_inventory(LAB)
    node = inv.nodes[0]
    store = HostKeyStore(tmp_path / "host-keys")
    keeper = HostKeyKeeper(store, tmp_path / "known_hosts", [KeyedNode(node.name, node_ip, f"root@{node.name}")])
    reports = []
    server = HttpServer(tmp_path, nodes=[node.name], on_report=lambda *r: reports.append(r), host="127.0.0.1",
                        port=0, host_key=keeper.key_file, node_ips={node.name: node_ip}).start()
    try:
        result = run_post(render_files(inv, site_templates=site)[f"kickstart/{node.name}.ks"], tmp_path / "root",
                          f"http://127.0.0.1:{server.port}/api/nodes/{node.name}/state")
    finally:
        server.stop()
        keeper.close()
    assert result.returncode == 0, result.stderr
    assert [str(r[1]) for r in reports] == ["cloning", "done"]
    ssh = tmp_path / "root" / "etc" / "ssh"
    assert sorted(p.name for p in ssh.iterdir()) == sorted(KEY_FILES)
    if node_ip == "127.0.0.1":
        assert all((ssh / f).read_bytes() == store.read(node.name, f) for f in KEY_FILES)
        assert "SSH host keys from the server" in result.stdout
        assert {f: oct((ssh / f).stat().st_mode & 0o777) for f in KEY_FILES} == {
            f: "0o644" if f.endswith(".pub") else "0o600" for f in KEY_FILES}
        public = [(ssh / f).read_text().split() for f in KEY_FILES if f.endswith(".pub")]
        assert known(tmp_path / "known_hosts", node_ip) == {kind: key for kind, key, *_ in public}
    else:
        assert not store.has(node.name) and "the clone makes its own" in result.stderr  # refused before made
        assert (ssh / "ssh_host_rsa_key").read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY")
