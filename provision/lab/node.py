"""A lab node's PXE firmware and installer, played with real clients inside the node's namespace.

    ip netns exec pv-n01 python -m provision.lab.node --name n01 --mac 02:77:00:00:00:01 \
        --disk /var/lib/provision/lab/disks/n01 --work /var/lib/provision/lab/nodes/n01

(`provision lab boot` starts it like that.) What it does, as the real machine would:
1. firmware: DHCP with busybox udhcpc (retrying until a server answers), the address checked on eth0;
   TFTP (tftp-hpa) of the lease's boot file from its next-server, then of ldlinux.c32, then the PXE
   config in pxelinux's search order (01-<mac>, hex IP prefixes, default);
2. install entry: fetch the KERNEL and INITRD it names (http:// URLs, as lpxelinux.0 takes them, with curl;
   tftm:// URLs, multicast TFTP as iPXE does under pxelinux.0, with atftp; other names over TFTP, as
   pxelinux.0 does); then, with the installer's own code (provision.installer:
   the kernel line, its HTTP client, pykickstart), ask `provision.boot_url=` whether the node is due
   (`local`: the disk is left alone), fetch the kickstart named by `inst.ks=` in APPEND, take its %post
   script(s) and run them with SYSIMAGE=<disk> and the venv's bin on PATH (so `dollyC` is found); a
   failing %post with --erroronfail stops here;
3. "reboot": drop the address, DHCP and PXE again, and expect LOCALBOOT.
With --armed it loads its code (Python, the installer's pykickstart) first, writes <work>/armed and waits for
SIGUSR1, the reset button (bench/scale_bench.py has the lab press every node's at once): a real node's
firmware is in its ROM and its installer runs on its own CPU, so the lab's interpreter start-up stays out of
a boot storm.
The outcome goes to <work>/result.json; exit status 0 only if the node ended on local boot.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provision.errors import ProvisionError
from provision.installer.cmdline import boot_url, kickstart_url
from provision.installer.fetch import boot_mode, http_get
from provision.installer.kickstart import post_scripts, read_kickstart
from provision.lab.dhcp_client import Lease, obtain_lease

IFACE = "eth0"


@dataclass(frozen=True)
class PxeEntry:
    """The entry a pxelinux config boots by default."""

    label: str
    localboot: bool
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""


def parse_pxelinux(text: str) -> PxeEntry:
    """The DEFAULT label (else the first) of a pxelinux config: KERNEL/LINUX, INITRD (or initrd= in
    APPEND), APPEND, LOCALBOOT. Keywords are case-insensitive, as in pxelinux."""
    default, labels, current = None, {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "DEFAULT":
            default = value.split()[0] if value else None
        elif keyword == "LABEL":
            current = labels.setdefault(value, {"label": value})
        elif current is not None and keyword in ("KERNEL", "LINUX", "INITRD", "APPEND", "LOCALBOOT"):
            current[{"LINUX": "KERNEL"}.get(keyword, keyword)] = value
    if not labels:
        raise ProvisionError("PXE config has no LABEL")
    if default is not None and default not in labels:
        raise ProvisionError(f"PXE config: DEFAULT {default} names no LABEL")
    chosen = labels[default] if default is not None else next(iter(labels.values()))
    append = chosen.get("APPEND", "")
    initrd = chosen.get("INITRD") or next(
        (a.split("=", 1)[1] for a in append.split() if a.startswith("initrd=")), None)
    entry = PxeEntry(label=chosen["label"], localboot="LOCALBOOT" in chosen, kernel=chosen.get("KERNEL"),
                     initrd=initrd, append=append)
    if not entry.localboot and not entry.kernel:
        raise ProvisionError(f"PXE config: LABEL {entry.label} has neither KERNEL nor LOCALBOOT")
    return entry


def pxelinux_search_order(mac: str, ip: ipaddress.IPv4Address) -> list[str]:
    """Config names pxelinux tries (after the UUID, which a lab node lacks): 01-<mac>, the address in
    upper-case hex shortened one digit at a time, then `default`."""
    hex_ip = f"{int(ip):08X}"
    return ([f"pxelinux.cfg/01-{mac.lower().replace(':', '-')}"]
            + [f"pxelinux.cfg/{hex_ip[:n]}" for n in range(8, 0, -1)] + ["pxelinux.cfg/default"])


@dataclass
class BootResult:
    name: str
    ok: bool = False
    first_entry: str | None = None  # install or local
    after_reboot: str | None = None
    address: str | None = None
    post_exit: int | None = None
    install_skipped: bool = False  # PXE said install, the server said local: the disk was not touched
    error: str | None = None
    steps: list[dict] = field(default_factory=list)


class LabNode:
    def __init__(self, name: str, mac: str, disk: Path, work: Path, dhcp_wait: float, log,
                 reboot_seconds: float = 3.0):
        self.name, self.mac, self.disk, self.work = name, mac.lower(), disk, work
        self.dhcp_wait, self.log, self.reboot_seconds = dhcp_wait, log, reboot_seconds
        self.result = BootResult(name)
        self.tftp = shutil.which("tftp")
        if self.tftp is None:
            raise ProvisionError("tftp not found (Debian package tftp-hpa): the lab firmware's TFTP client")

    def say(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self.name}: {message}", file=self.log, flush=True)

    def step(self, name: str, started: float, detail: str) -> None:
        self.result.steps.append({"step": name, "seconds": round(time.monotonic() - started, 3),
                                  "detail": detail})
        self.say(f"{name}: {detail}")

    def dhcp(self) -> Lease:
        started, deadline = time.monotonic(), time.monotonic() + self.dhcp_wait
        subprocess.run(["ip", "-4", "addr", "flush", "dev", IFACE], check=True)
        while True:
            try:
                lease = obtain_lease(None, IFACE, self.work / "dhcp")  # we run inside the node's namespace
                break
            except ProvisionError as exc:
                if time.monotonic() > deadline:
                    raise ProvisionError(f"DHCP: no lease within {self.dhcp_wait:.0f} s ({exc})") from None
        if not lease.next_server or not lease.boot_file:
            raise ProvisionError(f"DHCP lease {lease.ip} names no next-server/boot file: cannot PXE boot")
        self.result.address = str(lease.ip)
        self.step("dhcp", started, f"{lease.ip} from {lease.server_id}, next-server {lease.next_server}, "
                                   f"file {lease.boot_file}")
        return lease

    def tftp_get(self, server: str, remote: str) -> Path | None:
        """Fetch with tftp-hpa; None if the server says the file is not there. (tftp-hpa exits 0 even
        on errors, so its output and the file decide.)"""
        local = self.work / "tftp" / remote.replace("/", "_")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.unlink(missing_ok=True)
        proc = subprocess.run([self.tftp, server, "-m", "binary", "-c", "get", remote, str(local)],
                              capture_output=True, text=True, timeout=120)
        out = (proc.stdout + proc.stderr).strip()
        if "File not found" in out:
            local.unlink(missing_ok=True)
            return None
        if proc.returncode != 0 or out or not local.is_file():
            raise ProvisionError(f"TFTP {server}:{remote} failed: {out or f'exit {proc.returncode}'}")
        return local

    def curl_get(self, url: str) -> Path:
        """Fetch an http:// boot file with curl (a real client, as lpxelinux's own HTTP); 404 is an error."""
        curl = shutil.which("curl")
        if curl is None:
            raise ProvisionError("curl not found (Debian package curl): the lab firmware's HTTP client")
        local = self.work / "http" / url.rsplit("/", 1)[-1]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.unlink(missing_ok=True)
        # no limit on the whole transfer (a boot storm shares one server link), only on a stalled one
        proc = subprocess.run([curl, "-fsS", "--connect-timeout", "30", "--speed-limit", "1", "--speed-time", "60",
                               "-o", str(local), url], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not local.is_file():
            raise ProvisionError(f"HTTP {url} failed: {proc.stderr.strip() or f'curl exit {proc.returncode}'}")
        return local

    def tftm_get(self, url: str) -> Path:
        """Fetch a tftm:// URL (RFC 2090 multicast TFTP, as iPXE does under pxelinux.0) with atftp's client,
        asking for the multicast option and iPXE's block size."""
        atftp = shutil.which("atftp")
        if atftp is None:
            raise ProvisionError("atftp not found (Debian package atftp): the lab firmware's multicast TFTP client")
        host_port, _, remote = url.removeprefix("tftm://").partition("/")
        host, _, port = host_port.partition(":")
        local = self.work / "tftm" / remote.replace("/", "_")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.unlink(missing_ok=True)
        proc = subprocess.run([atftp, "--option", "multicast", "--option", "blksize 1432", "-g", "-r", remote,
                               "-l", str(local), host, port or "69"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not local.is_file():
            raise ProvisionError(f"TFTP multicast {url} failed: {(proc.stdout + proc.stderr).strip()[-300:]}")
        return local

    def fetch_boot_file(self, server: str, name: str) -> None:
        """A KERNEL or INITRD of the PXE config: over HTTP when it is an http:// URL, by multicast TFTP when
        it is a tftm:// URL, else over TFTP."""
        if name.startswith("http://"):
            self.curl_get(name)
        elif name.startswith("tftm://"):
            self.tftm_get(name)
        elif self.tftp_get(server, name) is None:
            raise ProvisionError(f"TFTP {server}: {name} (named by the PXE config) not found")

    def pxe(self, lease: Lease) -> PxeEntry:
        started = time.monotonic()
        server = lease.next_server
        for required in (lease.boot_file, "ldlinux.c32"):
            if self.tftp_get(server, required) is None:
                raise ProvisionError(f"TFTP {server}: {required} not found")
        for name in pxelinux_search_order(self.mac, lease.ip.ip):
            config = self.tftp_get(server, name)
            if config is not None:
                entry = parse_pxelinux(config.read_text())
                mode = "local" if entry.localboot else "install"
                self.step("pxe", started, f"{lease.boot_file}, ldlinux.c32, {name}: {mode} (LABEL {entry.label})")
                return entry
        raise ProvisionError(f"TFTP {server}: no PXE config for {self.mac}")

    def due_for_install(self, entry: PxeEntry) -> bool:
        """Before touching the disk, ask the server whether this node is really due for install (a node
        whose flip to local boot did not reach its PXE config must not reinstall itself on every boot)."""
        url = boot_url(entry.append)
        if url is None:
            raise ProvisionError(f"PXE APPEND has no provision.boot_url=: {entry.append!r}")
        started = time.monotonic()
        boot = boot_mode(url)
        self.step("due", started, f"{url}: {boot}")
        return boot == "install"

    def install(self, lease: Lease, entry: PxeEntry) -> int | None:
        """Run the installer; None when the server says the node is not due for install."""
        started = time.monotonic()
        for file in (entry.kernel, entry.initrd):
            if file:
                self.fetch_boot_file(lease.next_server, file)
        self.step("kernel", started, f"{entry.kernel} and {entry.initrd} fetched")
        if not self.due_for_install(entry):
            return None
        url = kickstart_url(entry.append)
        if url is None:
            raise ProvisionError(f"PXE APPEND has no inst.ks= URL: {entry.append!r}")
        started = time.monotonic()
        kickstart = http_get(url).decode()
        (self.work / "kickstart.ks").write_text(kickstart)
        scripts = post_scripts(read_kickstart(kickstart, url))
        self.step("kickstart", started, f"{url}: {len(scripts)} %post script(s)")
        self.disk.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SYSIMAGE": str(self.disk),
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        for i, script in enumerate(scripts, 1):
            if script.in_chroot:
                raise ProvisionError(f"%post #{i} runs in the chroot, but a lab disk holds no OS: use --nochroot")
            started = time.monotonic()
            path = self.work / f"post-{i}.sh"
            path.write_text(script.script)
            self.say(f"%post #{i} ({script.interpreter}) starts")
            rc = subprocess.run([script.interpreter, str(path)], env=env, cwd=self.work,
                                stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT).returncode
            self.result.post_exit = rc
            self.step("post", started, f"%post #{i} exit {rc}")
            if rc != 0 and script.error_on_fail:
                return rc
        return 0

    def boot(self) -> BootResult:
        try:
            lease = self.dhcp()
            entry = self.pxe(lease)
            self.result.first_entry = "local" if entry.localboot else "install"
            if not entry.localboot:
                rc = self.install(lease, entry)
                if rc is None:
                    self.result.install_skipped = True
                    self.result.ok = True
                    self.say("not due for install (the server says local boot): boots from its local disk")
                    return self.result
                if rc != 0:
                    raise ProvisionError(f"%post failed with exit {rc} (--erroronfail): installer stops")
                self.say(f"reboot ({self.reboot_seconds:g} s until the firmware runs again)")
                time.sleep(self.reboot_seconds)
                lease = self.dhcp()
                entry = self.pxe(lease)
                self.result.after_reboot = "local" if entry.localboot else "install"
                if not entry.localboot:
                    raise ProvisionError("after the install the PXE config still says install "
                                         "(not flipped to local boot): the node would reinstall")
            self.result.ok = True
            self.say("boots from its local disk")
        except (ProvisionError, OSError, subprocess.SubprocessError) as exc:
            self.result.error = str(exc)
            self.say(f"FAILED: {exc}")
        return self.result


def wait_for_reset(armed: Path) -> None:
    """Load the installer's parser, say so in `armed`, and wait for SIGUSR1 (blocked first: a press right
    after the file appears is not lost)."""
    for module in ("pykickstart.parser", "pykickstart.version"):  # the installer's own start-up
        importlib.import_module(module)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    armed.touch()
    signal.sigwait({signal.SIGUSR1})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # the firmware's tools get the usual mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provision.lab.node", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--disk", required=True, type=Path, help="the node's disk directory (SYSIMAGE)")
    parser.add_argument("--work", required=True, type=Path, help="directory for downloads, log, result.json")
    parser.add_argument("--dhcp-wait", type=float, default=300.0,
                        help="seconds the firmware keeps asking for a lease (default 300)")
    parser.add_argument("--reboot-seconds", type=float, default=3.0,
                        help="time a reboot takes before the firmware asks DHCP again (default 3)")
    parser.add_argument("--armed", action="store_true",
                        help="load everything, write <work>/armed, then wait for SIGUSR1 (the reset button)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.armed:
        wait_for_reset(args.work / "armed")
    node = LabNode(args.name, args.mac, args.disk, args.work, args.dhcp_wait, sys.stdout, args.reboot_seconds)
    result = node.boot()
    tmp = args.work / ".result.json.tmp"
    tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    tmp.replace(args.work / "result.json")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
