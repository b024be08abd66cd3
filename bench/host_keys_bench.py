"""Host-key bench: the server makes N nodes' SSH host keys (rsa, ecdsa, ed25519, real ssh-keygen) one node
after another (as `provision serve` did before issue 16) and with HostKeyKeeper's pool of one ssh-keygen per
core (as `provision serve` does now), both at normal priority, then with the pool niced (as `provision
install` makes them in the background); wall and CPU seconds (ssh-keygen's, from rusage).

Usage: python bench/host_keys_bench.py [--nodes N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.host_keys import HostKeyKeeper, HostKeyStore, KeyedNode  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(nodes: list[KeyedNode], work: Path, how: str) -> tuple[float, float]:
    """Wall and CPU seconds to make every node's keys in a new store under `work`."""
    store = HostKeyStore(work / how)
    cpu, started = children_cpu(), time.monotonic()
    if how == "serial":
        for node in nodes:
            store.ensure(node.name, node.comment, urgent=True)
    else:
        HostKeyKeeper(store, work / "known_hosts", nodes).start(urgent=how == "pool").wait()
    wall = time.monotonic() - started
    assert all(store.has(node.name) for node in nodes)
    return wall, children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    nodes = [KeyedNode(f"n{i:03}", f"10.0.{i // 250}.{i % 250 + 1}", f"root@n{i:03}.bench") for i in range(args.nodes)]
    print(f"{args.nodes} nodes, {os.cpu_count()} cores, load average before {os.getloadavg()[0]:.1f}")
    pool = min(os.cpu_count() or 1, args.nodes)
    labels = {"serial": "one after another", "pool": f"pool of {pool}", "niced pool": f"pool of {pool}, niced"}
    walls: dict[str, list[float]] = {how: [] for how in labels}
    cpus: dict[str, list[float]] = {how: [] for how in labels}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):  # the order turns each run: load from other work falls on each alike
            for how in [*labels][run % 3:] + [*labels][:run % 3]:
                wall, cpu = measure(nodes, Path(tmp) / str(run), how)
                walls[how].append(wall)
                cpus[how].append(cpu)
    print(f"median of {args.repeat} run(s); load average after {os.getloadavg()[0]:.1f}")
    print("| how | wall s | ssh-keygen CPU s | CPU s per node |\n|--|--:|--:|--:|")
    for how, label in labels.items():
        cpu = statistics.median(cpus[how])
        print(f"| {label} | {statistics.median(walls[how]):.2f} | {cpu:.2f} | {cpu / args.nodes:.3f} |")
    ratio = statistics.median(walls["pool"]) / statistics.median(walls["serial"])
    print(f"pool / one after another, wall: {ratio:.2f}")


if __name__ == "__main__":
    main()
