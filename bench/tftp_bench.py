"""TFTP benchmark: our tftpy-based server against Debian's tftpd-hpa, same file, same clients, one run.

Both servers run as their own processes on loopback (127.0.0.1, free ports) and serve one directory with a
random file the size of an installer kernel. For 1 and 32 concurrent clients, busybox `tftp -b 1468`
(blksize 1468, as PXE firmware asks) and tftp-hpa's client (which knows only 512-byte blocks) fetch it; the
figure is the aggregate throughput of the best of `--repeat` rounds (the servers take turns), and the
ratio ours / tftpd-hpa. Each server runs in a cgroup of its own, so the CPU it spent (all its processes,
kernel time included) per DATA/ACK pair is shown too. `--load N` runs N busy-looping processes during
all measurements (both servers), as on a machine busy with other work.

Two placements, each server started afresh for each: `shared`, every process on every core (where
client and server of a lone transfer may share a core, which the scheduler decides per run: on a
two-core VM one fetch ran at 51, 73 or 130 MB/s with either server), and `split`, the clients on the
first half of the cores and the servers on the other half, as with clients on other machines.
Target: >= 0.8 of tftpd-hpa in every row. Loopback only.

Usage (root for in.tftpd's chroot and the cgroups):
    python bench/tftp_bench.py [--size-mib 8] [--repeat 5] [--load 0] [--placement shared split]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILE = "vmlinuz"


class CpuMeter:
    """CPU time of the processes started with `enter` as their preexec_fn and all their descendants, from a
    cgroup made for them (cgroup v1 cpuacct or v2); `seconds()` is None where neither can be used."""

    def __init__(self, name: str):
        v1, v2 = Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup")
        base, self._usage = ((v1, "cpuacct.usage") if (v1 / "cpuacct.usage").exists() else
                             (v2, "cpu.stat") if (v2 / "cgroup.controllers").exists() else (None, ""))
        self.path = base / f"tftp-bench-{os.getpid()}-{name}" if base else None
        try:
            if self.path:
                self.path.mkdir()
        except OSError:
            self.path = None

    def enter(self) -> None:
        """Move the calling process into the cgroup (before it starts any other)."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text("0")

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        text = (self.path / self._usage).read_text()
        if self._usage == "cpu.stat":  # usage_usec N
            return int(text.split()[1]) / 1e6
        return int(text) / 1e9

    def remove(self) -> None:
        if self.path is not None:
            self.path.rmdir()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def placed(cpus: set[int], meter: CpuMeter | None = None) -> Callable[[], None]:
    """A preexec_fn: run on `cpus` (and in `meter`'s cgroup)."""
    def enter() -> None:
        os.sched_setaffinity(0, cpus)
        if meter is not None:
            meter.enter()
    return enter


def start_ours(root: Path, port: int, meter: CpuMeter, cpus: set[int]) -> subprocess.Popen:
    code = ("import sys; from provision.services.tftp import TftpServer; "
            f"TftpServer({str(root)!r}, host='127.0.0.1', port={port}, max_per_client=1024).serve_forever()")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, preexec_fn=placed(cpus, meter))


def hpa_daemon() -> str:
    """Debian's in.tftpd: installed, or unpacked once from the tftpd-hpa package into bench/results/ (the package
    conflicts with atftpd, which provision's multicast boot transport needs, so `make deps` leaves it out)."""
    installed = Path(shutil.which("in.tftpd") or "/usr/sbin/in.tftpd")
    if installed.exists() and installed.resolve().name == "in.tftpd":  # atftpd installs in.tftpd -> atftpd
        return str(installed)
    unpacked = REPO / "bench" / "results" / "tftpd-hpa"
    daemon = unpacked / "usr" / "sbin" / "in.tftpd"
    if not daemon.exists():
        with tempfile.TemporaryDirectory() as scratch:
            os.chmod(scratch, 0o755)  # apt downloads as its sandbox user where it can
            subprocess.run(["apt-get", "download", "-qq", "tftpd-hpa"], cwd=scratch, check=True)
            (deb,) = Path(scratch).glob("tftpd-hpa_*.deb")
            unpacked.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    return str(daemon)


def start_hpa(root: Path, port: int, meter: CpuMeter, cpus: set[int]) -> subprocess.Popen:
    return subprocess.Popen([hpa_daemon(), "-L", "-a", f"127.0.0.1:{port}", "-s", str(root)],
                            preexec_fn=placed(cpus, meter))


def placements(names: list[str]) -> list[tuple[str, set[int], set[int]]]:
    """(name, client cores, server cores) of each placement asked for that this machine allows."""
    cpus = sorted(os.sched_getaffinity(0))
    half = len(cpus) // 2
    known = {"shared": (set(cpus), set(cpus)), "split": (set(cpus[:half]), set(cpus[half:]))}
    if half == 0 and "split" in names:
        print("split placement left out: one core only")
        names = [name for name in names if name != "split"]
    return [(name, *known[name]) for name in names]


