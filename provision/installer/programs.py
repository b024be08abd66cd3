"""Programs the installer runs (mke2fs, mount, resize2fs, ...): a failure is a ProvisionError with their output."""

from __future__ import annotations

import subprocess

from provision.errors import ProvisionError


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ProvisionError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stdout.strip()}")
