#!/usr/bin/env python3
"""Ring cloner benchmark on a simulated switched network (root; provision.lab.netns).

A bridge, the server and N nodes in network namespaces, every link shaped with tc in both
directions. In one run on one rig: the raw single-TCP-stream rate of one link, the dolly ring for
N = 1, 2, 4, 8, 16, a star baseline (the server streams to all N at once), and the kill case (one
node SIGKILLed mid-run). Prints a table and saves bench/results/ring_bench.{json,png}.

    sudo .venv/bin/python bench/ring_bench.py [--rate 100mbit|1gbit] [--size-mib 100]
    sudo .venv/bin/python bench/ring_bench.py --sparse --size-mib 1024 --data-mib 100
    sudo .venv/bin/python bench/ring_bench.py --secret     # authenticated, as provision install runs it
    sudo .venv/bin/python bench/ring_bench.py --rate 10mbit --size-mib 32 --nodes 1,10,50,100,200 \
        --kill-n 100 --kill-spread 5                            # hundreds of nodes, both kill cases at 100
    sudo .venv/bin/python bench/ring_bench.py --rate 10mbit --size-mib 20 --nodes 1,100 --no-star --no-kill \
        --trace                                                 # where the time goes: start-up, data, END
    sudo .venv/bin/python bench/ring_bench.py --rate 10mbit --size-mib 20 --nodes 100 --no-star --kill-before \
        --wait 10                                               # a node dead before its upstream dials it

--sparse: the image is a sparse file of --size-mib logical MiB holding --data-mib of random data in
1 MiB extents spread evenly; the raw link then carries only the data (a dense file of --data-mib),
the star baseline is skipped (it would carry the zeros). --secret: dollyS and every dollyC share a
secret file, so every connection is authenticated and every frame carries its tag.
--kill-n: the ring size of the kill cases (default the largest of --nodes): one node at N/2 killed, and with
--kill-spread K also K nodes spread evenly, with --kill-before also node N/2 killed once it listens, before
dollyS starts (its upstream dials it for --wait). --trace: every run's time split into start-up, data and the
END report's trip, with the cost of one hop of each (bench/ring_trace.py). The star baseline runs up to
--star-max nodes (default 16: the server's one link would carry N images). Up to MAX_NODES nodes (addresses
10.77.0.11 to .250). $PROVISION_LAB_PREFIX names the namespaces (default rb-...).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import ring_trace  # noqa: E402
from provision.lab.netns import Network, Shaping, parse_rate, teardown_prefix  # noqa: E402

PREFIX = os.environ.get("PROVISION_LAB_PREFIX") or "rb"  # namespaces <prefix>-srv, <prefix>-n1, ...
PY = sys.executable
PORT = 9998
WORK = Path(f"/dev/shm/{PREFIX}-work")
MAX_NODES = 240

# A plain TCP receiver: accepts `count` streams, reads each to EOF, prints seconds from the first
# accepted byte to the last byte of the last stream.
RECEIVER = r"""
import socket, sys, time, threading
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, port)); s.listen(64)
print("ready", flush=True)
buf = memoryview(bytearray(4 << 20)); t0 = None; total = 0
for _ in range(count):
    c, _ = s.accept()
    while True:
        n = c.recv_into(buf)
        if t0 is None: t0 = time.monotonic()
        if not n: break
        total += n
print(time.monotonic() - t0, total, flush=True)
"""

# A plain TCP sender: streams the file (from memory) to every address at once, one thread each.
SENDER = r"""
import socket, sys, threading, time
data = memoryview(open(sys.argv[1], "rb").read())
def send(addr):
    host, port = addr.rsplit(":", 1)
    for _ in range(100):
        try:
            s = socket.create_connection((host, int(port))); break
        except OSError: time.sleep(0.05)
    s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
