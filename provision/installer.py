"""The installer that runs inside provision's initrd (its /init starts it when the kernel line has inst.ks=):

    python3 -m provision.installer              # the install, driven by /proc/cmdline
    python3 -m provision.installer bootloader SYSIMAGE DISK   # `provision-bootloader`, called by the %post

1. the kernel line: inst.ks=URL, provision.boot_url=URL, BOOTIF=01-<mac>;
2. due check: GET provision.boot_url; `local` -> say so and boot the local disk without touching it (no
   install loop): the kickstart's root partition (found by its label) is mounted read-only and /init
   switch_roots into it (exit status 3) when it holds modules for this kernel; else `reboot -f`;
3. the kickstart over HTTP, parsed with pykickstart (RHEL 9 syntax);
4. partitions: an MBR table written in Python from the kickstart's `part` lines (1 MiB aligned, `--grow`
   parts share what is left); the root partition stays unformatted (the ring writes the image raw onto
   it), vfat parts get busybox mkdosfs, swap gets mkswap; other file systems are refused;
5. the kickstart's %post scripts with SYSIMAGE=/mnt/sysimage, DOLLY_ROOT=/ (dollyC writes the image
   targets, e.g. /dev/vda1, on the real devices) and PROVISION_ROOT_DEVICE (the %post mounts the clone
   there); `dollyC` and `provision-bootloader` are put on PATH;
6. the bootloader (from the %post, before it reports done): the clone's own GRUB images, no GRUB tools --
   boot.img + core.img from /boot/grub/i386-pc into the MBR gap (BIOS) and /boot/grub/x86_64-efi/core.efi
   as EFI/BOOT/BOOTX64.EFI on the ESP (when the kickstart has one);
7. the %post reports done (the server flips the node), then unmount, sync, `reboot -f`.
Each phase prints a `provision-installer: <phase>` line on the console.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.images.bootsector import SECTOR, mbr_partition_table, write_bios_grub
from provision.lab_node import PostScript, kernel_arg_url

MIB_SECTORS = (1 << 20) // SECTOR
SYSIMAGE = "/mnt/sysimage"
BIN_DIR = Path("/run/provision/bin")
BIOS_GRUB = Path("boot/grub/i386-pc")
EFI_CORE = Path("boot/grub/x86_64-efi/core.efi")
EFI_LOADER = Path("EFI/BOOT/BOOTX64.EFI")
SWITCH_ROOT = 3  # exit status: /init is to switch_root into SYSIMAGE (the local disk's system)
EXT_MAGIC = 0xEF53
BLKRRPART = 0x125F  # ioctl: re-read the partition table
POST_PHASES = {"provision: report ready": "ready (dollyC listening)", "provision: report cloning": "cloned",
               "provision: identity written": "identity"}
MBR_TYPES = {"swap": 0x82, "vfat": 0x0C, "efi": 0xEF}  # anything else: 0x83 (Linux)


@dataclass(frozen=True)
class Cmdline:
    kickstart_url: str
    boot_url: str | None
    bootif: str | None  # the boot NIC's MAC, aa:bb:..., from BOOTIF=01-aa-bb-...


def parse_cmdline(text: str) -> Cmdline:
    """The installer's settings from a kernel command line; a missing inst.ks= is an error."""
    ks = kernel_arg_url(text, "inst.ks", "ks")
    if ks is None:
        raise ProvisionError(f"kernel command line has no inst.ks=http(s)://... : {text.strip()!r}")
    bootif = None
    for arg in text.split():
        key, _, value = arg.partition("=")
        if key == "BOOTIF" and value.startswith("01-"):
            bootif = value[3:].lower().replace("-", ":")
    return Cmdline(ks, kernel_arg_url(text, "provision.boot_url"), bootif)


@dataclass(frozen=True)
class PlannedPartition:
    number: int
    device: str     # /dev/vda1
    start: int      # LBA
    sectors: int
    kind: int       # MBR partition type
    mount: str      # mount point, or swap
    fstype: str
    label: str | None

    @property
    def is_esp(self) -> bool:
        return self.kind == MBR_TYPES["efi"]


