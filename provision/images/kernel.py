"""The installer kernel: Debian's own, the linux-image-<abi>-amd64 package that linux-image-amd64 depends
on, unpacked (not installed) into the cache with its modules.dep made by depmod."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.images import debs
from provision.images.cache import Cache

KERNEL_META_PACKAGE = "linux-image-amd64"
BUILDER_VERSION = 1  # change when the layout of the entry changes


@dataclass(frozen=True)
class Kernel:
    release: str  # uname -r, e.g. 6.1.0-56-amd64
    root: Path    # the unpacked package: boot/vmlinuz-<release>, lib/modules/<release>/ (with modules.dep)

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def installer_kernel(env: Mapping[str, str] = os.environ) -> Kernel:
    """Debian's current amd64 kernel, from the cache or downloaded and unpacked into it."""
    cache = Cache.of(env)
    package = debs.dependency(KERNEL_META_PACKAGE, "linux-image-")
    deb = debs.candidate(package)
    release = package.removeprefix("linux-image-")
    recipe = {"artifact": "kernel", "builder": BUILDER_VERSION, "package": deb.package, "version": deb.version}

    def make(work: Path) -> None:
        (deb_file,) = debs.fetch(cache, [deb])
        debs.unpack(deb_file, work / "root")
        debs.run(["depmod", "-b", str(work / "root"), release], "depmod")

    kernel = Kernel(release, cache.build("kernel", recipe, make) / "root")
    if not kernel.vmlinuz.is_file() or not (kernel.modules_dir / "modules.dep").is_file():
        raise ProvisionError(f"{kernel.root}: no vmlinuz-{release} or modules.dep in the unpacked {package}")
    return kernel
