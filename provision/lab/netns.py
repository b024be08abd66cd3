"""A simulated switched network made of Linux network namespaces (needs root and iproute2).

Layout for a prefix P: a namespace `P-sw` holding a bridge `br0`; every host is a namespace `P-<name>`
with one interface `eth0`, joined to the bridge by a veth pair whose switch end lives in `P-sw`.
Nothing is created in the caller's own namespace, so no lab address ever appears on the host's
interfaces. Each link can be shaped with a tc token bucket in both directions (host egress on `eth0`,
switch egress on the switch port), so every host sees a full-duplex link of the given rate.

    net = Network("pvt-demo", rate="100mbit")
    a = net.add_host("a", address="10.9.0.1/24")
    b = net.add_host("b", address="10.9.0.2/24", mac="52:54:00:00:00:02")
    net.run(a, ["ping", "-c1", "10.9.0.2"])
    net.teardown()          # or teardown_prefix("pvt-demo") after a crash
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError

BRIDGE = "br0"
HOST_IFACE = "eth0"
NETNS_ETC = Path("/etc/netns")
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class NetnsError(ProvisionError):
    """An `ip`/`tc` command failed; the message has the command and its stderr."""


def parse_rate(rate: str) -> int:
    """'100mbit' -> 100000000 (bits per second); tc's bit-based units only."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?bit)\s*", rate.lower())
    if not m:
        raise ValueError(f"bad rate {rate!r}: expected e.g. 100mbit, 1gbit, 500kbit")
    bits = int(float(m.group(1)) * _RATE_UNITS[m.group(2)])
    if bits <= 0:
        raise ValueError(f"bad rate {rate!r}: must be positive")
    return bits


