"""`provision power status|on|off|reset|cycle NODES|--all`: the nodes' BMCs, in parallel (provision.power)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from provision.errors import ExitStatus, InputError
from provision.inventory import load_inventory, resolve_inventory_path
from provision.power import Outcome, Verb
from provision.power import pool
from provision.power.pool import RETRIES, TIMEOUT, WORKERS

NAME = "power"
HELP = "power nodes on, off, reset or cycle through their BMCs (IPMI or Redfish), or show their power state"
ACTIONS = (Verb.STATUS, Verb.ON, Verb.OFF, Verb.RESET, Verb.CYCLE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=[str(v) for v in ACTIONS], help="what to do")
    parser.add_argument("nodes", nargs="*", metavar="NODE", help="node names")
    parser.add_argument("--all", action="store_true", help="every node of the inventory")
    parser.add_argument("--pxe-once", action="store_true",
                        help="first set each node's next boot (only) to the network")
    parser.add_argument("--json", action="store_true", help='print {"nodes": [...]} as JSON')
    parser.add_argument("--parallel", type=int, default=WORKERS, metavar="N",
                        help=f"BMCs at once (default {WORKERS})")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, metavar="SECONDS",
                        help=f"per request to a BMC (default {TIMEOUT:g})")
    parser.add_argument("--retries", type=int, default=RETRIES, metavar="N",
                        help=f"more attempts when a BMC does not answer, with backoff (default {RETRIES})")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    names = [n for n in args.nodes if n]
    if args.all == bool(names):
        raise InputError("name the nodes, or give --all (not both)")
    unknown = [n for n in names if n not in inv.node_names]
    if unknown:
        raise InputError(f"{inv.path}: unknown node(s): {', '.join(unknown)} (nothing was done)")
    if args.parallel < 1 or args.timeout <= 0 or args.retries < 0:
        raise InputError("--parallel needs 1 or more, --timeout more than 0, --retries 0 or more")
    nodes = list(inv.nodes) if args.all else [inv.node(n) for n in dict.fromkeys(names)]
    verbs = ([Verb.PXE_ONCE] if args.pxe_once else []) + [Verb(args.action)]
    outcomes = pool.run(nodes, verbs, workers=args.parallel, timeout=args.timeout, retries=args.retries)
    if args.json:
        print(json.dumps({"cluster": inv.cluster, "nodes": [to_json(o) for o in outcomes]}, indent=2))
    else:
        report(outcomes)
    return ExitStatus.SUCCESS if all(o.ok for o in outcomes) else ExitStatus.ERROR


def to_json(o: Outcome) -> dict:
    return {"node": o.node, "bmc": o.bmc, "action": str(o.verb), "ok": o.ok, "power": o.power, "error": o.error,
            "attempts": o.attempts, "seconds": round(o.seconds, 3)}


def report(outcomes: list[Outcome]) -> None:
    """One line per node: power state, or the error (on stderr)."""
    width = max(len(o.node) for o in outcomes) if outcomes else 0
    for o in outcomes:
        if o.ok:
            print(f"{o.node:<{width}}  {o.power}")
        else:
            print(f"{o.node:<{width}}  FAILED: {o.error}", file=sys.stderr)

