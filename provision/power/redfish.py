"""DMTF Redfish over HTTP(S) with the standard library: the ComputerSystem's PowerState, its
#ComputerSystem.Reset action, and Boot.BootSourceOverride for the next boot. Over https the service's
certificate is checked against the system's CA store, or the inventory's bmc.ca_file, or not at all
(bmc.verify: false)."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

from provision.errors import InputError
from provision.model import Bmc
from provision.power import PowerError, Unreachable, Verb

_RESET = {Verb.ON: "On", Verb.OFF: "ForceOff", Verb.RESET: "ForceRestart", Verb.CYCLE: "PowerCycle"}
_MAX_BODY = 1 << 20


class RedfishDriver:
    """Requests to one Redfish service; the system is the inventory's `system` or the service's only one."""

    def __init__(self, bmc: Bmc, password: str, timeout: float):
        address = bmc.address or ""
        scheme, _, host = address.rpartition("://")
        self.base = f"{scheme or 'https'}://{host}" + (f":{bmc.port}" if bmc.port else "")
        token = base64.b64encode(f"{bmc.user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.timeout = timeout
        self.tls = tls_context(bmc) if self.base.startswith("https:") else None
        self.system = self._system(bmc.system)

    def power(self) -> str:
        state = self._request("GET", self.system).get("PowerState")
        if not isinstance(state, str):
            raise PowerError(f"{self.system} has no PowerState")
        return state.lower()  # on, off, poweringon, poweringoff

    def set_power(self, verb: Verb) -> None:
        system = self._request("GET", self.system)
        actions = system.get("Actions")
        action = actions.get("#ComputerSystem.Reset") if isinstance(actions, dict) else None
        target = action.get("target") if isinstance(action, dict) else None
        if not isinstance(target, str):
            raise PowerError(f"{self.system} offers no #ComputerSystem.Reset action")
        allowed = action.get("ResetType@Redfish.AllowableValues")
        reset = _RESET[verb]
        if verb == Verb.CYCLE and str(system.get("PowerState", "")).lower() == "off":
            reset = "On"
        elif verb == Verb.CYCLE and isinstance(allowed, list) and reset not in allowed:
            reset = "ForceRestart"  # the same for a running machine (ForceOff then On would race the BMC)
        if isinstance(allowed, list) and reset not in allowed:
            raise PowerError(f"{self.system} does not offer ResetType {reset} (it offers {', '.join(allowed)})")
        self._request("POST", target, {"ResetType": reset})

    def pxe_once(self) -> None:
        self._request("PATCH", self.system, {"Boot": {"BootSourceOverrideTarget": "Pxe",
                                                      "BootSourceOverrideEnabled": "Once"}})

    def close(self) -> None:
        """Nothing held: each request is its own connection."""

    def _system(self, system: str | None) -> str:
        if system is not None:  # its own @odata.id (a service may redirect from a name to it)
            found = self._request("GET", f"/redfish/v1/Systems/{system}").get("@odata.id")
            return found if isinstance(found, str) and found.startswith("/redfish/") else f"/redfish/v1/Systems/{system}"
        members = self._request("GET", "/redfish/v1/Systems").get("Members", [])
        ids = [m.get("@odata.id") for m in members if isinstance(m, dict)]
        if len(ids) != 1 or not isinstance(ids[0], str):
            raise PowerError(f"the service has {len(ids)} systems ({', '.join(map(str, ids))}): name one with "
                             "bmc.system")
        return ids[0]

    def _request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.tls) as response:
                text = response.read(_MAX_BODY)
        except urllib.error.HTTPError as exc:
            said = f"{method} {path}: HTTP {exc.code} {exc.reason}{_said(exc.read(_MAX_BODY))}"
            raise (Unreachable if exc.code >= 500 else PowerError)(said) from None  # 5xx: busy, try again
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):  # no retry: it would be refused again
                raise PowerError(f"{method} {path}: the service's certificate is not trusted "
                                 f"({reason.verify_message}): give bmc.ca_file, or bmc.verify: false") from None
            raise Unreachable(f"{method} {path}: no answer ({reason})") from None
        if not text.strip():
            return {}
        try:
            found = json.loads(text)
        except ValueError:
            raise PowerError(f"{method} {path}: the answer is not JSON") from None
        return found if isinstance(found, dict) else {}


def tls_context(bmc: Bmc) -> ssl.SSLContext:
    """How https requests check the service: the system's CA store, the CA certificates of bmc.ca_file, or
    (verify: false) not at all."""
    try:
        context = ssl.create_default_context(cafile=None if bmc.ca_file is None else str(bmc.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"{bmc.ca_file}: bmc.ca_file: cannot load CA certificates from it: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    if not bmc.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _said(body: bytes) -> str:
    """The Redfish error's message(s), if the body is a Redfish error."""
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    messages = [i.get("Message") for i in error.get("@Message.ExtendedInfo", []) if isinstance(i, dict)]
    text = "; ".join(m for m in [error.get("message"), *messages] if isinstance(m, str) and m)
    return f": {text}" if text else ""
