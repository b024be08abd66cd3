#!/usr/bin/env python3
"""The END report's size at the ring's tail, and one hop's CPU, against N: protocol 4's compact verdicts
(dolly_core/verdicts.py) beside protocol 3's END, which carried every verdict whole.

--nodes: real rings on loopback (dollyS on 127.0.78.1, N dollyC on 127.0.78.2..), a small image; the END
that reached the tail is dollyS's report `end_bytes`, protocol 3's the same verdicts whole (the report's
`nodes`, as verdicts.read rebuilds them) and the same server part, through the same encoder.
--compute: rings too large to start here, END built with the members' own code (verdicts.add) and the
wire encoder; a hop's CPU is the last member's: parse END, add its verdict, encode (best of --repeat).

    .venv/bin/python bench/end_size.py --nodes 8,32,100 --compute 1000,10000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dolly_core import protocol as p  # noqa: E402
from dolly_core import verdicts  # noqa: E402
from dolly_core.ring import FileSpec, Member, Ring, RunSetup  # noqa: E402

NET = "127.0.78"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dolly(tool: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dolly_core.cli", tool, *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def real_ring(n: int, image: Path, work: Path) -> dict:
    """dollyS's report of a real ring of n dollyC on loopback."""
    addrs = [f"{NET}.{i + 2}:{free_port(f'{NET}.{i + 2}')}" for i in range(n)]
    config = work / f"dolly{n}.conf"
    config.write_text("\n".join([
        "iofiles 1", f"{image} > /disk.img", f"server {NET}.1:{free_port(f'{NET}.1')}", f"firstclient {addrs[0]}",
        f"lastclient {addrs[-1]}", f"clients {n}", *addrs, "endconfig"]) + "\n")
    clients = [dolly("client", "-q", "--listen", a, "--root", work / f"n{n}-{i}", "--wait", 120)
               for i, a in enumerate(addrs)]
    try:
        for a in addrs:  # every dollyC listens before the run starts
            host, port = a.split(":")
            while True:
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
        report = work / f"report{n}.json"
        server = dolly("server", "-q", "-f", config, "--json", report, "--wait", 30)
        _, err = server.communicate(timeout=600)
        if server.returncode != 0:
            raise SystemExit(f"dollyS exited {server.returncode} at N = {n}: {err}")
        return json.loads(report.read_text())
    finally:
        for c in clients:
            c.wait(timeout=60)


def protocol3_end(report: dict, server: dict) -> int:
    """Protocol 3's END at the tail for the report's verdicts: every verdict whole, as the members made it."""
    whole = {str(i): {k: node[k] for k in ("ok", "error", "bytes", "seconds", "files")}
             for i, node in enumerate(report["nodes"], 1)}
    return len(p.control(p.Kind.END, {"server": server, "verdicts": whole}))


def computed(n: int, repeat: int) -> tuple[int, int, float, float]:
    """(protocol 4 END bytes, protocol 3 END bytes, µs of the last hop in 4, in 3) for n verified members
    of a ring cloning one 4.5 GB file."""
    members = ([Member("head", "10.0.0.1", 0)] + [Member(f"node{i:05d}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                                                          9998) for i in range(1, n + 1)]
               + [Member("head (tail)", "10.0.0.1", 9998)])
    setup = RunSetup("0" * 32, Ring(tuple(members)), (FileSpec("/srv/golden.img", "/dev/sda", False, 4_500_000_000),),
                     4 << 20, 10.0, 10.0, "blake3")
    server = {"sha256": ["ab" * 32], "digest": ["cd" * 32]}
    body = {"server": server, "verdicts": {}}
    made = {i: verdicts.verified(setup, server, round(40 + i * 0.0042, 3)) for i in range(1, n + 1)}
    for i in range(1, n):
        body = verdicts.add(body, i, made[i], setup)
    old = {"server": server, "verdicts": verdicts.read(body, setup)}

    def hop(before: dict, add) -> float:
        frame = p.control(p.Kind.END, before)
        header, payload = p.unpack_header(frame[:p.HEADER_LEN]), frame[p.WIRE_HEADER_LEN:]
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            p.control(p.Kind.END, add(p.parse_control(header, payload)))
            best = min(best, time.perf_counter() - started)
        return best * 1e6

    def add3(got: dict) -> dict:  # protocol 3's hop: copy, add the verdict whole
        return {**got, "verdicts": {**got["verdicts"], str(n): made[n]}}
    new_us = hop(body, lambda got: verdicts.add(got, n, made[n], setup))
    old_us = hop(old, add3)
    return (len(p.control(p.Kind.END, verdicts.add(body, n, made[n], setup))),
            len(p.control(p.Kind.END, add3(old))), new_us, old_us)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="8,32,100", help="real loopback rings of these sizes (at most 250)")
    parser.add_argument("--compute", default="1000,10000", help="END built by the members' code for these sizes")
    parser.add_argument("--size", type=int, default=1 << 20, help="the image's bytes in the real rings")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="end_size.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        work = Path(tmp)
        image = work / "disk.img"
        image.write_bytes(os.urandom(args.size))
        for n in [int(x) for x in args.nodes.split(",") if x]:
            report = real_ring(n, image, work)
            assert report["ok"], report["error"]
            server = {"sha256": [f["sha256"] for f in report["files"]], "digest": ["0" * 64] * len(report["files"])}
            rows.append((n, "real ring", report["end_bytes"], protocol3_end(report, server), None, None))
    for n in [int(x) for x in args.compute.split(",") if x]:
        rows.append((n, "computed", *computed(n, args.repeat)))
    print("| N | how | END at the tail, protocol 4 (bytes) | protocol 3 (bytes) | 3 / 4 | last hop µs, 4 | 3 |")
    print("|--:|--|--:|--:|--:|--:|--:|")
    for n, how, new, old, new_us, old_us in rows:
        us = f"| {new_us:,.0f} | {old_us:,.0f} |" if new_us is not None else "| | |"
        print(f"| {n:,} | {how} | {new:,} | {old:,} | {old / new:.1f} {us}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
