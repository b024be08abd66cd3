"""The simulated cluster: a switch, the server and up to 128 nodes as network namespaces (needs root).

`lab_up` builds it from an inventory: namespace `pv-<server name>` holds the server's address (the
inventory's server IP); every node `pv-<node name>` gets the inventory's MAC and *no* address (it
asks our dhcpd, as a PXE ROM does); links are tc-shaped both ways. Lab addresses exist only inside
these namespaces. Each namespace has an /etc/hosts naming the server and the nodes (dollyS in the
server namespace resolves the node names of dolly.conf through it).

Lab files live in <state dir>/lab/: lab.json (what is up), disks/<node>/ (the directory a node's
dollyC writes under with --root: its "disk"), nodes/<node>/ (its firmware/installer work files and log).
`lab_up` also creates the inventory's boot kernel/initrd and image source if they are missing (see
prepare_lab_files) and `lab_down` removes exactly what `lab_up` made.

With `vm=True` the nodes are QEMU machines instead (provision.lab.vm): same namespaces and links, a tap
and a sparse disk image (disks/<node>.raw) per node, real firmware, the built installer and golden image.
The server namespace runs the lab's own IPv6 router advertisement only for inventories that do not ask
`provision install` for one (`network.ipv6_ra`): one sender at a time, and the lab proves the install's.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from provision.lab import vm as lab_vm, netns
from provision.cluster import ClusterFiles
from provision.errors import InputError, ProvisionError
from provision.inventory import state_dir
from provision.model import IPMI_PORT, Firmware, Inventory
from provision.state import write_json_atomic

PREFIX = "pv"  # namespaces pv-sw, pv-<server>, pv-<node>; $PROVISION_LAB_PREFIX overrides (test rigs: pvt-...)
MAX_NODES = 128
DEFAULT_RATE = "100mbit"
DEFAULT_IMAGE_MIB = 32
MEMDISK = Path("/usr/lib/syslinux/memdisk")


@dataclass(frozen=True)
class LabNode:
    name: str
    ns: str
    mac: str
    ip: str  # the address the inventory (and so our dhcpd) gives it
    disk: str  # directory the node's dollyC writes under (--root); a VM node: its disk image
    work: str  # its firmware/installer files and log; a VM node: serial.log, machine.json and .log, OVMF_VARS.fd
    firmware: str | None = None  # a VM node's firmware (bios or uefi); None: a namespace node
    bmc: str | None = None  # a VM node's BMC (ipmi_sim in its namespace): address:port; None: none


@dataclass(frozen=True)
class Lab:
    inventory: str
    prefix: str
    switch_ns: str
    server_ns: str
    server_name: str
    server_address: str  # CIDR, inside server_ns only
    rate: str | None
    nodes: tuple[LabNode, ...]
    created_files: tuple[str, ...]  # made by lab_up (boot files, image), removed by lab_down
    vm: bool = False  # nodes are QEMU machines (provision.lab.vm)

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise InputError(f"no lab node named {name!r} (lab nodes: {', '.join(n.name for n in self.nodes)})")

    def namespace_of(self, name: str) -> str:
        """Namespace of a node name, or of the server (its inventory name or `server`)."""
        return self.server_ns if name in ("server", self.server_name) else self.node(name).ns

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> Lab:
        return cls(**{**data, "nodes": tuple(LabNode(**n) for n in data["nodes"]),
                      "created_files": tuple(data["created_files"])})


def lab_prefix(env: Mapping[str, str] = os.environ) -> str:
    return env.get("PROVISION_LAB_PREFIX") or PREFIX


def lab_dir(env: Mapping[str, str] = os.environ) -> Path:
    return state_dir(env) / "lab"


def lab_file(env: Mapping[str, str] = os.environ) -> Path:
    return lab_dir(env) / "lab.json"


def load_lab(env: Mapping[str, str] = os.environ) -> Lab | None:
    """The lab recorded by `lab up`, or None."""
    try:
        return Lab.from_json(json.loads(lab_file(env).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProvisionError(f"{lab_file(env)}: unreadable lab record ({exc}); `provision lab down` clears it")


def tiny_initrd(payload_bytes: int = 0) -> bytes:
    """A real (gzip-compressed newc cpio) initramfs holding one text file: lab nodes never execute
    their installer kernel, they only fetch it, so the initrd only has to be a genuine file. With
    `payload_bytes`, also a file of that many random bytes (a boot payload of a real installer's size)."""
    def entry(name: str, data: bytes, mode: int) -> bytes:
        name_b = name.encode() + b"\0"
        fields = [1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        pad = lambda n: b"\0" * (-n % 4)  # noqa: E731 - newc aligns header+name and data to 4 bytes
        return header + name_b + pad(len(header) + len(name_b)) + data + pad(len(data))
    text = b"provision lab initrd: fetched over TFTP by lab nodes, never executed.\n"
    payload = entry("payload.bin", os.urandom(payload_bytes), 0o100644) if payload_bytes else b""
    archive = entry("README.lab", text, 0o100644) + payload + entry("TRAILER!!!", b"", 0)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=1 if payload_bytes else 9) as gz:
        gz.write(archive)
    return buf.getvalue()


def prepare_lab_files(inv: Inventory, image_mib: int = DEFAULT_IMAGE_MIB) -> list[str]:
    """Create what the lab inventory names but a fresh machine lacks; returns the files made.
    - boot.kernel: a copy of syslinux's memdisk (a real kernel-format image pxelinux can load; lab
      nodes only fetch it), boot.initrd: tiny_initrd();
    - every image source: `image_mib` MiB of random bytes (incompressible, so transfer rates are honest).
    Existing files are left alone."""
    made = []

    def create(path: Path, write) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            write(tmp)
            os.replace(tmp, path)
            made.append(str(path))

    if not MEMDISK.is_file():
        raise ProvisionError(f"missing {MEMDISK} (Debian package syslinux-common): the lab's boot kernel")
    create(Path(inv.boot.kernel), lambda p: shutil.copyfile(MEMDISK, p))
    create(Path(inv.boot.initrd), lambda p: p.write_bytes(tiny_initrd()))
    for image in inv.images:
        def random_image(p: Path) -> None:
            with open(p, "wb") as f:
                for _ in range(image_mib):
                    f.write(os.urandom(1 << 20))
        create(Path(image.source), random_image)
    return made


def lab_up(inv: Inventory, nodes: int | None = None, rate: str | None = DEFAULT_RATE,
           env: Mapping[str, str] = os.environ, image_mib: int = DEFAULT_IMAGE_MIB, vm: bool = False,
           disk_gib: int = lab_vm.DEFAULT_DISK_GIB, server_rate: str | None = None) -> Lab:
    """Clear any leftover lab, then build one for the inventory's first `nodes` nodes (all, up to MAX_NODES);
    with `vm` the nodes are QEMU machines with `disk_gib` GiB sparse disks. `server_rate` shapes the
    server's link (default `rate`, as every node's)."""
    count = min(len(inv.nodes), MAX_NODES) if nodes is None else nodes
    if not 1 <= count <= min(len(inv.nodes), MAX_NODES):
        raise InputError(f"--nodes {nodes}: the lab takes 1 to {min(len(inv.nodes), MAX_NODES)} nodes "
                         f"({inv.path} has {len(inv.nodes)})")
    for flag, given in (("--rate", rate), ("--server-rate", server_rate)):
        try:
            if given is not None:
                netns.parse_rate(given)
        except ValueError as exc:
            raise InputError(f"{flag}: {exc}") from None
    if vm:
        lab_vm.check_prerequisites(inv)
        lab_vm.check_bmcs(inv, count)
        if not 1 <= disk_gib <= 1024:
            raise InputError(f"--disk-gib {disk_gib}: expected 1 to 1024")
    lab_down(env)
    base = lab_dir(env)
    created = lab_vm.prepare_vm_files(inv, env) if vm else prepare_lab_files(inv, image_mib)
    server_address = f"{inv.server.ip}/{inv.network.prefixlen}"
    prefix = lab_prefix(env)
    lab_nodes = tuple(
        LabNode(name=n.name, ns=f"{prefix}-{n.name}", mac=n.mac, ip=str(n.ip),
                disk=str(base / "disks" / (f"{n.name}.raw" if vm else n.name)), work=str(base / "nodes" / n.name),
                firmware=str(n.firmware) if vm else None,
                bmc=f"{n.bmc.address}:{n.bmc.port or IPMI_PORT}" if vm and n.bmc is not None else None)
        for n in inv.nodes[:count])
    lab = Lab(inventory=str(Path(inv.path).resolve()), prefix=prefix, switch_ns=f"{prefix}-sw",
              server_ns=f"{prefix}-{inv.server.name}", server_name=inv.server.name,
              server_address=server_address, rate=rate, nodes=lab_nodes, created_files=tuple(created), vm=vm)
    write_json_atomic(lab_file(env), lab.to_json())  # recorded first: a failed `up` is cleared by `down`
    # New lab machines have blank disks: whatever an earlier lab installed is gone, so are their records.
    ClusterFiles.of(inv, env).store().reset([n.name for n in lab_nodes])
    net = netns.Network(prefix, rate=rate)
    try:
        net.add_host(inv.server.name, address=server_address, rate=server_rate)
        for node in lab_nodes:
            Path(node.work).mkdir(parents=True)
            if vm:  # the machine's NIC has the MAC; the namespace only bridges it to the lab
                net.add_host(node.name)
                lab_vm.attach_tap(node.ns)
                lab_vm.create_disk(Path(node.disk), disk_gib)
                lab_vm.install_machine(node.ns, lab_vm.machine(node.name, node.mac, Firmware(node.firmware),
                                                               Path(node.disk), Path(node.work)))
                if node.bmc is not None:
                    lab_vm.start_bmc(node.ns, inv.node(node.name), Path(node.work), inv.network.prefixlen)
            else:
                net.add_host(node.name, mac=node.mac)
                Path(node.disk).mkdir(parents=True)
        names = {inv.server.name: str(inv.server.ip), inv.fqdn(inv.server.name): str(inv.server.ip)}
        for n in inv.nodes[:count]:
            names.update({n.name: str(n.ip), inv.fqdn(n.name): str(n.ip)})
        net.write_hosts(names)
        if vm and not inv.network.ipv6_ra:  # else `provision install` advertises while it serves
            lab_vm.start_router_advertisement(lab.server_ns, base / "ra.log")
    except BaseException:
        lab_down(env)
        raise
    return lab


def lab_down(env: Mapping[str, str] = os.environ) -> list[str]:
    """Remove every namespace of the lab's prefix (killing what runs in them), the lab's disks and work
    files and the files lab_up created; returns the namespaces removed. Works without a lab record
    (after a crash): then the prefix is $PROVISION_LAB_PREFIX or `pv`."""
    try:
        lab = load_lab(env)
    except ProvisionError:
        lab = None
    removed = netns.teardown_prefix(lab.prefix if lab is not None else lab_prefix(env))
    base = lab_dir(env)
    for sub in ("disks", "nodes"):
        shutil.rmtree(base / sub, ignore_errors=True)
    (base / "ra.log").unlink(missing_ok=True)
    if lab is not None:
        for path in lab.created_files:
            Path(path).unlink(missing_ok=True)
    lab_file(env).unlink(missing_ok=True)
    return removed


def node_address(ns: str) -> str | None:
    """The IPv4 address (CIDR) on the namespace's eth0 now, or None."""
    out = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", netns.HOST_IFACE],
                         capture_output=True, text=True).stdout.split()
    return out[out.index("inet") + 1] if "inet" in out else None


