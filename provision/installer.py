"""The installer that runs inside provision's initrd (its /init starts it when the kernel line has inst.ks=):

    python3 -m provision.installer              # the install, driven by /proc/cmdline
    python3 -m provision.installer bootloader SYSIMAGE DISK   # `provision-bootloader`, called by the %post
    python3 -m provision.installer grow DEVICE...             # `provision-grow`, called by the %post

1. the kernel line: inst.ks=URL, provision.boot_url=URL, BOOTIF=01-<mac>;
2. due check: GET provision.boot_url; `local` -> say so and boot the local disk without touching it (no
   install loop): the kickstart's root partition (found by its label) is mounted read-only and /init
   switch_roots into it (exit status 3) when it holds modules for this kernel; else `reboot -f`;
3. the kickstart over HTTP, parsed with pykickstart (RHEL 9 syntax);
4. partitions: a GPT or an MBR table written in Python from the kickstart's `part` lines (1 MiB aligned,
   `--grow` parts share what is left): `clearpart --disklabel=gpt|msdos` if given, else GPT on a UEFI
   machine and MBR on a BIOS one;
   a BIOS machine on a GPT disk needs a biosboot part for GRUB's core.img;
   the root partition stays unformatted (the ring writes the image raw onto it; ext2/3/4 only), ext2/3/4
   get e2fsprogs' mke2fs, vfat busybox mkdosfs, swap mkswap; other file systems (xfs, btrfs) are refused
   when the disk is planned, before it is touched;
5. the kickstart's %post scripts with SYSIMAGE=/mnt/sysimage, DOLLY_ROOT=/ (dollyC writes the image
   targets, e.g. /dev/vda1, on the real devices) and PROVISION_ROOT_DEVICE (the %post mounts the clone
   there); `dollyC`, `provision-grow` and `provision-bootloader` are put on PATH;
6. grow (from the %post, once the image is received): `provision-grow DEVICE` checks the received ext2/3/4
   file system (e2fsck -fy) and grows it to fill its partition (resize2fs);
7. the bootloader (from the %post, before it reports done): the clone's own GRUB images, no GRUB tools --
   boot.img + core.img from /boot/grub/i386-pc into the MBR gap (BIOS, MBR disk), or on a GPT disk with a
   biosboot partition a core.img for GPT made by the clone's own grub-mkimage (chroot) into that partition,
   and /boot/grub/x86_64-efi/core.efi as EFI/BOOT/BOOTX64.EFI on the ESP (when the kickstart has one);
8. the %post reports done (the server flips the node), then unmount, sync, `reboot -f`.
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
import uuid
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.images import gpt
from provision.images.bootsector import SECTOR, mbr_partition_table, write_bios_grub, write_bios_grub_gpt
from provision.lab.node import PostScript, kernel_arg_url

MIB_SECTORS = (1 << 20) // SECTOR
SYSIMAGE = "/mnt/sysimage"
BIN_DIR = Path("/run/provision/bin")
BIOS_GRUB = Path("boot/grub/i386-pc")
EFI_CORE = Path("boot/grub/x86_64-efi/core.efi")
EFI_LOADER = Path("EFI/BOOT/BOOTX64.EFI")
SWITCH_ROOT = 3  # exit status: /init is to switch_root into SYSIMAGE (the local disk's system)
EXT_MAGIC = 0xEF53
EXT_FSTYPES = ("ext2", "ext3", "ext4")
EFI_FIRMWARE = Path("/sys/firmware/efi")  # present when the kernel was started by UEFI firmware
BLKRRPART = 0x125F  # ioctl: re-read the partition table
POST_PHASES = {"provision: report ready": "ready (dollyC listening)", "provision: report cloning": "cloned",
               "provision: identity written": "identity"}
# A partition's role -> its MBR type and its GPT type GUID
MBR_TYPES = {"linux": 0x83, "swap": 0x82, "fat": 0x0C, "esp": 0xEF}
GPT_TYPES = {"linux": gpt.LINUX_FS, "swap": gpt.LINUX_SWAP, "fat": gpt.BASIC_DATA, "esp": gpt.ESP,
             "biosboot": gpt.BIOS_BOOT}
DISK_LABELS = ("gpt", "msdos")


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
    role: str       # a key of GPT_TYPES: linux, swap, fat, esp, biosboot
    mount: str      # mount point, swap or biosboot
    fstype: str
    label: str | None

    @property
    def is_esp(self) -> bool:
        return self.role == "esp"


@dataclass(frozen=True)
class DiskPlan:
    disk: str       # /dev/vda
    sectors: int    # the disk's size
    label: str      # gpt or msdos
    partitions: tuple[PlannedPartition, ...]

    def mounted_at(self, mount: str) -> PlannedPartition | None:
        return next((p for p in self.partitions if p.mount == mount), None)

    @property
    def biosboot(self) -> PlannedPartition | None:
        return next((p for p in self.partitions if p.role == "biosboot"), None)


def read_kickstart(text: str, source: str = "kickstart"):
    """The pykickstart handler (RHEL 9 syntax) of a kickstart's text; one pykickstart refuses is a
    ProvisionError naming `source` and pykickstart's reason."""
    from pykickstart.errors import KickstartError
    from pykickstart.parser import KickstartParser
    from pykickstart.version import RHEL9, makeVersion

    handler = makeVersion(RHEL9)
    try:
        KickstartParser(handler).readKickstartFromString(text)
    except KickstartError as exc:
        raise ProvisionError(f"{source}: {' '.join(str(exc).split())}") from None
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


