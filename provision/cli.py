"""The `provision` command line: parse, dispatch, and turn errors into exit codes (one place)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from provision import __version__
from provision.commands import ALL
from provision.errors import ExitStatus, ProvisionError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provision", description="Install whole Linux PC clusters from one YAML inventory."
    )
    parser.add_argument("--version", action="version", version=f"provision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in ALL:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP,
                           aliases=getattr(command, "ALIASES", ()))
        p.add_argument(
            "--inventory", metavar="FILE",
            help="inventory YAML (default: $PROVISION_INVENTORY, then the last install's inventory)",
        )
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    try:
        return int(args.run(args, env))
    except ProvisionError as exc:
        print(f"provision {args.command}: error: {exc}", file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        print(f"provision {args.command}: interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)