@dataclass(frozen=True)
class DiskPlan:
    disk: str       # /dev/vda
    partitions: tuple[PlannedPartition, ...]

    def mounted_at(self, mount: str) -> PlannedPartition | None:
        return next((p for p in self.partitions if p.mount == mount), None)


def read_kickstart(text: str):
    """The pykickstart handler (RHEL 9 syntax) of a kickstart's text."""
    from pykickstart.parser import KickstartParser
    from pykickstart.version import RHEL9, makeVersion

    handler = makeVersion(RHEL9)
    KickstartParser(handler).readKickstartFromString(text)
    return handler


def post_scripts(handler) -> list[PostScript]:
    from pykickstart.constants import KS_SCRIPT_POST

    return [PostScript(s.script, s.interp or "/bin/sh", s.inChroot, s.errorOnFail)
            for s in handler.scripts if s.type == KS_SCRIPT_POST]


def partition_device(disk: str, number: int) -> str:
    """/dev/vda + 1 -> /dev/vda1; /dev/nvme0n1 + 1 -> /dev/nvme0n1p1 (a name ending in a digit takes `p`)."""
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def kickstart_disk(handler) -> str:
    """The one disk (/dev/...) the kickstart's `part` lines are on (--ondisk, else clearpart --drives)."""
    parts = handler.partition.partitions
    if not parts:
        raise ProvisionError("kickstart has no part lines: nothing to partition")
    disks = {p.disk or (handler.clearpart.drives or [None])[0] for p in parts}
    if len(disks) != 1 or None in disks:
        raise ProvisionError(f"kickstart parts must all be on one disk (--ondisk): {sorted(map(str, disks))}")
    return f"/dev/{disks.pop().removeprefix('/dev/')}"


def plan_disk(handler, disk_sectors: int) -> DiskPlan:
    """The MBR layout of the kickstart's `part` lines on a disk of `disk_sectors`: primary partitions in
    kickstart order from 1 MiB, each a whole number of MiB; `--grow` parts share the rest equally."""
    disk = kickstart_disk(handler)
    parts = handler.partition.partitions
    if len(parts) > 4:
        raise ProvisionError(f"kickstart has {len(parts)} part lines; an MBR holds four primary partitions")
    total_mib = disk_sectors // MIB_SECTORS - 1  # the first MiB holds the MBR and GRUB's core.img
    fixed = sum(int(p.size or 0) for p in parts)
    growers = [p for p in parts if p.grow]
    spare = total_mib - fixed
    if spare < 0:
        raise ProvisionError(f"{disk}: the kickstart's parts need {fixed} MiB, the disk has {total_mib} MiB")
    planned, start = [], MIB_SECTORS
    for number, part in enumerate(parts, 1):
        mib = int(part.size or 0)
        if part.grow:
            share = spare // len(growers)
            mib += share + (spare - share * len(growers) if part is growers[-1] else 0)
            if part.maxSizeMB:
                mib = min(mib, max(int(part.maxSizeMB), int(part.size or 0)))
        if mib <= 0:
            raise ProvisionError(f"kickstart part {part.mountpoint}: size {part.size} MiB")
        fstype = (part.fstype or "").lower()
        mount = part.mountpoint
        kind = (MBR_TYPES["efi"] if mount == "/boot/efi" or fstype == "efi"
                else MBR_TYPES.get("swap" if mount == "swap" else fstype, 0x83))
        planned.append(PlannedPartition(number, partition_device(disk, number), start, mib * MIB_SECTORS, kind,
                                        mount, fstype, part.label or None))
        start += mib * MIB_SECTORS
    return DiskPlan(disk, tuple(planned))


def mbr(plan: DiskPlan) -> bytes:
    """The plan's MBR: the root partition (else the first) marked bootable."""
    boot = plan.mounted_at("/") or plan.partitions[0]
    return mbr_partition_table([(p.start, p.sectors, p.kind, p is boot) for p in plan.partitions])