def disk_label(handler, uefi: bool) -> str:
    """gpt or msdos: the kickstart's `clearpart --disklabel=`, else GPT for UEFI and MBR for BIOS."""
    label = (handler.clearpart.disklabel or "").lower() or ("gpt" if uefi else "msdos")
    if label not in DISK_LABELS:
        raise ProvisionError(f"kickstart clearpart --disklabel={label}: the installer writes gpt or msdos")
    return label


def partition_role(mount: str, fstype: str) -> str:
    if mount == "biosboot" or fstype == "biosboot":
        return "biosboot"
    if mount == "/boot/efi" or fstype == "efi":
        return "esp"
    if mount == "swap" or fstype == "swap":
        return "swap"
    return "fat" if fstype == "vfat" else "linux"


def plan_disk(handler, disk_sectors: int, uefi: bool) -> DiskPlan:
    """The layout of the kickstart's `part` lines on a disk of `disk_sectors` (GPT or MBR, see disk_label):
    partitions in kickstart order from 1 MiB, each a whole number of MiB; `--grow` parts share the rest
    equally. On an MBR disk a `biosboot` part is left out (GRUB's core.img goes into the MBR gap)."""
    disk = kickstart_disk(handler)
    label = disk_label(handler, uefi)
    parts = [p for p in handler.partition.partitions
             if label == "gpt" or partition_role(p.mountpoint, (p.fstype or "").lower()) != "biosboot"]
    if label == "msdos" and len(parts) > 4:
        raise ProvisionError(f"kickstart has {len(parts)} part lines; an MBR holds four primary partitions "
                             "(clearpart --disklabel=gpt holds 128)")
    if label == "gpt" and len(parts) > gpt.ENTRIES:
        raise ProvisionError(f"kickstart has {len(parts)} part lines; a GPT holds {gpt.ENTRIES}")
    end = gpt.usable_lbas(disk_sectors)[1] + 1 if label == "gpt" else disk_sectors
    total_mib = (end - MIB_SECTORS) // MIB_SECTORS  # the first MiB holds the table (and GRUB's core.img)
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
        planned.append(PlannedPartition(number, partition_device(disk, number), start, mib * MIB_SECTORS,
                                        partition_role(part.mountpoint, fstype), part.mountpoint, fstype,
                                        part.label or None))
        start += mib * MIB_SECTORS
    plan = DiskPlan(disk, disk_sectors, label, tuple(planned))
    if label == "gpt" and not uefi and handler.bootloader.location != "none" and plan.biosboot is None:
        raise ProvisionError(
            f"{disk}: a GPT disk on a BIOS machine needs GRUB's core.img in a biosboot partition "
            "(part biosboot --fstype=biosboot --size=1), and the kickstart has none: add one, or use "
            "clearpart --disklabel=msdos (or bootloader --location=none)")
    format_commands(plan)  # refuses file systems the installer cannot make or mount before the disk is touched
    return plan


def mbr(plan: DiskPlan) -> bytes:
    """The plan's MBR: the root partition (else the first) marked bootable."""
    boot = plan.mounted_at("/") or plan.partitions[0]
    return mbr_partition_table([(p.start, p.sectors, MBR_TYPES[p.role], p is boot) for p in plan.partitions])


def partition_table(plan: DiskPlan, disk_guid: uuid.UUID) -> gpt.GptTables:
    """What goes at the start and at the end of the plan's disk: a GPT (named by the labels; the partitions'
    GUIDs derived from `disk_guid`), or the MBR and zeros over the last sectors (no stale backup GPT)."""
    if plan.label == "msdos":
        return gpt.GptTables(mbr(plan), bytes((1 + gpt.ENTRY_SECTORS) * SECTOR))
    return gpt.gpt_tables(plan.sectors, [
        gpt.GptPartition(p.start, p.sectors, GPT_TYPES[p.role], uuid.uuid5(disk_guid, f"partition {p.number}"),
                         p.label or "") for p in plan.partitions], disk_guid)


