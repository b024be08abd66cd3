"""`provision install`: render, serve, wait for ready nodes, clone through the ring, flip, report."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from provision.errors import ExitStatus, InputError
from provision.flip import select_nodes
from provision.inventory import load_inventory, resolve_inventory_path
from provision.state import NodeState
from provision.table import print_table
from provision.workflow import Install, InstallOptions

NAME = "install"
HELP = "install the cluster: serve PXE/DHCP/kickstarts, clone through the ring, flip nodes to local boot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--templates", metavar="SITE_DIR", type=Path,
                        help="site template directory, searched before the shipped templates")
    parser.add_argument("--nodes", metavar="NAMES",
                        help="install only these nodes, separated by commas (default: all)")
    parser.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                        help="longest wait for nodes to report ready (default 600)")
    parser.add_argument("--enough", type=int, metavar="N",
                        help="start cloning as soon as N nodes are ready (default: all)")
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="do not ARP-probe nodes that did not report ready")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="ring time-out: a node silent this long is short-cut (default: the inventory's "
                             "ring.timeout, 10)")
    parser.add_argument("--chunk-size", type=int, metavar="BYTES", help="ring chunk size (dollyS default)")
    parser.add_argument("--finish-wait", type=float, default=600.0, metavar="SECONDS",
                        help="longest wait for nodes to report done after the clone (default 600)")
    parser.add_argument("--linger", type=float, default=5.0, metavar="SECONDS",
                        help="keep serving this long at the end, for rebooting nodes (default 5)")
    parser.add_argument("--power-cycle", action="store_true",
                        help="once serving, set each node's next boot to PXE and power-cycle it through its BMC "
                             "(inventory bmc:), so nobody pushes reset")
    parser.add_argument("--tftp-port", type=int, default=69, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request and ring step")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    if not inv.nodes:
        raise InputError(f"{inv.path}: nodes: none yet (provision discover adds them); nothing was done")
    nodes = select_nodes(inv, args.nodes.split(","), False) if args.nodes else []
    lacking = [n for n in (nodes or inv.node_names) if inv.node(n).bmc is None]
    if args.power_cycle and lacking:
        raise InputError(f"{inv.path}: --power-cycle: no bmc: for {', '.join(lacking)} (nothing was done)")
    options = InstallOptions(site_templates=args.templates, nodes=tuple(nodes), wait=args.wait, enough=args.enough,
                             probe=args.probe, dolly_timeout=args.timeout, chunk_size=args.chunk_size,
                             finish_wait=args.finish_wait, linger=args.linger, tftp_port=args.tftp_port,
                             verbose=args.verbose, power_cycle=args.power_cycle)
    result = Install(inv, options, env, show=lambda line: print(f"provision: {line}", flush=True),
                     live=sys.stdout.isatty()).run()
    print_table(result.records, title=f"cluster {inv.cluster}")
    failed = [r.name for r in result.records if r.state != NodeState.DONE]
    print(f"{len(result.records) - len(failed)} of {len(result.records)} node(s) done"
          + (f"; not done: {' '.join(failed)}" if failed else ""))
    return ExitStatus.SUCCESS if result.ok else ExitStatus.ERROR
