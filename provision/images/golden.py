"""The golden image: a small bootable Debian with openssh-server, made with mmdebstrap from this machine's
Debian sources, as an ext4 partition image (what the ring clones onto a node's root partition) and as a
whole BIOS-bootable disk image (MBR, that partition at 1 MiB, GRUB) -- all without loop devices or mounts.

    rootfs.ext4   mkfs.ext4 -L root -d <tree>: the file system filled from the directory tree
    disk.raw      an MBR partition table + rootfs.ext4 at 1 MiB + GRUB: boot.img in the MBR, core.img (grub-mkimage
                  i386-pc, prefix (hd0,msdos1)/boot/grub) right after it; GRUB's modules in /boot/grub/i386-pc

The image's own initramfs holds only the listed modules (initramfs-tools MODULES=list plus a hook):
auto-detection would look at the build host. Downloaded packages are kept in <cache>/golden-debs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.images import debs
from provision.images.cache import Cache

BUILDER_VERSION = 1
PACKAGES = ("systemd-sysv", "udev", "linux-image-amd64", "initramfs-tools", "openssh-server", "ifupdown",
            "isc-dhcp-client", "iproute2", "e2fsprogs", "grub2-common", "grub-pc-bin", "grub-efi-amd64-bin")
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "ata_piix", "ahci", "sd_mod", "ext4")
# Left out of every package (dpkg path-exclude): documentation, translations, and kernel modules for
# hardware a cluster node does not have (graphics, sound, media, wireless, InfiniBand, sensors, staging).
PATH_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 *(f"/lib/modules/*/kernel/{tree}/*" for tree in (
                     "sound", "drivers/gpu", "drivers/media", "drivers/net/wireless", "drivers/infiniband",
                     "drivers/iio", "drivers/staging", "drivers/bluetooth", "net/wireless", "net/bluetooth")))
PATH_INCLUDES = ("/usr/share/doc/*/copyright",)
ROOTFS_MIB = 1536
LABEL = "root"
PART_OFFSET = 1 << 20  # the root partition starts at 1 MiB (sector 2048)
MARKER_FILE = "etc/provision-golden"
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2")  # enough for core.img to read /boot/grub from the root

INITRAMFS_HOOK = """#!/bin/sh
# provision: the golden image's initramfs gets these modules (MODULES=list: nothing detected on the build host)
case "$1" in prereqs) exit 0;; esac
. /usr/share/initramfs-tools/hook-functions
for module in {modules}; do manual_add_modules "$module"; done
"""
GRUB_CFG = """serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry "Debian (provision golden image)" {{
  search --no-floppy --label {label} --set=root
  linux /vmlinuz root=LABEL={label} ro console=ttyS0,115200 net.ifnames=0
  initrd /initrd.img
}}
"""
INTERFACES = "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n"


@dataclass(frozen=True)
class GoldenImage:
    rootfs: Path  # ext4 partition image, label `root`
    disk: Path    # BIOS-bootable disk image holding rootfs at PART_OFFSET
    marker: str   # the text of /etc/provision-golden (names this build)


def debian_sources() -> Path:
    for path in SOURCES:
        if path.is_file():
            return path
    raise ProvisionError(f"no Debian apt sources found (looked at {', '.join(map(str, SOURCES))})")


def debian_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise ProvisionError("/etc/os-release names no VERSION_CODENAME (the Debian suite to build from)")


def golden_image(env: Mapping[str, str] = os.environ, rootfs_mib: int = ROOTFS_MIB) -> GoldenImage:
    """The golden image, from the cache or built into it (mmdebstrap; needs root)."""
    cache = Cache.of(env)
    sources = debian_sources()
    recipe = {"artifact": "golden", "builder": BUILDER_VERSION, "suite": debian_suite(),
              "sources": hashlib.sha256(sources.read_bytes()).hexdigest()[:16], "packages": list(PACKAGES),
              "initramfs_modules": list(INITRAMFS_MODULES), "rootfs_mib": rootfs_mib,
              "path_excludes": list(PATH_EXCLUDES), "path_includes": list(PATH_INCLUDES)}
    marker = f"provision golden image {debian_suite()} {hashlib.sha256(repr(sorted(recipe.items())).encode()).hexdigest()[:16]}\n"

    def make(work: Path) -> None:
        tree = work / "tree"
        _bootstrap(tree, work / "overlay", cache.root / "golden-debs", sources)
        _configure(tree, marker)
        rootfs = work / "rootfs.ext4"
        debs.run(["mkfs.ext4", "-q", "-L", LABEL, "-d", str(tree), "-F", str(rootfs), f"{rootfs_mib}M"],
                 "mkfs.ext4 -d")
        _disk(work / "disk.raw", rootfs, tree / "usr" / "lib" / "grub" / "i386-pc", work)
        for scratch in (tree, work / "overlay"):
            shutil.rmtree(scratch)
        (work / "core.img").unlink()

    entry = cache.build("golden", recipe, make)
    return GoldenImage(entry / "rootfs.ext4", entry / "disk.raw", marker)


def _bootstrap(tree: Path, overlay: Path, deb_cache: Path, sources: Path) -> None:
    hook = overlay / "etc" / "initramfs-tools" / "hooks" / "provision-modules"
    hook.parent.mkdir(parents=True)
    hook.write_text(INITRAMFS_HOOK.format(modules=" ".join(INITRAMFS_MODULES)))
    hook.chmod(0o755)
    (overlay / "etc" / "initramfs-tools" / "conf.d").mkdir()
    (overlay / "etc" / "initramfs-tools" / "conf.d" / "provision").write_text("MODULES=list\n")
    deb_cache.mkdir(parents=True, exist_ok=True)
    debs.run(["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory", "--quiet",
              f"--include={','.join(PACKAGES)}",
              *(f"--dpkgopt=path-exclude={path}" for path in PATH_EXCLUDES),
              *(f"--dpkgopt=path-include={path}" for path in PATH_INCLUDES),
              "--skip=essential/unlink",
              f'--setup-hook=mkdir -p "$1"/var/cache/apt/archives && cp -a {overlay}/. "$1"/',
              f"--setup-hook=sync-in {deb_cache} /var/cache/apt/archives/",
              f"--customize-hook=sync-out /var/cache/apt/archives {deb_cache}",
              debian_suite(), str(tree), str(sources)], "mmdebstrap", env={**os.environ, "TMPDIR": str(tree.parent)})


def _configure(tree: Path, marker: str) -> None:
    """What makes the tree a bootable, recognisable golden image (the kickstart gives each clone its identity)."""
    (tree / "etc" / "fstab").write_text(f"LABEL={LABEL} / ext4 defaults 0 1\n")
    (tree / "etc" / "hostname").write_text("golden\n")
    (tree / "etc" / "network" / "interfaces").write_text(INTERFACES)
    (tree / MARKER_FILE).write_text(marker)
    grub = tree / "boot" / "grub"
    shutil.copytree(tree / "usr" / "lib" / "grub" / "i386-pc", grub / "i386-pc", dirs_exist_ok=True)
    (grub / "grub.cfg").write_text(GRUB_CFG.format(label=LABEL))
    for leftover in (tree / "var" / "lib" / "apt" / "lists").glob("*_*"):
        leftover.unlink()


def mbr_partition_table(start: int, sectors: int) -> bytes:
    """The first sector of a disk with one bootable Linux partition (type 0x83) at LBA `start` of `sectors`
    sectors: no boot code (zeros), one partition entry with LBA fields (CHS marked unused), 0x55AA."""
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def _disk(disk: Path, rootfs: Path, grub_dir: Path, work: Path) -> None:
    """MBR disk image: one bootable Linux partition at 1 MiB holding `rootfs`, GRUB in front of it."""
    size = PART_OFFSET + rootfs.stat().st_size
    with open(disk, "wb") as out:
        out.truncate(size)
    with open(disk, "r+b") as out:
        out.write(mbr_partition_table(PART_OFFSET // 512, rootfs.stat().st_size // 512))
    debs.run(["dd", f"if={rootfs}", f"of={disk}", "bs=1M", f"seek={PART_OFFSET >> 20}", "conv=notrunc,sparse",
              "status=none"], "dd rootfs into the disk image")
    core = work / "core.img"
    debs.run(["grub-mkimage", "-O", "i386-pc", "-d", str(grub_dir), "-p", "(hd0,msdos1)/boot/grub",
              "-o", str(core), *GRUB_MODULES], "grub-mkimage")
    core_bytes = core.read_bytes()
    if 512 + len(core_bytes) > PART_OFFSET:
        raise ProvisionError(f"GRUB core.img ({len(core_bytes)} bytes) does not fit before the partition")
    boot = (grub_dir / "boot.img").read_bytes()
    with open(disk, "r+b") as out:
        out.write(boot[:440])  # boot code only: the partition table and signature stay
        out.seek(512)
        out.write(core_bytes)  # grub-mkimage wrote core.img's own sector count into its first sector