def format_commands(plan: DiskPlan) -> list[list[str]]:
    """Commands that make the file systems, except on `/` (the ring writes the image raw onto it)."""
    commands = []
    for part in plan.partitions:
        if part.mount == "/":
            continue
        if part.mount == "swap":
            commands.append(["mkswap", *(["-L", part.label] if part.label else []), part.device])
        elif part.fstype in ("vfat", "efi"):
            commands.append(["mkdosfs", *(["-n", part.label] if part.label else []), part.device])
        else:
            raise ProvisionError(f"kickstart part {part.mount}: the installer cannot make {part.fstype} "
                                 "(only the root partition, which receives the image, vfat and swap)")
    return commands


# ---- side effects: console, HTTP, disk, processes ----

def say(phase: str) -> None:
    uptime = Path("/proc/uptime").read_text().split()[0] if Path("/proc/uptime").exists() else "?"
    print(f"provision-installer: {phase} (at {uptime} s)", flush=True)


def http_get(url: str) -> bytes:
    last = None
    for attempt in range(5):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.read()
        except OSError as exc:
            last = exc
            time.sleep(1 + attempt)
    raise ProvisionError(f"GET {url} failed: {last}")


def due_for_install(boot_url: str) -> bool:
    return json.loads(http_get(boot_url))["boot"] == "install"


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ProvisionError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stdout.strip()}")


def disk_sectors(disk: str) -> int:
    return int(Path(f"/sys/class/block/{Path(disk).name}/size").read_text())


def partition(plan: DiskPlan) -> None:
    """Write the plan's MBR (GRUB's gap after it zeroed), re-read the table, wait for the partition
    devices, make the file systems."""
    with open(plan.disk, "r+b") as disk:
        disk.write(mbr(plan) + bytes(plan.partitions[0].start * SECTOR - SECTOR))
        disk.flush()
        os.fsync(disk.fileno())
        fcntl.ioctl(disk.fileno(), BLKRRPART)
    deadline = time.monotonic() + 10
    while not all(Path(p.device).exists() for p in plan.partitions):
        if time.monotonic() > deadline:
            raise ProvisionError(f"{plan.disk}: partition devices did not appear after re-reading the table")
        time.sleep(0.1)
    for argv in format_commands(plan):
        run(argv)


def install_bootloader(sysimage: Path, disk: str, esp: str | None) -> list[str]:
    """The clone's own GRUB images onto the disk: BIOS (MBR + gap) and, with an ESP, the UEFI loader.
    Returns what was placed."""
    placed = []
    bios = sysimage / BIOS_GRUB
    if (bios / "boot.img").is_file() and (bios / "core.img").is_file():
        with open(disk, "r+b") as out:
            write_bios_grub(out, (bios / "boot.img").read_bytes(), (bios / "core.img").read_bytes())
            out.flush()
            os.fsync(out.fileno())
        placed.append(f"BIOS GRUB in {disk}")
    if esp is not None and (sysimage / EFI_CORE).is_file():
        target = sysimage / "boot" / "efi"
        target.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "vfat", esp, str(target)])
        try:
            (target / EFI_LOADER).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sysimage / EFI_CORE, target / EFI_LOADER)
        finally:
            run(["umount", str(target)])
        placed.append(f"{EFI_LOADER} on {esp}")
    if not placed:
        raise ProvisionError(f"no GRUB images in the clone ({sysimage / BIOS_GRUB}, {sysimage / EFI_CORE})")
    return placed


def make_tools(plan: DiskPlan) -> Path:
    """`dollyC` and `provision-bootloader` for the %post, as small Python scripts on PATH."""
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    esp = next((p.device for p in plan.partitions if p.is_esp), None)
    scripts = {
        "dollyC": "from dolly_core.cli import client_main\nsys.exit(client_main())\n",
        "provision-bootloader": ("from provision.installer import bootloader_main\n"
                                 f"sys.exit(bootloader_main(sys.argv[1:], esp={esp!r}))\n"),
    }
    for name, body in scripts.items():
        path = BIN_DIR / name
        path.write_text(f"#!{sys.executable}\nimport sys\n{body}")
        path.chmod(0o755)
    return BIN_DIR


