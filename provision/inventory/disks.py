"""A node's disk in the inventory: its device, label and partitions, and their numbers as the installer
gives them."""

from __future__ import annotations

import re
from typing import Any

from provision.fields import Fields
from provision.inventory.schema import default, keys, required
from provision.inventory.sections import MOUNT
from provision.model import BIOSBOOT, Disk, DiskLabel, Partition

# What the installer makes (ext2/3/4, vfat, swap) and its kernel mounts (the root receives the image raw, then
# the %post mounts it): provision/installer/disk_plan.py format_commands. xfs and btrfs have no path through it.
FSTYPES = ("ext2", "ext3", "ext4", "vfat", "swap", BIOSBOOT)
UNSUPPORTED_FSTYPES = ("xfs", "btrfs")
_DEVICE = re.compile(r"^[a-z][a-z0-9]*$")
_FS_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,12}$")
_OPTIONS = re.compile(r"^[A-Za-z0-9_=,.:-]+$")


class Disks:
    """Reads a `disk:` mapping into a Disk, or None after recording its problems in `fields`."""

    def __init__(self, fields: Fields):
        self.f = fields

    def disk(self, path: tuple, data: Any) -> Disk | None:
        m = self.f.mapping(path, data, keys(Disk), required(Disk))
        if m is None:
            return None
        device = self.f.text(path + ("device",), m.get("device", default(Disk, "device")), _DEVICE,
                             "disk device name (like sda)")
        label = self.f.checked(m, path, "label", self.f.choice, DiskLabel)
        items = self.f.checked(m, path, "partitions", self.f.sequence)
        if items is None:
            return None
        parts = [self.partition(path + ("partitions", i), item) for i, item in enumerate(items)]
        if None in parts or device is None or ("label" in m and label is None):
            return None
        mounts = [p.mount for p in parts]
        if "/" not in mounts:
            self.f.problem(path + ("partitions",), "no partition is mounted on /")
            return None
        self.check_unique(path, parts, label)
        return Disk(device=device, label=label, partitions=tuple(parts))

    def check_unique(self, path: tuple, parts: list[Partition], label: DiskLabel | None) -> None:
        """Mount points (but swap) and labels once each; one biosboot partition, and only on a GPT disk."""
        seen_mounts: set[str] = set()
        seen_labels: set[str] = set()
        for i, part in enumerate(parts):
            where = path + ("partitions", i)
            if part.is_biosboot and (label is DiskLabel.MSDOS or part.mount in seen_mounts):
                self.f.problem(where + ("fstype",), "a second biosboot partition (a disk has one)"
                               if part.mount in seen_mounts else "a biosboot partition needs label: gpt (on an msdos "
                               "disk GRUB's core.img goes into the gap after the MBR)", part.fstype)
            elif part.mount in seen_mounts and not part.is_swap:
                self.f.problem(where + ("mount",), "mount point used twice", part.mount)
            if part.label in seen_labels:
                self.f.problem(where + ("label",), "label used twice", part.label)
            seen_mounts.add(part.mount)
            seen_labels.add(part.label)

    def partition(self, path: tuple, data: Any) -> Partition | None:
        m = self.f.mapping(path, data, keys(Partition), required(Partition))
        if m is None or m.get("fstype") is None:
            return None
        fstype = self.fstype(path + ("fstype",), m["fstype"])
        if fstype == BIOSBOOT:
            return self.biosboot_partition(path, m)
        for key in ("mount", "size"):
            if m.get(key) is None:
                self.f.problem(path + (key,), "missing required field")
        if fstype is None or m.get("mount") is None or m.get("size") is None:
            return None
        mount = m["mount"]
        if mount != "swap":
            mount = self.f.text(path + ("mount",), mount, MOUNT, "mount point (absolute path or swap)")
        if mount is not None and fstype is not None and (mount == "swap") != (fstype == "swap"):
            self.f.problem(path + ("fstype",), "swap goes with mount: swap (and only there)", fstype)
            fstype = None
        size = self.f.integer(path + ("size",), m["size"], 1, 1 << 30)
        grow = self.f.boolean(path + ("grow",), m.get("grow", default(Partition, "grow")))
        default_label = "root" if mount == "/" else (mount or "").strip("/").replace("/", "-")[:12] or "part"
        label = self.f.text(path + ("label",), m.get("label", default_label), _FS_LABEL, "label (1-12 of A-Za-z0-9_-)")
        options = self.f.text(path + ("options",), m.get("options", default(Partition, "options")), _OPTIONS,
                              "mount options")
        if None in (mount, fstype, size, grow, label, options):
            return None
        return Partition(mount, fstype, size, grow, label, options)

    def fstype(self, path: tuple, value: Any) -> str | None:
        """One the installer makes and its kernel mounts (FSTYPES)."""
        fstype = self.f.text(path, value)
        if fstype in UNSUPPORTED_FSTYPES:
            self.f.problem(path, f"the installer can neither make nor mount {fstype} (supported: "
                           f"{', '.join(FSTYPES)})", fstype)
            return None
        if fstype is not None and fstype not in FSTYPES:
            self.f.problem(path, f"expected one of {', '.join(FSTYPES)}", fstype)
            return None
        return fstype

    def biosboot_partition(self, path: tuple, m: dict) -> Partition | None:
        """GRUB's partition on a GPT disk of a BIOS machine: `{fstype: biosboot}` (size 1 MiB by default),
        no mount point, no file system, not grown."""
        ok = True
        if m.get("mount", BIOSBOOT) != BIOSBOOT:
            self.f.problem(path + ("mount",), "a biosboot partition is not mounted (leave mount out)", m["mount"])
            ok = False
        for key in ("grow", "options"):
            if m.get(key, default(Partition, key)) != default(Partition, key):
                self.f.problem(path + (key,), f"a biosboot partition takes no {key}", m[key])
                ok = False
        size = self.f.integer(path + ("size",), m.get("size", 1), 1, 1 << 30)
        label = self.f.text(path + ("label",), m.get("label", BIOSBOOT), _FS_LABEL, "label (1-12 of A-Za-z0-9_-)")
        if not ok or None in (size, label):
            return None
        return Partition(BIOSBOOT, BIOSBOOT, size, label=label)


def numbered_partitions(disk: Disk, label: DiskLabel) -> list[tuple[int, Partition]]:
    """(index in disk.partitions, partition) for partition numbers 1, 2, ...: as the installer numbers the
    kickstart's part lines (in the order listed; an msdos disk leaves a biosboot part out; no logical ones)."""
    return [(i, p) for i, p in enumerate(disk.partitions) if label is DiskLabel.GPT or not p.is_biosboot]


def partition_number(device: str, target: str) -> int | None:
    """N when `target` names partition N of /dev/`device` (/dev/sda2; /dev/nvme0n1p2 for a device name ending
    in a digit, as provision.installer.partition_device names them), else None."""
    prefix = f"/dev/{device}{'p' if device[-1].isdigit() else ''}"
    number = target[len(prefix):] if target.startswith(prefix) else ""
    return int(number) if number.isascii() and number.isdigit() and number[0] != "0" else None