def lab_status(env: Mapping[str, str] = os.environ) -> dict:
    """The lab as JSON-ready data: each node with namespace, disk directory, whether its namespace
    exists, its current address and its last boot result (from lab_node)."""
    lab = load_lab(env)
    if lab is None:
        return {"up": False, "nodes": []}
    existing = set(netns.list_namespaces())
    nodes = []
    for node in lab.nodes:
        result_file = Path(node.work) / "result.json"
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            result = None
        entry = {**asdict(node), "namespace": node.ns, "up": node.ns in existing, "boot_result": result}
        if lab.vm:  # the address is the machine's, not the namespace's: what our dhcpd gives it
            entry.update(address=None, disk_image=node.disk, serial_log=str(Path(node.work) / lab_vm.SERIAL_LOG),
                         qemu_pids=lab_vm.qemu_pids(node.ns) if node.ns in existing else [])
        else:
            entry["address"] = node_address(node.ns) if node.ns in existing else None
        nodes.append(entry)
    return {"up": lab.switch_ns in existing and lab.server_ns in existing, "inventory": lab.inventory,
            "vm": lab.vm, "rate": lab.rate, "switch": lab.switch_ns,
            "server": {"name": lab.server_name, "namespace": lab.server_ns, "address": lab.server_address},
            "nodes": nodes}


