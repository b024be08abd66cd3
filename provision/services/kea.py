"""ISC Kea (kea-dhcp4) beside ISC dhcpd: check a config with the real `kea-dhcp4 -t`, make a rendered config
live with the run-time paths added, and run our own kea-dhcp4, which applies a changed config with
`config-reload` over its control socket: no restart, the same pid, leases kept.

The rendered config (templates/kea-dhcp4.conf.j2) holds no run-time paths; the live one gets, in the run
directory: the lease file, the control socket, the log, and (through KEA_PIDFILE_DIR and KEA_LOCKFILE_DIR)
Kea's pid file and lock files, so nothing is written under /run/kea or /var/lib/kea.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from provision.errors import InputError, ProvisionError
from provision.outputs import write_bytes_durably
from provision.services.daemon import OwnDaemon, find_program, in_netns, run_check

PROGRAM = "kea-dhcp4"
PACKAGE = "kea-dhcp4-server"  # Debian's package of kea-dhcp4
LEASE_FILE = "kea-leases4.csv"
CONTROL_SOCKET = "kea4-ctrl-socket"
LOG_FILE = "kea-dhcp4.log"
RUNTIME_KEYS = ("interfaces-config", "lease-database", "control-socket", "loggers")  # set by install, never rendered
_SUN_PATH_MAX = 107  # a unix socket's path, without its closing NUL
# 2026-12-06 11:58:31.836 ERROR [kea-dhcp4.dhcp4/24824.139631628898816] DHCP4_PARSER_FAIL failed to ...
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+ +([A-Z]+) +\[[^\]]*\] +(.*)$")


def find_kea() -> str | None:
    """Path of the kea-dhcp4 binary (PATH, then /usr/sbin and /sbin), or None."""
    return find_program(PROGRAM)


def _kea() -> str:
    binary = find_kea()
    if binary is None:
        raise ProvisionError(f"{PROGRAM} not found (Debian package {PACKAGE})")
    return binary


def check_config(path: Path | str, label: str | None = None, netns: str | None = None) -> None:
    """Run `kea-dhcp4 -t PATH`; raise InputError with Kea's own message if it rejects the file. `label` names
    the file in the message (when PATH is a temporary copy). Kea checks that the interfaces it is to serve
    exist: give the network namespace it will run in."""
    binary = find_kea()
    if binary is None:
        raise ProvisionError(f"{PROGRAM} not found (Debian package {PACKAGE}): cannot check the config")
    run_check(binary, ["-t", str(path)], path, label, _explain, netns)


def check_config_text(text: str, label: str = "kea-dhcp4.conf", netns: str | None = None) -> None:
    """check_config for a config held in memory (written to a private temporary file)."""
    with tempfile.TemporaryDirectory(prefix="provision-kea-check-") as tmp:
        path = Path(tmp) / "kea-dhcp4.conf"
        path.write_text(text, encoding="utf-8")
        check_config(path, label=label, netns=netns)


def _explain(output: str) -> str:
    """Kea's message without its log noise: the lines that are not log lines (-t says what is wrong there),
    else the messages of its ERROR and FATAL log lines."""
    plain, errors = [], []
    for line in output.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            if line.strip():
                plain.append("  " + line.strip())
        elif match.group(1) in ("ERROR", "FATAL"):
            errors.append("  " + match.group(2))
    return "\n".join(plain or errors) or f"  ({PROGRAM} gave no message)"


# --- pure: the live config, the control socket's answers ---------------------------------------------

def parse_config(text: str, label: str) -> dict[str, Any]:
    """A rendered Kea config as JSON (a map with a "Dhcp4" map); InputError naming `label` and the place."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    if not isinstance(config, dict) or not isinstance(config.get("Dhcp4"), dict):
        raise InputError(f'{label}: not a Kea DHCPv4 config (no "Dhcp4" map at the top)')
    return config


