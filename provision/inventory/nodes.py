"""The inventory's nodes: `defaults:` and each node's own settings over them, into Node objects; what the
checks across nodes need is kept on the way (their identities, which nodes share which disk)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from provision.fields import Fields
from provision.inventory.bmc import Bmcs
from provision.inventory.checks import Checks, DiskUse, Identity
from provision.inventory.disks import Disks
from provision.inventory.schema import NODE_SETTINGS, SETTING_DEFAULTS, keys, required
from provision.model import DEFAULT_DISK, Bootloader, Firmware, Node, OsFamily

_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class Nodes:
    def __init__(self, fields: Fields, checks: Checks, path: Path):
        self.f, self.checks, self.disks = fields, checks, Disks(fields)
        self.bmcs = Bmcs(fields, path)
        self.identities: list[Identity] = []
        self.disk_use: DiskUse = {}

    def settings(self, path: tuple, data: Any, base: dict | None) -> dict | None:
        """Per-node settings: the `defaults:` section (base None) or one node's overrides of `base`."""
        if base is None:
            m = self.f.mapping(path, data, NODE_SETTINGS)
            if m is None:
                return None
            values, out = {**SETTING_DEFAULTS, **m}, {}
        else:
            values, out = {k: data[k] for k in NODE_SETTINGS if k in data}, dict(base)
        ok = True
        for key, value in values.items():
            if key == "bmc":  # a node's bmc keys go over the defaults' ones
                parsed = self.bmcs.bmc(path + (key,), value, (base or {}).get("bmc"))
            else:
                parsed = self.setting(path + (key,), key, value)
            ok = ok and (parsed is not None or (key in ("root_password_hash", "bmc") and value is None))
            out[key] = parsed
        return out if ok else None

    def setting(self, path: tuple, key: str, value: Any) -> Any:
        f = self.f
        if key == "interface":
            return f.text(path, value, _INTERFACE, "interface name")
        if key == "os_family":
            return f.choice(path, value, OsFamily)
        if key == "bootloader":
            return f.choice(path, value, Bootloader)
        if key == "firmware":
            return f.choice(path, value, Firmware)
        if key == "disk":
            return value if value is DEFAULT_DISK else self.disks.disk(path, value)
        if key == "dolly_port":
            return f.port(path, value)
        if key == "append":
            return f.kernel_args(path, value)
        if key == "ssh_authorized_keys":
            return value if value == () else f.ssh_keys(path, value)
        return None if value is None else f.crypt_hash(path, value)  # root_password_hash

    def nodes(self, data: Any, defaults: dict | None) -> list[Node | None] | None:
        items = self.f.sequence(("nodes",), data)  # may be empty: a cluster before `provision discover`
        if items is None:
            return None
        return [self.node(("nodes", i), item, defaults) for i, item in enumerate(items)]

    def node(self, p: tuple, item: Any, defaults: dict | None) -> Node | None:
        """One node: its name, MAC and IP, and its settings over `defaults` (None: they were invalid)."""
        f = self.f
        m = f.mapping(p, item, keys(Node), required(Node))
        if m is None:
            return None
        name = f.checked(m, p, "name", f.hostname)
        mac = f.checked(m, p, "mac", f.mac)
        ip = f.checked(m, p, "ip", f.ipv4)
        self.identities.append((p[-1], name, mac, ip))
        base = defaults or {}
        settings = self.settings(p, m, base) if len(m) > len(required(Node)) else base
        if None in (name, mac, ip, settings) or defaults is None:
            return None
        node = Node(name, mac, ip, **settings)
        self.checks.disk_label(node, next((p + (k,) for k in ("disk", "firmware", "bootloader") if k in m),
                                          ("defaults", "disk")))
        self.checks.bootloader(node, next((p + (k,) for k in ("bootloader", "firmware", "disk") if k in m),
                                          ("defaults", "bootloader")))
        if node.bmc is not None and (lacking := self.bmcs.missing(node.bmc)):
            self.checks.say_once(p + ("bmc",) if "bmc" in m else ("defaults", "bmc"),
                                 f"the BMC lacks {', '.join(lacking)} (give them here or in defaults.bmc)")
        own = m.get("bmc") if isinstance(m.get("bmc"), dict) else {}
        self.checks.bmc(node, p[-1], p + ("bmc", "address") if "address" in own else p + ("bmc",) if own else p)
        given = p + ("disk",) if "disk" in m else None if node.disk is DEFAULT_DISK else ("defaults", "disk")
        self.disk_use.setdefault((id(node.disk), node.disk_label, given), (node.disk, []))[1].append(name)
        return node