def _select(lab: Lab, names: Sequence[str]) -> list[LabNode]:
    return [lab.node(n) for n in names] if names else list(lab.nodes)


def boot_nodes(lab: Lab, names: Sequence[str] = (), dhcp_wait: float = 300.0,
               reboot_seconds: float = 3.0, armed: bool = False) -> dict[str, subprocess.Popen]:
    """Power on lab nodes (all if `names` is empty): each runs provision.lab.node inside its namespace,
    output to <work>/boot.log; in a VM lab, QEMU (a running machine is reset: killed and started again).
    `armed` (namespace nodes): every node loads its code first, then all resets are pushed at once.
    Returns the processes (they outlive this one if it exits)."""
    procs = {}
    for node in _select(lab, names):
        subprocess.run(["ip", "-n", node.ns, "link", "set", netns.HOST_IFACE, "up"], check=True)
        if lab.vm:  # the machine's power button (its BMC's chassis control presses the same)
            if node.bmc is not None:
                lab_vm.ensure_bmc(node.ns, node.bmc, Path(node.work))
            procs[node.name] = lab_vm.power_on(Path(node.work))
            netns.wait_inside(node.ns, procs[node.name])
            continue
        work = Path(node.work)
        work.mkdir(parents=True, exist_ok=True)
        (work / "result.json").unlink(missing_ok=True)
        argv = netns.ns_argv(node.ns, [sys.executable, "-m", "provision.lab.node", "--name", node.name,
                                       "--mac", node.mac, "--disk", node.disk, "--work", node.work,
                                       "--dhcp-wait", str(dhcp_wait), "--reboot-seconds", str(reboot_seconds),
                                       *(["--armed"] if armed else [])])
        (work / "armed").unlink(missing_ok=True)
        with open(work / "boot.log", "ab") as log:
            procs[node.name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        netns.wait_inside(node.ns, procs[node.name])  # so that `lab off` finds it there
    if armed and procs:
        push_resets(lab, procs)
    return procs


def push_resets(lab: Lab, procs: Mapping[str, subprocess.Popen], timeout: float = 120.0) -> None:
    """Once every armed node player has loaded (its <work>/armed), press all their reset buttons (SIGUSR1;
    `ip netns exec` runs the player itself under the pid Popen knows)."""
    deadline = time.monotonic() + timeout
    waiting = dict(procs)
    while waiting:
        for name, proc in list(waiting.items()):
            if (Path(lab.node(name).work) / "armed").exists():
                del waiting[name]
            elif proc.poll() is not None:
                raise ProvisionError(f"lab node {name} exited (status {proc.returncode}) before its reset")
        if waiting and time.monotonic() > deadline:
            raise ProvisionError(f"lab nodes not armed after {timeout:.0f} s: {', '.join(sorted(waiting))}")
        time.sleep(0.05)
    for proc in procs.values():
        proc.send_signal(signal.SIGUSR1)


def power_off(lab: Lab, names: Sequence[str] = ()) -> None:
    """Pull the plug: kill everything running in the nodes' namespaces (a VM node: its QEMU) and take
    their link down, so they fall silent (no TCP resets), as a dead machine does."""
    for node in _select(lab, names):
        netns.kill_processes(node.ns)
        subprocess.run(["ip", "-n", node.ns, "link", "set", netns.HOST_IFACE, "down"], check=True)
        subprocess.run(["ip", "-n", node.ns, "-4", "addr", "flush", "dev", netns.HOST_IFACE], check=True)
