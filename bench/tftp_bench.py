"""TFTP benchmark: our tftpy-based server against Debian's tftpd-hpa, same file, same clients, one run.

Both servers run as their own processes on loopback (127.0.0.1, free ports) and serve one directory with a
random file the size of an installer kernel. For 1 and 32 concurrent clients, busybox `tftp -b 1468`
(blksize 1468, as PXE firmware asks) and tftp-hpa's client (which knows only 512-byte blocks) fetch it; the
figure is the aggregate throughput of the best of `--repeat` rounds (the servers take turns), and the
ratio ours / tftpd-hpa.
Target: >= 0.8 of tftpd-hpa. Loopback only.

Usage (root for in.tftpd's chroot): python bench/tftp_bench.py [--size-mib 8] [--repeat 3]
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILE = "vmlinuz"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ours(root: Path, port: int) -> subprocess.Popen:
    code = ("import sys; from provision.services.tftp import TftpServer; "
            f"TftpServer({str(root)!r}, host='127.0.0.1', port={port}).serve_forever()")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO)


def start_hpa(root: Path, port: int) -> subprocess.Popen:
    daemon = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
    return subprocess.Popen([daemon, "-L", "-a", f"127.0.0.1:{port}", "-s", str(root)])


def client_argv(kind: str, port: int, out: Path) -> list[str]:
    if kind == "busybox-1468":
        return ["busybox", "tftp", "-g", "-b", "1468", "-r", FILE, "-l", str(out), "127.0.0.1", str(port)]
    return ["tftp", "127.0.0.1", str(port), "-m", "binary", "-c", "get", FILE, str(out)]


def fetch_all(kind: str, port: int, clients: int, work: Path, size: int) -> float:
    """Seconds for `clients` concurrent fetches; every copy is checked for its size."""
    outs = [work / f"out-{i}" for i in range(clients)]
    for out in outs:
        out.unlink(missing_ok=True)
    started = time.perf_counter()
    procs = [subprocess.Popen(client_argv(kind, port, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for out in outs]
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
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
        ports = {"ours": free_udp_port(), "tftpd-hpa": free_udp_port()}
        servers = [start_ours(root, ports["ours"]), start_hpa(root, ports["tftpd-hpa"])]
        try:
            for port in ports.values():
                wait_listening(port)
            print(f"file {args.size_mib} MiB, best of {args.repeat}; MB/s = all clients' bytes / wall time")
            print(f"{'client':14} {'clients':>7} {'ours MB/s':>10} {'hpa MB/s':>9} {'ratio':>6}")
            for kind in ("busybox-1468", "tftp-hpa-512"):
                for clients in args.clients:
                    best = dict.fromkeys(ports, float("inf"))
                    for _ in range(args.repeat):  # rounds alternate, so a burst of load elsewhere hits both
                        for name, port in ports.items():
                            best[name] = min(best[name], fetch_all(kind, port, clients, work, size))
                    rates = {name: clients * size / seconds / 1e6 for name, seconds in best.items()}
                    print(f"{kind:14} {clients:7d} {rates['ours']:10.1f} {rates['tftpd-hpa']:9.1f} "
                          f"{rates['ours'] / rates['tftpd-hpa']:6.2f}")
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
