"""The disk plan: the kickstart's `part` lines laid out on the node's disk (pure; nothing is written here).

A GPT or an MBR table (`clearpart --disklabel=gpt|msdos` if given, else GPT on a UEFI machine and MBR on a
BIOS one), partitions 1 MiB aligned in kickstart order, `--grow` parts sharing what is left; a BIOS machine
on a GPT disk needs a biosboot part for GRUB's core.img. The root partition stays unformatted (the ring
writes the image raw onto it; ext2/3/4 only), ext2/3/4 get mke2fs, vfat mkdosfs, swap mkswap; other file
systems (xfs, btrfs) are refused when the disk is planned, before it is touched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from provision.errors import ProvisionError
from provision.images import gpt
from provision.images.bootsector import SECTOR, mbr_partition_table
from provision.installer.ext import EXT_FSTYPES

MIB_SECTORS = (1 << 20) // SECTOR
# A partition's role -> its MBR type and its GPT type GUID
MBR_TYPES = {"linux": 0x83, "swap": 0x82, "fat": 0x0C, "esp": 0xEF}
GPT_TYPES = {"linux": gpt.LINUX_FS, "swap": gpt.LINUX_SWAP, "fat": gpt.BASIC_DATA, "esp": gpt.ESP,
             "biosboot": gpt.BIOS_BOOT}
DISK_LABELS = ("gpt", "msdos")


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
    parts = _table_parts(handler, label)
    end = gpt.usable_lbas(disk_sectors)[1] + 1 if label == "gpt" else disk_sectors
    total_mib = (end - MIB_SECTORS) // MIB_SECTORS  # the first MiB holds the table (and GRUB's core.img)
    planned, start = [], MIB_SECTORS
    for number, (part, mib) in enumerate(zip(parts, _sizes_mib(parts, total_mib, disk)), 1):
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


def _table_parts(handler, label: str) -> list:
    """The `part` lines that get a partition in a `label` table (an MBR has no biosboot), within its limit."""
    parts = [p for p in handler.partition.partitions
             if label == "gpt" or partition_role(p.mountpoint, (p.fstype or "").lower()) != "biosboot"]
    if label == "msdos" and len(parts) > 4:
        raise ProvisionError(f"kickstart has {len(parts)} part lines; an MBR holds four primary partitions "
                             "(clearpart --disklabel=gpt holds 128)")
    if label == "gpt" and len(parts) > gpt.ENTRIES:
        raise ProvisionError(f"kickstart has {len(parts)} part lines; a GPT holds {gpt.ENTRIES}")
    return parts


def _sizes_mib(parts: list, total_mib: int, disk: str) -> list[int]:
    """Each part's size in MiB: its --size, and for `--grow` parts an equal share of what the others leave
    (the last one takes the remainder), at most --maxsize."""
    fixed = sum(int(p.size or 0) for p in parts)
    growers = [p for p in parts if p.grow]
    spare = total_mib - fixed
    if spare < 0:
        raise ProvisionError(f"{disk}: the kickstart's parts need {fixed} MiB, the disk has {total_mib} MiB")
    sizes = []
    for part in parts:
        mib = int(part.size or 0)
        if part.grow:
            share = spare // len(growers)
            mib += share + (spare - share * len(growers) if part is growers[-1] else 0)
            if part.maxSizeMB:
                mib = min(mib, max(int(part.maxSizeMB), int(part.size or 0)))
        if mib <= 0:
            raise ProvisionError(f"kickstart part {part.mountpoint}: size {part.size} MiB")
        sizes.append(mib)
    return sizes


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
