"""`provision lab`: the simulated cluster of network namespaces (up, down, status, boot, off, demo, exec)."""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Mapping

from provision.commands.command import Command
from provision.errors import ExitStatus, InputError, ProvisionError
from provision.inventory import load_inventory, resolve_inventory_path
from provision.lab import cluster as lab, demo as lab_demo, vm as lab_vm, vm_demo as lab_vm_demo
from provision.lab.netns import ns_argv

NAME = "lab"
HELP = "the simulated cluster: a bridge, the server and up to 128 nodes as network namespaces or QEMU machines (root)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    for action in ACTIONS:
        p = sub.add_parser(action.NAME, help=action.HELP, description=action.HELP)
        # also accepted after the action; SUPPRESS keeps a value given before it
        p.add_argument("--inventory", metavar="FILE", default=argparse.SUPPRESS, help="inventory YAML")
        action.add_arguments(p)
        p.set_defaults(lab_run=action.run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return args.lab_run(args, env)


def _up_arguments(up: argparse.ArgumentParser) -> None:
    up.add_argument("--nodes", type=int, metavar="N", help=f"how many nodes (default all, at most {lab.MAX_NODES})")
    up.add_argument("--rate", metavar="RATE",
                    help=f"tc rate of every link, both directions (default {lab.DEFAULT_RATE}, with --vm none; "
                         f"'none' = unshaped)")
    up.add_argument("--vm", action="store_true",
                    help="the nodes are QEMU machines (TCG) with the inventory's firmware, the built installer and "
                         "golden image, and a sparse disk each")
    up.add_argument("--disk-gib", type=int, default=lab_vm.DEFAULT_DISK_GIB, metavar="GIB",
                    help=f"size of each VM's sparse disk image (default {lab_vm.DEFAULT_DISK_GIB})")
    up.add_argument("--image-mib", type=int, default=lab.DEFAULT_IMAGE_MIB, metavar="MIB",
                    help=f"size of the random image made if the inventory's image source is missing "
                         f"(default {lab.DEFAULT_IMAGE_MIB})")


def _up(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    rate = args.rate or (None if args.vm else lab.DEFAULT_RATE)
    built = lab.lab_up(inv, nodes=args.nodes, rate=None if rate == "none" else rate, env=env,
                       image_mib=args.image_mib, vm=args.vm, disk_gib=args.disk_gib)
    kind = "QEMU machines" if built.vm else "nodes"
    print(f"lab up: {len(built.nodes)} {kind} + server {built.server_name} ({built.server_address} in "
          f"{built.server_ns}), links {built.rate or 'unshaped'}; disks under {lab.lab_dir(env) / 'disks'}")
    return ExitStatus.SUCCESS


def _down(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    removed = lab.lab_down(env)
    print(f"lab down: removed {len(removed)} namespaces")
    return ExitStatus.SUCCESS


def _status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--json", action="store_true", help="machine-readable output")


def _status(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    status = lab.lab_status(env)
    if args.json:
        print(json.dumps(status, indent=2))
    elif not status["nodes"]:
        print("no lab is up")
    else:
        server = status["server"]
        print(f"lab {'up' if status['up'] else 'BROKEN'}: server {server['name']} {server['address']} "
              f"in {server['namespace']}, links {status['rate'] or 'unshaped'}")
        if status["vm"]:
            print(f"{'node':8} {'namespace':12} {'firmware':9} {'QEMU':14} {'disk image':40} serial log")
            for n in status["nodes"]:
                qemu = f"pid {n['qemu_pids'][0]}" if n["qemu_pids"] else "off"
                print(f"{n['name']:8} {n['namespace']:12} {n['firmware']:9} {qemu:14} {n['disk_image']:40} "
                      f"{n['serial_log']}")
            return ExitStatus.SUCCESS if status["up"] else ExitStatus.ERROR
        print(f"{'node':8} {'namespace':12} {'address':18} {'boot result':24} disk")
        for n in status["nodes"]:
            result = n["boot_result"]
            outcome = "-" if result is None else ("local boot" if result["ok"] else "FAILED")
            print(f"{n['name']:8} {n['namespace']:12} {n['address'] or '-':18} {outcome:24} {n['disk']}")
    return ExitStatus.SUCCESS if status["up"] else ExitStatus.ERROR


def _boot_arguments(boot: argparse.ArgumentParser) -> None:
    boot.add_argument("nodes", nargs="*", metavar="NODE", help="node names (default: all lab nodes)")
    boot.add_argument("--wait", action="store_true",
                      help="wait until they end; non-zero if any failed (not in a VM lab: machines run on)")
    boot.add_argument("--dhcp-wait", type=float, default=300.0, metavar="S",
                      help="seconds a node keeps asking for a DHCP lease (default 300)")
    boot.add_argument("--reboot-seconds", type=float, default=3.0, metavar="S",
                      help="time a node's reboot takes after its install (default 3)")


def _boot(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    current = _current_lab(env)
    if args.wait and current.vm:
        raise InputError("lab boot --wait: a VM lab's machines run until `lab off`; follow their serial logs "
                         "(provision lab status)")
    procs = lab.boot_nodes(current, args.nodes, dhcp_wait=args.dhcp_wait, reboot_seconds=args.reboot_seconds)
    print("lab boot: " + ", ".join(f"{name} (pid {p.pid})" for name, p in procs.items()))
    if not args.wait:
        return ExitStatus.SUCCESS
    failed = [name for name, p in procs.items() if p.wait() != 0]
    print("lab boot: all nodes on local boot" if not failed else f"lab boot: FAILED: {', '.join(failed)}")
    return ExitStatus.ERROR if failed else ExitStatus.SUCCESS


def _off_arguments(off: argparse.ArgumentParser) -> None:
    off.add_argument("nodes", nargs="+", metavar="NODE")


def _off(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    lab.power_off(_current_lab(env), args.nodes)
    return ExitStatus.SUCCESS


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--nodes", type=int, metavar="N", help="how many nodes (default 4; with --vm all)")
    demo.add_argument("--vm", action="store_true",
                      help="QEMU machines: install, reboot from their own disks, provision verify, phase timings")
    demo.add_argument("--kill", metavar="NODE", help="pull this node's plug in the middle of the clone")
    demo.add_argument("--discover", metavar="NODE,...", type=lambda text: text.split(","), default=[],
                      help="with --vm: install from the inventory without these (its last) machines, found first by "
                           "provision discover --bmc-range")
    demo.add_argument("--rate", default=lab.DEFAULT_RATE, metavar="RATE", help="tc rate of every link")
    demo.add_argument("--image-mib", type=int, default=lab.DEFAULT_IMAGE_MIB, metavar="MIB",
                      help="size of the random image made if the inventory's image source is missing")


def _demo(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    inv = load_inventory(resolve_inventory_path(args.inventory, env))
    if args.vm:
        vm_result = lab_vm_demo.run_vm_demo(inv, args.nodes, kill=args.kill, env=env, discover=args.discover)
        print(lab_vm_demo.summary(vm_result))
        return ExitStatus.SUCCESS if vm_result.ok else ExitStatus.ERROR
    result = lab_demo.run_demo(inv, args.nodes or 4, kill=args.kill, rate=None if args.rate == "none" else args.rate,
                               image_mib=args.image_mib, env=env)
    print(lab_demo.summary(result))
    return ExitStatus.SUCCESS if result.ok else ExitStatus.ERROR


def _exec_arguments(run_in: argparse.ArgumentParser) -> None:
    run_in.add_argument("where", metavar="NODE|server")
    run_in.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")


def _exec(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    current = _current_lab(env)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise InputError("lab exec: no command given (provision lab exec NODE -- COMMAND ...)")
    return subprocess.run(ns_argv(current.namespace_of(args.where), command)).returncode


def _current_lab(env: Mapping[str, str]) -> lab.Lab:
    current = lab.load_lab(env)
    if current is None:
        raise ProvisionError("no lab is up (provision lab up --inventory FILE)")
    return current


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


ACTIONS = [
    Command("up", "build the lab (after clearing a leftover one) for the inventory's first N nodes", _up_arguments,
            _up),
    Command("down", "remove everything `lab up` made (also a lab left over by a crash)", _no_arguments, _down),
    Command("status", "show the lab's nodes, namespaces, disks and addresses", _status_arguments, _status),
    Command("boot", "power on nodes: each plays PXE firmware + installer in its namespace (a VM lab: QEMU starts, "
                    "or resets, the machine)", _boot_arguments, _boot),
    Command("off", "power off nodes (kill their processes, a VM's QEMU, link down)", _off_arguments, _off),
    Command("demo", "the whole workflow: lab up, provision install, nodes boot, check every node, lab down",
            _demo_arguments, _demo),
    Command("exec", "run a command in the namespace of a node or of the server", _exec_arguments, _exec),
]
