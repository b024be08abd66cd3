"""ISC dhcpd: check a config with the real `dhcpd -t` before it may replace a live one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from provision.errors import InputError, ProvisionError
from provision.outputs import write_bytes_durably

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


class DhcpdProcess:
    """A dhcpd we run ourselves: `dhcpd -f -d -4 -cf CONF -lf LEASES -pf PID IFACE...` with its own
    lease, pid and log files in `run_dir`, optionally inside network namespace `netns` (dhcpd needs an
    address of a declared subnet on the interface it serves). dhcpd has no reload: reload = restart.
    A dhcpd started by another provision process is found through the pid file (and stopped only if
    that pid really is a dhcpd running this config)."""

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
        argv = [binary, "-f", "-d", "-4", "-cf", str(self.config), "-lf", str(self.leases),
                "-pf", str(self.pid_file), *self.interfaces]
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def pid(self) -> int | None:
        """The pid of our running dhcpd, from the pid file, or None."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        is_ours = any(Path(os.fsdecode(a)).name == "dhcpd" for a in cmdline) and \
            os.fsencode(str(self.config)) in cmdline
        return pid if is_ours and not _is_zombie(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 10.0) -> int:
        """Check the config, start dhcpd detached and wait until it serves; returns its pid. Raises
        ProvisionError with dhcpd's log if it exits instead."""
        check_config(self.config)
        if self.running():
            raise ProvisionError(f"dhcpd for {self.config} runs already (pid {self.pid()})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.leases.touch()
        self.pid_file.unlink(missing_ok=True)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log_out:
            proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log_out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new_log = self._log_since(offset)
            if proc.poll() is not None:
                raise ProvisionError(f"dhcpd exited with status {proc.returncode}:\n{_explain(new_log)}")
            if self.READY_LINE in new_log:
                self._reaper = proc  # keep the handle so the child is reaped when it ends
                return proc.pid
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise ProvisionError(f"dhcpd did not start serving within {timeout:.0f} s:\n"
                             f"{_explain(self._log_since(offset))}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop our dhcpd (SIGTERM, then SIGKILL); returns False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            _reap(getattr(self, "_reaper", None))
            time.sleep(0.05)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
        _reap(getattr(self, "_reaper", None), wait=True)
        self.pid_file.unlink(missing_ok=True)
        return True

    def reload(self, timeout: float = 10.0) -> int:
        """Restart with the current config (dhcpd re-reads its config only at start). The config is
        checked before the running dhcpd is stopped, so a bad one never takes the service down."""
        check_config(self.config)
        self.stop(timeout)
        return self.start(timeout)

    def install_and_reload(self, rendered_path: Path | str, timeout: float = 10.0) -> bool:
        """install(rendered, our config) then restart if it changed or dhcpd is not running."""
        changed = install(rendered_path, self.config)
        if not self.running():
            self.start(timeout)
        elif changed:
            self.reload(timeout)
        return changed

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _reap(proc: subprocess.Popen | None, wait: bool = False) -> None:
    if proc is not None:
        try:
            proc.wait(timeout=5) if wait else proc.poll()
        except subprocess.TimeoutExpired:
            pass
