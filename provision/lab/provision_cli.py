"""The real `provision` command line as the demos run it: install (and verify, run) in the server's
namespace, status here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from provision.lab import cluster as lab, netns
from provision.model import Inventory

PROVISION = (sys.executable, "-m", "provision")


def in_server(built: lab.Lab, argv: Sequence[str]) -> list[str]:
    """`provision ARGV...` in the lab server's namespace."""
    return netns.ns_argv(built.server_ns, [*PROVISION, *argv])


def install_args(inv: Inventory, names: Sequence[str], ring_timeout: float, wait: int, finish_wait: int,
                 *extra: str) -> list[str]:
    return ["install", "--inventory", str(inv.path), "--nodes", ",".join(names), "--wait", str(wait),
            "--finish-wait", str(finish_wait), "--timeout", str(ring_timeout), *extra]


def node_records(inv: Inventory, env: Mapping[str, str]) -> dict[str, dict]:
    """`provision status --json`: each node's record by its name."""
    out = subprocess.run([*PROVISION, "status", "--inventory", str(inv.path), "--json"], capture_output=True,
                         text=True, check=True, env={**os.environ, **env}).stdout
    return {record["name"]: record for record in json.loads(out)["nodes"]}
