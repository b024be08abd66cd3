"""`provision dhcp` (alias `dhcpd`): the DHCP server that provision runs for a cluster, ISC dhcpd or Kea as the
inventory's `dhcp.server` says (it keeps serving after an install, so rebooting nodes find their local-boot
entries)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from provision.cluster import ClusterFiles
from provision.errors import ExitStatus
from provision.flip import apply_modes, current_modes
from provision.inventory import load_inventory, resolve_inventory_path

NAME = "dhcp"
ALIASES = ("dhcpd",)
HELP = "status, start, stop or restart the cluster's DHCP server (config rendered from the recorded boot modes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "start", "stop", "restart"))
    parser.add_argument("--templates", metavar="SITE_DIR", type=Path,
                        help="site template directory (default: the one the last install used)")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    files = ClusterFiles.of(inv, env)
    dhcp = files.dhcp()
    label = f"{dhcp.NAME} for {inv.cluster}"
    if args.action == "status":
        pid = dhcp.pid()
        print(f"{label}: " + (f"running (pid {pid}), config {dhcp.config}" if pid else "not running"))
        return ExitStatus.SUCCESS if pid else ExitStatus.ERROR
    if args.action == "stop":
        print(f"{label}: " + ("stopped" if dhcp.stop() else "was not running"))
        return ExitStatus.SUCCESS
    # start / restart: render with the boot modes on record, check, make live, then (re)start
    apply_modes(inv, files, current_modes(inv, files), args.templates or files.recorded_templates())
    if args.action == "restart" and dhcp.running():
        dhcp.stop()
    pid = dhcp.pid() or dhcp.start()
    print(f"{label}: running (pid {pid}), serving {inv.network.subnet}")
    return ExitStatus.SUCCESS
