"""`provision discover`: listen for DHCP DISCOVERs from MACs the inventory lacks and append them as new nodes,
named and addressed in order of appearance (the order the operator powers them on), or with --bmc-range in the
order of their BMCs' addresses (provision.discovery.sequential powers them on one at a time)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path

from provision.discovery import bmc_range
from provision.discovery.appender import append_nodes, replace_inventory
from provision.discovery.listener import interface_holding, open_listener, requests
from provision.discovery.naming import Allocator, NewNode
from provision.discovery.sequential import Sequential
from provision.errors import ExitStatus, InputError
from provision.inventory import load_inventory, resolve_inventory_path
from provision.power.pool import RETRIES, TIMEOUT

NAME = "discover"
HELP = "append nodes whose DHCP requests come from MACs not in the inventory, named and addressed in boot order"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, metavar="N",
                        help="stop after N new nodes; more MACs heard within --settle: exit 1 naming them "
                             "(default: until --timeout)")
    parser.add_argument("--names", metavar="FORMAT",
                        help="Python format of the index for the names, e.g. n{:03d} (default: the last node's "
                             "pattern, numbered on from it)")
    parser.add_argument("--first-ip", metavar="ADDR", help="first address to give (default: after the last node's)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="longest wait (default 300); with --count, fewer nodes by then: exit 1")
    parser.add_argument("--settle", type=float, default=3.0, metavar="SECONDS",
                        help="after the N-th node of --count, keep listening this long for more (default 3)")
    parser.add_argument("--interface", metavar="IFACE",
                        help="interface to listen on (default: the one holding the inventory's server.ip)")
    parser.add_argument("--bmc-range", action="append", metavar="FIRST-LAST",
                        help="power the machines behind these BMC addresses (defaults.bmc at each) off, then on one "
                             "at a time in address order, each one's first DISCOVER naming the next node; "
                             "--timeout is then per machine (may be given once per rack, in rack order)")
    parser.add_argument("--bmc-timeout", type=float, default=TIMEOUT, metavar="SECONDS",
                        help=f"per request to a BMC of --bmc-range (default {TIMEOUT:g})")
    parser.add_argument("--bmc-retries", type=int, default=RETRIES, metavar="N",
                        help=f"more attempts when a BMC of --bmc-range does not answer (default {RETRIES})")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    path = Path(resolve_inventory_path(args.inventory, env))
    inv = load_inventory(path)
    if args.count is not None and args.count < 1:
        raise InputError(f"--count {args.count}: expected 1 or more")
    if not args.timeout > 0 or args.settle < 0:
        raise InputError(f"--timeout {args.timeout} / --settle {args.settle}: expected a positive time-out")
    if not args.bmc_timeout > 0 or args.bmc_retries < 0:
        raise InputError(f"--bmc-timeout {args.bmc_timeout} / --bmc-retries {args.bmc_retries}: expected a "
                         "positive time-out and 0 or more retries")
    allocator = Allocator(inv, args.names, args.first_ip)
    plan = bmc_range.plan(args.bmc_range, inv) if args.bmc_range else None
    interface = args.interface or interface_holding(inv.server.ip)
    known = {n.mac for n in inv.nodes}
    if plan is not None:
        with open_listener(interface) as sock:
            return run_sequential(args, path, plan, interface, Sequential(
                sock, path, allocator, known, args.timeout, args.bmc_timeout, args.bmc_retries,
                show=lambda line: print(line, flush=True)))
    wanted = f"up to {args.count} node(s)" if args.count else "nodes"
    with open_listener(interface) as sock:
        print(f"discover: listening on {interface} for {wanted} whose MACs are not in {path} "
              f"(time-out {args.timeout:g} s)", flush=True)
        found: list[NewNode] = []
        for request in requests(sock, time.monotonic() + args.timeout):
            if request.is_discover and request.mac not in known:
                known.add(request.mac)
                node = allocator.next(request.mac, firmware=request.firmware)
                replace_inventory(path, append_nodes(path.read_text(encoding="utf-8"), [node], path), backup=not found)
                found.append(node)
                print(f"discover: {node.name} {node.mac} {node.ip}{f' {node.firmware}' if node.firmware else ''}", flush=True)
                if len(found) == args.count:
                    break
        extra: list[str] = []
        if args.count is not None and len(found) == args.count:
            for request in requests(sock, time.monotonic() + args.settle):
                if request.is_discover and request.mac not in known and request.mac not in extra:
                    extra.append(request.mac)
    added = f"{len(found)} node(s) added to {path} (the old file: {path.name}.bak)" if found else f"{path} unchanged"
    if extra:
        print(f"discover: more MACs than --count {args.count}: {', '.join(extra)} not added; {added}", flush=True)
        return ExitStatus.ERROR
    if args.count is not None and len(found) < args.count:
        print(f"discover: time-out after {args.timeout:g} s: {len(found)} of {args.count} node(s) found; {added}",
              flush=True)
        return ExitStatus.ERROR
    print(f"discover: {added}" if found else f"discover: time-out after {args.timeout:g} s: no new MAC heard; "
          f"{added}", flush=True)
    return ExitStatus.SUCCESS if found else ExitStatus.ERROR


def run_sequential(args: argparse.Namespace, path: Path, plan: bmc_range.RangePlan, interface: str,
                   run: Sequential) -> ExitStatus:
    """Discovery in BMC order; exit 1 if a BMC or machine failed, a MAC came from elsewhere, or fewer than
    --count nodes were found."""
    if plan.known:
        print(f"discover: left out, nodes have them: {', '.join(plan.known)}", flush=True)
    print(f"discover: listening on {interface}; powering on {len(plan.bmcs)} machine(s) one at a time through their "
          f"BMCs (up to {args.timeout:g} s each for its DHCPDISCOVER)", flush=True)
    result = run.run(plan.bmcs, args.count)
    found = result.found
    added = f"{len(found)} node(s) added to {path} (the old file: {path.name}.bak)" if found else f"{path} unchanged"
    problems = [f"{len(result.failed)} failed (FAILED above)"] if result.failed else []
    if result.strays:
        problems.append(f"MACs from no machine of the range: {', '.join(result.strays)} not added")
    if args.count is not None and len(found) < args.count:
        problems.append(f"{len(found)} of {args.count} node(s) found")
    print(f"discover: {'; '.join(problems + [added])}", flush=True)
    return ExitStatus.ERROR if problems or not found else ExitStatus.SUCCESS
