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
from provision.credentials import RunCredentials
from provision.errors import ProvisionError
from provision.services.http import HttpServer, NodeAuth
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


TOKEN = "t0ken-" + "a" * 40


class _Reports:
    """A real HTTP server on loopback that hands out a node's credentials and records the node reports the
    %post hook POSTs (with the token header each carried)."""

    def __init__(self):
        received = self.received = []
        self.tokens = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                if not self.path.endswith("/credentials"):
                    return self.send_error(404)
                self._reply(json.dumps({"name": "n", "token": TOKEN, "ring_secret": "r" * 64}).encode())

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                outer.tokens.append(self.headers.get("X-Provision-Token"))
                self._reply(b'{"ok": true}')

            def _reply(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
    assert reports.tokens == [TOKEN]  # the token from the credentials went with the report
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
    assert reports.tokens == [TOKEN] * 3
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


@pytest.mark.parametrize("case", ["from-the-server", "server-has-none", "refused-elsewhere"])
def test_post_puts_the_servers_host_keys_on_the_clone(tmp_path, case):
    """The real HTTP server, node auth and key store: the %post fetches its credentials, then the node's keys
    (private 0600) with its token, and known_hosts trusts them; where the server has no keys for it, the clone
    makes its own; from another address than the node's, the server gives nothing and the %post stops."""
    require_tool("curl")
    require_tool("ssh-keygen")
    site = tmp_path / "site"
    (site / "kickstart").mkdir(parents=True)
    (site / "kickstart" / "node.ks.j2").write_text(
        '{% extends "shipped/kickstart/node.ks.j2" %}\n{% block dolly_receive %}\n'
        'mkdir -p "$SYSIMAGE/etc/ssh"\necho golden > "$SYSIMAGE/etc/ssh/ssh_host_rsa_key"\n{% endblock %}\n')
    inv = load_inventory(LAB)
    node = inv.nodes[0]
    node_ip = "127.0.0.2" if case == "refused-elsewhere" else "127.0.0.1"
    store = HostKeyStore(tmp_path / "host-keys")
    keeper = HostKeyKeeper(store, tmp_path / "known_hosts", [KeyedNode(node.name, node_ip, f"root@{node.name}")])
    credentials = RunCredentials.fresh([node.name])
    reports = []

    def no_keys(name: str, filename: str) -> bytes:
        raise ProvisionError("the key store's disk is full")

    server = HttpServer(tmp_path, nodes=[node.name], on_report=lambda *r: reports.append(r), host="127.0.0.1",
                        port=0, host_key=no_keys if case == "server-has-none" else keeper.key_file,
                        credentials=credentials.deliver,
                        node_auth=NodeAuth({node.name: node_ip}, credentials.tokens)).start()
    try:
        result = run_post(render_files(inv, site_templates=site)[f"kickstart/{node.name}.ks"], tmp_path / "root",
                          f"http://127.0.0.1:{server.port}/api/nodes/{node.name}/state")
    finally:
        server.stop()
        keeper.close()
    if case == "refused-elsewhere":
        assert result.returncode != 0 and "no credentials" in result.stdout
        assert reports == [] and not (tmp_path / "root").exists()  # its failure report is refused as well
        return
    assert result.returncode == 0, result.stderr
    assert [str(r[1]) for r in reports] == ["cloning", "done"]
    ssh = tmp_path / "root" / "etc" / "ssh"
    assert sorted(p.name for p in ssh.iterdir()) == sorted(KEY_FILES)
    if case == "from-the-server":
        assert all((ssh / f).read_bytes() == store.read(node.name, f) for f in KEY_FILES)
        assert "SSH host keys from the server" in result.stdout
        assert {f: oct((ssh / f).stat().st_mode & 0o777) for f in KEY_FILES} == {
            f: "0o644" if f.endswith(".pub") else "0o600" for f in KEY_FILES}
        public = [(ssh / f).read_text().split() for f in KEY_FILES if f.endswith(".pub")]
        assert known(tmp_path / "known_hosts", node_ip) == {kind: key for kind, key, *_ in public}
    else:
        assert not store.has(node.name) and "the clone makes its own" in result.stderr
        assert (ssh / "ssh_host_rsa_key").read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY")
