"""The kickstart's %post scripts run by the installer, with SYSIMAGE, DOLLY_ROOT=/ (dollyC writes the image
targets, e.g. /dev/vda1, on the real devices) and PROVISION_ROOT_DEVICE (the %post mounts the clone there);
`dollyC`, `provision-grow` and `provision-bootloader` are put on PATH. Their output goes to the console,
with a phase line for each marker the shipped %post prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from provision.errors import ProvisionError
from provision.installer.bootloader import BootTarget
from provision.installer.console import say
from provision.installer.disk_plan import DiskPlan
from provision.installer.kickstart import PostScript

BIN_DIR = Path("/run/provision/bin")
POST_PHASES = {"provision: report ready": "ready (dollyC listening)", "provision: report cloning": "cloned",
               "provision: identity written": "identity"}


def make_tools(plan: DiskPlan) -> Path:
    """`dollyC`, `provision-grow` and `provision-bootloader` for the %post, as small Python scripts on PATH."""
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    scripts = {
        "dollyC": "from dolly_core.cli import client_main\nsys.exit(client_main())\n",
        "provision-grow": "from provision.installer.grow import grow_main\nsys.exit(grow_main(sys.argv[1:]))\n",
        "provision-bootloader": ("from provision.installer.bootloader import BootTarget, bootloader_main\n"
                                 f"sys.exit(bootloader_main(sys.argv[1:], {BootTarget.of(plan)!r}))\n"),
    }
    for name, body in scripts.items():
        path = BIN_DIR / name
        path.write_text(f"#!{sys.executable}\nimport sys\n{body}")
        path.chmod(0o755)
    return BIN_DIR


def run_post(scripts: list[PostScript], plan: DiskPlan, work: Path, sysimage: str) -> None:
    """Run the --nochroot %post scripts in order; one failing with --erroronfail stops the install."""
    root = plan.mounted_at("/")
    env = {**os.environ, "SYSIMAGE": sysimage, "DOLLY_ROOT": "/",
           "PATH": f"{make_tools(plan)}:/usr/bin:/bin:/usr/sbin:/sbin"}
    if root is not None:
        env["PROVISION_ROOT_DEVICE"] = root.device
    for i, script in enumerate(scripts, 1):
        if script.in_chroot:
            raise ProvisionError(f"%post #{i} runs in the chroot: the installer runs --nochroot scripts only")
        path = work / f"post-{i}.sh"
        path.write_text(script.script)
        say(f"%post #{i} ({script.interpreter}) starts")
        proc = subprocess.Popen([script.interpreter, str(path)], env=env, cwd=work, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        for line in proc.stdout:
            print(line, end="", flush=True)
            phase = post_phase(line)
            if phase:
                say(phase)
        rc = proc.wait()
        say(f"%post #{i} exit {rc}")
        if rc != 0 and script.error_on_fail:
            raise ProvisionError(f"%post #{i} failed with exit {rc} (--erroronfail)")


def post_phase(line: str) -> str | None:
    """The installer phase a line of the shipped %post marks (its report() and identity lines)."""
    for marker, phase in POST_PHASES.items():
        if line.startswith(marker):
            return phase
    return None
