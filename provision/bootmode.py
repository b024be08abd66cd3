"""A node's boot mode: the one variable that decides what its PXE config and dhcpd entry say.

Flipping a node = change its mode in the mapping passed to provision.render, then render again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from provision.errors import InputError
from provision.model import Inventory


class BootMode(enum.StrEnum):
    INSTALL = "install"  # PXE boots the installer kernel with the node's kickstart
    LOCAL = "local"      # PXE hands over to the local disk (pxelinux LOCALBOOT 0)
    DISKLESS = "diskless"  # PXE boots the golden kernel; its initramfs runs the golden root from RAM (no disk)


def modes_for(inv: Inventory, boot_modes: Mapping[str, BootMode | str] | None) -> dict[str, BootMode]:
    """Every node's mode: INSTALL unless `boot_modes` says otherwise. Unknown node names are an error."""
    modes = dict.fromkeys(inv.node_names, BootMode.INSTALL)
    for name, mode in (boot_modes or {}).items():
        if name not in modes:
            raise InputError(f"{inv.path}: boot mode given for unknown node {name!r}")
        try:
            modes[name] = BootMode(mode)
        except ValueError:
            raise InputError(f"node {name}: unknown boot mode {mode!r} (install, local or diskless)") from None
    return modes
