"""Lab BMCs: one OpenIPMI `ipmi_sim` per machine, speaking IPMI over LAN (RMCP+) on UDP, whose chassis control
(power, reset, boot device) is this module run as a program on the machine's directory.

The machine is a command (its QEMU, in the lab) kept in <dir>/machine.json: power on starts it (in its own
session, output to <dir>/machine.log), power off ends it (SIGTERM, then SIGKILL), reset is off then on, and the
boot device asked for (pxe, default, ...) is kept in <dir>/boot until the next power on uses it up (the lab's
machines try their NIC first anyway). ipmi_sim runs `python -m provision.lab.bmc DIR get|set PARM [VALUE]...`
as its lan.conf's `chassis_control` program (OpenIPMI's documented interface, see ipmi_sim_chassiscontrol).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IPMI_SIM = "ipmi_sim"  # Debian package openipmi
MACHINE = "machine.json"
PID = "machine.pid"
BOOT = "boot"
LOG = "machine.log"
BOOT_VALUES = ("none", "pxe", "cdrom", "bios", "default")
STOP_WAIT = 10.0  # seconds between SIGTERM and SIGKILL

# The emulated management controller: a BMC at IPMB address 0x20 (ipmi_sim_cmd(5)).
EMU_COMMANDS = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


@dataclass(frozen=True)
class LabBmc:
    """One machine's BMC: where it listens and who may log in (the password goes only into lan.conf, 0600)."""

    name: str
    address: str
    port: int
    user: str
    password: str
    directory: Path  # the machine's directory: lan.conf, emu.cmd, machine.json, ...


def _quoted(text: str) -> str:
    if any(c in text for c in "\"\\\n"):
        raise ValueError(f"lan.conf cannot quote {text!r}")
    return f'"{text}"'


def lan_conf(bmc: LabBmc, control: Sequence[str]) -> str:
    """ipmi_sim's configuration (ipmi_lan(5)): one LAN channel with RMCP+ and one admin user; `control` is the
    chassis control command line."""
    auths = "none md2 md5 straight"
    return "\n".join([
        f"name {_quoted(bmc.name)}",
        "set_working_mc 0x20",
        "  startlan 1",
        f"    addr {bmc.address} {bmc.port}",
        "    priv_limit admin",
        *(f"    allowed_auths_{level} {auths}" for level in ("callback", "user", "operator", "admin")),
        "    guid a123456789abcdefa123456789abcdef",
        "  endlan",
        f"  chassis_control {_quoted(' '.join(control))}",
        f"  user 2 true {_quoted(bmc.user)} {_quoted(bmc.password)} admin 10 {auths}",
        "",
    ])


