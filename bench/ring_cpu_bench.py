#!/usr/bin/env python3
"""CPU cost of the ring on loopback: dollyS and N dollyC processes on 127.0.77.x, no shaping.

For every ring size and target it runs the clone --repeat times and prints the best MB/s and the
best CPU-seconds (user + system, all threads, from wait4) per GiB of each role: the server, and
the clients (their mean and worst). The peer is a raw TCP stream of the same file on the same
loopback (a sender and a receiver that discards, or writes to the target), so the table shows
what the ring adds to moving the bytes. --profile samples one run with perf and splits each role's
CPU into stages (the server and the first client of the first ring size): receive, check (SHA-256,
BLAKE3 or CRC-32 work in a client's receiving thread: the pieces' tags), hash (such work elsewhere: the
server's SHA-256 and tags; before protocol 2 also a client's piece hash list), write, forward, read
(the server), other (the interpreter, locks, thread wake-ups, page faults). --tag: dollyS --tag
(the pieces' tag algorithm; default dollyS's own); --digest: dollyS --digest (the files' plain digest in
the report; default dollyS's own, sha256).

    .venv/bin/python bench/ring_cpu_bench.py --secret --nodes 1 --target tmpfs,disk,loop --profile
    .venv/bin/python bench/ring_cpu_bench.py --secret --nodes 2,4,8 --target disk,tmpfs --no-raw --repeat 2
    .venv/bin/python bench/ring_cpu_bench.py --code /tmp/before ...   # another copy of dolly_core
    .venv/bin/python bench/ring_cpu_bench.py --secret --tag sha256 ...  # HMAC-SHA256 piece tags
    .venv/bin/python bench/ring_cpu_bench.py --secret --digest blake3 ...  # the report's digest BLAKE3

Targets: tmpfs (/dev/shm), disk (a file on the ext4 root, /var/tmp), loop (a loop device with
direct I/O over a sparse file on the disk; root). Needs the image and every tmpfs target in RAM.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
GIB = 1 << 30
SHM = Path("/dev/shm/rcb")
DISK = Path("/var/tmp/rcb")
SERVER = "127.0.77.1"
PORT = 19997

RECEIVER = r"""
import socket, sys, os
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
c, _ = s.accept()
out = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if len(sys.argv) > 3 else None
buf = memoryview(bytearray(4 << 20))
while n := c.recv_into(buf):
    if out is not None:
        os.write(out, buf[:n])
if out is not None:
    os.fsync(out)
"""

SENDER = r"""
import socket, sys, os
fd = os.open(sys.argv[1], os.O_RDONLY)
s = socket.create_connection((sys.argv[2], int(sys.argv[3])))
buf = memoryview(bytearray(4 << 20))
while n := os.readv(fd, [buf]):
    s.sendall(buf[:n])
s.close()
"""


def client_addr(i: int) -> str:
    return f"127.0.77.{10 + i}"


def wait_cpu(proc: subprocess.Popen) -> float:
    """Wait for proc; its CPU-seconds (user + system, every thread)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def make_image(path: Path, size_mib: int) -> None:
    if path.exists() and path.stat().st_size == size_mib << 20:
        return
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))


class Targets:
    """Per-node root directories whose disk.img is on tmpfs, on the disk, or a loop device."""

    def __init__(self, kind: str, n: int, size: int):
        self.kind, self.loops = kind, []
        self.roots = [SHM / f"node{i}" for i in range(1, n + 1)]
        for i, root in enumerate(self.roots, 1):
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            if kind == "disk":
                (DISK / f"node{i}").mkdir(parents=True, exist_ok=True)
                (root / "disk.img").symlink_to(DISK / f"node{i}" / "disk.img")
            elif kind == "loop":
                backing = DISK / f"loop{i}.img"
                with open(backing, "wb") as f:
                    f.truncate(size)
                dev = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", str(backing)],
                                     check=True, capture_output=True, text=True).stdout.strip()
                self.loops.append(dev)
                (root / "disk.img").symlink_to(dev)

    def first(self) -> str:
        return os.path.realpath(self.roots[0] / "disk.img")

    def clean(self) -> None:
        for root in self.roots:
            target = os.path.realpath(root / "disk.img")
            shutil.rmtree(root, ignore_errors=True)
            if self.kind == "disk" and os.path.exists(target):
                os.unlink(target)
        for dev in self.loops:
            subprocess.run(["losetup", "-d", dev], check=False)
        if self.kind == "loop":
            for f in DISK.glob("loop*.img"):
                f.unlink()


