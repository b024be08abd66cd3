"""The disk plan written onto the node's disk: its table, the partition devices, their file systems."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from pathlib import Path

from provision.errors import ProvisionError
from provision.images.bootsector import SECTOR
from provision.installer.disk_plan import DiskPlan, format_commands, partition_table
from provision.installer.programs import run

BLKRRPART = 0x125F  # ioctl: re-read the partition table


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
