"""`provision status`: every node's state and boot mode, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from provision.cluster import ClusterFiles
from provision.errors import ExitStatus
from provision.inventory import load_inventory, resolve_inventory_path
from provision.state import NodeRecord
from provision.table import print_table

NAME = "status"
HELP = "show each node's install state and boot mode (also while an install runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help='print {"nodes": [...]} as JSON')


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    stored = ClusterFiles.of(inv, env).store().load()
    records = [stored.get(name, NodeRecord(name)) for name in inv.node_names]
    if args.json:
        print(json.dumps({"cluster": inv.cluster, "nodes": [r.to_json() for r in records]}, indent=2))
    else:
        print_table(records, title=f"cluster {inv.cluster}")
    return ExitStatus.SUCCESS