def raw_stream(image: Path, out: str | None) -> dict:
    """One plain TCP stream of the image over loopback; the receiver discards or writes to `out`."""
    rx = subprocess.Popen([PY, "-c", RECEIVER, client_addr(1), str(PORT + 1), *([out] if out else [])],
                          stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "ready"
    started = time.monotonic()
    tx = subprocess.Popen([PY, "-c", SENDER, str(image), client_addr(1), str(PORT + 1)])
    tx_cpu, rx_cpu = wait_cpu(tx), wait_cpu(rx)
    seconds = time.monotonic() - started
    return {"seconds": seconds, "server": tx_cpu, "clients": [rx_cpu]}


def write_config(path: Path, image: Path, n: int) -> None:
    names = [f"{client_addr(i)}:{PORT + 1}" for i in range(1, n + 1)]
    path.write_text("\n".join(["iofiles 1", f"{image} > /disk.img", f"server {SERVER}:{PORT}",
                               f"firstclient {names[0]}", f"lastclient {names[-1]}", f"clients {n}",
                               *names, "endconfig"]) + "\n")


def ring_run(code: Path, image: Path, targets: Targets, secret: list[str], profile: Path | None,
             server_args: tuple[str, ...] = ()) -> dict:
    """One clone; with `profile`, the server and the first client run under perf record."""
    n = len(targets.roots)
    config, report = SHM / "dolly.conf", SHM / "report.json"
    write_config(config, image, n)
    env = {**os.environ, "PYTHONPATH": str(code)}

    def command(role: str) -> list[str]:
        if profile is None or not role:
            return [PY, "-m", "dolly_core.cli"]
        return ["perf", "record", "-q", "-F", "999", "-g", "-o", str(profile / f"{role}.data"), "--",
                PY, "-m", "dolly_core.cli"]
    clients = [subprocess.Popen([*command("client" if i == 1 else ""), "client", "-q", "--listen",
                                 f"{client_addr(i)}:{PORT + 1}", "--root", str(root), *secret], env=env, cwd="/")
               for i, root in enumerate(targets.roots, 1)]
    time.sleep(1.0 if profile else 0.3)
    server = subprocess.Popen([*command("server"), "server", "-q", "-f", str(config), "--json", str(report),
                               *secret, *server_args], env=env, cwd="/")
    server_cpu = wait_cpu(server)
    client_cpu = [wait_cpu(c) for c in clients]
    result = json.loads(report.read_text())
    assert result["ok"] and all(c.returncode == 0 for c in clients), result
    return {"seconds": result["seconds"], "server": server_cpu, "clients": client_cpu}


def best(runs: list[dict], size: int) -> dict:
    """Best of the repeats: the highest MB/s and the lowest CPU-s/GiB of each role (separately)."""
    gib = size / GIB
    clients = [min(r["clients"][i] for r in runs) / gib for i in range(len(runs[0]["clients"]))]
    return {"mb_per_s": max(size / r["seconds"] / 1e6 for r in runs),
            "server_cpu_per_gib": min(r["server"] for r in runs) / gib,
            "client_cpu_per_gib": clients, "client_mean": sum(clients) / len(clients), "client_max": max(clients)}


# ---- the profile: perf samples sorted into stages --------------------------------------------------
SYSCALL_STAGE = {
    "recvfrom": "receive", "recvmsg": "receive", "read": "read", "pread64": "read", "preadv": "read",
    "readv": "read", "lseek": "read", "write": "write", "pwrite64": "write", "pwritev": "write",
    "writev": "write", "fsync": "write", "fdatasync": "write", "sync_file_range": "write",
    "fadvise64": "write", "sendmsg": "forward", "sendto": "forward",
}
SYSCALL = re.compile(r"(?:sys|do)_(\w+)$")  # do_preadv: preadv's own entry is inlined on this kernel


def samples(data: Path):
    """(tid, leaf library, the syscall the sample is in or None) of every perf sample."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,ip,sym,dso"], capture_output=True,
                         text=True).stdout
    for block in out.split("\n\n"):
        lines = [line.split() for line in block.strip().splitlines()]
        if len(lines) < 2:
            continue
        syscall = next((m.group(1) for parts in lines[1:] if len(parts) > 1
                        for m in [SYSCALL.search(parts[1])] if m and m.group(1) in SYSCALL_STAGE), None)
        yield int(lines[0][0]), lines[1][-1], syscall


def stage_shares(data: Path, role: str) -> dict[str, float]:
    """Share of each stage in one process's samples. SHA-256 (libcrypto), BLAKE3 (the blake3 module) and
    CRC-32 (libz) are a 'check' in a client's receiving thread and a 'hash' elsewhere (the writer; the
    server's reader, which tags)."""
    rows = [(tid, dso, SYSCALL_STAGE.get(syscall or "")) for tid, dso, syscall in samples(data)]
    receivers = {tid for tid, _, stage in rows if stage == "receive"}
    counts: collections.Counter[str] = collections.Counter()
    for tid, dso, stage in rows:
        if stage is None and ("libcrypto" in dso or "libz" in dso or "blake3" in dso):
            stage = "check" if tid in receivers and role == "client" else "hash"
        counts[stage or "other"] += 1
    total = sum(counts.values()) or 1
    return {stage: counts[stage] / total for stage in
            ("receive", "check", "hash", "write", "read", "forward", "other")}


# ---- the report ------------------------------------------------------------------------------------
def print_row(name: str, row: dict) -> None:
    print(f"{name:<28} {row['mb_per_s']:>8.0f} {row['server_cpu_per_gib']:>10.2f} {row['client_mean']:>10.2f} "
          f"{row['client_max']:>10.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--nodes", default="1", help="ring sizes (default 1)")
    parser.add_argument("--target", default="tmpfs", help="tmpfs, disk, loop, comma separated (default tmpfs)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--secret", action="store_true", help="an authenticated ring, as provision install runs it")
    parser.add_argument("--code", default=str(REPO), help="the directory holding the dolly_core to run")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw TCP stream peer")
    parser.add_argument("--profile", action="store_true", help="one more run under perf: the stage shares")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--tag", help="dollyS --tag: the pieces' tag algorithm (default: dollyS's)")
    parser.add_argument("--digest", help="dollyS --digest: the files' plain digest (default: dollyS's)")
    args = parser.parse_args()
    SHM.mkdir(parents=True, exist_ok=True)
    DISK.mkdir(parents=True, exist_ok=True)
    image = SHM / "image.bin"
    make_image(image, args.size_mib)
    size = image.stat().st_size
    secret: list[str] = []
    if args.secret:
        (SHM / "ring.secret").write_text(os.urandom(32).hex() + "\n")
        secret = ["--secret-file", str(SHM / "ring.secret")]
    code = Path(args.code).resolve()
    sizes = [int(x) for x in args.nodes.split(",")]
    server_args = (*(("--tag", args.tag) if args.tag else ()), *(("--digest", args.digest) if args.digest else ()))
    print(f"{args.size_mib} MiB random image, code {code}, secret {args.secret}, tag {args.tag or 'default'}, "
          f"digest {args.digest or 'default'}, best of {args.repeat}")
    print(f"{'run':<28} {'MB/s':>8} {'dollyS s/GiB':>10} {'dollyC mean':>10} {'dollyC max':>10}")
    results: dict = {"size_mib": args.size_mib, "secret": args.secret, "tag": args.tag, "digest": args.digest,
                     "code": str(code), "runs": {}}
    for kind in args.target.split(","):
        if not args.no_raw:
            for label, write in (("raw TCP, discard", False), (f"raw TCP -> {kind}", True)):
                targets = Targets(kind, 1, size)
                try:
                    runs = [raw_stream(image, targets.first() if write else None) for _ in range(args.repeat)]
                finally:
                    targets.clean()
                results["runs"][label] = row = best(runs, size)
                print_row(label, row)
        for n in sizes:
            targets = Targets(kind, n, size)
            try:
                runs = [ring_run(code, image, targets, secret, None, server_args) for _ in range(args.repeat)]
            finally:
                targets.clean()
            label = f"ring N={n} -> {kind}"
            results["runs"][label] = row = best(runs, size)
            print_row(label, row)
            if n > 1:
                print("    dollyC s/GiB by position: " + " ".join(f"{c:.2f}" for c in row["client_cpu_per_gib"]))
        if args.profile:
            targets = Targets(kind, sizes[0], size)
            try:
                ring_run(code, image, targets, secret, SHM, server_args)
            finally:
                targets.clean()
            for role in ("server", "client"):
                shares = stage_shares(SHM / f"{role}.data", role)
                results["runs"][f"profile {role} {kind}"] = shares
                print(f"    {role} stages ({kind}): " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
