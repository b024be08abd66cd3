"""`provision serve`: DHCP, TFTP and HTTP for the cluster without an install (diskless nodes boot from them)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

from provision.errors import ExitStatus
from provision.inventory import load_inventory, resolve_inventory_path
from provision.serve import serve

NAME = "serve"
HELP = "serve DHCP, TFTP and HTTP for the cluster's nodes without installing (diskless nodes boot from them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--templates", metavar="SITE_DIR", type=Path,
                        help="site template directory (default: the one the last install used)")
    parser.add_argument("--seconds", type=float, metavar="SECONDS",
                        help="stop after this long (default: at SIGINT or SIGTERM)")
    parser.add_argument("--tftp-port", type=int, default=69, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    serve(inv, env, args.templates, show=lambda line: print(f"provision: {line}", flush=True),
          tftp_port=args.tftp_port, seconds=args.seconds)
    return ExitStatus.SUCCESS
