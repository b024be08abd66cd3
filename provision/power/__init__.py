"""Power control through the nodes' BMCs: one driver module per protocol (ipmi.py over RMCP+, redfish.py over
HTTP) with the same verbs, the password read when used (credentials.py), and many nodes at once with retries
and a bounded pool (pool.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Verb(enum.StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    RESET = "reset"  # a warm reset (an off machine stays off on most BMCs: `cycle` or `on` then)
    CYCLE = "cycle"  # off, then on (an off machine is powered on)
    PXE_ONCE = "pxe-once"  # the next boot (only) from the network


class PowerError(Exception):
    """A BMC refused or failed a request; the message says what it said."""


class Unreachable(PowerError):
    """No answer from the BMC within the timeout, or a Redfish service busy (HTTP 5xx): worth a retry."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one verb did on one node: the power state after it ("on", "off") or the error."""

    node: str
    bmc: str  # "ipmi 10.0.0.101:623"
    verb: Verb
    power: str | None = None
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Driver(Protocol):
    """One BMC session; every call raises PowerError (or Unreachable) with what the BMC said."""

    def power(self) -> str: ...  # "on" or "off"

    def set_power(self, verb: Verb) -> None: ...  # ON, OFF, RESET or CYCLE

    def pxe_once(self) -> None: ...

    def close(self) -> None: ...
