"""When each phase of each VM lab machine ended, in seconds since its power-on, taken when the watcher first
sees it (polled every 0.25 s): from the serial logs (kernel start = end of firmware and PXE, the installer's
own lines, the installed system's login prompt) and from the state store (image received, flip to local boot)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from provision.cluster import ClusterFiles
from provision.errors import ProvisionError
from provision.images.initrd import MARKER
from provision.lab import cluster as lab, vm as lab_vm

PHASES = ("firmware", "installer up", "partitioned", "cloned", "flipped", "booted from disk", "verified")
KERNEL_START = "Linux version"  # the kernel's first console line: firmware, PXE and loader are done
PARTITIONED = re.compile(r"provision-installer: .*partitioned")


@dataclass
class NodeClock:
    """When (seconds after power-on) each phase of one machine ended; None: not seen."""

    name: str
    powered_on: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)

    def mark(self, phase: str, now: float | None = None) -> None:
        self.seen.setdefault(phase, (time.monotonic() if now is None else now) - self.powered_on)


class Watcher:
    """Polls the machines' serial logs and the state store in a thread and fills their NodeClocks."""

    def __init__(self, built: lab.Lab, files: ClusterFiles, clocks: Mapping[str, NodeClock]):
        self.built, self.files, self.clocks = built, files, clocks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vm-demo-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.poll()

    def poll(self) -> None:
        try:
            records = self.files.store().load()
        except ProvisionError:
            records = {}
        for node in self.built.nodes:
            clock = self.clocks[node.name]
            if not clock.powered_on:
                continue
            serial = serial_text(node)
            if KERNEL_START in serial:
                clock.mark("firmware")
            if MARKER in serial:
                clock.mark("installer up")
            if PARTITIONED.search(serial):
                clock.mark("partitioned")
            record = records.get(node.name)
            if record is not None and str(record.state) in ("cloning", "done"):
                clock.mark("cloned")
            if record is not None and str(record.boot) == "local":
                clock.mark("flipped")
            if "flipped" in clock.seen and f"{node.name} login:" in serial:
                clock.mark("booted from disk")


def serial_text(node: lab.LabNode) -> str:
    try:
        return (Path(node.work) / lab_vm.SERIAL_LOG).read_text(errors="replace")
    except OSError:
        return ""
