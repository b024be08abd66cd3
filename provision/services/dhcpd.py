"""ISC dhcpd: check a config with the real `dhcpd -t` before it may replace a live one."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from provision.errors import InputError, ProvisionError

_BANNER = ("Internet Systems Consortium", "Copyright ", "All rights reserved", "For info, please visit",
           "Config file:", "Database file:", "PID file:", "Wrote ", "Source compiled")
_ADVICE = "If you think you have received this message"


def find_dhcpd() -> str | None:
    """Path of the dhcpd binary (PATH, then /usr/sbin and /sbin), or None."""
    found = shutil.which("dhcpd")
    if found:
        return found
    return next((p for p in ("/usr/sbin/dhcpd", "/sbin/dhcpd") if os.access(p, os.X_OK)), None)


def check_config(path: Path | str, label: str | None = None) -> None:
    """Run `dhcpd -t -cf PATH`; raise InputError with dhcpd's own message if it rejects the file.
    `label` names the file in the message (when PATH is a temporary copy)."""
    binary = find_dhcpd()
    if binary is None:
        raise ProvisionError("dhcpd not found (Debian package isc-dhcp-server): cannot check the config")
    try:
        result = subprocess.run(
            [binary, "-t", "-4", "-cf", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionError(f"cannot run {binary} -t: {exc}") from None
    if result.returncode != 0:
        message = _explain(result.stdout + result.stderr)
        if label is not None:
            message = message.replace(str(path), label)
        raise InputError(f"{label or path}: rejected by dhcpd -t:\n{message}")


def check_config_text(text: str, label: str = "dhcpd.conf") -> None:
    """check_config for a config held in memory (written to a private temporary file)."""
    with tempfile.TemporaryDirectory(prefix="provision-dhcpd-check-") as tmp:
        path = Path(tmp) / "dhcpd.conf"
        path.write_text(text, encoding="utf-8")
        check_config(path, label=label)


def _explain(output: str) -> str:
    """dhcpd's error lines without its banner and bug-report advice."""
    lines = []
    for line in output.splitlines():
        if line.startswith(_ADVICE):
            break
        if line.strip() and not line.startswith(_BANNER):
            lines.append("  " + line)
    return "\n".join(lines) or "  (dhcpd gave no message)"
