"""Flips nodes to local boot from one thread, in batches, while an install runs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from provision.errors import ProvisionError


class Flipper:
    """Flips nodes to local boot from one thread, in batches (one render and one dhcpd restart for all
    nodes that finished meanwhile). A node's `done` report returns only after its flip, so the node
    reboots into local boot, never into a second install."""

    def __init__(self, apply: Callable[[list[str]], None], on_error: Callable[[str, str], None]):
        self._apply, self._on_error = apply, on_error
        self._queue: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="flipper", daemon=True)
        self._thread.start()

    def flip(self, name: str, timeout: float = 60.0) -> bool:
        done = threading.Event()
        self._queue.put((name, done))
        return done.wait(timeout)

    def close(self) -> None:
        self._queue.put(("", threading.Event()))
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            names = [name for name, _ in batch if name]
            if names:
                try:
                    self._apply(names)
                except ProvisionError as exc:
                    for name in names:
                        self._on_error(name, f"flip to local boot failed: {exc}")
            for _, event in batch:
                event.set()
            if len(names) < len(batch):
                return