def client_argv(kind: str, port: int, out: Path) -> list[str]:
    if kind == "busybox-1468":
        return ["busybox", "tftp", "-g", "-b", "1468", "-r", FILE, "-l", str(out), "127.0.0.1", str(port)]
    return ["tftp", "127.0.0.1", str(port), "-m", "binary", "-c", "get", FILE, str(out)]


def blocks(kind: str, size: int) -> int:
    """DATA packets (so DATA/ACK pairs) of one fetch."""
    return size // (1468 if kind == "busybox-1468" else 512) + 1


def fetch_all(kind: str, port: int, clients: int, work: Path, size: int, cpus: set[int]) -> float:
    """Seconds for `clients` concurrent fetches on `cpus`; every copy is checked for its size."""
    outs = [work / f"out-{i}" for i in range(clients)]
    for out in outs:
        out.unlink(missing_ok=True)
    started = time.perf_counter()
    procs = [subprocess.Popen(client_argv(kind, port, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=placed(cpus)) for out in outs]
    for proc in procs:
        proc.wait(timeout=600)
    seconds = time.perf_counter() - started
    bad = [o.name for o in outs if not o.exists() or o.stat().st_size != size]
    if bad:
        raise SystemExit(f"{kind} on port {port}: {len(bad)} incomplete copies")
    return seconds


def wait_listening(port: int) -> None:
    """A TFTP read request for a missing file: any answer means the server is up."""
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(b"\x00\x01no-such-file\x00octet\x00", ("127.0.0.1", port))
            try:
                s.recv(512)
                return
            except OSError:
                continue
    raise SystemExit(f"no TFTP server answers on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--load", type=int, default=0, metavar="N", help="busy-looping processes meanwhile")
    parser.add_argument("--placement", nargs="+", choices=("shared", "split"), default=["shared", "split"])
    args = parser.parse_args()
    for tool in ("busybox", "tftp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (make deps)")

    with tempfile.TemporaryDirectory(prefix="tftp-bench-") as tmp:
        root, work = Path(tmp) / "root", Path(tmp) / "work"
        root.mkdir()
        work.mkdir()
        os.chmod(tmp, 0o755)
        os.chmod(root, 0o755)
        size = args.size_mib << 20
        (root / FILE).write_bytes(os.urandom(size))
        os.chmod(root / FILE, 0o644)
        meters = {name: CpuMeter(name) for name in ("ours", "tftpd-hpa")}
        load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
        try:
            print(f"file {args.size_mib} MiB, best of {args.repeat}, {args.load} busy loops, "
                  f"load average {os.getloadavg()[0]:.1f}; MB/s = all clients' bytes / wall time; "
                  "CPU = the server's CPU time per DATA/ACK pair (all rounds)")
            print(f"{'placement':9} {'client':14} {'clients':>7} {'ours MB/s':>10} {'hpa MB/s':>9} {'ratio':>6} "
                  f"{'ours CPU':>9} {'hpa CPU':>8}")
            for placement, client_cpus, server_cpus in placements(args.placement):
                measure(placement, client_cpus, server_cpus, root, work, size, meters, args)
            print(f"load average at the end {os.getloadavg()[0]:.1f}")
        finally:
            for proc in load:
                proc.terminate()
                proc.wait(timeout=10)
            for meter in meters.values():
                meter.remove()
    return 0


def measure(placement: str, client_cpus: set[int], server_cpus: set[int], root: Path, work: Path, size: int,
            meters: dict[str, CpuMeter], args: argparse.Namespace) -> None:
    """Start both servers on `server_cpus`, print the rows of one placement, stop them."""
    ports = {"ours": free_udp_port(), "tftpd-hpa": free_udp_port()}
    servers = {"ours": start_ours(root, ports["ours"], meters["ours"], server_cpus),
               "tftpd-hpa": start_hpa(root, ports["tftpd-hpa"], meters["tftpd-hpa"], server_cpus)}
    try:
        for port in ports.values():
            wait_listening(port)
        for kind in ("busybox-1468", "tftp-hpa-512"):
            for clients in args.clients:
                best = dict.fromkeys(ports, float("inf"))
                cpu = dict.fromkeys(ports, 0.0)
                for _ in range(args.repeat):  # rounds alternate, so a burst of load elsewhere hits both
                    for name, port in ports.items():
                        before = meters[name].seconds()
                        best[name] = min(best[name], fetch_all(kind, port, clients, work, size, client_cpus))
                        time.sleep(0.2)  # the server's last ACK, its log line
                        if before is not None:
                            cpu[name] += meters[name].seconds() - before
                rates = {name: clients * size / seconds / 1e6 for name, seconds in best.items()}
                pairs = args.repeat * clients * blocks(kind, size)
                micros = {name: f"{1e6 * cpu[name] / pairs:6.1f} us" if cpu[name] else "-" for name in ports}
                print(f"{placement:9} {kind:14} {clients:7d} {rates['ours']:10.1f} {rates['tftpd-hpa']:9.1f} "
                      f"{rates['ours'] / rates['tftpd-hpa']:6.2f} {micros['ours']:>9} {micros['tftpd-hpa']:>8}",
                      flush=True)
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
        time.sleep(0.5)  # the servers' transfer processes end with them


if __name__ == "__main__":
    sys.exit(main())
