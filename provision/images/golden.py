"""The golden image: a small bootable Debian with openssh-server, made with mmdebstrap from this machine's
Debian sources, as an ext4 partition image (what the ring clones onto a node's root partition) and as a
whole BIOS-bootable disk image (MBR, that partition at 1 MiB, GRUB) -- all without loop devices or mounts.

    rootfs.ext4   mkfs.ext4 -L root -d <tree>: the file system filled from the directory tree
    root.squashfs mksquashfs <tree>: the same root, compressed and read-only, for diskless nodes (with its
                  sha256 in root.squashfs.sha256 and the tree's kernel as vmlinuz beside it)
    disk.raw      MBR partition table: 1 = rootfs.ext4 at 1 MiB, 2 = an EFI system partition (FAT made with
                  mkfs.vfat -C and mtools) holding GRUB as /EFI/BOOT/BOOTX64.EFI; for BIOS, GRUB's boot.img in
                  the MBR and core.img (prefix (hd0,msdos1)/boot/grub) right after it. Both GRUBs read
                  /boot/grub/grub.cfg and their modules from /boot/grub/<platform> on the root file system.

Both GRUB images also stay in the root file system where grub-install would put them --
/boot/grub/i386-pc/core.img (with boot.img) and /boot/grub/x86_64-efi/core.efi -- so an installer can
make a clone bootable for either firmware without GRUB's tools (provision.images.bootsector; the EFI one
goes to /EFI/BOOT/BOOTX64.EFI on an ESP).

The image's own initramfs holds only the listed modules (initramfs-tools MODULES=list plus a hook):
auto-detection would look at the build host. Downloaded packages are kept in <cache>/golden-debs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.images import debs
from provision.images.bootsector import mbr_partition_table, write_bios_grub
from provision.images.cache import Cache

BUILDER_VERSION = 6
PACKAGES = ("systemd-sysv", "udev", "linux-image-amd64", "initramfs-tools", "openssh-server", "ifupdown",
            "isc-dhcp-client", "iproute2", "e2fsprogs", "grub2-common", "grub-pc-bin", "grub-efi-amd64-bin")
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "ahci", "nvme", "megaraid_sas", "mpt3sas", "sd_mod",
                     "ext4")
# Left out of every package (dpkg path-exclude): documentation, translations, udev's hardware database
# (names for devices; nothing here looks them up), GRUB's prebuilt monolithic EFI images (ours are made by
# grub-mkimage), and every kernel module except those a cluster node's disks (virtio, AHCI, NVMe, SCSI, SAS),
# NICs (virtio, e1000, modules.PCI_DRIVERS') and file systems (ext4, FAT) need (KERNEL_MODULES, put back with
# path-include): the modules were ~225 of ~500 MiB used, and udev's autoloading of floppy, IDE and kvm
# modules cost a TCG boot seconds of CPU.
# The installer's kernel is the same Debian kernel (same version), so its not-due path still finds the
# modules it needs on a clone.
PATH_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/lib/udev/hwdb.d/*", "/usr/lib/grub/x86_64-efi/monolithic/*", "/lib/modules/*/kernel/*")
KERNEL_MODULES = ("arch/x86/crypto/*", "block/*", "crypto/*", "lib/*", "fs/ext4/*", "fs/jbd2/*", "fs/mbcache.ko",
                  "fs/fat/*", "fs/nls/*", "fs/efivarfs/*", "drivers/virtio/*", "drivers/block/virtio_blk.ko",
                  "drivers/block/loop.ko", "drivers/ata/ahci.ko", "drivers/ata/libahci.ko", "drivers/ata/libata.ko",
                  "drivers/nvme/*", "drivers/char/*", "drivers/acpi/*", "drivers/firmware/*",
                  *(f"drivers/scsi/{name}.ko" for name in ("scsi_mod", "scsi_common", "sd_mod", "sr_mod", "sg",
                                                           "virtio_scsi")),
                  "drivers/net/virtio_net.ko", "drivers/net/net_failover.ko", "net/core/*",
                  "drivers/net/ethernet/intel/e1000/*", "drivers/net/ethernet/intel/e1000e/*",
                  # real machines: SAS RAID/HBA, Intel 1/10/40G, Realtek, Broadcom NICs, and what they need
                  "drivers/scsi/megaraid/*", "drivers/scsi/mpt3sas/*", "drivers/scsi/scsi_transport_sas.ko",
                  "drivers/scsi/raid_class.ko", "drivers/net/ethernet/intel/igb/*",
                  "drivers/net/ethernet/intel/ixgbe/*", "drivers/net/ethernet/intel/i40e/*", "drivers/net/ethernet/realtek/r8169.ko",
                  "drivers/net/ethernet/broadcom/tg3.ko", "drivers/net/ethernet/broadcom/bnxt/*", "drivers/net/phy/*",
                  "drivers/net/mdio.ko", "drivers/dca/*", "drivers/i2c/algos/i2c-algo-bit.ko", "net/xfrm/xfrm_algo.ko")
# mmdebstrap's merged-usr hooks: /usr merged by mmdebstrap with usr-is-merged installed, so apt does not
# satisfy init-system-helpers' `usrmerge | usr-is-merged` with usrmerge, which pulls in perl (~50 MiB).
MMDEBSTRAP_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
PATH_INCLUDES = ("/usr/share/doc/*/copyright", *(f"/lib/modules/*/kernel/{tree}" for tree in KERNEL_MODULES))
ROOTFS_MIB = 512  # ~220 MiB used; the installer grows a clone to fill its partition (provision-grow)
LABEL = "root"
PART_OFFSET = 1 << 20  # the root partition starts at 1 MiB (sector 2048)
ESP_MIB = 32
ESP_LABEL = "EFI"
EFI_LOADER = "EFI/BOOT/BOOTX64.EFI"  # the removable-media path: found without NVRAM boot entries
BIOS_CORE = Path("boot/grub/i386-pc/core.img")  # in the root file system, beside boot.img
EFI_CORE = Path("boot/grub/x86_64-efi/core.efi")  # becomes EFI_LOADER on an ESP
MARKER_FILE = "etc/provision-golden"
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
GRUB_FILES = (".mod", ".lst", "boot.img")  # of /usr/lib/grub/<platform>, copied to /boot/grub/<platform>
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2")  # enough for core.img to read /boot/grub from the root
GRUB_EFI_MODULES = ("part_msdos", "part_gpt", "ext2", "fat", "search", "search_label")
SQUASHFS = ("-comp", "zstd", "-b", "1M", "-noappend", "-no-progress", "-quiet")  # mksquashfs options
GRUB_EFI_EARLY_CFG = f"search --no-floppy --label {LABEL} --set=root\nset prefix=($root)/boot/grub\n"

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
# Boot: the login prompt and sshd wait for network.target, which waited for ifupdown-pre's `udevadm settle`
# (every device of the coldplug, ~13 s into a TCG boot); this drop-in waits only for the interfaces
# ifupdown will raise. Masked: units a cluster node does not need that cost a TCG machine seconds of
# CPU while it boots (e2scrub_reap: ~7 s; gettys on tty2-6; unattended apt and e2scrub timers).
IFUPDOWN_PRE_DROPIN = """[Service]
# provision: wait for the interfaces ifupdown raises, not for every device (udevadm settle)
ExecStart=
ExecStart=/bin/sh -c 'if [ "$CONFIGURE_INTERFACES" != "no" ]; then for i in $$(ifquery --read-environment --list --exclude=lo); do udevadm wait --timeout=60 /sys/class/net/$$i || true; done; fi'
"""
MASKED_UNITS = ("e2scrub_reap.service", "e2scrub_all.timer", "getty-static.service", "apt-daily.timer",
                "apt-daily-upgrade.timer")


@dataclass(frozen=True)
class GoldenImage:
    rootfs: Path  # ext4 partition image, label `root`
    disk: Path    # BIOS-bootable disk image holding rootfs at PART_OFFSET
    squashfs: Path  # the root as a squashfs (diskless nodes); its sha256 in <squashfs>.sha256
    vmlinuz: Path   # the tree's own kernel (diskless nodes boot it)
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
              "path_excludes": list(PATH_EXCLUDES), "path_includes": list(PATH_INCLUDES),
              "masked_units": list(MASKED_UNITS), "ifupdown_pre": IFUPDOWN_PRE_DROPIN, "grub_cfg": GRUB_CFG,
              "squashfs": list(SQUASHFS)}
    digest = hashlib.sha256(repr(sorted(recipe.items())).encode()).hexdigest()[:16]
    marker = f"provision golden image {recipe['suite']} {digest}\n"

    def make(work: Path) -> None:
        tree = work / "tree"
        _bootstrap(tree, work / "overlay", cache.root / "golden-debs", sources)
        _configure(tree, marker)
        _grub_images(tree, work / "scratch")
        rootfs = work / "rootfs.ext4"
        debs.run(["mkfs.ext4", "-q", "-L", LABEL, "-d", str(tree), "-F", str(rootfs), f"{rootfs_mib}M"],
                 "mkfs.ext4 -d")
        esp = _esp(work / "scratch", tree / EFI_CORE)
        _disk(work / "disk.raw", rootfs, esp, tree / BIOS_CORE.parent)
        _squashfs(tree, work)
        for scratch in (tree, work / "overlay", work / "scratch"):
            shutil.rmtree(scratch)

    entry = cache.build("golden", recipe, make)
    return GoldenImage(entry / "rootfs.ext4", entry / "disk.raw", entry / "root.squashfs", entry / "vmlinuz", marker)


def _squashfs(tree: Path, work: Path) -> None:
    """root.squashfs of the tree (owners, modes, set-id bits as they are), root.squashfs.sha256 as sha256sum
    writes it, and the tree's kernel as vmlinuz."""
    squashfs = work / "root.squashfs"
    debs.run(["mksquashfs", str(tree), str(squashfs), *SQUASHFS], "mksquashfs")
    digest = hashlib.sha256()
    with open(squashfs, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    (work / "root.squashfs.sha256").write_text(f"{digest.hexdigest()}  root.squashfs\n")
    shutil.copy2((tree / "vmlinuz").resolve(), work / "vmlinuz")


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
              "--skip=essential/unlink", f"--hook-dir={MMDEBSTRAP_HOOKS}",
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
    units = tree / "etc" / "systemd" / "system"
    (units / "ifupdown-pre.service.d").mkdir(parents=True, exist_ok=True)
    (units / "ifupdown-pre.service.d" / "provision.conf").write_text(IFUPDOWN_PRE_DROPIN)
    for unit in MASKED_UNITS:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    grub = tree / "boot" / "grub"
    for platform in ("i386-pc", "x86_64-efi"):  # what grub-install copies: modules, their lists, boot.img
        shutil.copytree(tree / "usr" / "lib" / "grub" / platform, grub / platform, dirs_exist_ok=True,
                        ignore=lambda folder, names: [n for n in names if not n.endswith(GRUB_FILES)])
    (grub / "grub.cfg").write_text(GRUB_CFG.format(label=LABEL))
    for leftover in (tree / "var" / "lib" / "apt" / "lists").glob("*_*"):
        leftover.unlink()


def _grub_images(tree: Path, scratch: Path) -> None:
    """GRUB's BIOS core.img and UEFI image, made from the tree's own GRUB, into the tree's /boot/grub."""
    scratch.mkdir(exist_ok=True)
    grub_lib = tree / "usr" / "lib" / "grub"
    debs.run(["grub-mkimage", "-O", "i386-pc", "-d", str(grub_lib / "i386-pc"), "-p", "(hd0,msdos1)/boot/grub",
              "-o", str(tree / BIOS_CORE), *GRUB_MODULES], "grub-mkimage i386-pc")
    (scratch / "early.cfg").write_text(GRUB_EFI_EARLY_CFG)
    debs.run(["grub-mkimage", "-O", "x86_64-efi", "-d", str(grub_lib / "x86_64-efi"), "-p", "/boot/grub",
              "-c", str(scratch / "early.cfg"), "-o", str(tree / EFI_CORE), *GRUB_EFI_MODULES],
             "grub-mkimage x86_64-efi")


def _esp(scratch: Path, efi_core: Path) -> Path:
    """A FAT image with GRUB for x86-64 UEFI at EFI/BOOT/BOOTX64.EFI (it finds the root by its label)."""
    esp = scratch / "esp.img"
    debs.run(["mkfs.vfat", "-C", "-n", ESP_LABEL, str(esp), str(ESP_MIB * 1024)], "mkfs.vfat")
    debs.run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], "mmd")
    debs.run(["mcopy", "-i", str(esp), str(efi_core), f"::/{EFI_LOADER}"], "mcopy")
    return esp


def _disk(disk: Path, rootfs: Path, esp: Path, bios_grub: Path) -> None:
    """MBR disk image: the root partition at 1 MiB holding `rootfs`, the ESP after it, BIOS GRUB in front
    (boot.img and core.img from `bios_grub`)."""
    root_start, root_sectors = PART_OFFSET // 512, rootfs.stat().st_size // 512
    esp_start, esp_sectors = root_start + root_sectors, esp.stat().st_size // 512
    with open(disk, "wb") as out:
        out.truncate((esp_start + esp_sectors) * 512)
        out.write(mbr_partition_table([(root_start, root_sectors, 0x83, True), (esp_start, esp_sectors, 0xEF, False)]))
    for image, start in ((rootfs, root_start), (esp, esp_start)):
        debs.run(["dd", f"if={image}", f"of={disk}", "bs=512", f"seek={start}", "conv=notrunc,sparse",
                  "status=none"], f"dd {image.name} into the disk image")
    with open(disk, "r+b") as out:
        write_bios_grub(out, (bios_grub / "boot.img").read_bytes(), (bios_grub / "core.img").read_bytes())
