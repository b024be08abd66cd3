#!/usr/bin/env python3
"""The whole workflow at scale on the namespace lab (root): `provision lab demo` on inventory/lab-scale.yaml for
N = 1, 8, 32, 64, 100 nodes, every node "pushed reset" at once. Per N: wall time from reset to the last node
booted from its disk, where it went (boot files, ready wait, ring, identity and flips, reboot into local boot,
from the install log's timestamps), the ring's part (the slowest node's clone seconds, from dollyS's
verdicts), T(N)/T(1), whether every node ended as expected, and the peak RSS and the CPU seconds of each kind
of process in the lab's namespaces (sampled from /proc). Prints tables and saves
bench/results/scale_bench.{json,png}.

    sudo .venv/bin/python bench/scale_bench.py [--nodes 1,8,32,64,100] [--rate 100mbit] [--image-mib 64]
    sudo .venv/bin/python bench/scale_bench.py --rate 10mbit --server-rate 100mbit --boot-kb 2400

--transport: how the boot payload goes (boot.transport; default multicast: one RFC 2090 stream from atftpd;
http: curl from provision's HTTP server, one copy per node).
--boot-kb: the boot payload each node fetches (installer kernel + initrd; the lab's kernel is syslinux's
memdisk, the initrd is padded with random bytes to the total; default 2,400 kB, a tenth of the built
installer's 24 MB). --server-rate: the server's link (default --rate, as in the seed's cluster).
Every node's processes share this machine's cores, so the lab's ring time-out and linger grow with N
(provision.lab.demo.shared_cores_factor); the product's defaults are for nodes with cores of their own.
The node players are armed (default): each loads its code (Python, the installer's pykickstart) first, then
every reset is pushed at once, and the time counts from that push (--no-armed: from the first player's
start, its interpreter start-up inside the measured time, as before).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provision.errors import ProvisionError  # noqa: E402
from provision.inventory import load_inventory  # noqa: E402
from provision.lab import cluster as lab, demo  # noqa: E402
from provision.lab.provision_cli import node_records  # noqa: E402

INVENTORY = REPO / "inventory" / "lab-scale.yaml"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("provision install", "dhcpd", "dollyS", "ssh-keygen", "node player", "dollyC")
PHASES = ("lab up", "boot files", "ready wait", "ring", "identity+flip", "reboot", "check+down")


def kind_of(argv: list[str]) -> str | None:
    """Which of KINDS a lab process is, from its command line (None: a short-lived tool, counted in its
    parent's children time)."""
    names = [os.path.basename(a) for a in argv[:3]]
    if "dollyC" in names:
        return "dollyC"
    if "dollyS" in names:
        return "dollyS"
    if names and names[0] in ("dhcpd", "kea-dhcp4"):
        return "dhcpd"
    if names and names[0] == "ssh-keygen":
        return "ssh-keygen"
    if "provision.lab.node" in argv:
        return "node player"
    if len(argv) > 3 and argv[1:3] == ["-m", "provision"] and "install" in argv:
        return "provision install"
    return None


class Sampler(threading.Thread):
    """Every `period` s, the processes in namespaces named `<prefix>-*`: each one's RSS, own and reaped
    children's CPU time (the last value seen counts), by kind; and the first time a node player ran
    (the nodes' "reset")."""

    def __init__(self, prefix: str, period: float = 0.5):
        super().__init__(name="sampler", daemon=True)
        self.prefix, self.period = prefix, period
        self.stop = threading.Event()
        self.procs: dict[tuple[int, int], dict] = {}  # (pid, start time) -> kind, own, children, peak rss
        self.peak_sum: dict[str, int] = {}
        self.reset_at: float | None = None
        self.min_available = None

    def _namespaces(self) -> set[str]:
        found = set()
        for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
            if name.startswith(self.prefix + "-"):
                try:
                    found.add(f"net:[{os.stat(f'/run/netns/{name}').st_ino}]")
                except OSError:
                    pass
        return found

    def sample(self) -> None:
        spaces = self._namespaces()
        sums: dict[str, int] = {}
        seen: dict[int, tuple[str, list[str]]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/net") not in spaces:
                    continue
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            kind = kind_of(argv)
            if kind is not None:
                seen[int(entry)] = (kind, stat)
        for pid, (kind, stat) in seen.items():
            if seen.get(int(stat[1]), ("",))[0] == kind:
                continue  # forked, not yet exec'd: its parent's pages, counted once
            if kind == "node player" and self.reset_at is None:
                self.reset_at = time.time()
            rss = int(stat[21]) * PAGE
            record = self.procs.setdefault((pid, int(stat[19])), {"kind": kind, "rss": 0})
            record.update(own=(int(stat[11]) + int(stat[12])) / TICK, children=(int(stat[13]) + int(stat[14])) / TICK,
                          rss=max(record["rss"], rss))
            sums[kind] = sums.get(kind, 0) + rss
        for kind, total in sums.items():
            self.peak_sum[kind] = max(self.peak_sum.get(kind, 0), total)
        available = next(int(line.split()[1]) << 10 for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemAvailable:"))
        self.min_available = available if self.min_available is None else min(self.min_available, available)

    def run(self) -> None:
        while not self.stop.wait(self.period):
            self.sample()

    def summary(self) -> dict:
        """Per kind: processes seen, peak RSS of one and of all at once (MB), CPU seconds; node player's
        CPU includes its reaped children (udhcpc, tftp, curl, bash, dollyC), the install's children (dollyS,
        ssh-keygen, dhcpd -t) are split off where seen."""
        out = {}
        for kind in KINDS:
            records = [r for r in self.procs.values() if r["kind"] == kind]
            own = sum(r.get("own", 0.0) for r in records)
            children = sum(r.get("children", 0.0) for r in records)
            out[kind] = {"processes": len(records), "peak_rss_mb": max((r["rss"] for r in records), default=0) / 1e6,
                         "peak_rss_all_mb": self.peak_sum.get(kind, 0) / 1e6, "cpu_s": own, "children_cpu_s": children}
        dolly_c, install = out["dollyC"]["cpu_s"], out["provision install"]
        out["node player"]["cpu_s"] += out["node player"]["children_cpu_s"] - dolly_c  # firmware + installer tools
        install["children_cpu_s"] = max(0.0, install["children_cpu_s"] - out["dollyS"]["cpu_s"])
        return out


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
MARKS = {"boot files": re.compile(r"sent boot/\S*initrd"), "ready wait": re.compile(r"reports ready"),
         "ring": re.compile(r"reports cloning"), "identity+flip": re.compile(r"reports done"),
         "reboot": re.compile(r"tftp: sent pxelinux\.cfg/")}


ATFTPD_TIME = re.compile(r"^(\w{3} \d\d \d\d:\d\d:\d\d) .*End of multicast transfer")


def multicast_end(atftpd_log: Path, year: int) -> float | None:
    """When atftpd's last multicast transfer ended (its log has whole seconds, no year), or None."""
    if not atftpd_log.is_file():
        return None
    times = [datetime.strptime(f"{year} {m.group(1)}", "%Y %b %d %H:%M:%S").timestamp()
             for line in atftpd_log.read_text(errors="replace").splitlines() if (m := ATFTPD_TIME.match(line))]
    return max(times) + 0.5 if times else None  # the middle of its second


def phases(log: str, started: float, reset: float, ended: float, boot_end: float | None = None) -> dict[str, float]:
    """Seconds of each of PHASES: each ends at the last install-log line of its kind (the last initrd sent,
    the last ready/cloning/done report, the last PXE config sent: the reboots' into local boot); over
    multicast the boot files end at `boot_end` (atftpd's last transfer)."""
    last: dict[str, float] = {} if boot_end is None else {"boot files": boot_end}
    for line in log.splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for phase, pattern in MARKS.items():
            if pattern.search(line):
                last[phase] = at
    out, previous = {"lab up": reset - started}, reset
    for phase in MARKS:
        end = max(last.get(phase, previous), previous)
        out[phase], previous = end - previous, end
    out["check+down"] = ended - previous
    return out


KEYS_MADE = re.compile(r"host keys: made ")


def keys_made(log: str, reset: float) -> float | None:
    """Seconds from the reset to the last node's host keys made by the server (None: none made)."""
    times = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
             for line in log.splitlines() if (m := LOG_TIME.match(line)) and KEYS_MADE.search(line)]
    return max(times) - reset if times else None


def make_boot_files(inv, boot_bytes: int) -> None:
    """The inventory's kernel (syslinux's memdisk) and an initrd padded so both together are `boot_bytes`;
    lab_up keeps existing files."""
    kernel, initrd = Path(inv.boot.kernel), Path(inv.boot.initrd)
    kernel.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lab.MEMDISK, kernel)
    initrd.write_bytes(lab.tiny_initrd(max(0, boot_bytes - kernel.stat().st_size - 200)))  # less cpio, gzip


def run(n: int, args, work: Path) -> dict:
    """One lab demo of `n` nodes with a private state directory and namespace prefix."""
    prefix = f"psb-{uuid.uuid4().hex[:4]}"
    env = {"PROVISION_STATE_DIR": str(work / f"state-{n}"), "PROVISION_LAB_PREFIX": prefix}
    inventory = work / "lab-scale.yaml"
    text = re.sub(r"(?m)^  transport: \S+", f"  transport: {args.transport}", INVENTORY.read_text())
    inventory.write_text(text.replace("/var/lib/provision/lab-scale", str(work / "files"))
                         + f"ring: {{count: {args.rings}}}\n")
    inv = load_inventory(inventory)
    make_boot_files(inv, args.boot_kb * 1000)
    boot_bytes = Path(inv.boot.kernel).stat().st_size + Path(inv.boot.initrd).stat().st_size
    install_log = work / f"install-{n}.log"
    sampler = Sampler(prefix)
    sampler.start()
    started = time.time()
    result = demo.run_demo(inv, nodes=n, rate=args.rate, server_rate=args.server_rate, image_mib=args.image_mib,
                           env=env, show=lambda line: None, install_log=install_log, armed=args.armed)
    ended = time.time()
    sampler.stop.set()
    sampler.join()
    records = node_records(inv, env)
    ring = max((records[o.name]["seconds"] or 0.0) for o in result.nodes)
    failed = [o.name for o in result.nodes if not o.as_expected]
    reset = result.reset_at or sampler.reset_at or started
    log = install_log.read_text(errors="replace")
    split = phases(log, started, reset, ended,
                   multicast_end(work / f"state-{n}" / "clusters" / inv.cluster / "atftpd.log",
                                 datetime.now().year))
    seconds = sum(split[phase] for phase in PHASES[1:-1])  # reset to the last node booted from its disk
    return {"n": n, "seconds": seconds, "lab_up_seconds": reset - started, "phases": split,
            "ring_seconds": ring, "host_keys_made": keys_made(log, reset), "as_expected": result.ok, "failed": failed,
            "boot_bytes": boot_bytes,
            "processes": sampler.summary(), "min_mem_available_mb": (sampler.min_available or 0) / 1e6,
            "loadavg": os.getloadavg()}


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = results["rows"]
    labels = [str(r["n"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bottom = [0.0] * len(rows)
    for phase in PHASES[1:-1]:
        values = [r["phases"][phase] for r in rows]
        left.bar(labels, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    left.set_xlabel("nodes")
    left.set_ylabel("seconds from reset")
    left.set_title("where the time goes")
    left.legend(fontsize=8)
    ns = [r["n"] for r in rows]
    right.plot(ns, [r["t_over_t1"] for r in rows], "o-", label="T(N)/T(1), whole workflow")
    right.plot(ns, [r["ring_seconds"] / rows[0]["ring_seconds"] for r in rows], "s--", label="ring part / ring(1)")
    right.axhline(1.3, color="grey", linestyle=":", label="goal 1.3")
    right.set_xlabel("nodes")
    right.set_ylabel("ratio to one node")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle(f"provision install in the lab: {results['rate']} nodes, {results['server_rate']} server, "
                 f"{results['image_mib']} MiB image, {results['boot_kb']} kB boot payload over "
                 f"{results.get('transport', 'http')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_tables(rows: list[dict]) -> None:
    print(f"\n{'N':>4} {'seconds':>8} {'T(N)/T(1)':>10} {'ring s':>7} " + " ".join(f"{p:>13}" for p in PHASES[1:])
          + f" {'lab up':>7} {'as expected':>12} {'load':>5}")
    for row in rows:
        print(f"{row['n']:>4} {row['seconds']:>8.1f} {row['t_over_t1']:>10.2f} {row['ring_seconds']:>7.1f} "
              + " ".join(f"{row['phases'][p]:>13.1f}" for p in PHASES[1:])
              + f" {row['lab_up_seconds']:>7.1f} {'yes' if row['as_expected'] else 'no':>12} {row['loadavg'][0]:>5.1f}")
    print(f"\n{'N':>4} " + " ".join(f"{k + ' MB':>22}" for k in KINDS) + "   (peak RSS of one / of all)")
    for row in rows:
        p = row["processes"]
        print(f"{row['n']:>4} " + " ".join(f"{p[k]['peak_rss_mb']:>10.0f} / {p[k]['peak_rss_all_mb']:>9.0f}"
                                           for k in KINDS))
    print(f"\n{'N':>4} " + " ".join(f"{k + ' CPU s':>22}" for k in KINDS) + "   (install: own + children)")
    for row in rows:
        p = row["processes"]
        install = p["provision install"]
        cells = [f"{install['cpu_s']:.1f} + {install['children_cpu_s']:.1f}"] + [f"{p[k]['cpu_s']:.1f}" for k in KINDS[1:]]
        print(f"{row['n']:>4} " + " ".join(f"{c:>22}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,8,32,64,100", help="lab sizes (default 1,8,32,64,100; at most 128)")
    parser.add_argument("--rate", default="100mbit", help="tc rate of every node's link (default 100mbit)")
    parser.add_argument("--server-rate", help="tc rate of the server's link (default --rate)")
    parser.add_argument("--image-mib", type=int, default=64, help="the random image's size (default 64 MiB)")
    parser.add_argument("--boot-kb", type=int, default=2400,
                        help="kernel + initrd each node fetches, in kB (default 2400: a tenth of the installer's)")
    parser.add_argument("--rings", type=int, default=1, help="the inventory's ring.count (default 1)")
    parser.add_argument("--no-armed", dest="armed", action="store_false",
                        help="start the node players at the reset (their Python start-up inside the measured "
                             "time) instead of loading them first and pushing every reset at once")
    parser.add_argument("--transport", default="multicast", choices=("multicast", "http", "tftp"),
                        help="the inventory's boot.transport for the boot payload (default multicast, as "
                             "lab-scale.yaml has it)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--name", default="scale_bench", help="stem of the saved .json and .png (default scale_bench)")
    args = parser.parse_args()
    args.server_rate = args.server_rate or args.rate
    if os.geteuid() != 0:
        sys.exit("scale_bench needs root (network namespaces)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        for n in (int(x) for x in args.nodes.split(",")):
            try:
                rows.append(run(n, args, Path(tmp)))
            except (ProvisionError, subprocess.SubprocessError) as exc:  # the sizes before it still count
                print(f"N={n:3d}: FAILED: {str(exc)[:300]}", flush=True)
                break
            row = rows[-1]
            keys = "" if row["host_keys_made"] is None else f"host keys all made at {row['host_keys_made']:.1f} s, "
            print(f"N={n:3d}: {row['seconds']:.0f} s from reset, ring {row['ring_seconds']:.1f} s, {keys}"
                  f"{'as expected' if row['as_expected'] else 'NOT as expected: ' + ' '.join(row['failed'])}"
                  f" (load {row['loadavg'][0]:.1f})", flush=True)
    if not rows:
        return 1
    t1 = rows[0]["seconds"]
    for row in rows:
        row["t_over_t1"] = row["seconds"] / t1
    print_tables(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"rate": args.rate, "server_rate": args.server_rate, "image_mib": args.image_mib, "rings": args.rings,
               "boot_kb": args.boot_kb, "transport": args.transport, "armed": args.armed, "rows": rows}
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / f"{args.name}.png")
    print(f"saved {out / args.name}.json and .png")
    return 0 if len(rows) == len(args.nodes.split(",")) and all(row["as_expected"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
