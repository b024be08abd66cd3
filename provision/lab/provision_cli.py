"""The real `provision` command line as the demos run it: install (and verify, run) in the server's
namespace, status here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from provision.lab import cluster as lab, netns, vm as lab_vm
from provision.model import Inventory

PROVISION = (sys.executable, "-m", "provision")


def in_server(built: lab.Lab, argv: Sequence[str]) -> list[str]:
    """`provision ARGV...` in the lab server's namespace."""
    return netns.ns_argv(built.server_ns, [*PROVISION, *argv])


def run_in_server(built: lab.Lab, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
    """Run `provision ARGV...` in the lab server's namespace; its output captured (10 minutes at most)."""
    return subprocess.run(in_server(built, argv), capture_output=True, text=True, env=dict(env), timeout=600)


def ssh_args(inv: Inventory) -> list[str]:
    """verify/run options for a VM lab: the lab's key pair, and only the host keys the server gave the nodes."""
    return ["--inventory", str(inv.path), *(a for k in lab_vm.key_pairs(inv) for a in ("--key", str(k))),
            "--host-key-policy", "reject", "--connect-timeout", "20"]


def install_args(inv: Inventory, names: Sequence[str], ring_timeout: float, wait: int, finish_wait: int,
                 *extra: str) -> list[str]:
    return ["install", "--inventory", str(inv.path), "--nodes", ",".join(names), "--wait", str(wait),
            "--finish-wait", str(finish_wait), "--timeout", str(ring_timeout), *extra]


def node_records(inv: Inventory, env: Mapping[str, str]) -> dict[str, dict]:
    """`provision status --json`: each node's record by its name."""
    out = subprocess.run([*PROVISION, "status", "--inventory", str(inv.path), "--json"], capture_output=True,
                         text=True, check=True, env={**os.environ, **env}).stdout
    return {record["name"]: record for record in json.loads(out)["nodes"]}


def verify_nodes(inv: Inventory, built: lab.Lab, names: Sequence[str], log: Path, env: Mapping[str, str],
                 passed: Callable[[str, float], None]) -> int:
    """`provision verify NAMES` from the server's namespace, up to 10 tries 3 s apart (sshd may still be
    starting); its output in `log`, `passed(name, monotonic time)` for each node the first time it is ok.
    Returns the last exit status."""
    for _ in range(10):
        proc = run_in_server(built, ["verify", *ssh_args(inv), ",".join(names)], env)
        log.write_text(proc.stdout + proc.stderr)
        now = time.monotonic()
        for line in proc.stdout.splitlines():
            m = re.match(r"(\S+) \([0-9.]+\): ok:", line)
            if m:
                passed(m.group(1), now)
        if proc.returncode == 0:
            return 0
        time.sleep(3)
    return proc.returncode
