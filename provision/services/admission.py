"""Caps on what clients hold open at once (HTTP connections, TFTP transfers): in total and per client address,
with one log line for the first refusal of a burst and one when the refused are admitted again."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Wording:
    """How a service's log lines name what is capped, e.g. ("http", "connections open", "from", "refusing
    connections", "accepting connections", "refusing")."""

    service: str
    held: str      # "{cap} {held}, the cap" and "{cap} {held} {by} {address}, its cap"
    by: str
    refusing: str  # "{service}: {refusing} ({why}): first from {address}"
    admitting: str  # "{service}: {admitting}[ from {address}] again, after {refused} {n}"
    refused: str


class Admission:
    """Counts what each client address holds; `admit` takes one more unless a cap is reached (thread-safe)."""

    def __init__(self, total: int, per_client: int, wording: Wording, log: logging.Logger):
        self.total, self.per_client, self.wording, self.log = total, per_client, wording, log
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()  # in the current burst, by address ("" for the total cap)

    def held(self, address: str | None = None) -> int:
        """What is held now: in all, or by one address."""
        with self._lock:
            return self._held.total() if address is None else self._held[address]

    def admit(self, address: str) -> bool:
        """Take one for `address`, or refuse it (False) when it or everyone is at the cap."""
        w = self.wording
        with self._lock:
            if self._held.total() >= self.total:
                key, why = "", f"{self.total} {w.held}, the cap"
            elif self._held[address] >= self.per_client:
                key, why = address, f"{self.per_client} {w.held} {w.by} {address}, its cap"
            else:
                self._held[address] += 1
                for key in (address, ""):
                    if refused := self._refused.pop(key, 0):
                        self.log.info("%s: %s%s again, after %s %d", w.service, w.admitting,
                                      f" from {key}" if key else "", w.refused, refused)
                return True
            self._refused[key] += 1
            if self._refused[key] == 1:
                self.log.warning("%s: %s (%s): first from %s", w.service, w.refusing, why, address)
            return False

    def release(self, address: str) -> None:
        with self._lock:
            self._held[address] -= 1
            if not self._held[address]:
                del self._held[address]

    def refused_since(self) -> dict[str, int]:
        """Refusals not followed by an admission, by address ("" for the total cap); cleared."""
        with self._lock:
            refused, self._refused = dict(self._refused), Counter()
            return refused
