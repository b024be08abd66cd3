"""Get a DHCP lease the way a PXE firmware does, with busybox udhcpc inside a network namespace.

udhcpc applies nothing by itself (it only calls a script): provision ships scripts/udhcpc.sh, which
sets the address and records the lease, including the BOOTP next-server (`siaddr`) and boot file
name. After udhcpc returns, the address is checked on the interface: udhcpc can exit 0 without one.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from provision.errors import ProvisionError
from provision.lab.netns import ns_argv

# What a BIOS PXE ROM sends as vendor class (option 60); option 93 = client architecture 0 (x86 BIOS).
PXE_VENDOR_CLASS = "PXEClient:Arch:00000:UNDI:002001"
PXE_ARCH_OPTION = "0x5d:0000"


@dataclass(frozen=True)
class Lease:
    ip: ipaddress.IPv4Interface  # address with prefix length, as set on the interface
    router: str | None
    server_id: str | None
    next_server: str | None  # BOOTP siaddr: where to fetch the boot file by TFTP
    boot_file: str | None
    hostname: str | None
    domain: str | None


def busybox() -> str:
    path = shutil.which("busybox")
    if path is None:
        raise ProvisionError("busybox not found (Debian package busybox): needed for the udhcpc DHCP client")
    return path


def install_script(directory: Path) -> Path:
    """Copy the udhcpc event script into `directory` as an executable file; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "udhcpc.sh"
    target.write_bytes(resources.files("provision").joinpath("scripts/udhcpc.sh").read_bytes())
    target.chmod(0o755)
    return target


def parse_lease_file(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def obtain_lease(ns: str | None, iface: str, work_dir: Path, tries: int = 5, timeout: float = 30.0) -> Lease:
    """Run udhcpc in namespace `ns` (None: this process's own) on `iface` until it has a lease (or fail
    with its output); return the lease after checking that its address is really set on the interface."""
    script = install_script(work_dir)
    lease_file = work_dir / "lease.env"
    lease_file.unlink(missing_ok=True)
    argv = [busybox(), "udhcpc", "-f", "-q", "-n", "-C", "-i", iface, "-s", str(script),
            "-t", str(tries), "-T", "1", "-A", "1", "-V", PXE_VENDOR_CLASS, "-x", PXE_ARCH_OPTION]
    env = {**os.environ, "PROVISION_LEASE_FILE": str(lease_file)}
    try:
        proc = subprocess.run(ns_argv(ns, argv) if ns else argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"{ns or iface}: udhcpc got no lease within {timeout:.0f} s") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or not lease_file.is_file():
        raise ProvisionError(f"{ns or iface}: udhcpc got no lease (exit {proc.returncode}): {output}")
    values = parse_lease_file(lease_file.read_text())
    lease = Lease(
        ip=ipaddress.IPv4Interface(f"{values['ip']}/{values.get('mask') or 24}"),
        router=values.get("router") or None, server_id=values.get("serverid") or None,
        next_server=values.get("siaddr") or None, boot_file=values.get("boot_file") or None,
        hostname=values.get("hostname") or None, domain=values.get("domain") or None)
    shown = subprocess.run(["ip", *(["-n", ns] if ns else []), "-4", "-o", "addr", "show", "dev", iface],
                           capture_output=True, text=True).stdout
    if f" {lease.ip.with_prefixlen} " not in shown:
        raise ProvisionError(f"{ns or iface}: udhcpc reported lease {lease.ip} but {iface} does not have it: {shown.strip()}")
    return lease
