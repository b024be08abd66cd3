"""The VM side of the lab (`provision lab up --vm`): lab nodes that are QEMU machines (TCG) with real firmware.

A VM node keeps the namespace layout of the simulated cluster: its namespace `pv-<node>` is joined to the
lab bridge by a veth pair (tc-shaped as any lab link); inside it a bridge joins that veth to a tap, and
QEMU, started in the namespace, puts the machine's NIC (the inventory's MAC) on the tap. So nothing
appears in the host's namespace, and pulling the plug is what it is for any lab node: every process of
the namespace (QEMU and its BMC) killed. The veth end in the node's namespace gets a MAC of its own (the
machine's MAC must be learnt on the tap, not owned by the namespace's bridge).

A machine whose inventory entry has `bmc:` gets one: ipmi_sim in its namespace on the bmc address (on the
namespace's bridge), whose power on/off/reset start and stop the machine's QEMU, so `provision power` and
`provision install --power-cycle` drive the lab as they drive a cluster. `lab boot` presses the same button.

Per node, under <state dir>/lab/: disks/<node>.raw (a sparse disk image), nodes/<node>/ (serial.log: the
machine's console from firmware to login prompt, machine.json: its QEMU command, machine.log: QEMU's output,
OVMF_VARS.fd for UEFI nodes; with a BMC lan.conf, emu.cmd, ipmi_sim.log).
The server namespace also runs the lab's IPv6 router advertisement (provision.services.ra: ends iPXE's IPv6 wait)
when the inventory leaves it out of `provision install` (`network.ipv6_ra: false`); inventory/lab-vm.yaml
sets it, so there the install's own advertisement is the one the machines hear, and a machine booted
while no install runs (its local boot after the install ended) waits iPXE's ~13 s, as on a real cluster.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from provision.errors import InputError, ProvisionError
from provision.model import IPMI_PORT, BmcType, Firmware, Inventory, Node
from provision.lab import bmc as lab_bmc
from provision.lab.netns import HOST_IFACE, ns_argv
from provision.lab.qemu import OVMF_CODE, OVMF_VARS, Machine
from provision.power import credentials

TAP = "tap0"
NODE_BRIDGE = "br0"
DEFAULT_DISK_GIB = 4
SERIAL_LOG = "serial.log"
EFI_VARS = "OVMF_VARS.fd"
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")  # Debian package ipxe-qemu


def check_prerequisites(inv: Inventory) -> None:
    """QEMU, the NIC's iPXE ROM and (for uefi nodes) OVMF must be installed; a clear error otherwise."""
    missing = []
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (Debian package qemu-system-x86)")
    if not IPXE_ROM.is_file():
        missing.append(f"{IPXE_ROM} (Debian package ipxe-qemu)")
    if any(n.firmware is Firmware.UEFI for n in inv.nodes) and not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        missing.append(f"{OVMF_CODE} and {OVMF_VARS} (Debian package ovmf)")
    if missing:
        raise ProvisionError("lab up --vm: missing " + "; ".join(missing))


def prepare_vm_files(inv: Inventory, env: Mapping[str, str] = os.environ) -> list[str]:
    """Point the inventory's boot kernel/initrd at the built installer, its image source(s) at the golden
    image's root file system and its boot.diskless directory (if any) at the diskless image (symlinks into the
    build cache; built there first if needed). Paths that exist as regular files (directories) are a site's own
    and are left alone. Returns the files made."""
    from provision.images.diskless import diskless_image  # building needs root and Debian tools: import late
    from provision.images.golden import golden_image
    from provision.images.initrd import installer_initrd

    def own(path: Path) -> bool:
        return (path.is_file() or path == diskless) and path.exists() and not path.is_symlink()

    diskless = Path(inv.boot.diskless) if inv.boot.diskless else None
    paths = [Path(inv.boot.kernel), Path(inv.boot.initrd), *(Path(image.source) for image in inv.images),
             *([diskless] if diskless else [])]
    wanted: dict[Path, Path | None] = dict.fromkeys(paths)
    if not all(own(p) for p in paths):
        initrd = installer_initrd(env)
        golden = golden_image(env)
        wanted = {Path(inv.boot.kernel): initrd.kernel.vmlinuz, Path(inv.boot.initrd): initrd.path,
                  **{Path(image.source): golden.rootfs for image in inv.images}}
        if diskless is not None:
            wanted[diskless] = diskless_image(env).root.parent
    made = make_key_pairs(inv) + make_bmc_passwords(inv)
    for path, target in wanted.items():
        if target is None or own(path):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, path)
        made.append(str(path))
    return made