def format_commands(plan: DiskPlan) -> list[list[str]]:
    """Commands that make the file systems, except on `/` (the ring writes the image raw onto it, then the
    %post mounts it and provision-grow grows it: ext2/3/4 only) and on a biosboot partition (GRUB's, no
    file system)."""
    commands = []
    for part in plan.partitions:
        if part.mount == "/" and part.fstype not in EXT_FSTYPES:
            raise ProvisionError(f"kickstart part / ({part.device}): the root receives the image and is mounted "
                                 f"and grown as ext4, ext3 or ext2 (the installer's kernel has no {part.fstype})")
        if part.mount == "/" or part.role == "biosboot":
            continue
        if part.role == "swap":
            commands.append(["mkswap", *(["-L", part.label] if part.label else []), part.device])
        elif part.fstype in ("vfat", "efi"):
            commands.append(["mkdosfs", *(["-n", part.label] if part.label else []), part.device])
        elif part.fstype in EXT_FSTYPES:
            commands.append(["mke2fs", "-t", part.fstype, "-F", "-q", *(["-L", part.label] if part.label else []),
                             part.device])
        else:
            raise ProvisionError(f"kickstart part {part.mount} ({part.device}): the installer cannot make "
                                 f"{part.fstype} (it makes ext4, ext3, ext2, vfat and swap; the root partition "
                                 "receives the image)")
    return commands


def ext_blocks(superblock: bytes) -> tuple[int, int] | None:
    """(block count, block size) of an ext2/3/4 superblock (the 1 KiB at offset 1024), None if it is none."""
    if len(superblock) < 0x158 or int.from_bytes(superblock[56:58], "little") != EXT_MAGIC:
        return None
    count = int.from_bytes(superblock[4:8], "little")
    if int.from_bytes(superblock[0x60:0x64], "little") & 0x80:  # INCOMPAT_64BIT: the high half counts
        count |= int.from_bytes(superblock[0x150:0x154], "little") << 32
    return count, 1024 << int.from_bytes(superblock[24:28], "little")


def grow_commands(device: str) -> list[list[str]]:
    """Check the file system (it must be clean for resize2fs), then grow it to its device's size."""
    return [["e2fsck", "-f", "-y", device], ["resize2fs", device]]


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
    """Write the plan's table (the gap before the first partition zeroed, the backup GPT at the end, or
    zeros there on an MBR disk), re-read it, wait for the partition devices, make the file systems."""
    tables = partition_table(plan, uuid.uuid4())
    with open(plan.disk, "r+b") as disk:
        disk.write(tables.head.ljust(plan.partitions[0].start * SECTOR, b"\0"))
        disk.seek((plan.sectors - tables.tail_sectors) * SECTOR)
        disk.write(tables.tail)
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


def read_ext_blocks(device: str) -> tuple[int, int] | None:
    try:
        with open(device, "rb") as dev:
            dev.seek(1024)
            return ext_blocks(dev.read(1024))
    except OSError:
        return None


