#!/usr/bin/env python3
"""The whole workflow at scale on the namespace lab (root): `provision lab demo` on inventory/lab-scale.yaml for
N = 1, 8, 32, 64, 100 nodes, every node "pushed reset" at once. Per N: wall time from lab up to the last node
done and verified, the ring's part (the slowest node's clone seconds, from dollyS's verdicts), T(N)/T(1), and
whether every node ended as expected. Prints a table and saves bench/results/scale_bench.json.

    sudo .venv/bin/python bench/scale_bench.py [--nodes 1,8,32,64,100] [--rate 100mbit] [--image-mib 64]

Every node's processes share this machine's cores, so the lab's ring time-out and linger grow with N
(provision.lab.demo.shared_cores_factor); the product's defaults are for nodes with cores of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from provision.inventory import load_inventory  # noqa: E402
from provision.lab import demo  # noqa: E402
from provision.lab.provision_cli import node_records  # noqa: E402

INVENTORY = REPO / "inventory" / "lab-scale.yaml"


def run(n: int, rate: str, image_mib: int, work: Path) -> dict:
    """One lab demo of `n` nodes with a private state directory and namespace prefix."""
    env = {"PROVISION_STATE_DIR": str(work / f"state-{n}"), "PROVISION_LAB_PREFIX": f"psb-{uuid.uuid4().hex[:4]}"}
    inventory = work / "lab-scale.yaml"
    inventory.write_text(INVENTORY.read_text().replace("/var/lib/provision/lab-scale", str(work / "files")))
    inv = load_inventory(inventory)
    result = demo.run_demo(inv, nodes=n, rate=rate, image_mib=image_mib, env=env, show=lambda line: None,
                           install_log=work / f"install-{n}.log")
    records = node_records(inv, env)
    ring = max((records[o.name]["seconds"] or 0.0) for o in result.nodes)
    failed = [o.name for o in result.nodes if not o.as_expected]
    return {"n": n, "seconds": result.seconds, "ring_seconds": ring, "as_expected": result.ok, "failed": failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,8,32,64,100", help="lab sizes (default 1,8,32,64,100; at most 128)")
    parser.add_argument("--rate", default="100mbit", help="tc rate of every link (default 100mbit)")
    parser.add_argument("--image-mib", type=int, default=64, help="the random image's size (default 64 MiB)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("scale_bench needs root (network namespaces)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        for n in (int(x) for x in args.nodes.split(",")):
            rows.append(run(n, args.rate, args.image_mib, Path(tmp)))
            row = rows[-1]
            print(f"N={n:3d}: {row['seconds']:.0f} s, ring {row['ring_seconds']:.1f} s, "
                  f"{'as expected' if row['as_expected'] else 'NOT as expected: ' + ' '.join(row['failed'])}",
                  flush=True)
    t1 = rows[0]["seconds"]
    print(f"\n{'N':>4} {'seconds':>8} {'T(N)/T(1)':>10} {'ring s':>7} {'ring share':>11} {'as expected':>12}")
    for row in rows:
        row["t_over_t1"] = row["seconds"] / t1
        print(f"{row['n']:>4} {row['seconds']:>8.1f} {row['t_over_t1']:>10.2f} {row['ring_seconds']:>7.1f} "
              f"{row['ring_seconds'] / row['seconds']:>11.2f} {'yes' if row['as_expected'] else 'no':>12}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"rate": args.rate, "image_mib": args.image_mib, "rows": rows}
    (out / "scale_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {out / 'scale_bench.json'}")
    return 0 if all(row["as_expected"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
