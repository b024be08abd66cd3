"""Put what diskless nodes boot into the TFTP root (boot/diskless/), from the inventory's boot.diskless directory.

Checked first (all four files there, the sha256 file one well-formed line);
each file replaced by rename, the published sha256 last, so a node never reads a digest of an image that
is not there yet (one that reads the old digest with the new image refuses it and asks again).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from provision import diskless
from provision.bootmode import BootMode
from provision.errors import InputError
from provision.model import Inventory

ORDER = (diskless.KERNEL, diskless.INITRD, diskless.ROOT, diskless.ROOT_SHA256)  # the published digest last
_SHA256_LINE = re.compile(r"^[0-9a-f]{64}  root\.squashfs\n$")


def diskless_nodes(modes: Mapping[str, BootMode]) -> list[str]:
    return [name for name, mode in modes.items() if mode is BootMode.DISKLESS]


def diskless_sources(inv: Inventory, modes: Mapping[str, BootMode]) -> dict[str, Path]:
    """Path in the TFTP root -> boot.diskless's file, checked, when a node is in diskless boot (else none). A
    missing directory or file, or a malformed sha256 file, is an InputError naming it."""
    nodes = diskless_nodes(modes)
    if not nodes:
        return {}
    if inv.boot.diskless is None:
        raise InputError(f"{inv.path}: boot.diskless: needed by the node(s) in diskless boot "
                             f"({', '.join(nodes)}): a directory from `provision images --diskless`")
    source = Path(inv.boot.diskless)
    files = {rel: source / PurePosixPath(rel).name for rel in ORDER}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise InputError(f"{inv.path}: boot.diskless: {source}: missing {', '.join(missing)}")
    digest = files[diskless.ROOT_SHA256].read_text(errors="replace")
    if not _SHA256_LINE.match(digest):
        raise InputError(f"{inv.path}: boot.diskless: {files[diskless.ROOT_SHA256]}: not one line "
                             f"'<64 hex digits>  root.squashfs': {digest[:100]!r}")
    return files


def install_diskless(tftp_root: Path, files: Mapping[str, Path]) -> list[Path]:
    """Put `files` (from diskless_sources) into `tftp_root`, each by rename, in their order (the digest last)."""
    installed = []
    for rel, src in files.items():
        target = tftp_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)  # the same file system: no copy of a large image
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)
        installed.append(target)
    return installed
