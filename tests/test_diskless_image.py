"""The diskless image `provision images --diskless` builds (root, Debian tools; slow: marked vm): the golden
kernel, the golden root as a squashfs with its sha256, and a busybox initramfs with the modules to fetch and mount
it. The machines booting it are demo-vm's diskless round (tests/test_demo_vm.py, provision/lab/vm_diskless.py)."""

from __future__ import annotations

import gzip
import hashlib
import os

import pytest

from provision.cli import main
from provision.images.diskless import diskless_image
from provision.images.golden import golden_image
from provision.images.initrd import installer_initrd
from provision.model import Firmware
from tests.vm_rig import require_vm

def newc_names(archive: bytes) -> list[str]:
    """The entry names of a newc cpio archive."""
    names, offset = [], 0
    while True:
        header = archive[offset:offset + 110]
        namesize, filesize = int(header[94:102], 16), int(header[54:62], 16)
        name = archive[offset + 110:offset + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            return names
        names.append(name)
        offset = (offset + 110 + namesize + 3) // 4 * 4
        offset = (offset + filesize + 3) // 4 * 4


@pytest.mark.vm
def test_diskless_image_holds_the_golden_kernel_root_and_an_initramfs_that_fetches_it(capsys):
    require_vm(Firmware.BIOS, "mmdebstrap", "mksquashfs")
    image, golden = diskless_image(), golden_image()
    assert main(["images", "--diskless"], os.environ) == 0
    assert f"boot.diskless: {image.root.parent}\n" in capsys.readouterr().out  # what the inventory names
    assert image.kernel.read_bytes() == installer_initrd().kernel.vmlinuz.read_bytes() == golden.vmlinuz.read_bytes()
    digest = hashlib.sha256(image.root.read_bytes()).hexdigest()
    assert image.sha256.read_text() == f"{digest}  root.squashfs\n"
    names = newc_names(gzip.decompress(image.initrd.read_bytes()))
    assert {"init", "bin/busybox", "bin/diskless-fetch", "etc/udhcpc.sh"} <= set(names)
    modules = [n for n in names if n.endswith(".ko")]
    for module in ("squashfs.ko", "overlay.ko", "loop.ko", "virtio_net.ko", "e1000.ko", "igb.ko"):
        assert any(n.endswith("/" + module) for n in modules), modules
    assert not any("nvme" in n or "megaraid" in n for n in names)  # no disk drivers
