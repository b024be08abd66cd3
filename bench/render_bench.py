"""Render benchmark: generate an N-node inventory (default 10,000), validate and render it; print the time.

Target on a 2-core machine: 10,000 nodes in under 3 s (load + validate + render + write).
Usage: python bench/render_bench.py [--nodes N] [--keep DIR] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.inventory import load_inventory  # noqa: E402
from provision.render import render_files, render_to  # noqa: E402

HASH = "$6$benchsalt$" + "a" * 86


def inventory_text(count: int) -> str:
    """A valid inventory with `count` nodes in a /16 subnet."""
    subnet = ipaddress.IPv4Network("10.100.0.0/16")
    lines = [
        "cluster: bench",
        "server: {name: srv, ip: 10.100.0.1}",
        f"network: {{subnet: {subnet}, gateway: 10.100.0.1, dns: [10.100.0.1], domain: bench.test}}",
        "boot: {kernel: /srv/boot/vmlinuz, initrd: /srv/boot/initrd.img, append: console=ttyS0}",
        "images:",
        "  - {source: /srv/image.raw, target: /dev/sda1}",
        "  - {source: /srv/data.tar.gz, target: /data, cook: true}",
        "defaults:",
        f"  root_password_hash: {HASH}",
        "  disk: {device: sda, partitions: [{mount: /, fstype: ext4, size: 8192},"
        " {mount: swap, fstype: swap, size: 1024}, {mount: /data, fstype: ext4, size: 1, grow: true}]}",
        "nodes:",
    ]
    for i in range(1, count + 1):
        ip = subnet.network_address + 10 + i
        mac = f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        lines.append(f"  - {{name: node{i:05d}, mac: \"{mac}\", ip: {ip}}}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="render into this directory instead of a temporary one")
    parser.add_argument("--tmp", type=Path, help="where to make the temporary directory (e.g. /dev/shm, to"
                        " take the disk out of the measurement)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="provision-render-bench-", dir=args.tmp) as tmp:
        inv_path = Path(tmp) / "bench.yaml"
        inv_path.write_text(inventory_text(args.nodes))
        out = args.keep or Path(tmp) / "out"

        start, cpu_start = time.perf_counter(), time.process_time()
        inv = load_inventory(inv_path)
        loaded = time.perf_counter()
        report = render_to(out, inv)  # cold: compile templates, render, dhcpd -t, write every file
        written, cpu_written = time.perf_counter(), time.process_time()
        files = render_files(inv)  # warm, in memory only
        rendered = time.perf_counter()
        again = render_to(out, inv)  # a re-render (what a flip does): nothing changed, nothing rewritten
        second = time.perf_counter()

    total = written - start
    print(f"nodes:                              {args.nodes}")
    print(f"load + validate:                    {loaded - start:6.2f} s")
    print(f"render + dhcpd -t + write (cold):   {written - loaded:6.2f} s  ({len(report.files.written)} files"
          f" written, dhcpd -t {'run' if report.dhcpd_checked else 'skipped: not installed'})")
    print(f"render in memory only (warm):       {rendered - written:6.2f} s  ({len(files)} files)")
    print(f"re-render, nothing changed:         {second - rendered:6.2f} s  ({again.files.unchanged} unchanged)")
    print(f"TOTAL load + validate + render + write: {total:.2f} s = {args.nodes / total:,.0f} nodes/s"
          f"  (target: 10,000 nodes < 3 s)")
    print(f"      of which this process's CPU time: {cpu_written - cpu_start:.2f} s (the rest: waiting for the disk,"
          f" dhcpd -t, other processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