def write_machine(directory: Path, machine: Sequence[str]) -> None:
    """The machine's command (what power on starts) into <directory>/machine.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MACHINE).write_text(json.dumps(list(machine)) + "\n")


def write_files(bmc: LabBmc) -> Path:
    """lan.conf (mode 0600: it holds the password) and emu.cmd in the machine's directory; returns lan.conf's
    path."""
    d = bmc.directory
    d.mkdir(parents=True, exist_ok=True)
    control = [sys.executable, "-m", "provision.lab.bmc", str(d.absolute())]
    conf = d / "lan.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(lan_conf(bmc, control))
    (d / "emu.cmd").write_text(EMU_COMMANDS)
    return conf


def sim_argv(directory: Path) -> list[str]:
    """The ipmi_sim command line for the BMC whose files are in `directory` (no persistent state: -n; its state
    dir under the machine's)."""
    d = directory.absolute()
    return [IPMI_SIM, "-c", str(d / "lan.conf"), "-f", str(d / "emu.cmd"), "-n", "-s", str(d / "ipmi-state")]


def start(bmc: LabBmc, machine: Sequence[str], wrap: Sequence[str] = ()) -> subprocess.Popen:
    """Write the machine's command and the BMC's files, start ipmi_sim (under `wrap`, e.g. `ip netns exec NS`);
    see run_sim."""
    write_machine(bmc.directory, machine)
    write_files(bmc)
    return run_sim(bmc.directory, bmc.port, wrap)


def run_sim(directory: Path, port: int, wrap: Sequence[str] = ()) -> subprocess.Popen:
    """Start ipmi_sim on the files in `directory` (under `wrap`); it listens once this returns (waits up to 5 s
    for its UDP `port`). Its log: <dir>/ipmi_sim.log."""
    with open(directory / "ipmi_sim.log", "ab") as log:
        proc = subprocess.Popen([*wrap, *sim_argv(directory)], stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": _package_root()})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proc.poll() is None:
        if listening(port, wrap):
            return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{IPMI_SIM} in {directory} did not start listening on UDP port {port} "
                       f"(see {directory / 'ipmi_sim.log'})")


def _package_root() -> str:
    """Where `provision` is imported from, so the chassis control program finds the same code."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return f"{root}:{rest}" if rest else root


def listening(port: int, wrap: Sequence[str] = ()) -> bool:
    """Something listens on UDP `port` (in the namespace `wrap` enters)."""
    out = subprocess.run([*wrap, "ss", "-Hlun", f"sport = :{port}"], capture_output=True, text=True).stdout
    return bool(out.strip())


def stop_machine(directory: Path) -> None:
    """End the machine's process if it runs (SIGTERM to its session, SIGKILL after STOP_WAIT)."""
    pid = _running(directory)
    if pid is None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_WAIT), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if not _alive(pid):
            break
    (directory / PID).unlink(missing_ok=True)


def start_machine(directory: Path) -> subprocess.Popen | None:
    """Start the machine's command unless it runs (then None); the boot device asked for is used up."""
    if _running(directory) is not None:
        return None
    argv = json.loads((directory / MACHINE).read_text())
    boot = _boot(directory)
    with open(directory / LOG, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PROVISION_LAB_BOOT": boot})
    (directory / PID).write_text(f"{proc.pid}\n")
    (directory / BOOT).write_text("default\n")
    return proc


def _boot(directory: Path) -> str:
    try:
        return (directory / BOOT).read_text().strip() or "default"
    except FileNotFoundError:
        return "default"


def _alive(pid: int) -> bool:
    """The process exists and is no zombie (ours are reaped by init once we exit)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _running(directory: Path) -> int | None:
    try:
        pid = int((directory / PID).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def control(directory: Path, op: str, args: list[str]) -> tuple[int, str]:
    """ipmi_sim's chassis control: `get PARM...` prints PARM:VALUE lines; `set PARM VALUE...` acts. Returns
    (exit status, output)."""
    out = []
    if op == "get":
        for parm in args:
            if parm == "power":
                out.append(f"power:{1 if _running(directory) else 0}")
            elif parm == "boot":
                out.append(f"boot:{_boot(directory)}")
            else:
                return 1, f"Invalid parameter: {parm}"
        return 0, "\n".join(out)
    if op != "set" or len(args) % 2:
        return 1, f"Unknown operation or odd parameters: {op} {' '.join(args)}"
    for parm, value in zip(args[::2], args[1::2]):
        if parm == "power":
            (start_machine if value == "1" else stop_machine)(directory)
        elif parm == "reset":
            if value == "1" and _running(directory) is not None:
                stop_machine(directory)
                start_machine(directory)
        elif parm == "boot":
            if value not in BOOT_VALUES:
                return 1, f"Invalid boot value: {value}"
            (directory / BOOT).write_text(value + "\n")
        else:
            return 1, f"Invalid parameter: {parm}"
    return 0, ""


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m provision.lab.bmc DIR get|set PARM [VALUE]...")
        return 1
    status, text = control(Path(argv[0]), argv[1], argv[2:])
    if text:
        print(text)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
