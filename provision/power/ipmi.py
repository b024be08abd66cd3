"""IPMI v2.0 over LAN (RMCP+, `-I lanplus`) with ipmitool (Debian package ipmitool): chassis power status and
control, and the boot device of the next boot. The password goes to ipmitool in its environment (`-E`), never
on a command line."""

from __future__ import annotations

import math
import os
import subprocess

from provision.model import IPMI_CIPHER_SUITE, IPMI_PORT, Bmc
from provision.power import PowerError, Unreachable, Verb

IPMITOOL = "ipmitool"
_CONTROL = {Verb.ON: "on", Verb.OFF: "off", Verb.RESET: "reset", Verb.CYCLE: "cycle"}
# What ipmitool -v says when the BMC gave no answer, and what it says for a refused login
_NO_ANSWER = ("get auth capabilities error", "no response", "timeout")
_REFUSED = {"rakp 2 hmac is invalid": "wrong password (RAKP 2 HMAC is invalid)",
            "unauthorized name": "unknown user (RAKP 2: unauthorized name)"}
# What ipmitool says when the BMC does not offer the cipher suite asked for (its open session response)
_NO_SUITE = ("invalid authentication algorithm", "invalid integrity algorithm", "invalid confidentiality algorithm")


class IpmiDriver:
    """ipmitool calls to one BMC, each a session of its own, given about `timeout` seconds: half per packet
    (-N), as ipmitool asks twice before it gives up on a BMC; the retries are provision.power.pool's. The cipher
    suite is always named (-C): that spares the Get Channel Cipher Suites round trip, which some BMCs (ipmi_sim)
    never answer."""

    def __init__(self, bmc: Bmc, password: str, timeout: float):
        self.suite = bmc.cipher_suite if bmc.cipher_suite is not None else IPMI_CIPHER_SUITE
        self.argv = [IPMITOOL, "-v", "-I", "lanplus", "-C", str(self.suite), "-H", bmc.address or "",
                     "-p", str(bmc.port or IPMI_PORT), "-U", bmc.user or "", "-E",
                     "-N", str(max(1, math.ceil(timeout / 2))), "-R", "1"]
        self.env = {**os.environ, "IPMI_PASSWORD": password}
        self.timeout = timeout

    def power(self) -> str:
        out = self._run("chassis", "power", "status")
        state = out.rsplit(" ", 1)[-1].strip().lower()  # "Chassis Power is on"
        if state not in ("on", "off"):
            raise PowerError(f"unexpected answer to chassis power status: {out.strip()!r}")
        return state

    def set_power(self, verb: Verb) -> None:
        """Chassis control as asked. Cycle on an off machine is refused by the spec (and by many BMCs): that is
        an `on` instead."""
        if verb == Verb.CYCLE and self.power() == "off":
            verb = Verb.ON
        self._run("chassis", "power", _CONTROL[verb])

    def pxe_once(self) -> None:
        self._run("chassis", "bootdev", "pxe")  # without options=persistent: the next boot only

    def close(self) -> None:
        """Nothing held: each call is its own session."""

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout * 4 + 5)
        except subprocess.TimeoutExpired:
            raise Unreachable(f"no answer ({IPMITOOL} gave up after {self.timeout * 4 + 5:g} s)") from None
        except OSError as exc:
            raise PowerError(f"cannot run {IPMITOOL}: {exc.strerror}") from None
        if done.returncode != 0:
            lines = [line.strip() for line in done.stderr.splitlines()
                     if line.strip() and not line.startswith(("Loading IANA", "Unable to Get Channel Cipher"))]
            said = "; ".join(lines) or "no message"
            refused = next((why for key, why in _REFUSED.items() if key in said.lower()), None)
            if refused:
                raise PowerError(refused)
            if any(s in said.lower() for s in _NO_SUITE):
                raise PowerError(f"the BMC does not offer cipher suite {self.suite} ({said}): set bmc.cipher_suite")
            if any(s in said.lower() for s in _NO_ANSWER):
                raise Unreachable(f"no answer ({said})")
            raise PowerError(said)
        return done.stdout