t0 = time.monotonic()
threads = [threading.Thread(target=send, args=(a,)) for a in sys.argv[2:]]
[t.start() for t in threads]; [t.join() for t in threads]
print(time.monotonic() - t0, flush=True)
"""


def addr(i: int) -> str:
    return f"10.77.0.{10 + i}"


class Rig:
    """Every link shaped in both directions; the token bucket's burst holds one 64 KiB GSO segment
    (tbf would otherwise split each segment in software and burn the CPU all 17 processes share)."""

    def __init__(self, rate: str, nodes: int, burst: int | None = None):
        teardown_prefix(PREFIX)
        self.net = Network(PREFIX)
        shaping = Shaping(rate, burst_bytes=burst or max(parse_rate(rate) // 8 // 250, 128 << 10))
        self.server = self.net.add_host("srv", address="10.77.0.1/24")
        self.nodes = [self.net.add_host(f"n{i}", address=f"{addr(i)}/24") for i in range(1, nodes + 1)]
        for host in [self.server, *self.nodes]:
            self.net.shape(host, shaping)

    def popen(self, host, argv, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return self.net.popen(host, argv, cwd=REPO, **kw)

    def teardown(self) -> None:
        self.net.teardown()


def raw_link(rig: Rig, image: Path) -> float:
    """Seconds for one plain TCP stream of the image over one link (server -> n1)."""
    rx = rig.popen(rig.nodes[0], [PY, "-c", RECEIVER, addr(1), str(PORT + 1), "1"])
    assert rx.stdout.readline().strip() == "ready"
    tx = rig.popen(rig.server, [PY, "-c", SENDER, str(image), f"{addr(1)}:{PORT + 1}"])
    tx.communicate(timeout=600)
    out, err = rx.communicate(timeout=600)
    seconds, total = out.split()
    assert int(total) == image.stat().st_size, err
    return float(seconds)


def star(rig: Rig, image: Path, n: int) -> float:
    rxs = [rig.popen(rig.nodes[i], [PY, "-c", RECEIVER, addr(i + 1), str(PORT + 1), "1"]) for i in range(n)]
    for rx in rxs:
        assert rx.stdout.readline().strip() == "ready"
    tx = rig.popen(rig.server, [PY, "-c", SENDER, str(image), *(f"{addr(i + 1)}:{PORT + 1}" for i in range(n))])
    out, err = tx.communicate(timeout=3600)
    for rx in rxs:
        rx.communicate(timeout=60)
    return float(out.split()[0])


def write_config(path: Path, image: Path, n: int) -> None:
    names = [addr(i) for i in range(1, n + 1)]
    path.write_text("\n".join(["iofiles 1", f"{image} > /disk.img", "server 10.77.0.1",
                               f"firstclient {names[0]}", f"lastclient {names[-1]}", f"clients {n}",
                               *names, "endconfig"]) + "\n")


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spread(n: int, k: int) -> list[int]:
    """Indices of `k` nodes spread evenly over a ring of `n` (never the first or the last)."""
    return [n * (i + 1) // (k + 1) for i in range(k)]


def wait_listening(rig: Rig, n: int, within: float = 300.0) -> None:
    """Until the first `n` nodes' dollyC listen (hundreds of them start on this machine's few cores: dollyS
    dialling one not yet up would wait for it and count the wait as the ring's time)."""
    deadline = time.monotonic() + within
    for host in rig.nodes[:n]:
        while not rig.net.run(host, ["ss", "-Hltn", f"sport = :{PORT}"], check=False).stdout.strip():
            if time.monotonic() > deadline:
                sys.exit(f"dollyC in {host.ns} not listening on port {PORT} within {within:.0f} s")
            time.sleep(0.1)


