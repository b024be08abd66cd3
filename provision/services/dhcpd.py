"""ISC dhcpd: check a config with the real `dhcpd -t` before it may replace a live one."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from provision.errors import ProvisionError
from provision.outputs import write_bytes_durably
from provision.services.daemon import OwnDaemon, find_program, in_netns, run_check

_BANNER = ("Internet Systems Consortium", "Copyright ", "All rights reserved", "For info, please visit",
           "Config file:", "Database file:", "PID file:", "Wrote ", "Source compiled")
_ADVICE = "If you think you have received this message"


def find_dhcpd() -> str | None:
    """Path of the dhcpd binary (PATH, then /usr/sbin and /sbin), or None."""
    return find_program("dhcpd")


def check_config(path: Path | str, label: str | None = None) -> None:
    """Run `dhcpd -t -cf PATH`; raise InputError with dhcpd's own message if it rejects the file.
    `label` names the file in the message (when PATH is a temporary copy)."""
    binary = find_dhcpd()
    if binary is None:
        raise ProvisionError("dhcpd not found (Debian package isc-dhcp-server): cannot check the config")
    run_check(binary, ["-t", "-4", "-cf", str(path)], path, label, _explain)


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


# --- installing a config and running dhcpd (the services side) ---------------------------------------

def install(rendered_path: Path | str, live_path: Path | str) -> bool:
    """Make `rendered_path` the live config: check it with `dhcpd -t` first (InputError, live file
    untouched, if rejected), then replace `live_path` atomically. Returns False when nothing changed."""
    rendered_path, live_path = Path(rendered_path), Path(live_path)
    check_config(rendered_path)
    data = rendered_path.read_bytes()
    if live_path.is_file() and live_path.read_bytes() == data:
        return False
    write_bytes_durably(live_path, data)
    return True


class DhcpdProcess(OwnDaemon):
    """A dhcpd we run ourselves: `dhcpd -f -d -4 -cf CONF -lf LEASES -pf PID IFACE...` with its own
    lease, pid and log files in `run_dir`, optionally inside network namespace `netns` (dhcpd needs an
    address of a declared subnet on the interface it serves). dhcpd has no reload: reload = restart.
    A dhcpd started by another provision process is found through the pid file (and stopped only if
    that pid really is a dhcpd running this config)."""

    NAME = "dhcpd"
    APPLIED = "restarted"  # what install_and_reload does to a running dhcpd with a changed config
    READY_LINE = "Server starting service."

    def __init__(self, config: Path | str, run_dir: Path | str, interfaces: Sequence[str] = (),
                 netns: str | None = None):
        self.config = Path(config).resolve()
        self.run_dir = Path(run_dir)
        self.interfaces = tuple(interfaces)
        self.netns = netns
        self.leases = self.run_dir / "dhcpd.leases"
        self.pid_file = self.run_dir / "dhcpd.pid"
        self.log_file = self.run_dir / "dhcpd.log"

    def argv(self) -> list[str]:
        binary = find_dhcpd()
        if binary is None:
            raise ProvisionError("dhcpd not found (Debian package isc-dhcp-server)")
        return in_netns(self.netns, [binary, "-f", "-d", "-4", "-cf", str(self.config), "-lf", str(self.leases),
                                     "-pf", str(self.pid_file), *self.interfaces])

    def start(self, timeout: float = 10.0) -> int:
        """Check the config, start dhcpd detached and wait until it serves; returns its pid. Raises
        ProvisionError with dhcpd's log if it exits instead."""
        check_config(self.config)
        if self.running():
            raise ProvisionError(f"dhcpd for {self.config} runs already (pid {self.pid()})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.leases.touch()
        self.pid_file.unlink(missing_ok=True)
        return self._spawn(self.argv(), lambda log: self.READY_LINE in log, _explain, timeout)

    def reload(self, timeout: float = 10.0) -> int:
        """Restart with the current config (dhcpd re-reads its config only at start). The config is
        checked before the running dhcpd is stopped, so a bad one never takes the service down."""
        check_config(self.config)
        self.stop(timeout)
        return self.start(timeout)

    def install(self, rendered_path: Path | str) -> bool:
        """install(rendered, our config): checked, then live; whether it changed. dhcpd is not touched."""
        return install(rendered_path, self.config)
