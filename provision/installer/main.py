"""The install, driven by /proc/cmdline: ask whether the node is due, read its kickstart, partition its disk,
run the %post (which receives the image, grows it, places the bootloader and reports done), reboot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from provision.errors import ProvisionError
from provision.installer.bootloader import bootloader_main
from provision.installer.cmdline import parse_cmdline
from provision.installer.console import say
from provision.installer.disk_plan import MIB_SECTORS, kickstart_disk, plan_disk
from provision.installer.fetch import due_for_install, http_get
from provision.installer.grow import grow_main
from provision.installer.kickstart import post_scripts, read_kickstart
from provision.installer.local_boot import local_system
from provision.installer.partition import disk_sectors, partition
from provision.installer.post import run_post
from provision.installer.programs import run

SYSIMAGE = "/mnt/sysimage"
SWITCH_ROOT = 3  # exit status: /init is to switch_root into SYSIMAGE (the local disk's system)
EFI_FIRMWARE = Path("/sys/firmware/efi")  # present when the kernel was started by UEFI firmware


def reboot() -> None:
    subprocess.run(["sync"])
    say("rebooting")
    os.execvp("reboot", ["reboot", "-f"])


def install(cmdline_text: str, work: Path = Path("/run/provision")) -> None:
    cmd = parse_cmdline(cmdline_text)
    due = cmd.boot_url is None or due_for_install(cmd.boot_url)
    handler = read_kickstart(http_get(cmd.kickstart_url).decode(), cmd.kickstart_url)
    if not due:
        say(f"not due for install ({cmd.boot_url} says local boot): the disk is left alone")
        boot_local(handler)
    say("due for install")
    scripts = post_scripts(handler)
    say(f"kickstart {cmd.kickstart_url}: {len(handler.partition.partitions)} part(s), {len(scripts)} %post")
    plan = plan_disk(handler, disk_sectors(kickstart_disk(handler)), EFI_FIRMWARE.is_dir())
    partition(plan)
    say(f"partitioned ({plan.label}) "
        + ", ".join(f"{p.device} {p.mount} {p.sectors // MIB_SECTORS} MiB" for p in plan.partitions))
    work.mkdir(parents=True, exist_ok=True)
    Path(SYSIMAGE).mkdir(parents=True, exist_ok=True)
    run_post(scripts, plan, work, SYSIMAGE)
    say("done")
    if os.path.ismount(SYSIMAGE):
        run(["umount", SYSIMAGE])
    reboot()


def boot_local(handler) -> None:
    """Hand the machine to its local system (/init switch_roots into SYSIMAGE), else reboot; never returns."""
    device = local_system(handler, SYSIMAGE)
    if device is not None:
        say(f"booting the local system on {device}")
        raise SystemExit(SWITCH_ROOT)
    reboot()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bootloader"]:
        return bootloader_main(argv[1:])
    if argv[:1] == ["grow"]:
        return grow_main(argv[1:])
    try:
        install(Path("/proc/cmdline").read_text())
    except ProvisionError as exc:
        say(f"FAILED: {exc}")
        return 1
    return 0