def bootloader_main(argv: list[str], esp: str | None = None) -> int:
    if len(argv) != 2:
        print("usage: provision-bootloader SYSIMAGE DISK", file=sys.stderr)
        return 2
    placed = install_bootloader(Path(argv[0]), argv[1], esp)
    say("bootloader: " + "; ".join(placed))
    return 0


def run_post(scripts: list[PostScript], plan: DiskPlan, work: Path) -> None:
    root = plan.mounted_at("/")
    env = {**os.environ, "SYSIMAGE": SYSIMAGE, "DOLLY_ROOT": "/",
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


def ext_label(device: str) -> str | None:
    """The volume label of an ext2/3/4 file system on `device` (read-only), None if it is none."""
    try:
        with open(device, "rb") as dev:
            dev.seek(1024)
            sb = dev.read(136)
    except OSError:
        return None
    if len(sb) < 136 or int.from_bytes(sb[56:58], "little") != EXT_MAGIC:
        return None
    return sb[120:136].rstrip(b"\0").decode(errors="replace")


def find_by_label(label: str) -> str | None:
    """The partition device holding the ext file system labelled `label`."""
    for part in sorted(Path("/sys/class/block").glob("*/partition")):
        device = f"/dev/{part.parent.name}"
        if ext_label(device) == label:
            return device
    return None


def local_system(handler) -> str | None:
    """Mount the kickstart's root partition (by its label) read-only at SYSIMAGE; its device when it holds
    a system this kernel can boot (/sbin/init, /lib/modules/<release>), else None (unmounted)."""
    root = next((p for p in handler.partition.partitions if p.mountpoint == "/"), None)
    device = find_by_label(root.label) if root is not None and root.label else None
    if device is None:
        return None
    Path(SYSIMAGE).mkdir(parents=True, exist_ok=True)
    run(["mount", "-o", "ro", device, SYSIMAGE])
    sysimage = Path(SYSIMAGE)
    init = sysimage / "sbin" / "init"  # often an absolute symlink (to /lib/systemd/systemd): not followed here
    if os.path.lexists(init) and (sysimage / "lib" / "modules" / os.uname().release).is_dir():
        return device
    run(["umount", SYSIMAGE])
    return None


def reboot() -> None:
    subprocess.run(["sync"])
    say("rebooting")
    os.execvp("reboot", ["reboot", "-f"])


def install(cmdline_text: str, work: Path = Path("/run/provision")) -> None:
    cmd = parse_cmdline(cmdline_text)
    due = cmd.boot_url is None or due_for_install(cmd.boot_url)
    handler = read_kickstart(http_get(cmd.kickstart_url).decode())
    if not due:
        say(f"not due for install ({cmd.boot_url} says local boot): the disk is left alone")
        device = local_system(handler)
        if device is not None:
            say(f"booting the local system on {device}")
            raise SystemExit(SWITCH_ROOT)
        reboot()
    say("due for install")
    scripts = post_scripts(handler)
    say(f"kickstart {cmd.kickstart_url}: {len(handler.partition.partitions)} part(s), {len(scripts)} %post")
    plan = plan_disk(handler, disk_sectors(kickstart_disk(handler)))
    partition(plan)
    say("partitioned " + ", ".join(f"{p.device} {p.mount} {p.sectors // MIB_SECTORS} MiB" for p in plan.partitions))
    work.mkdir(parents=True, exist_ok=True)
    Path(SYSIMAGE).mkdir(parents=True, exist_ok=True)
    run_post(scripts, plan, work)
    say("done")
    if os.path.ismount(SYSIMAGE):
        run(["umount", SYSIMAGE])
    reboot()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bootloader"]:
        return bootloader_main(argv[1:])
    try:
        install(Path("/proc/cmdline").read_text())
    except ProvisionError as exc:
        say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
