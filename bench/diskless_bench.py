#!/usr/bin/env python3
"""A diskless boot storm on the namespace lab (root): N nodes in diskless boot, all "pushed reset" at once,
against `provision serve` (dhcpd, TFTP, HTTP) in the server's namespace. Each node plays PXE (udhcpc, tftp-hpa,
curl: provision.lab.diskless_node), then the diskless initramfs's own fetch script under busybox: the sha256,
the squashfs (verified), its identity, its kept host keys. Per N: the wall time from reset to the last node
ready to switch root, T(N)/T(1), the slowest node's fetch, and how full the server's link was while the
files went out (N x the kernel, initramfs and squashfs over the whole time, against the link's rate). Prints a
Markdown table.

    sudo .venv/bin/python bench/diskless_bench.py [--nodes 1,8,32] [--rate 100mbit] [--server-rate 1gbit] [--image-mib 32]

The squashfs holds --image-mib MiB of random bytes (incompressible: every node's copy is the full size on the
wire); the real golden root's squashfs is 70 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provision.inventory import load_inventory  # noqa: E402
from provision.lab import cluster as lab, netns  # noqa: E402
from provision.lab.provision_cli import PROVISION, in_server  # noqa: E402

INVENTORY = REPO / "inventory" / "lab-scale.yaml"


def diskless_dir(work: Path, mib: int) -> Path:
    """boot.diskless for the bench: a squashfs of a tree with `mib` MiB of random bytes, its sha256 and named
    kernel and initramfs files (the nodes fetch them; nothing boots them)."""
    tree, out = work / "tree", work / "diskless"
    for directory in ("etc/ssh", "etc/network", "root"):
        (tree / directory).mkdir(parents=True)
    (tree / "etc" / "provision-golden").write_text("golden\n")
    (tree / "etc" / "shadow").write_text("root:*:20000:0:99999:7:::\n")
    with open(tree / "payload", "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    out.mkdir()
    subprocess.run(["mksquashfs", str(tree), str(out / "root.squashfs"), "-noappend", "-no-progress", "-quiet"],
                   check=True, capture_output=True)
    digest = hashlib.sha256((out / "root.squashfs").read_bytes()).hexdigest()
    (out / "root.squashfs.sha256").write_text(f"{digest}  root.squashfs\n")
    (out / "vmlinuz").write_bytes(os.urandom(8 << 20))  # about the golden kernel's size
    (out / "initrd.img").write_bytes(os.urandom(3 << 20))  # about the diskless initramfs's
    return out


def run(n: int, args: argparse.Namespace, work: Path, diskless: Path) -> dict:
    """One storm of `n` nodes; returns its figures."""
    env = {**os.environ, "PROVISION_STATE_DIR": str(work / f"state-{n}"), "PROVISION_LAB_PREFIX": f"pvb-{uuid.uuid4().hex[:5]}"}
    text = INVENTORY.read_text().replace("/var/lib/provision/lab-scale", str(work / "files"))
    text = text.replace("\nboot:\n", f"\nboot:\n  diskless: {diskless}\n", 1)
    path = work / "lab-scale.yaml"
    path.write_text(text)
    inv = load_inventory(path)
    built = lab.lab_up(inv, nodes=n, rate=args.rate, env=env, image_mib=1, server_rate=args.server_rate)
    serve = None
    try:
        names = [node.name for node in built.nodes]
        subprocess.run([*PROVISION, "flip-to-diskless", "--inventory", str(path), *names], env=env, check=True,
                       capture_output=True)
        log = work / f"serve-{n}.log"
        with open(log, "wb") as out:
            serve = subprocess.Popen(in_server(built, ["serve", "--inventory", str(path)]), env=env, stdout=out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while "SIGINT or SIGTERM ends" not in log.read_text():
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"provision serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        procs = {}
        started = time.monotonic()
        for node in built.nodes:
            subprocess.run(["ip", "-n", node.ns, "link", "set", netns.HOST_IFACE, "up"], check=True)
            procs[node.name] = subprocess.Popen(netns.ns_argv(node.ns, [
                sys.executable, "-m", "provision.lab.diskless_node", "--name", node.name, "--mac", node.mac,
                "--work", str(work / f"nodes-{n}" / node.name), "--tries", "30", "--retry-seconds", "1",
                "--dhcp-wait", "600"]), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        ended = {}
        while len(ended) < len(procs):
            for name, proc in procs.items():
                if name not in ended and proc.poll() is not None:
                    ended[name] = time.monotonic() - started
            time.sleep(0.1)
        results = {name: json.loads((work / f"nodes-{n}" / name / "result.json").read_text()) for name in procs}
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(30)
        lab.lab_down(env)
    failed = [name for name, r in results.items() if not r["ok"]]
    fetch = [next(s["seconds"] for s in r["steps"] if s["step"] == "fetch") for r in results.values() if r["ok"]]
    size = sum((diskless / f).stat().st_size for f in ("vmlinuz", "initrd.img", "root.squashfs"))
    window = max(ended.values())
    return {"nodes": n, "seconds": window, "failed": failed, "slowest_fetch": max(fetch, default=0.0),
            "bytes": size, "link_share": n * size * 8 / window / netns.parse_rate(args.server_rate or args.rate)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="1,8,32", help="comma-separated N (default 1,8,32)")
    parser.add_argument("--rate", default="100mbit", help="every node's link (default 100mbit)")
    parser.add_argument("--server-rate", default="1gbit", help="the server's link (default 1gbit)")
    parser.add_argument("--image-mib", type=int, default=32, help="random MiB in the squashfs (default 32)")
    args = parser.parse_args()
    for tool in ("mksquashfs", "unsquashfs", "dhcpd", "busybox", "tftp", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (make deps)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="diskless-bench-") as tmp:
        work = Path(tmp)
        diskless = diskless_dir(work, args.image_mib)
        for n in (int(x) for x in args.nodes.split(",")):
            rows.append(run(n, args, work, diskless))
            print(f"N={n}: {rows[-1]['seconds']:.1f} s, failed: {rows[-1]['failed'] or 'none'}", flush=True)
    one = rows[0]["seconds"] if rows[0]["nodes"] == 1 else None
    print(f"\nnodes {args.rate}, server {args.server_rate}, {rows[0]['bytes'] / 1e6:.1f} MB per node (kernel, "
          f"initramfs, squashfs), "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| N | reset -> last node ready to switch root (s) | T(N)/T(1) | slowest squashfs fetch (s) | "
          "N x bytes / (time x server rate) | failed |")
    print("|--:|--:|--:|--:|--:|--|")
    for r in rows:
        ratio = f"{r['seconds'] / one:.2f}" if one else "-"
        print(f"| {r['nodes']} | {r['seconds']:.1f} | {ratio} | {r['slowest_fetch']:.1f} | {r['link_share']:.0%} | "
              f"{', '.join(r['failed']) or '-'} |")
    return 0 if not any(r["failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
