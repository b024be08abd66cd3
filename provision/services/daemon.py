"""What dhcpd and kea-dhcp4 share as servers provision runs itself: finding the binary, a config check with
the real program, and the process: started detached with its output in a log file of its run directory,
found again through its pid file (only if that pid really runs our config), stopped with SIGTERM, then
SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from provision.errors import InputError, ProvisionError


def find_program(name: str) -> str | None:
    """Path of a server binary (PATH, then /usr/sbin and /sbin), or None."""
    found = shutil.which(name)
    if found:
        return found
    return next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv`, run inside network namespace `netns` when one is given."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run_check(binary: str, options: Sequence[str], path: Path | str, label: str | None,
              explain: Callable[[str], str], netns: str | None = None) -> None:
    """Run `binary OPTIONS` (a config check of `path`, inside `netns` if given); raise InputError with the
    program's own message, cleaned by `explain`, if it rejects the file. `label` names the file in the message
    (when PATH is a temporary copy)."""
    try:
        result = subprocess.run(in_netns(netns, [binary, *options]), capture_output=True, text=True, timeout=60,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionError(f"cannot run {binary} -t: {exc}") from None
    if result.returncode != 0:
        message = explain(result.stdout + result.stderr)
        if label is not None:
            message = message.replace(str(path), label)
        raise InputError(f"{label or path}: rejected by {Path(binary).name} -t:\n{message}")


class OwnDaemon:
    """A server we run ourselves. A subclass sets NAME (the binary's file name, as /proc/PID/cmdline shows it),
    APPLIED, the paths `config`, `run_dir`, `pid_file` and `log_file`, and start, reload and install."""

    NAME: ClassVar[str]
    APPLIED: ClassVar[str]  # what install_and_reload does to the running server with a changed config
    config: Path
    run_dir: Path
    pid_file: Path
    log_file: Path
    _reaper: subprocess.Popen | None = None  # the handle of the process we started, so it is reaped

    def start(self, timeout: float = 10.0) -> int:
        raise NotImplementedError

    def reload(self, timeout: float = 10.0) -> int:
        raise NotImplementedError

    def install(self, rendered_path: Path | str) -> bool:
        raise NotImplementedError

    def pid(self) -> int | None:
        """The pid of our running server, from the pid file, or None."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        is_ours = any(Path(os.fsdecode(a)).name == self.NAME for a in cmdline) and \
            os.fsencode(str(self.config)) in cmdline
        return pid if is_ours and not _is_zombie(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop our server (SIGTERM, then SIGKILL); returns False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            _reap(self._reaper)
            time.sleep(0.05)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
        _reap(self._reaper, wait=True)
        self.pid_file.unlink(missing_ok=True)
        return True

    def install_and_reload(self, rendered_path: Path | str, timeout: float = 10.0) -> bool:
        """install(rendered) then reload if it changed (dhcpd: a restart, Kea: config-reload), or start the
        server if it is not running. Returns whether the live config changed."""
        changed = self.install(rendered_path)
        if not self.running():
            self.start(timeout)
        elif changed:
            self.reload(timeout)
        return changed

    def _spawn(self, argv: Sequence[str], ready: Callable[[str], bool], explain: Callable[[str], str],
               timeout: float, env: Mapping[str, str] | None = None) -> int:
        """Start `argv` detached, its output appended to the log, and wait until `ready(log since the start)`;
        returns its pid. Raises ProvisionError with the log if it exits or is not ready within `timeout`."""
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log_out:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log_out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=None if env is None else dict(env))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new_log = log_since(self.log_file, offset)
            if proc.poll() is not None:
                raise ProvisionError(f"{self.NAME} exited with status {proc.returncode}:\n{explain(new_log)}")
            if ready(new_log):
                self._reaper = proc
                return proc.pid
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise ProvisionError(f"{self.NAME} did not start serving within {timeout:.0f} s:\n"
                             f"{explain(log_since(self.log_file, offset))}")


def log_since(path: Path, offset: int) -> str:
    """What a server wrote to its log file `path` after byte `offset` ("" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
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
