"""A node's `bmc:` in the inventory: given in `defaults:` and per node, a node's keys over the defaults' ones.
The password itself is never read here (provision.power.credentials reads it when it is used)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from provision.fields import Fields
from provision.inventory.schema import keys
from provision.model import Bmc, BmcType

_ADDRESS = re.compile(r"^(https?://)?[A-Za-z0-9_.:\[\]-]+$")
_USER = re.compile(r"^[^\s'\"`$\\]{1,64}$")
_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SYSTEM = re.compile(r"^[A-Za-z0-9_.-]+$")
# The RMCP+ cipher suites (IPMI v2.0 table 22-19) ipmitool can speak: not the RC4 ones (4, 5, 9, 10, 13, 14),
# nor MD5-128 integrity (11, 12: ipmitool aborts), nor 0, which logs anyone in without a password.
CIPHER_SUITES = (1, 2, 3, 6, 7, 8, 15, 16, 17)
_IPMI_ONLY = ("cipher_suite",)
_REDFISH_ONLY = ("system", "verify", "ca_file")


class Bmcs:
    """Reads `bmc:` mappings into Bmc objects, or None after recording their problems in `fields`."""

    def __init__(self, fields: Fields, inventory: Path):
        self.f = fields
        self.inventory = inventory  # a relative password_file is taken from its directory

    def bmc(self, path: tuple, data: Any, base: Bmc | None) -> Bmc | None:
        """One `bmc:` mapping over `base` (the defaults' BMC, or None)."""
        if data is None:
            return None
        m = self.f.mapping(path, data, keys(Bmc))
        if m is None:
            return None
        values: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
        if "password_file" in m or "password_env" in m:  # a node's own source replaces the defaults' one
            values.pop("password_file", None)
            values.pop("password_env", None)
        ok = True
        for key, value in m.items():
            if key not in keys(Bmc):
                continue
            parsed = self.value(path + (key,), key, value)
            ok = ok and parsed is not None
            values[key] = parsed
        if "password_file" in m and "password_env" in m:
            self.f.problem(path + ("password_env",), "give password_file or password_env, not both")
            ok = False
        bmc = Bmc(**values) if ok else None
        if bmc is not None and bmc.type != BmcType.REDFISH and (bmc.address or "").startswith(("http:", "https:")):
            self.f.problem(path + ("address",), "a URL is for type: redfish only (IPMI takes a host)", bmc.address)
            return None
        return bmc if bmc is None else self.protocol_keys(path, m, bmc)

    def protocol_keys(self, path: tuple, m: dict, bmc: Bmc) -> Bmc | None:
        """The keys this mapping gives that the BMC's protocol has no use for, or that contradict each other."""
        wrong = [k for k in (_IPMI_ONLY if bmc.type == BmcType.REDFISH else _REDFISH_ONLY) if k in m]
        for key in wrong:
            self.f.problem(path + (key,), f"{key} is for type: {'ipmi' if key in _IPMI_ONLY else 'redfish'} only",
                           m[key])
        if "ca_file" in m and bmc.ca_file is not None and not bmc.verify:
            self.f.problem(path + ("ca_file",), "ca_file with verify: false (the certificate is not checked)",
                           m["ca_file"])
            return None
        if "ca_file" in m and bmc.type == BmcType.REDFISH and (bmc.address or "").startswith("http:"):
            self.f.problem(path + ("ca_file",), "ca_file is for an https service, the address is http://",
                           m["ca_file"])
            return None
        return None if wrong else bmc

    def value(self, path: tuple, key: str, value: Any) -> Any:
        f = self.f
        if key == "type":
            return f.choice(path, value, BmcType)
        if key == "port":
            return f.port(path, value)
        if key == "address":
            return f.text(path, value, _ADDRESS, "BMC address (host, IP, or for redfish http(s)://host)")
        if key == "user":
            return f.text(path, value, _USER, "user name (1-64 characters, no blanks or quotes)")
        if key in ("password_file", "ca_file"):
            text = f.text(path, value, _PATH, "path")
            return None if text is None else (self.inventory.parent / text).absolute()
        if key == "cipher_suite":
            if isinstance(value, bool) or value not in CIPHER_SUITES:
                f.problem(path, f"not a cipher suite ipmitool offers ({', '.join(map(str, CIPHER_SUITES))}; 0 "
                          "is refused: no authentication)", value)
                return None
            return value
        if key == "verify":
            return f.boolean(path, value)
        if key == "password_env":
            return f.text(path, value, _ENV, "environment variable name")
        return f.text(path, value, _SYSTEM, "Redfish system id")  # system

    def missing(self, bmc: Bmc) -> list[str]:
        """What a node's effective BMC still lacks (defaults may leave these to the nodes)."""
        lacking = [k for k in ("address", "user") if getattr(bmc, k) is None]
        if bmc.password_file is None and bmc.password_env is None:
            lacking.append("password_file or password_env")
        return lacking
