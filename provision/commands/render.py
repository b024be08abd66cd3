"""`provision render`: write every config of an install from the inventory (checked, atomic)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from provision.errors import ExitStatus
from provision.inventory import load_inventory, resolve_inventory_path
from provision.render import KEA_CONF, render_to

NAME = "render"
HELP = "render dhcpd.conf (or kea-dhcp4.conf), per-node PXE configs and kickstarts, and dolly.conf into a directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--templates", metavar="SITE_DIR", type=Path,
        help="site template directory, searched before the shipped templates",
    )


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    report = render_to(args.out, inv, site_templates=args.templates)
    files = report.files
    server = "kea-dhcp4" if report.dhcp_config == KEA_CONF else "dhcpd"
    check = f"checked by {server} -t" if report.dhcp_checked else f"NOT checked ({server} not installed)"
    print(
        f"rendered {report.nodes} nodes of {inv.cluster} into {report.out_dir}: {len(files.written)} written,"
        f" {files.unchanged} unchanged, {len(files.removed)} stale removed; {report.dhcp_config} {check}"
    )
    return ExitStatus.SUCCESS