@dataclass(frozen=True)
class Shaping:
    """A tc token bucket filter: `rate` as tc writes it (e.g. '100mbit'); burst defaults to 4 ms worth
    of the rate (at least 128 KiB: one 64 KiB GSO segment fits, else tbf splits segments in software and a
    10 Mbit/s ring of 8 forwarding nodes runs 24 % slower than one node), queue limit given as latency."""

    rate: str
    burst_bytes: int | None = None
    latency: str = "50ms"

    def tc_args(self) -> list[str]:
        bits = parse_rate(self.rate)
        burst = self.burst_bytes or max(bits // 8 // 250, 128 << 10)
        return ["tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", self.latency]


@dataclass(frozen=True)
class Host:
    """One simulated machine: namespace `ns` with interface `iface` (MAC `mac`, optional static
    `address` as CIDR), attached to switch port `port` in the switch namespace."""

    name: str
    ns: str
    iface: str
    port: str
    mac: str
    address: str | None
    shaping: Shaping | None

    @property
    def ip(self) -> str | None:
        """The static address without prefix length (None when the host gets one by DHCP)."""
        return str(ipaddress.ip_interface(self.address).ip) if self.address else None


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` inside namespace `ns` (with its /etc/netns/<ns> files)."""
    return ["ip", "netns", "exec", ns, *argv]


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (`ip netns list`)."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def teardown_prefix(prefix: str) -> list[str]:
    """Delete every namespace named `<prefix>-*` and its /etc/netns directory (veths die with their
    namespace); returns the names removed. Safe to call when nothing is there."""
    removed = []
    for ns in list_namespaces():
        if ns.startswith(f"{prefix}-"):
            kill_processes(ns)
            _run(["ip", "netns", "delete", ns], check=False)
            removed.append(ns)
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.glob(f"{prefix}-*"):
            shutil.rmtree(d, ignore_errors=True)
    return removed


def kill_processes(ns: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process running in namespace `ns` (`ip netns pids`) and wait up to `timeout` seconds
    until each has ended (gone, or a zombie its parent has not reaped): a big one, like QEMU, takes a
    moment to free its memory, and holds its tap and disk until then. Returns their pids."""
    pids = [int(p) for p in _run(["ip", "netns", "pids", ns], check=False).stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pids


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def wait_inside(ns: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Return once `proc` (started with ns_argv) runs inside namespace `ns`, or has ended: until then
    `ip netns pids` does not list it, so a kill of the namespace's processes would miss it."""
    target = os.stat(f"/run/netns/{ns}").st_ino
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == target:
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise NetnsError(f"process {proc.pid} did not enter namespace {ns} within {timeout:.0f} s")
        time.sleep(0.01)


class Network:
    """A bridge namespace plus hosts; create with the prefix every namespace name starts with."""

    def __init__(self, prefix: str, rate: str | None = None):
        if not _NAME_RE.match(prefix):
            raise ValueError(f"bad namespace prefix {prefix!r}")
        self.prefix = prefix
        self.shaping = Shaping(rate) if rate else None
        self.switch_ns = f"{prefix}-sw"
        self.hosts: dict[str, Host] = {}
        if self.switch_ns in list_namespaces():
            raise NetnsError(f"namespace {self.switch_ns} exists already (a leftover?): "
                             f"remove it with teardown_prefix({prefix!r})")
        _run(["ip", "netns", "add", self.switch_ns])
        try:
            self._ip(self.switch_ns, "link", "set", "lo", "up")
            self._ip(self.switch_ns, "link", "add", BRIDGE, "type", "bridge",
                     "forward_delay", "0", "stp_state", "0")
            self._ip(self.switch_ns, "link", "set", BRIDGE, "up")
        except NetnsError:
            self.teardown()
            raise

    @staticmethod
    def _ip(ns: str, *args: str) -> None:
        _run(["ip", "-n", ns, *args])

    def add_host(self, name: str, address: str | None = None, mac: str | None = None,
                 rate: str | None = None) -> Host:
        """Create namespace `<prefix>-<name>` with `eth0` on the bridge; `address` is a CIDR like
        '10.9.0.1/24' or None (DHCP later); `mac` defaults to one derived from the port number;
        `rate` overrides the network's shaping for this link."""
        if not _NAME_RE.match(name) or name == "sw" or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        if mac is not None and not _MAC_RE.match(mac.lower()):
            raise ValueError(f"bad MAC {mac!r} for host {name!r}")
        if address is not None:
            ipaddress.ip_interface(address)  # raises ValueError on a bad CIDR
        index = len(self.hosts) + 1
        ns, port = f"{self.prefix}-{name}", f"port{index}"
        mac = (mac or f"02:00:00:00:{index >> 8 & 0xff:02x}:{index & 0xff:02x}").lower()
        shaping = Shaping(rate) if rate else self.shaping
        host = Host(name, ns, HOST_IFACE, port, mac, address, shaping)
        _run(["ip", "netns", "add", ns])
        self.hosts[name] = host
        self._ip(ns, "link", "set", "lo", "up")
        self._ip(self.switch_ns, "link", "add", port, "type", "veth",
                 "peer", "name", HOST_IFACE, "netns", ns)
        self._ip(ns, "link", "set", HOST_IFACE, "address", mac)
        self._ip(self.switch_ns, "link", "set", port, "master", BRIDGE)
        self._ip(self.switch_ns, "link", "set", port, "up")
        self._ip(ns, "link", "set", HOST_IFACE, "up")
        # multicast (boot.transport: multicast) goes out of the one port, as on a machine with one NIC (lab hosts
        # have no default route)
        self._ip(ns, "route", "add", "224.0.0.0/4", "dev", HOST_IFACE)
        if address:
            self._ip(ns, "addr", "add", address, "dev", HOST_IFACE)
        if shaping:
            self.shape(host, shaping)
        return host

    def shape(self, host: Host, shaping: Shaping) -> None:
        """Apply (or replace) the token bucket on both ends of the host's link."""
        tbf = shaping.tc_args()
        _run(["tc", "-n", host.ns, "qdisc", "replace", "dev", host.iface, "root", *tbf])
        _run(["tc", "-n", self.switch_ns, "qdisc", "replace", "dev", host.port, "root", *tbf])

    def write_etc(self, host: Host, filename: str, text: str) -> Path:
        """Write /etc/netns/<ns>/<filename>; `ip netns exec` bind-mounts it over /etc/<filename>."""
        d = NETNS_ETC / host.ns
        d.mkdir(parents=True, exist_ok=True)
        path = d / filename
        tmp = path.with_name(f".{filename}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    def write_hosts(self, entries: Mapping[str, str], hosts: Sequence[Host] | None = None) -> None:
        """Give each host (default: all) an /etc/hosts with localhost plus `entries` (name -> IP)."""
        lines = ["127.0.0.1\tlocalhost", *(f"{ip}\t{name}" for name, ip in entries.items())]
        for host in hosts if hosts is not None else self.hosts.values():
            self.write_etc(host, "hosts", "\n".join(lines) + "\n")

    def run(self, host: Host, argv: Sequence[str], check: bool = True, timeout: float | None = None,
            **kwargs) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's namespace and wait (text output captured by default)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(ns_argv(host.ns, argv), check=check, timeout=timeout, **kwargs)

    def popen(self, host: Host, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a command inside the host's namespace (arguments as for subprocess.Popen)."""
        return subprocess.Popen(ns_argv(host.ns, argv), **kwargs)

    def teardown(self) -> list[str]:
        """Remove every namespace with this network's prefix (also ones left by an earlier crash)."""
        self.hosts.clear()
        return teardown_prefix(self.prefix)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()
