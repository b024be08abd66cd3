"""`provision-grow DEVICE...` (called by the %post once the image is received): check each received ext2/3/4
file system (e2fsck -fy) and grow it to fill its partition (resize2fs)."""

from __future__ import annotations

import subprocess
import sys

from provision.errors import ProvisionError
from provision.installer.console import say
from provision.installer.ext import read_ext_blocks
from provision.installer.programs import run


def grow_commands(device: str) -> list[list[str]]:
    """Check the file system (it must be clean for resize2fs), then grow it to its device's size."""
    return [["e2fsck", "-f", "-y", device], ["resize2fs", device]]


def grow(device: str) -> str:
    """Grow the ext2/3/4 file system on `device` to fill it (e2fsck -fy, resize2fs); what was done."""
    before = read_ext_blocks(device)
    if before is None:
        return f"{device}: no ext2/3/4 file system, left as it is"
    check, resize = grow_commands(device)
    proc = subprocess.run(check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode not in (0, 1):  # 1: errors corrected
        raise ProvisionError(f"`{' '.join(check)}` failed (exit {proc.returncode}): {proc.stdout.strip()[-2000:]}")
    run(resize)
    (blocks, size), (grown, _) = before, read_ext_blocks(device)
    return f"grown {device}: {blocks * size >> 20} MiB -> {grown * size >> 20} MiB"


def grow_main(argv: list[str]) -> int:
    """`provision-grow DEVICE...`: grow each received ext2/3/4 file system to fill its partition."""
    if not argv:
        print("usage: provision-grow DEVICE...", file=sys.stderr)
        return 2
    for device in argv:
        say(f"growing {device} (e2fsck -fy, resize2fs)")
        try:
            say(grow(device))
        except ProvisionError as exc:
            say(f"FAILED: {exc}")
            return 1
    return 0
