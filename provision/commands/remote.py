"""`provision run NODES -- COMMAND` and `provision verify`: SSH to nodes in parallel (paramiko)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from provision.cluster import ClusterFiles
from provision.commands.command import Command
from provision.errors import ExitStatus, InputError
from provision.inventory import load_inventory, resolve_inventory_path
from provision.model import Inventory
from provision.ssh import CommandResult, HostKeyPolicy, SshSettings, Target, run_command


def ssh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default="root", help="login name (default root)")
    parser.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    parser.add_argument("--key", dest="keys", action="append", type=Path, default=[], metavar="FILE",
                        help="private key file (repeatable; default: ~/.ssh keys and the agent)")
    parser.add_argument("--known-hosts", type=Path, metavar="FILE",
                        help="known-hosts file (default: <state dir>/<cluster>/known_hosts)")
    parser.add_argument("--host-key-policy", choices=[p.value for p in HostKeyPolicy],
                        default=HostKeyPolicy.ACCEPT_NEW.value,
                        help="unknown host keys: reject, accept-new (learn, refuse changed ones; default) "
                             "or ignore")
    parser.add_argument("--parallel", type=int, default=32, help="connections at once (default 32)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")


def ssh_settings(args: argparse.Namespace, inv: Inventory, env: Mapping[str, str]) -> SshSettings:
    known = args.known_hosts or ClusterFiles.of(inv, env).known_hosts
    return SshSettings(user=args.user, port=args.port, key_files=tuple(args.keys), known_hosts=known,
                       policy=HostKeyPolicy(args.host_key_policy), connect_timeout=args.connect_timeout,
                       parallel=args.parallel)


def targets(inv: Inventory, spec: str) -> list[Target]:
    """`all`, or node names separated by commas; every unknown name is an error."""
    names = list(inv.node_names) if spec == "all" else [n for n in spec.split(",") if n]
    unknown = [n for n in names if n not in inv.node_names]
    if unknown or not names:
        raise InputError(f"{inv.path}: unknown node(s): {', '.join(unknown) or spec!r}")
    return [Target(n, str(inv.node(n).ip)) for n in names]


def print_results(results: Sequence[CommandResult], describe: Callable[[CommandResult], str]) -> None:
    for r in results:
        print(f"{r.name} ({r.host}): {describe(r)}")


def run_remote(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise InputError("no command given: provision run NODES -- COMMAND")
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    results = run_command(targets(inv, args.nodes), " ".join(command), ssh_settings(args, inv, env))
    for r in results:
        head = f"exit {r.exit_status}" if r.error is None else f"ERROR {r.error}"
        print(f"== {r.name} ({r.host}): {head}")
        for stream in (r.stdout, r.stderr):
            if stream:
                print(stream, end="" if stream.endswith("\n") else "\n")
    failed = [r.name for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} node(s) ok" + (f"; failed: {' '.join(failed)}" if failed else ""))
    return ExitStatus.SUCCESS if not failed else ExitStatus.ERROR


VERIFY_COMMAND = "hostname; ip -4 -o addr show"


def identity_problem(inv: Inventory, result: CommandResult) -> str | None:
    """Why a node's answer to VERIFY_COMMAND does not match the inventory (None: it matches)."""
    if not result.ok:
        return result.error or f"exit {result.exit_status}: {result.stderr.strip()}"
    lines = result.stdout.splitlines()
    node = inv.node(result.name)
    hostname = lines[0].strip() if lines else ""
    if hostname not in (node.name, inv.fqdn(node.name)):
        return f"hostname is {hostname!r}, expected {node.name!r}"
    addresses = {word.split("/")[0] for line in lines[1:] for word in line.split()[3:4]}
    if str(node.ip) not in addresses:
        return f"address {node.ip} not configured (has {', '.join(sorted(addresses)) or 'none'})"
    return None


def run_verify(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    results = run_command(targets(inv, args.nodes), VERIFY_COMMAND, ssh_settings(args, inv, env))
    problems = {r.name: identity_problem(inv, r) for r in results}
    print_results(results, lambda r: f"FAILED: {problems[r.name]}" if problems[r.name] else
                  f"ok: hostname {r.stdout.splitlines()[0].strip()}, address {r.host}")
    failed = [n for n, p in problems.items() if p]
    print(f"{len(results) - len(failed)} of {len(results)} node(s) verified" + (f"; failed: {' '.join(failed)}" if failed else ""))
    return ExitStatus.SUCCESS if not failed else ExitStatus.ERROR


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nodes", metavar="NODES", help="node names separated by commas, or all")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="command line to run")
    ssh_arguments(parser)


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nodes", metavar="NODES", nargs="?", default="all",
                        help="node names separated by commas, or all (default)")
    ssh_arguments(parser)


run = Command("run", "run a command on nodes over SSH, in parallel", _run_arguments, run_remote)
verify = Command("verify", "check over SSH that each node runs as itself (hostname and IP)",
                 _verify_arguments, run_verify)
