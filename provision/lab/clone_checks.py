"""What demo-vm checks of a clone from outside: its golden files' digests, partition table, root size and
booted kernel line (one command over SSH, parsed), and how often it fetched the installer (the install's log)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from provision.model import Inventory, Transport

# Files of the golden image whose bytes every clone must keep (its /etc/hostname, fstab, ... are personalised).
MARKER_FILES = ("/etc/provision-golden", "/usr/sbin/sshd", "/usr/bin/bash", "/etc/ssh/sshd_config", "/vmlinuz")


def golden_digests(rootfs: Path, paths: Sequence[str] = MARKER_FILES) -> dict[str, str]:
    """sha256 of files inside the golden ext4 image, read with debugfs (no mount), symlinks followed once."""
    digests = {}
    for path in paths:
        target = subprocess.run(["debugfs", "-R", f"stat {path}", str(rootfs)], capture_output=True,
                                text=True).stdout
        m = re.search(r'Fast link dest: "([^"]+)"', target)
        real = m.group(1) if m else path
        real = real if real.startswith("/") else str(Path(path).parent / real)
        data = subprocess.run(["debugfs", "-R", f"cat {real}", str(rootfs)], capture_output=True).stdout
        digests[path] = hashlib.sha256(data).hexdigest()
    return digests


# one line `disk <table> <root partition bytes> <root file system bytes>` (dumpe2fs: block count x size)
DISK_COMMAND = ("root=$(findmnt -no SOURCE /); echo disk $(blkid -o value -s PTTYPE /dev/$(lsblk -no PKNAME $root))"
                " $(blockdev --getsize64 $root)"
                " $(dumpe2fs -h $root 2>/dev/null | awk '/^Block (count|size):/ {n = n ? n * $3 : $3} END {printf \"%.0f\\n\", n}')")
CHECK_COMMAND = f"sha256sum {' '.join(MARKER_FILES)}; cat /proc/cmdline; {DISK_COMMAND}"


def parse_checks(output: str) -> dict[str, tuple[dict[str, str], str]]:
    """`provision run NODES -- CHECK_COMMAND` output -> per node: ({path: sha256}, the booted kernel's
    command line)."""
    checks = {}
    for block in re.split(r"^== ", output, flags=re.M)[1:]:
        lines = block.splitlines()
        sums = {}
        for line in lines[1:]:
            m = re.fullmatch(r"([0-9a-f]{64})  (/\S*)", line)
            if m:
                sums[m.group(2)] = m.group(1)
        cmdline = next((line for line in lines[1:] if "BOOT_IMAGE=" in line or "root=" in line), "")
        checks[lines[0].split()[0]] = (sums, cmdline)
    return checks


def parse_disks(output: str) -> dict[str, tuple[str, int, int]]:
    """`provision run NODES -- CHECK_COMMAND` output -> per node: (partition table, root partition bytes,
    root file system bytes), from its DISK_COMMAND line."""
    disks = {}
    for block in re.split(r"^== ", output, flags=re.M)[1:]:
        m = re.search(r"^disk (\w+) (\d+) (\d+)$", block, re.M)
        if m:
            disks[block.split()[0]] = (m.group(1), int(m.group(2)), int(m.group(3)))
    return disks


def installer_fetches(inv: Inventory, ip: str, install_output: str) -> int:
    """Whole fetches of the installer's initrd by `ip` in the log of `provision install -v`: from the HTTP
    server's log lines when boot.transport is http (a ranged re-read does not count), else from the TFTP's."""
    initrd = re.escape(inv.boot.initrd_tftp_path)
    if inv.boot.transport is Transport.HTTP:
        line = rf"http: sent /?{initrd} to {re.escape(ip)}: \d+ bytes in [0-9.]+ s$"
    else:
        line = rf"tftp: sent /?{initrd} to {re.escape(ip)}:"
    return len(re.findall(line, install_output, re.M))