def live_config(rendered: str, run_dir: Path, interfaces: Sequence[str] = (), label: str = "kea-dhcp4.conf") -> str:
    """The live form of a rendered config: the interfaces to serve ("*": all), the memfile lease database,
    the control socket and the log in `run_dir` (an absolute path). Other interfaces-config settings of the
    rendered config are kept; its lease-database, control-socket and loggers are replaced."""
    config = parse_config(rendered, label)
    socket_path = str(run_dir / CONTROL_SOCKET)
    if len(os.fsencode(socket_path)) > _SUN_PATH_MAX:
        raise ProvisionError(f"{socket_path}: too long for a unix socket ({_SUN_PATH_MAX} bytes at most)")
    dhcp4 = config["Dhcp4"]
    rendered_interfaces = dhcp4.get("interfaces-config")
    dhcp4["interfaces-config"] = {**(rendered_interfaces if isinstance(rendered_interfaces, dict) else {}),
                                  "interfaces": list(interfaces) or ["*"]}
    dhcp4["lease-database"] = {"type": "memfile", "persist": True, "name": str(run_dir / LEASE_FILE),
                               "lfc-interval": 3600}
    dhcp4["control-socket"] = {"socket-type": "unix", "socket-name": socket_path}
    dhcp4["loggers"] = [{"name": PROGRAM, "severity": "INFO",
                         "output_options": [{"output": str(run_dir / LOG_FILE)}]}]
    return json.dumps(config, indent=2) + "\n"


def command_request(command: str, arguments: Mapping[str, Any] | None = None) -> bytes:
    """A control-socket command as Kea reads it."""
    return json.dumps({"command": command, **({"arguments": dict(arguments)} if arguments else {})}).encode()


def parse_answer(command: str, data: bytes) -> dict[str, Any]:
    """The arguments of Kea's answer to `command` ({} when it has none) if its result is 0 (success);
    ProvisionError with Kea's own text otherwise."""
    try:
        answer = json.loads(data)
    except ValueError:
        raise ProvisionError(f"{PROGRAM} {command}: unreadable answer {data[:200]!r}") from None
    if isinstance(answer, list) and len(answer) == 1:  # a command sent on to several services answers a list
        answer = answer[0]
    if not isinstance(answer, dict) or not isinstance(answer.get("result"), int):
        raise ProvisionError(f"{PROGRAM} {command}: unexpected answer {data[:200]!r}")
    if answer["result"] != 0:
        raise ProvisionError(f"{PROGRAM} {command} failed (result {answer['result']}): {answer.get('text', '')}")
    arguments = answer.get("arguments")
    return arguments if isinstance(arguments, dict) else {}


# --- side effects: the control socket, installing a config, running kea-dhcp4 ----------------------------

def send_command(socket_path: Path | str, command: str, arguments: Mapping[str, Any] | None = None,
                 timeout: float = 10.0) -> dict[str, Any]:
    """Send one command over Kea's unix control socket and return parse_answer of the reply (Kea closes the
    connection after it). OSError when nothing listens there; ProvisionError on a failed command."""
    deadline = time.monotonic() + timeout
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(os.fspath(socket_path))
        conn.sendall(command_request(command, arguments))
        while chunk := conn.recv(1 << 16):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise ProvisionError(f"{PROGRAM} {command}: no complete answer within {timeout:.0f} s")
    return parse_answer(command, b"".join(chunks))


def install(rendered_path: Path | str, live_path: Path | str, run_dir: Path | str | None = None,
            interfaces: Sequence[str] = (), netns: str | None = None) -> bool:
    """Make the live form of `rendered_path` (live_config, run directory default: the live file's directory)
    the config at `live_path`: checked with `kea-dhcp4 -t` (inside `netns`) first (InputError, live file
    untouched, if rejected), then replaced atomically. Returns False when nothing changed."""
    rendered_path, live_path = Path(rendered_path), Path(live_path)
    run_dir = Path(run_dir if run_dir is not None else live_path.parent).resolve()
    try:
        rendered = rendered_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{rendered_path}: cannot read: {exc}") from None
    data = live_config(rendered, run_dir, interfaces, str(rendered_path))
    try:
        check_config_text(data, label=f"{live_path} (new)", netns=netns)
    except InputError:
        check_config(rendered_path, netns=netns)  # Kea's message with the rendered file's lines, if the fault is there
        raise
    if live_path.is_file() and live_path.read_text(encoding="utf-8") == data:
        return False
    write_bytes_durably(live_path, data.encode())
    return True


