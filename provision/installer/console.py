"""The installer's `provision-installer: <phase> (at S s)` lines on the console."""

from __future__ import annotations

from pathlib import Path


def say(phase: str) -> None:
    uptime = Path("/proc/uptime").read_text().split()[0] if Path("/proc/uptime").exists() else "?"
    print(f"provision-installer: {phase} (at {uptime} s)", flush=True)
