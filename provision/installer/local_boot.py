"""A node not due for install boots its local system untouched: the kickstart's root partition (found by
its label) is mounted read-only and /init switch_roots into it when it holds modules for this kernel."""

from __future__ import annotations

import os
from pathlib import Path

from provision.installer.ext import ext_label
from provision.installer.programs import run


def find_by_label(label: str) -> str | None:
    """The partition device holding the ext file system labelled `label`."""
    for part in sorted(Path("/sys/class/block").glob("*/partition")):
        device = f"/dev/{part.parent.name}"
        if ext_label(device) == label:
            return device
    return None


def local_system(handler, sysimage: str) -> str | None:
    """Mount the kickstart's root partition (by its label) read-only at `sysimage`; its device when it holds
    a system this kernel can boot (/sbin/init, /lib/modules/<release>), else None (unmounted)."""
    root = next((p for p in handler.partition.partitions if p.mountpoint == "/"), None)
    device = find_by_label(root.label) if root is not None and root.label else None
    if device is None:
        return None
    Path(sysimage).mkdir(parents=True, exist_ok=True)
    run(["mount", "-o", "ro", device, sysimage])
    init = Path(sysimage) / "sbin" / "init"  # often an absolute symlink (to /lib/systemd/systemd): not followed here
    if os.path.lexists(init) and (Path(sysimage) / "lib" / "modules" / os.uname().release).is_dir():
        return device
    run(["umount", sysimage])
    return None
