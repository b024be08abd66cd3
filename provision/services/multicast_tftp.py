"""Multicast TFTP (RFC 2090) of the boot payload: every node that boots at once shares one stream.

With `boot.transport: multicast` pxelinux's configs name the kernel and initrd as tftm://SERVER:1069/<path>;
the firmware's client (iPXE's, under pxelinux.0; iPXE drops the multicast data unless built with
docs/ipxe-tftm-memset.patch, see docs/boot.md) asks for them with TFTP's `multicast` option and Debian's
atftpd answers: the first client is the master that acknowledges, the others listen to the same group and
only ask for what they missed. A hundred nodes reset together fetch the payload about once over the server's link instead of a
hundred times (the seed's "multicast TFTP from the PXE server").

atftpd serves a directory of its own: copies (hard links where it can) of the payload files only, world
readable, in a root-owned directory atftpd's user (nobody) cannot write (atftpd takes write requests for any
file its user may write). It runs as nobody on the server's address and port 1069; provision's own TFTP
server keeps port 69. Multicast leaves through the interface the kernel routes the group to: that must be
the one holding the server's address, else the start is refused with the route to add.

    server = MulticastTftpServer(tftp_root, ["boot/vmlinuz", "boot/initrd.img"], "10.0.0.1", log_file).start()
    ...
    server.stop()
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from provision.errors import ProvisionError
from provision.model import MULTICAST_DATA_PORTS, MULTICAST_GROUPS, MULTICAST_TFTP_PORT
from provision.services.daemon import find_program, log_since

READY_LINE = "Advanced Trivial FTP server started"
MAX_CLIENTS = 1024  # atftpd's thread cap (default 100): each request holds one until its multicast group takes it


def route_problem(server_ip: str, group: str = MULTICAST_GROUPS[0]) -> str | None:
    """Why multicast to `group` would not leave through the interface holding `server_ip` (None: it would)."""
    def ip_json(*args: str) -> list[dict]:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
    iface = next((link["ifname"] for link in ip_json("-4", "addr", "show")
                  for a in link.get("addr_info", []) if a.get("local") == server_ip), None)
    if iface is None:
        return f"no interface here has the server's address {server_ip}"
    route = ip_json("route", "get", group)
    dev = route[0].get("dev") if route else None
    network = ipaddress.ip_network(f"{MULTICAST_GROUPS[0]}/24", strict=False)
    if dev != iface:
        where = f"through {dev}" if dev else "nowhere (no route)"
        return (f"multicast to {group} goes {where}, not through {iface} ({server_ip}): "
                f"`ip route add {network} dev {iface}`")
    return None


class MulticastTftpServer:
    """atftpd serving `files` (paths inside `tftp_root`) with RFC 2090 multicast, on `host`:`port`."""

    def __init__(self, tftp_root: Path, files: Sequence[str], host: str, log_file: Path,
                 port: int = MULTICAST_TFTP_PORT):
        self.tftp_root, self.files, self.host, self.port, self.log_file = tftp_root, list(files), host, port, log_file
        self.root: Path | None = None
        self.proc: subprocess.Popen | None = None

    def argv(self, binary: str, root: Path) -> list[str]:
        first, last = MULTICAST_GROUPS
        return [binary, "--daemon", "--no-fork", "--user", "nobody", "--group", "nogroup", "--logfile", "-", "-v7",
                "--bind-address", self.host, "--port", str(self.port), "--maxthread", str(MAX_CLIENTS),
                "--mcast-addr", f"{first}-{last.rsplit('.', 1)[1]}",
                "--mcast-port", f"{MULTICAST_DATA_PORTS[0]}-{MULTICAST_DATA_PORTS[1]}",
                "--mcast-switch-client", str(root)]

    def start(self, timeout: float = 10.0) -> MulticastTftpServer:
        binary = find_program("atftpd")
        if binary is None:
            raise ProvisionError("boot.transport multicast: atftpd not found (Debian package atftpd)")
        problem = route_problem(self.host)
        if problem:
            raise ProvisionError(f"boot.transport multicast: {problem}")
        self.root = self._stage()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(self.argv(binary, self.root), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while READY_LINE not in log_since(self.log_file, offset):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = log_since(self.log_file, offset).strip()
                self.stop()
                raise ProvisionError(f"atftpd on {self.host}:{self.port} did not start: {log or 'no output'}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _stage(self) -> Path:
        """A fresh root-owned 0755 directory with the payload files, 0644 (missing ones are an error)."""
        missing = [rel for rel in self.files if not (self.tftp_root / rel).is_file()]
        if missing:
            raise ProvisionError(f"boot.transport multicast: not in {self.tftp_root}: {', '.join(missing)}")
        root = Path(tempfile.mkdtemp(prefix="provision-mtftp-"))
        root.chmod(0o755)
        for rel in self.files:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.parent.chmod(0o755)
            try:
                os.link(self.tftp_root / rel, target)
            except OSError:
                shutil.copyfile(self.tftp_root / rel, target)
            target.chmod(0o644)
        return root
