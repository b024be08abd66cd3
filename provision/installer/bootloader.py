"""`provision-bootloader SYSIMAGE DISK` (called by the %post before it reports done): the clone's own GRUB
images onto the disk, no GRUB tools -- boot.img + core.img from /boot/grub/i386-pc into the MBR gap (BIOS,
MBR disk), or on a GPT disk with a biosboot partition a core.img for GPT made by the clone's own
grub-mkimage (chroot) into that partition, and /boot/grub/x86_64-efi/core.efi as EFI/BOOT/BOOTX64.EFI on
the ESP (when the kickstart has one)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from provision.errors import ProvisionError
from provision.images.bootsector import write_bios_grub, write_bios_grub_gpt
from provision.installer.console import say
from provision.installer.disk_plan import DiskPlan
from provision.installer.programs import run

BIOS_GRUB = Path("boot/grub/i386-pc")
EFI_CORE = Path("boot/grub/x86_64-efi/core.efi")
EFI_LOADER = Path("EFI/BOOT/BOOTX64.EFI")


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
    placed = [*_bios_grub(sysimage, disk, target), *_efi_loader(sysimage, target)]
    if not placed:
        raise ProvisionError(f"no GRUB images in the clone ({sysimage / BIOS_GRUB}, {sysimage / EFI_CORE})"
                             + (" for this GPT disk (BIOS GRUB needs a biosboot partition)" if target.gpt else ""))
    return placed


def _bios_grub(sysimage: Path, disk: str, target: BootTarget) -> list[str]:
    bios = sysimage / BIOS_GRUB
    if not ((bios / "boot.img").is_file() and (bios / "core.img").is_file()):
        return []
    boot_img = (bios / "boot.img").read_bytes()
    if not target.gpt:
        _onto_disk(disk, lambda out: write_bios_grub(out, boot_img, (bios / "core.img").read_bytes()))
        return [f"BIOS GRUB in {disk}"]
    if target.biosboot is None:
        return []
    core = Path("tmp") / "provision-core-gpt.img"
    run(["chroot", str(sysimage), *gpt_core_command(target.root_number, f"/{core}")])
    try:
        core_img = (sysimage / core).read_bytes()
        _onto_disk(disk, lambda out: write_bios_grub_gpt(out, boot_img, core_img, *target.biosboot))
    finally:
        (sysimage / core).unlink(missing_ok=True)
    return [f"BIOS GRUB in {disk} (core.img for GPT in its biosboot partition)"]


def _onto_disk(disk: str, write: Callable[[BinaryIO], None]) -> None:
    with open(disk, "r+b") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())


def _efi_loader(sysimage: Path, target: BootTarget) -> list[str]:
    if target.esp is None or not (sysimage / EFI_CORE).is_file():
        return []
    esp_dir = sysimage / "boot" / "efi"
    esp_dir.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "vfat", target.esp, str(esp_dir)])
    try:
        (esp_dir / EFI_LOADER).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sysimage / EFI_CORE, esp_dir / EFI_LOADER)
    finally:
        run(["umount", str(esp_dir)])
    return [f"{EFI_LOADER} on {target.esp}"]


def bootloader_main(argv: list[str], target: BootTarget = BootTarget()) -> int:
    if len(argv) != 2:
        print("usage: provision-bootloader SYSIMAGE DISK", file=sys.stderr)
        return 2
    placed = install_bootloader(Path(argv[0]), argv[1], target)
    say("bootloader: " + "; ".join(placed))
    return 0
