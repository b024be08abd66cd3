"""`provision images`: build (or find in the cache) what the project makes from Debian packages."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

from provision.errors import ExitStatus
from provision.images.cache import Cache
from provision.images.diskless import diskless_image
from provision.images.golden import golden_image
from provision.images.initrd import installer_initrd

NAME = "images"
HELP = ("build or find in the cache the installer kernel and initrd (and with --golden the golden image, with "
        "--diskless what diskless nodes boot)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--golden", action="store_true",
                        help="also the golden image (mmdebstrap; about a minute with cached packages)")
    parser.add_argument("--diskless", action="store_true",
                        help="also what diskless nodes boot: the golden image (as with --golden), its root as a "
                             "squashfs with its sha256, and the diskless initramfs")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ExitStatus:
    print(f"cache: {Cache.of(env).root}")
    started = time.monotonic()
    initrd = installer_initrd(env)
    kernel = initrd.kernel
    print(f"kernel {kernel.release}: {kernel.vmlinuz} ({_mb(kernel.vmlinuz.stat().st_size)})")
    print(f"initrd: {initrd.path} ({_mb(initrd.path.stat().st_size)}, {len(initrd.modules)} modules)"
          f" [{time.monotonic() - started:.0f} s]")
    if args.golden:
        started = time.monotonic()
        golden = golden_image(env)
        used = golden.rootfs.stat().st_blocks * 512
        print(f"golden rootfs: {golden.rootfs} ({golden.rootfs.stat().st_size >> 20} MiB, {used >> 20} MiB used)")
        print(f"golden disk: {golden.disk} (BIOS and UEFI bootable) [{time.monotonic() - started:.0f} s]")
    if args.diskless:
        started = time.monotonic()
        image = diskless_image(env)
        print(f"diskless root: {image.root} ({_mb(image.root.stat().st_size)}, sha256 "
              f"{image.sha256.read_text().split()[0]})")
        print(f"diskless kernel: {image.kernel}; initramfs: {image.initrd} ({_mb(image.initrd.stat().st_size)})"
              f" [{time.monotonic() - started:.0f} s]")
        print(f"boot.diskless: {image.root.parent}")
    return ExitStatus.SUCCESS
