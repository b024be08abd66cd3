"""`provision flip-to-local` / `flip-to-install` / `flip-to-diskless`: switch nodes' boot mode by hand."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from provision.bootmode import BootMode
from provision.cluster import ClusterFiles
from provision.commands.command import Command
from provision.errors import ExitStatus
from provision.flip import flip, select_nodes
from provision.inventory import load_inventory, resolve_inventory_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nodes", nargs="*", metavar="NODE", help="node names")
    parser.add_argument("--all", action="store_true", help="every node of the inventory")
    parser.add_argument("--templates", metavar="SITE_DIR", type=Path,
                        help="site template directory (default: the one the last install used)")


def runner(mode: BootMode) -> Callable[[argparse.Namespace, Mapping[str, str]], ExitStatus]:
    def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
        inv = load_inventory(resolve_inventory_path(args.inventory, env))
        names = select_nodes(inv, args.nodes, args.all)
        result = flip(inv, ClusterFiles.of(inv, env), names, mode, args.templates)
        reload = f"{result.dhcp} {result.applied or f'config updated ({result.dhcp} not running)'}"
        print(f"{mode} boot: {len(result.changed)} node(s) switched"
              + (f" ({' '.join(result.changed)})" if result.changed else "")
              + f", {len(result.unchanged)} already there; {reload}")
        return ExitStatus.SUCCESS
    return run


to_local = Command("flip-to-local", "switch nodes to boot from their local disk", add_arguments,
                   runner(BootMode.LOCAL))
to_install = Command("flip-to-install", "switch nodes to (re)install at their next PXE boot", add_arguments,
                     runner(BootMode.INSTALL))
to_diskless = Command("flip-to-diskless", "switch nodes to run the golden image from RAM at their next PXE boot (disks "
                      "untouched)", add_arguments, runner(BootMode.DISKLESS))
