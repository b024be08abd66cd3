"""The whole workflow on the simulated cluster: lab up -> `provision install` in the server namespace ->
power on the nodes -> (optionally pull one node's plug mid-clone) -> check every node -> lab down.

This is `make demo` (4 nodes) and the main lab test (8 nodes, one killed). Nothing here plays a part of
the install: the server side is the real `provision install`, the nodes are provision.lab.node with real
DHCP/TFTP/HTTP clients; this module only starts them, watches, and checks the outcome from outside.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from provision.errors import ProvisionError
from provision.lab import cluster as lab
from provision.lab.provision_cli import in_server, install_args, node_records
from provision.lab.verdict import node_as_expected, run_as_expected, summary_table, yes_no
from provision.model import Inventory

LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class NodeOutcome:
    name: str
    state: str            # from `provision status --json`
    boot: str             # install or local
    error: str | None
    identical: bool       # every image target on its disk is byte-identical to the source
    hostname: str | None  # what its %post wrote into the clone's /etc/hostname
    lab_boot_ok: bool     # its firmware found local boot after the reboot
    killed: bool
    log_tail: str = ""    # the last lines of its console log, for a node that is not as expected

    @property
    def as_expected(self) -> bool:
        return node_as_expected(self, self.identical and self.lab_boot_ok and self.hostname == self.name)


@dataclass(frozen=True)
class DemoResult:
    install_status: int
    nodes: tuple[NodeOutcome, ...]
    seconds: float
    reset_at: float | None = None  # time.time() when the armed nodes' resets were pushed (armed runs only)

    @property
    def ok(self) -> bool:
        return run_as_expected(self.install_status, self.nodes)


def sha256_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def shared_cores_factor(nodes: int) -> float:
    """How much longer a lab node may wait for a core than one of 16: every lab node's processes (DHCP and TFTP
    clients, dollyC's threads) share this machine's cores, so a heartbeat or a reboot waits its turn longer
    the more nodes there are. Real nodes have their own cores: the product's defaults stay."""
    return max(1.0, nodes / 16)


def run_demo(inv: Inventory, nodes: int, kill: str | None = None, rate: str | None = lab.DEFAULT_RATE,
             image_mib: int = lab.DEFAULT_IMAGE_MIB, ring_timeout: float | None = None,
             env: Mapping[str, str] = os.environ, show=print, install_log: Path | None = None,
             reboot_seconds: float = 3.0, server_rate: str | None = None, armed: bool = False) -> DemoResult:
    """Run the demo; `install_log` takes the output of `provision install -v` (default: this terminal);
    `server_rate` shapes the server's link (default `rate`); `armed`: the nodes load their code before all
    their resets are pushed at once (lab.boot_nodes).
    `ring_timeout` (dollyS --timeout) and the install's --linger default to 3 s and 5 s, longer for a lab
    of more than 16 nodes (shared_cores_factor)."""
    started = time.monotonic()
    built = lab.lab_up(inv, nodes=nodes, rate=rate, env=env, image_mib=image_mib, server_rate=server_rate)
    names = [n.name for n in built.nodes]
    if kill is not None and kill not in names:
        lab.lab_down(env)
        raise ProvisionError(f"--kill {kill}: not a node of this lab ({', '.join(names)})")
    show(f"lab up: server {built.server_name} and {len(names)} node(s) in network namespaces, links {rate}")
    factor = shared_cores_factor(len(names))
    install_argv = in_server(built, install_args(inv, names, ring_timeout or 3.0 * factor, round(120 * factor), 120,
                                                 "--linger", f"{5 * factor:g}", *(["-v"] if install_log else [])))
    log = open(install_log, "wb") if install_log else None
    try:
        install = subprocess.Popen(install_argv, env={**os.environ, **env}, stdout=log, stderr=log)
        booted = lab.boot_nodes(built, names, reboot_seconds=reboot_seconds, armed=armed)
        reset_at = time.time() if armed else None
        if kill is not None:
            _kill_mid_clone(inv, built, kill, show)
        install_status = install.wait(timeout=600 * factor)  # a boot storm through one slow link takes long
        for name, proc in booted.items():
            if name != kill:
                proc.wait(timeout=60)
        outcomes = _outcomes(inv, built, node_records(inv, env), kill)
    finally:
        lab.lab_down(env)
        if log is not None:
            log.close()
    return DemoResult(install_status, outcomes, time.monotonic() - started, reset_at)


def _kill_mid_clone(inv: Inventory, built: lab.Lab, name: str, show) -> None:
    """Pull the plug on `name` once part, not all, of the first image has reached its disk."""
    node = built.node(name)
    target = Path(node.disk) / inv.images[0].target.lstrip("/")
    total = Path(inv.images[0].source).stat().st_size
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        size = target.stat().st_size if target.exists() else 0
        if 0 < size < total:
            lab.power_off(built, [name])
            show(f"demo: pulled the plug on {name} after {size:,} of {total:,} bytes")
            return
        time.sleep(0.02)
    raise ProvisionError(f"{name} never started receiving the image: nothing to kill mid-clone")


def _outcomes(inv: Inventory, built: lab.Lab, records: Mapping[str, dict], kill: str | None
              ) -> tuple[NodeOutcome, ...]:
    sources = {image.target: sha256_of(Path(image.source)) for image in inv.images}
    outcomes = []
    for node in built.nodes:
        record = records[node.name]
        identical = all(sha256_of(Path(node.disk) / target.lstrip("/")) == digest
                        for target, digest in sources.items())
        try:
            boot_ok = json.loads((Path(node.work) / "result.json").read_text()).get("ok") is True
        except (OSError, ValueError):
            boot_ok = False
        try:
            hostname = (Path(node.disk) / "etc" / "hostname").read_text().strip()
        except OSError:
            hostname = None
        outcome = NodeOutcome(node.name, record["state"], record["boot"], record["error"],
                              identical, hostname, boot_ok, node.name == kill)
        if not outcome.as_expected:  # the lab goes down next, its logs with it
            outcome = replace(outcome, log_tail=_tail(Path(node.work) / "boot.log", LOG_TAIL_LINES))
        outcomes.append(outcome)
    return tuple(outcomes)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


def summary(result: DemoResult) -> str:
    """The table of nodes, the verdict, and the console log's last lines of each node not as expected."""
    table = summary_table(
        [("node", 6), ("state", 8), ("boot", 8), ("disk = image", 13), ("local boot", 11), ("note", 0)],
        ([n.name, n.state, n.boot, yes_no(n.identical), yes_no(n.lab_boot_ok), _note(n)] for n in result.nodes),
        f"demo: {len(result.nodes)} node(s) in {result.seconds:.0f} s, install exit status {result.install_status}",
        result.ok)
    tails = [f"--- {n.name}: the last {LOG_TAIL_LINES} lines of its console log\n{n.log_tail}"
             for n in result.nodes if n.log_tail and not n.killed]
    return "\n".join([table, *tails])


def _note(n: NodeOutcome) -> str:
    note = "killed mid-clone" if n.killed else ""
    if n.error:
        note = f"{note}: {n.error}" if note else n.error
    return note