class KeaProcess(OwnDaemon):
    """A kea-dhcp4 we run ourselves: `kea-dhcp4 -c CONF` with its lease file, control socket, log, pid and
    lock files in `run_dir`, optionally inside network namespace `netns`, serving `interfaces` (none: all).
    A changed config is applied with config-reload over the control socket. A kea-dhcp4 started by another
    provision process is found through its pid file (and stopped only if that pid really is a kea-dhcp4
    running this config)."""

    NAME = PROGRAM
    APPLIED = "reloaded"  # config-reload over the control socket: same process, leases kept

    def __init__(self, config: Path | str, run_dir: Path | str, interfaces: Sequence[str] = (),
                 netns: str | None = None):
        self.config = Path(config).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.interfaces = tuple(interfaces)
        self.netns = netns
        self.leases = self.run_dir / LEASE_FILE
        self.control_socket = self.run_dir / CONTROL_SOCKET
        self.log_file = self.run_dir / LOG_FILE
        self.pid_file = self.run_dir / f"{self.config.stem}.{PROGRAM}.pid"  # Kea names it after the config

    def argv(self) -> list[str]:
        return in_netns(self.netns, [_kea(), "-c", str(self.config)])

    def install(self, rendered_path: Path | str) -> bool:
        """install(rendered, our config) with our run directory, interfaces and namespace; Kea is not touched."""
        return install(rendered_path, self.config, self.run_dir, self.interfaces, self.netns)

    def install_and_reload(self, rendered_path: Path | str, timeout: float = 10.0) -> bool:
        """install(rendered) then config-reload if it changed, or start if Kea is not running. Kea 2.2 stops
        serving DHCP after a config-reload it refuses ("DHCP4_CONFIG_UNRECOVERABLE_ERROR"), so then the previous
        live config is put back and reloaded before the ProvisionError is raised."""
        previous = self.config.read_bytes() if self.config.is_file() else None
        try:
            return super().install_and_reload(rendered_path, timeout)
        except ProvisionError as exc:
            if isinstance(exc, InputError) or previous is None or self.pid() is None:
                raise
            write_bytes_durably(self.config, previous)
            self.command("config-reload", timeout=timeout)
            raise ProvisionError(f"{exc}\n(the previous config is live again)") from None

    def start(self, timeout: float = 10.0) -> int:
        """Give the live config our run-time paths (checked, as install does), start kea-dhcp4 detached and
        wait until its control socket answers; returns its pid. ProvisionError with Kea's log if it exits."""
        if self.running():
            raise ProvisionError(f"{PROGRAM} for {self.config} runs already (pid {self.pid()})")
        self.install(self.config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        env = {**os.environ, "KEA_PIDFILE_DIR": str(self.run_dir), "KEA_LOCKFILE_DIR": str(self.run_dir)}
        return self._spawn(self.argv(), lambda _log: self._answers(), _explain, timeout, env)

    def reload(self, timeout: float = 10.0) -> int:
        """Apply the live config with config-reload (no restart: same pid, leases kept); start kea-dhcp4 if
        it is not running. Returns the pid. ProvisionError with Kea's text if Kea refuses the config (Kea 2.2
        then stops answering DHCP: install_and_reload puts the previous config back)."""
        pid = self.pid()
        if pid is None:
            return self.start(timeout)
        self.command("config-reload", timeout=timeout)
        return pid

    def command(self, command: str, arguments: Mapping[str, Any] | None = None,
                timeout: float = 10.0) -> dict[str, Any]:
        """A control-socket command to our kea-dhcp4 (e.g. config-get); its answer's arguments."""
        try:
            return send_command(self.control_socket, command, arguments, timeout)
        except OSError as exc:
            raise ProvisionError(f"{PROGRAM} {command}: control socket {self.control_socket}: {exc}") from None

    def _answers(self) -> bool:
        try:
            self.command("status-get", timeout=2.0)
        except ProvisionError:
            return False
        return True
