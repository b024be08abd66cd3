"""`provision discover`: listen for DHCP DISCOVERs from MACs the inventory lacks and append them as new nodes,
named and addressed in order of appearance (the order the operator powers them on)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path

from provision.discovery.appender import append_nodes, replace_inventory
from provision.discovery.listener import interface_holding, open_listener, requests
from provision.discovery.naming import Allocator, NewNode
from provision.errors import ExitStatus, InputError
from provision.inventory import load_inventory, resolve_inventory_path

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


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    path = Path(resolve_inventory_path(args.inventory, env))
    inv = load_inventory(path)
    if args.count is not None and args.count < 1:
        raise InputError(f"--count {args.count}: expected 1 or more")
    if not args.timeout > 0 or args.settle < 0:
        raise InputError(f"--timeout {args.timeout} / --settle {args.settle}: expected a positive time-out")
    allocator = Allocator(inv, args.names, args.first_ip)
    interface = args.interface or interface_holding(inv.server.ip)
    known = {n.mac for n in inv.nodes}
    wanted = f"up to {args.count} node(s)" if args.count else "nodes"
    with open_listener(interface) as sock:
        print(f"discover: listening on {interface} for {wanted} whose MACs are not in {path} "
              f"(time-out {args.timeout:g} s)", flush=True)
        found: list[NewNode] = []
        for request in requests(sock, time.monotonic() + args.timeout):
            if request.is_discover and request.mac not in known:
                known.add(request.mac)
                node = allocator.next(request.mac)
                replace_inventory(path, append_nodes(path.read_text(encoding="utf-8"), [node], path), backup=not found)
                found.append(node)
                print(f"discover: {node.name} {node.mac} {node.ip}", flush=True)
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