def key_pairs(inv: Inventory) -> list[Path]:
    """Private key files of the inventory's ssh_authorized_keys files (`X.pub` -> `X`), in order."""
    files = dict.fromkeys(Path(k) for n in inv.nodes for k in n.ssh_authorized_keys if k.startswith("/"))
    return [p.with_suffix("") for p in files if p.suffix == ".pub"]


def make_key_pairs(inv: Inventory) -> list[str]:
    """The lab's SSH key pair(s): every `.pub` file named in ssh_authorized_keys that is missing is made with
    ssh-keygen (ed25519, no passphrase), its private half beside it; returns the files made."""
    made = []
    for key in key_pairs(inv):
        pub = key.with_name(key.name + ".pub")
        if pub.exists():
            continue
        if shutil.which("ssh-keygen") is None:
            raise ProvisionError(f"lab up --vm: ssh-keygen (Debian package openssh-client) is needed to make {key}")
        key.parent.mkdir(parents=True, exist_ok=True)
        key.unlink(missing_ok=True)
        proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provision lab", "-f", str(key)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ProvisionError(f"ssh-keygen for {key} failed: {proc.stderr.strip()}")
        made += [str(key), str(pub)]
    return made


def attach_tap(ns: str) -> None:
    """In namespace `ns`: a bridge joining its veth (eth0) and a new tap for QEMU."""
    for argv in (["link", "add", NODE_BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0"],
                 ["tuntap", "add", TAP, "mode", "tap"],
                 ["link", "set", HOST_IFACE, "master", NODE_BRIDGE],
                 ["link", "set", TAP, "master", NODE_BRIDGE],
                 ["link", "set", TAP, "up"],
                 ["link", "set", NODE_BRIDGE, "up"]):
        proc = subprocess.run(["ip", "-n", ns, *argv], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ProvisionError(f"`ip -n {ns} {' '.join(argv)}` failed: {proc.stderr.strip()}")


def create_disk(path: Path, gib: int) -> None:
    """A blank sparse disk image of `gib` GiB (no block is allocated until the machine writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(gib << 30)


def start_router_advertisement(server_ns: str, log: Path) -> subprocess.Popen:
    """provision.ra on the server's eth0, every second; returns once the first advertisement is out."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(ns_argv(server_ns, [sys.executable, "-m", "provision.services.ra", HOST_IFACE]),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out,
                                start_new_session=True)
    line = proc.stdout.readline().decode(errors="replace")
    proc.stdout.close()
    if not line.startswith("provision.services.ra: advertising"):
        proc.kill()
        proc.wait()
        raise ProvisionError(f"the lab's router advertisement did not start (see {log})")
    return proc


def machine(name: str, mac: str, firmware: Firmware, disk: Path, work: Path) -> Machine:
    return Machine(name, mac, TAP, work / SERIAL_LOG, firmware, disk=disk,
                   efi_vars=work / EFI_VARS if firmware is Firmware.UEFI else None)


def install_machine(ns: str, vm: Machine) -> None:
    """Make `vm` a machine of namespace `ns`: its power-on command (QEMU in `ns`) in its directory's
    machine.json, which `lab boot` and the machine's BMC start and stop (provision.lab.bmc); UEFI: its own
    copy of OVMF's variable store."""
    work = vm.serial_log.parent
    work.mkdir(parents=True, exist_ok=True)
    if vm.efi_vars is not None and not vm.efi_vars.exists():
        shutil.copyfile(OVMF_VARS, vm.efi_vars)
    lab_bmc.write_machine(work, ns_argv(ns, vm.argv()))


def power_on(work: Path) -> subprocess.Popen:
    """Press the power button of the machine in `work` (a running one is stopped first: a reset), with a fresh
    serial log. QEMU outlives its caller; `lab off` / `lab down` kill it."""
    lab_bmc.stop_machine(work)
    (work / SERIAL_LOG).unlink(missing_ok=True)
    proc = lab_bmc.start_machine(work)
    assert proc is not None  # stopped just before
    return proc


def check_bmcs(inv: Inventory, count: int) -> None:
    """A lab BMC (one per machine whose inventory entry has `bmc:`) speaks IPMI on an IPv4 address of the lab's
    subnet that no other host of the lab has; InputError naming the node, field and value otherwise."""
    taken = {str(inv.server.ip): inv.server.name, **{str(n.ip): n.name for n in inv.nodes}}
    for node in inv.nodes[:count]:
        if node.bmc is None:
            continue
        where = f"{inv.path}: {node.name}: bmc"
        if node.bmc.type is not BmcType.IPMI:
            raise InputError(f"{where}.type: the VM lab's BMCs speak ipmi (ipmi_sim), not {node.bmc.type}")
        try:
            address = ipaddress.IPv4Address(node.bmc.address or "")
        except ValueError:
            raise InputError(f"{where}.address: the VM lab needs an IPv4 address: {node.bmc.address}") from None
        if address not in inv.network.subnet or str(address) in taken:
            owner = taken.get(str(address))
            raise InputError(f"{where}.address: " + (f"{owner} has it already" if owner else
                             f"outside the lab's subnet {inv.network.subnet}") + f": {address}")
        taken[str(address)] = f"{node.name}'s BMC"


def start_bmc(ns: str, node: Node, work: Path, prefixlen: int) -> str:
    """The machine's BMC: OpenIPMI's ipmi_sim in its namespace, on the inventory's bmc address given to the
    namespace's bridge (a BMC sharing the machine's NIC port, as many servers' do), with the inventory's user
    and password; its chassis control starts and stops the machine (provision.lab.bmc). Returns address:port."""
    assert node.bmc is not None and node.bmc.address is not None and node.bmc.user is not None
    port = node.bmc.port or IPMI_PORT
    proc = subprocess.run(["ip", "-n", ns, "addr", "add", f"{node.bmc.address}/{prefixlen}", "dev", NODE_BRIDGE],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProvisionError(f"{node.name}'s BMC address {node.bmc.address}: {proc.stderr.strip()}")
    lab_bmc.write_files(lab_bmc.LabBmc(node.name, node.bmc.address, port, node.bmc.user,
                                       credentials.password(node.bmc, node.name), work))
    lab_bmc.run_sim(work, port, ns_argv(ns, []))
    return f"{node.bmc.address}:{port}"


def ensure_bmc(ns: str, bmc: str, work: Path) -> None:
    """Start the machine's BMC again if it is not running (`lab off` pulled the plug: the BMC died too)."""
    port = int(bmc.rsplit(":", 1)[1])
    if not lab_bmc.listening(port, ns_argv(ns, [])):
        lab_bmc.run_sim(work, port, ns_argv(ns, []))


def make_bmc_passwords(inv: Inventory) -> list[str]:
    """Each missing bmc.password_file of the inventory, made with a random password (mode 0600); returns the
    files made. The lab's BMCs are configured with it, `provision power` reads it."""
    made = []
    for path in dict.fromkeys(n.bmc.password_file for n in inv.nodes if n.bmc and n.bmc.password_file):
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(8) + "\n")  # 16 characters: what IPMI 1.5 users hold
        made.append(str(path))
    return made


def qemu_pids(ns: str) -> list[int]:
    """QEMU processes running in namespace `ns`."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    found = []
    for pid in pids:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0.endswith(b"qemu-system-x86_64"):
            found.append(int(pid))
    return found