def ring(rig: Rig, image: Path, n: int, chunk: int, timeout: float, kill: tuple[int, ...] = (),
         secret: tuple[str, ...] = (), wait: float | None = None, trace: bool = False, before: bool = False) -> dict:
    """One run of dollyS over the first `n` nodes, `kill` (indices) SIGKILLed once they have 30 % of the
    image, or with `before` once they listen, before dollyS starts; its report, with `trace` also its `split`
    (ring_trace.py)."""
    roots = [WORK / f"node{i}" for i in range(1, n + 1)]
    for r in roots:
        shutil.rmtree(r, ignore_errors=True)
    config, report = WORK / "dolly.conf", WORK / "report.json"
    write_config(config, image, n)
    cpu0 = children_cpu()
    tool = [PY, "-c", ring_trace.WRAPPER] if trace else [PY, "-m", "dolly_core.cli"]
    quiet = "-v" if trace else "-q"
    logs = [WORK / f"node{i}.err" for i in range(1, n + 1)]
    clients = [rig.popen(rig.nodes[i], [*tool, "client", quiet, "--listen", f"{addr(i + 1)}:{PORT}",
                                        "--root", str(roots[i]), *secret],
                         stdout=subprocess.DEVNULL, stderr=open(logs[i], "w"))
               for i in range(n)]  # stderr to files: hundreds of undrained pipes would block a chatty client
    wait_listening(rig, n)
    if before:
        for index in kill:
            clients[index].send_signal(signal.SIGKILL)
            clients[index].wait()
    server_log = WORK / "server.err"
    server = rig.popen(rig.server, [*tool, "server", quiet, "-f", str(config), "--chunk-size", str(chunk),
                                    "--timeout", str(timeout), "--json", str(report), *secret,
                                    *(["--wait", str(wait)] if wait else [])],
                       stdout=subprocess.DEVNULL, stderr=open(server_log, "w"))
    size = image.stat().st_size
    for index in () if before else kill:
        victim = roots[index] / "disk.img"
        while not (victim.exists() and victim.stat().st_size > size * 0.3):
            time.sleep(0.05)
        clients[index].send_signal(signal.SIGKILL)
    server.wait(timeout=3600)
    for c in clients:
        c.wait(timeout=120)
    result = json.loads(report.read_text())
    result["cpu_s"] = children_cpu() - cpu0  # dollyS, every dollyC (and wait_listening's ss)
    failed = [i for i, node in enumerate(result["nodes"]) if i not in kill and not node["ok"]]
    assert not failed, (server_log.read_text()[-2000:],
                        [(result["nodes"][i]["error"], logs[i].read_text()[-2000:]) for i in failed])
    if trace and not kill:
        result["split"] = ring_trace.split(server_log, logs)
    for r in roots:
        shutil.rmtree(r, ignore_errors=True)
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = [row["n"] for row in results["ring"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [row["seconds"] for row in results["ring"]], "o-", label="dolly_core ring")
    ax.plot(ns, [row["star_seconds"] for row in results["ring"]], "s--", label="star (server -> all)")
    ax.axhline(results["raw_seconds"], color="grey", linestyle=":", label="raw TCP, one link")
    ax.set_xlabel("nodes")
    ax.set_ylabel("seconds")
    sparse = f" (sparse, {results['data_mib']} MiB data)" if results["data_mib"] else ""
    ax.set_title(f"{results['size_mib']} MiB image{sparse}, {results['rate']} links")
    ax.set_xticks(ns)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def make_image(path: Path, size_mib: int, data_mib: int | None = None) -> None:
    """Random data; with data_mib, a sparse file of size_mib MiB holding data_mib 1 MiB extents."""
    with open(path, "wb") as f:
        if data_mib is None:
            for _ in range(size_mib):
                f.write(os.urandom(1 << 20))
            return
        f.truncate(size_mib << 20)
        for k in range(data_mib):
            f.seek(k * size_mib // data_mib << 20)
            f.write(os.urandom(1 << 20))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="100mbit", help="link rate, tc syntax (default 100mbit)")
    parser.add_argument("--size-mib", type=int, default=100, help="image size (default 100 MiB)")
    parser.add_argument("--nodes", default="1,2,4,8,16", help="ring sizes (default 1,2,4,8,16)")
    parser.add_argument("--chunk-size", type=int, default=4 << 20)
    parser.add_argument("--timeout", type=float, default=3.0, help="dollyS --timeout (default 3)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--no-star", action="store_true", help="skip the star baseline (quick runs)")
    parser.add_argument("--sparse", action="store_true", help="a sparse image (see above)")
    parser.add_argument("--data-mib", type=int, help="data in a --sparse image (default a tenth of --size-mib)")
    parser.add_argument("--secret", action="store_true", help="an authenticated ring (a shared secret file)")
    parser.add_argument("--kill-n", type=int, help="ring size of the kill cases (default the largest of --nodes)")
    parser.add_argument("--kill-spread", type=int, default=0, help="also kill this many nodes spread evenly")
    parser.add_argument("--kill-before", action="store_true", help="also kill node N/2 before dollyS starts "
                        "(its upstream dials it for --wait)")
    parser.add_argument("--no-kill", action="store_true", help="no kill cases")
    parser.add_argument("--wait", type=float, help="dollyS --wait (default dollyS's, 60)")
    parser.add_argument("--trace", action="store_true", help="split each run's time into start-up, data and "
                        "the END report's trip (bench/ring_trace.py; every tool logs with -v)")
    parser.add_argument("--star-max", type=int, default=16, help="star baseline only up to this N (default 16)")
    parser.add_argument("--burst-kib", type=int, help="tc token bucket burst (default 4 ms of the rate, at least "
                        "128 KiB; 16 KiB shows what the lab's links had before)")
    args = parser.parse_args()
    data_mib = max(1, args.data_mib or args.size_mib // 10) if args.sparse else None
    if data_mib is not None and data_mib > args.size_mib:
        sys.exit(f"--data-mib {data_mib} is more than --size-mib {args.size_mib}")
    no_star = args.no_star or args.sparse
    if os.geteuid() != 0:
        sys.exit("ring_bench needs root (network namespaces, tc)")
    parse_rate(args.rate)
    sizes = [int(x) for x in args.nodes.split(",")]
    kill_n = args.kill_n or max(sizes)
    if not 1 <= min(sizes) <= max(sizes + [kill_n]) <= MAX_NODES or kill_n < 2 + args.kill_spread:
        sys.exit(f"--nodes/--kill-n: 1 to {MAX_NODES} nodes, and a kill ring of at least 2 + --kill-spread")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    image = WORK / "image.bin"
    make_image(image, args.size_mib, data_mib)
    size = image.stat().st_size
    wire = image if data_mib is None else WORK / "data.bin"  # what the raw link carries: only the data
    if data_mib is not None:
        make_image(wire, data_mib)
    wire_size = wire.stat().st_size
    secret: tuple[str, ...] = ()
    if args.secret:
        (WORK / "ring.secret").write_text(os.urandom(32).hex() + "\n")
        secret = ("--secret-file", str(WORK / "ring.secret"))
    rig = Rig(args.rate, max(sizes + [kill_n]), args.burst_kib and args.burst_kib << 10)
    try:
        raw = raw_link(rig, wire)
        print(f"raw TCP stream of {wire_size >> 20} MiB on one {args.rate} link: {raw:.2f} s = "
              f"{wire_size / raw / 1e6:.2f} MB/s", flush=True)
        rows = []
        settings = {"chunk": args.chunk_size, "timeout": args.timeout, "secret": secret, "wait": args.wait}
        for n in sizes:
            result = ring(rig, image, n, trace=args.trace, **settings)
            star_s = float("nan") if no_star or n > args.star_max else star(rig, image, n)
            rows.append({"n": n, "seconds": result["seconds"], "star_seconds": star_s, "cpu_s": result["cpu_s"]})
            if "split" in result:
                rows[-1]["split"] = {**vars(result["split"]), "end_trip": result["split"].end_trip}
                print(result["split"].line(), flush=True)
            print(f"N={n:2d}: ring {result['seconds']:.2f} s, star {star_s:.2f} s, dollyS + dollyC "
                  f"{result['cpu_s']:.1f} CPU-s", flush=True)
        base = next((r["seconds"] for r in rows if r["n"] == kill_n), None)
        if base is None and not args.no_kill:
            base = ring(rig, image, kill_n, **settings)["seconds"]
        kills = [] if args.no_kill else (
            [((kill_n // 2,), False)] + ([(tuple(spread(kill_n, args.kill_spread)), False)] if args.kill_spread else [])
            + ([((kill_n // 2,), True)] if args.kill_before else []))
        killed = []
        for victims, before in kills:
            killed.append(ring(rig, image, kill_n, kill=victims, before=before, **settings))
            killed[-1]["before"] = before
            print(f"N={kill_n} with node(s) {', '.join(str(v + 1) for v in victims)} killed "
                  f"{'before the start' if before else 'at 30 %'}: {killed[-1]['seconds']:.2f} s", flush=True)
    finally:
        rig.teardown()
        shutil.rmtree(WORK, ignore_errors=True)
    t1 = rows[0]["seconds"]
    for row in rows:
        row["mb_per_s"] = size / row["seconds"] / 1e6
        row["fraction_of_raw"] = raw / row["seconds"]
        row["t_over_t1"] = row["seconds"] / t1
        row["star_fraction_of_raw"] = raw / row["star_seconds"]
    results = {"rate": args.rate, "authenticated": args.secret, "size_mib": args.size_mib, "data_mib": data_mib, "chunk_size": args.chunk_size,
               "raw_seconds": raw, "raw_mb_per_s": wire_size / raw / 1e6, "ring": rows,
               "kill": [{"n": kill_n, "seconds": k["seconds"], "extra_seconds": k["seconds"] - base,
                         "base_seconds": base, "timeout": args.timeout, "wait": args.wait or 60.0,
                         "before_start": k["before"],
                         "dead": [x["name"] for x in k["nodes"] if not x["ok"]],
                         "survivors_ok": sum(1 for x in k["nodes"] if x["ok"])} for k in killed]}
    print(f"\n{'N':>3} {'seconds':>8} {'MB/s/node':>10} {'of raw':>7} {'T(N)/T(1)':>10} {'star s':>8} {'star/raw':>9}")
    for r in rows:
        print(f"{r['n']:>3} {r['seconds']:>8.2f} {r['mb_per_s']:>10.2f} {r['fraction_of_raw']:>7.3f} "
              f"{r['t_over_t1']:>10.3f} {r['star_seconds']:>8.2f} {r['star_fraction_of_raw']:>9.3f}")
    for k in results["kill"]:
        bar = f"--wait {k['wait']:g}" if k["before_start"] else f"timeout {k['timeout']:g} + 2 s"
        print(f"kill: N={k['n']}, {k['seconds']:.2f} s vs {base:.2f} s -> extra {k['extra_seconds']:.2f} s "
              f"(target <= {bar}); dead: {', '.join(k['dead'])}; "
              f"{k['survivors_ok']} survivors verified")
    stem = ("ring_bench_sparse" if data_mib else "ring_bench") + ("_auth" if args.secret else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / f"{stem}.png")
    print(f"saved {out / f'{stem}.json'} and {out / f'{stem}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
