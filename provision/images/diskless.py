"""What a diskless node boots: the golden image's own kernel, the diskless initramfs, and the golden root as a
squashfs with its sha256 (both made with the golden image, provision.images.golden).

The initramfs is a gzip'd newc cpio: busybox-static (unpacked from its Debian package), /init =
provision/scripts/diskless-init.sh, /bin/diskless-fetch = provision/scripts/diskless-fetch.sh, udhcpc's script,
and the golden kernel's modules for the network (virtio, e1000, real machines' NICs by PCI alias) and for the
root (loop, squashfs, overlay) in load order. The golden kernel is the installer's (same Debian package), whose
unpacked modules are used; a golden image whose kernel differs is an error.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from provision import diskless
from provision.errors import ProvisionError
from provision.images import debs
from provision.images.cache import Cache
from provision.images.cpio import write_newc
from provision.images.golden import golden_image
from provision.images.initrd import add_pci_drivers, copy_file
from provision.images.kernel import installer_kernel
from provision.images.modules import load_order

BUILDER_VERSION = 2  # change when what goes into the initramfs changes in a way the recipe does not show
# The entry's files (a directory the inventory's boot.diskless may name): those of boot/diskless/ in the TFTP root
KERNEL_FILE, INITRD_FILE, ROOT_FILE, SHA256_FILE = (PurePosixPath(path).name for path in
                                                    (diskless.KERNEL, diskless.INITRD, diskless.ROOT, diskless.ROOT_SHA256))
FILES = {"vmlinuz": KERNEL_FILE, "root.squashfs": ROOT_FILE, "root.squashfs.sha256": SHA256_FILE}  # golden's names
MODULES = ("virtio_pci", "virtio_net", "e1000", "loop", "squashfs", "overlay")
NIC_DRIVERS = ("e1000e", "igb", "ixgbe", "i40e", "r8169", "tg3", "bnxt_en")  # of modules.PCI_DRIVERS: no disks
SCRIPTS = {"diskless-init.sh": "init", "diskless-fetch.sh": "bin/diskless-fetch", "udhcpc.sh": "etc/udhcpc.sh"}


@dataclass(frozen=True)
class DisklessImage:
    kernel: Path  # the golden image's kernel
    initrd: Path  # the diskless initramfs
    root: Path    # root.squashfs
    sha256: Path  # root.squashfs.sha256 ("<hex>  root.squashfs")

    @property
    def tftp_files(self) -> dict[str, Path]:
        """Path inside the TFTP root (also served over HTTP under /boot/) -> file in the cache."""
        return {diskless.KERNEL: self.kernel, diskless.INITRD: self.initrd, diskless.ROOT: self.root,
                diskless.ROOT_SHA256: self.sha256}


def _script(name: str) -> bytes:
    return resources.files("provision").joinpath(f"scripts/{name}").read_bytes()


def diskless_image(env: Mapping[str, str] = os.environ) -> DisklessImage:
    """The golden image (built if missing: root) and the diskless initramfs for its kernel, from the cache or
    built into it: one entry holding the kernel, the initramfs, root.squashfs and its sha256."""
    cache = Cache.of(env)
    golden = golden_image(env)
    kernel = installer_kernel(env)
    if golden.vmlinuz.read_bytes() != kernel.vmlinuz.read_bytes():
        raise ProvisionError(f"{golden.vmlinuz}: the golden image's kernel is not the installer's {kernel.release}; "
                             "build both again (provision images --golden)")
    modules_dep = (kernel.modules_dir / "modules.dep").read_text()
    order = load_order(modules_dep, MODULES)
    drivers = [path for path in load_order(modules_dep, NIC_DRIVERS) if path not in order]
    golden_sha256 = golden.squashfs.with_name(golden.squashfs.name + ".sha256")
    busybox = debs.candidate("busybox-static")
    scripts = hashlib.sha256(b"".join(_script(name) for name in sorted(SCRIPTS))).hexdigest()[:16]
    recipe = {"artifact": "diskless", "builder": BUILDER_VERSION, "kernel": kernel.release,
              "golden": golden.squashfs.parent.name, "debs": [busybox.spec], "modules": order,
              "pci_drivers": drivers, "scripts": scripts}

    def make(work: Path) -> None:
        (deb_file,) = debs.fetch(cache, [busybox])
        debs.unpack(deb_file, work / "busybox")
        tree = work / "root"
        copy_file(work / "busybox" / "bin" / "busybox", tree / "bin" / "busybox")
        for name, target in SCRIPTS.items():
            (tree / target).parent.mkdir(parents=True, exist_ok=True)
            (tree / target).write_bytes(_script(name))
            (tree / target).chmod(0o755)
        modules = tree / "lib" / "modules" / kernel.release
        for rel in order:
            copy_file(kernel.modules_dir / rel, modules / rel)
        (modules / "load-order").write_text("".join(f"{rel}\n" for rel in order))
        add_pci_drivers(tree, kernel, order, drivers, NIC_DRIVERS)
        with open(work / INITRD_FILE, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                                   compresslevel=9) as out:
            write_newc(tree, out)
        shutil.rmtree(work / "busybox")
        shutil.rmtree(tree)
        for src in (golden.vmlinuz, golden.squashfs, golden_sha256):  # the entry is what boot.diskless names
            _link_or_copy(src, work / FILES[src.name])

    entry = cache.build("diskless", recipe, make)
    return DisklessImage(*(entry / name for name in (KERNEL_FILE, INITRD_FILE, ROOT_FILE, SHA256_FILE)))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)