def grow(device: str) -> str:
    """Grow the ext2/3/4 file system on `device` to fill it (e2fsck -fy, resize2fs); what was done."""
    before = read_ext_blocks(device)
    if before is None:
        return f"{device}: no ext2/3/4 file system, left as it is"
    check, resize = grow_commands(device)
    proc = subprocess.run(check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode not in (0, 1):  # 1: errors corrected
        raise ProvisionError(f"`{' '.join(check)}` failed (exit {proc.returncode}): {proc.stdout.strip()[-2000:]}")
    run(resize)
    (blocks, size), (grown, _) = before, read_ext_blocks(device)
    return f"grown {device}: {blocks * size >> 20} MiB -> {grown * size >> 20} MiB"


@dataclass(frozen=True)
class BootTarget:
    """Where `provision-bootloader` puts GRUB, from the installer's disk plan."""
    esp: str | None = None                   # the ESP's device (UEFI loader)
    gpt: bool = False                        # a GPT disk: BIOS GRUB only into a biosboot partition
    biosboot: tuple[int, int] | None = None  # its (start LBA, sectors)
    root_number: int = 1                     # the root partition's number (GRUB's prefix on a GPT disk)

    @classmethod
    def of(cls, plan: DiskPlan) -> BootTarget:
        root, biosboot = plan.mounted_at("/"), plan.biosboot
        return cls(next((p.device for p in plan.partitions if p.is_esp), None), plan.label == "gpt",
                   (biosboot.start, biosboot.sectors) if biosboot else None, root.number if root else 1)


def gpt_core_command(root_number: int, output: str) -> list[str]:
    """grub-mkimage (run in the clone: its own GRUB and modules from grub-pc-bin; /boot/grub/i386-pc has
    no kernel.img) for a BIOS core.img that reads /boot/grub from GPT partition `root_number`."""
    return ["grub-mkimage", "-O", "i386-pc", "-d", "/usr/lib/grub/i386-pc", "-p", f"(hd0,gpt{root_number})/boot/grub",
            "-o", output, "biosdisk", "part_gpt", "ext2"]


def install_bootloader(sysimage: Path, disk: str, target: BootTarget = BootTarget()) -> list[str]:
    """The clone's own GRUB images onto the disk: BIOS (MBR + gap; on a GPT disk, whose header is in that
    gap, a core.img for GPT into its biosboot partition, or nothing) and, with an ESP, the UEFI loader.
    Returns what was placed."""
    placed = []
    bios = sysimage / BIOS_GRUB
    if (bios / "boot.img").is_file() and (bios / "core.img").is_file():
        boot_img = (bios / "boot.img").read_bytes()
        if not target.gpt:
            with open(disk, "r+b") as out:
                write_bios_grub(out, boot_img, (bios / "core.img").read_bytes())
                out.flush()
                os.fsync(out.fileno())
            placed.append(f"BIOS GRUB in {disk}")
        elif target.biosboot is not None:
            core = Path("tmp") / "provision-core-gpt.img"
            run(["chroot", str(sysimage), *gpt_core_command(target.root_number, f"/{core}")])
            try:
                with open(disk, "r+b") as out:
                    write_bios_grub_gpt(out, boot_img, (sysimage / core).read_bytes(), *target.biosboot)
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                (sysimage / core).unlink(missing_ok=True)
            placed.append(f"BIOS GRUB in {disk} (core.img for GPT in its biosboot partition)")
    if target.esp is not None and (sysimage / EFI_CORE).is_file():
        esp_dir = sysimage / "boot" / "efi"
        esp_dir.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "vfat", target.esp, str(esp_dir)])
        try:
            (esp_dir / EFI_LOADER).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sysimage / EFI_CORE, esp_dir / EFI_LOADER)
        finally:
            run(["umount", str(esp_dir)])
        placed.append(f"{EFI_LOADER} on {target.esp}")
    if not placed:
        raise ProvisionError(f"no GRUB images in the clone ({sysimage / BIOS_GRUB}, {sysimage / EFI_CORE})"
                             + (" for this GPT disk (BIOS GRUB needs a biosboot partition)" if target.gpt else ""))
    return placed


def make_tools(plan: DiskPlan) -> Path:
    """`dollyC`, `provision-grow` and `provision-bootloader` for the %post, as small Python scripts on PATH."""
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    scripts = {
        "dollyC": "from dolly_core.cli import client_main\nsys.exit(client_main())\n",
        "provision-grow": "from provision.installer import grow_main\nsys.exit(grow_main(sys.argv[1:]))\n",
        "provision-bootloader": ("from provision.installer import BootTarget, bootloader_main\n"
                                 f"sys.exit(bootloader_main(sys.argv[1:], {BootTarget.of(plan)!r}))\n"),
    }
    for name, body in scripts.items():
        path = BIN_DIR / name
        path.write_text(f"#!{sys.executable}\nimport sys\n{body}")
        path.chmod(0o755)
    return BIN_DIR


def bootloader_main(argv: list[str], target: BootTarget = BootTarget()) -> int:
    if len(argv) != 2:
        print("usage: provision-bootloader SYSIMAGE DISK", file=sys.stderr)
        return 2
    placed = install_bootloader(Path(argv[0]), argv[1], target)
    say("bootloader: " + "; ".join(placed))
    return 0


def grow_main(argv: list[str]) -> int:
    """`provision-grow DEVICE...`: grow each received ext2/3/4 file system to fill its partition."""
    if not argv:
        print("usage: provision-grow DEVICE...", file=sys.stderr)
        return 2
    for device in argv:
        say(f"growing {device} (e2fsck -fy, resize2fs)")
        try:
            say(grow(device))
        except ProvisionError as exc:
            say(f"FAILED: {exc}")
            return 1
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
    handler = read_kickstart(http_get(cmd.kickstart_url).decode(), cmd.kickstart_url)
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
    plan = plan_disk(handler, disk_sectors(kickstart_disk(handler)), EFI_FIRMWARE.is_dir())
    partition(plan)
    say(f"partitioned ({plan.label}) "
        + ", ".join(f"{p.device} {p.mount} {p.sectors // MIB_SECTORS} MiB" for p in plan.partitions))
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
    if argv[:1] == ["grow"]:
        return grow_main(argv[1:])
    try:
        install(Path("/proc/cmdline").read_text())
    except ProvisionError as exc:
        say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
