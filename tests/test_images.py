"""Built artifacts: the cache, module load order, cpio archives (fast); the installer kernel and initrd
built from Debian packages and booted in QEMU (marked vm: downloads and builds, cached between runs)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dolly_core import tags
from provision.lab import netns
from provision.cli import main
from provision.errors import ExitStatus, ProvisionError
from provision.images.cache import CACHE_ENV, Cache, cache_key
from provision.images.cpio import write_newc
from provision.images.bootsector import mbr_partition_table, write_bios_grub
from provision.images.golden import BIOS_CORE, EFI_CORE, MARKER_FILE, golden_image
from provision.images.initrd import (MARKER, PCI_DRIVERS, copy_distributions, distributions, installer_initrd,
                                     project_digest, project_root)
from provision.images.kernel import installer_kernel
from provision.images.modules import dep_lines, load_order, module_name, parse_modules_dep, pci_alias_lines
from provision.inventory import load_inventory
from provision.render import render_files
from tests.conftest import require_root, require_tool
from tests.vm_rig import boot_disk_to_prompt
from tests.fixtures.inventories import LAB

MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/lib/crc-t10dif.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
"""


def test_cache_key_is_stable_and_ignores_key_order():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{16}", cache_key({}))


def test_cache_location_follows_the_environment(tmp_path):
    assert Cache.of({CACHE_ENV: str(tmp_path / "c")}).root == tmp_path / "c"
    assert Cache.of({"PROVISION_STATE_DIR": str(tmp_path / "s")}).root == tmp_path / "s" / "cache"


def test_cache_builds_once_and_keeps_nothing_from_a_failed_build(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    def broken(work: Path) -> None:
        (work / "half").write_text("half")
        raise ProvisionError("build failed")

    with pytest.raises(ProvisionError):
        cache.build("thing", {"v": 1}, broken)
    assert list((tmp_path / "thing").iterdir()) == [tmp_path / "thing" / ".lock"]

    def make(work: Path) -> None:
        calls.append(work)
        (work / "out").write_text("built")

    first = cache.build("thing", {"v": 1}, make)
    assert cache.build("thing", {"v": 1}, make) == first and len(calls) == 1
    assert (first / "out").read_text() == "built" and first.name == cache_key({"v": 1})
    assert cache.build("thing", {"v": 2}, make) != first and len(calls) == 2  # another recipe, another entry


def test_cache_removes_day_old_entries_beyond_the_newest(tmp_path):
    cache = Cache(tmp_path)
    entries = []
    for version in range(4):
        entries.append(cache.build("thing", {"v": version}, lambda work: None, keep=2))
        os.utime(entries[-1] / "recipe.json", (version, version))  # built long ago, oldest first
    assert [e.exists() for e in entries] == [False, False, True, True]
    young = cache.build("thing", {"v": 4}, lambda work: None, keep=2)  # removes v=2
    cache.build("thing", {"v": 5}, lambda work: None, keep=1)  # v=4 and v=3 are beyond keep; v=4 is young
    assert young.exists() and not entries[3].exists() and not entries[2].exists()
    dead = tmp_path / "thing" / ".0123456789abcdef.999999999.tmp"  # the work of a builder that died
    dead.mkdir()
    cache.build("thing", {"v": 6}, lambda work: None)
    assert not dead.exists()


def test_module_load_order_puts_dependencies_first_once():
    order = load_order(MODULES_DEP, ["virtio_pci", "virtio-net", "e1000", "crc_t10dif"])
    names = [module_name(p) for p in order]
    assert names == ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
                     "failover", "net_failover", "virtio_net", "e1000", "crc_t10dif"]
    with pytest.raises(ProvisionError, match="not in modules.dep: nosuch"):
        load_order(MODULES_DEP, ["virtio_net", "nosuch"])


def test_modules_dep_and_pci_aliases_of_chosen_modules():
    paths = load_order(MODULES_DEP, ["virtio_net", "e1000"])
    assert dep_lines(MODULES_DEP, paths[:2]) == (
        "kernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n")
    alias = ("alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\n"
             "alias virtio:d00000001v* virtio_net\nalias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n")
    assert pci_alias_lines(alias, ["e1000e", "nvme", "virtio-net"]) == (
        "alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\n")


def test_cpio_archive_unpacks_to_the_same_tree(tmp_path):
    busybox = require_tool("busybox")
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (tree / "bin" / "tool").chmod(0o755)
    (tree / "etc").mkdir()
    (tree / "etc" / "odd").write_bytes(b"x" * 5)  # sizes that need padding
    (tree / "etc" / "empty").write_bytes(b"")
    os.symlink("../bin/tool", tree / "etc" / "link")
    archive = tmp_path / "a.cpio"
    with open(archive, "wb") as out:
        assert write_newc(tree, out) == 6
    with open(tmp_path / "b.cpio", "wb") as out:
        write_newc(tree, out)
    assert archive.read_bytes() == (tmp_path / "b.cpio").read_bytes()  # deterministic
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(archive, "rb") as stdin:
        subprocess.run([busybox, "cpio", "-id"], stdin=stdin, cwd=dest, check=True, capture_output=True)
    assert (dest / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.access(dest / "bin" / "tool", os.X_OK)
    assert os.readlink(dest / "etc" / "link") == "../bin/tool"
    assert (dest / "etc" / "odd").read_bytes() == b"xxxxx" and (dest / "etc" / "empty").read_bytes() == b""


def test_project_digest_follows_the_sources(tmp_path):
    for package in ("dolly_core", "provision"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    before = project_digest(tmp_path)
    (tmp_path / "dolly_core" / "node.py").write_text("x = 1\n")
    assert project_digest(tmp_path) != before


def test_dolly_c_runs_on_the_stdlib_and_checks_blake3_with_the_distributions_the_initrd_ships(tmp_path):
    """dolly_core on this Python without its site-packages: with the standard library only it tags with
    SHA-256; with the distributions copied as the initrd copies them, with BLAKE3 (the wheel's extension)."""
    probe = ("from dolly_core import cli, node, server, tags\n"
             "print(','.join(tags.AVAILABLE), tags.piece_tagger(tags.DEFAULT, b'k' * 32).tag(b'head', b'body').hex())")
    site = tmp_path / "site"
    shutil.copytree(project_root() / "dolly_core", site / "dolly_core")

    def probed() -> list[str]:
        proc = subprocess.run([sys.executable, "-S", "-c", probe], env={**os.environ, "PYTHONPATH": str(site)},
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()
    assert probed() == ["sha256", tags.Tagger(b"k" * 32).tag(b"head", b"body").hex()]
    copy_distributions(distributions(), site, f"python{sys.version_info[0]}.{sys.version_info[1]}")
    assert probed() == ["sha256,blake3", tags.Blake3Tagger(b"k" * 32).tag(b"head", b"body").hex()]
    with pytest.raises(ProvisionError, match=r"blake3's extension module blake3\.cpython-\d+-.*\.so is not built "
                                             r"for the initrd's python3\.99"):
        copy_distributions(distributions(["blake3"]), tmp_path / "other", "python3.99")


@pytest.fixture(scope="module")
def initrd():
    require_root()
    for tool in ("apt-get", "dpkg-deb", "depmod", "readelf", "busybox"):
        require_tool(tool)
    built = installer_initrd()
    kernel_mtime = built.kernel.vmlinuz.stat().st_mtime
    again = installer_kernel()  # from the cache: same entry, not unpacked again
    assert again == built.kernel and again.vmlinuz.stat().st_mtime == kernel_mtime
    return built


@pytest.mark.vm
def test_installer_initrd_from_debian_packages(initrd, tmp_path):
    size = initrd.path.stat().st_size
    assert 5e6 < size < 20e6, f"initrd is {size / 1e6:.1f} MB"
    names = [module_name(p) for p in initrd.modules]
    assert names.index("virtio_ring") < names.index("virtio") < names.index("virtio_pci") < names.index("virtio_net")
    assert names.index("jbd2") < names.index("ext4")
    tree = tmp_path / "tree"
    tree.mkdir()
    with open(initrd.path, "rb") as packed:
        data = subprocess.run(["zcat"], stdin=packed, capture_output=True, check=True).stdout
    subprocess.run(["busybox", "cpio", "-id"], input=data, cwd=tree, check=True, capture_output=True)
    assert (tree / "init").read_text().startswith("#!/bin/busybox sh")
    load_list = (tree / "lib" / "modules" / initrd.kernel.release / "load-order").read_text().split()
    assert load_list == list(initrd.modules)
    aliases = (tree / "lib" / "modules" / initrd.kernel.release / "modules.alias").read_text().splitlines()
    assert {line.split()[2] for line in aliases} == {name.replace("-", "_") for name in PCI_DRIVERS}
    assert "alias pci:v*d*sv*sd*bc01sc08i02* nvme" in aliases  # any NVMe controller by its class
    dep = parse_modules_dep((tree / "lib" / "modules" / initrd.kernel.release / "modules.dep").read_text())
    modules = tree / "lib" / "modules" / initrd.kernel.release
    assert all((modules / p).is_file() for path in dep for p in (path, *dep[path]))  # every module and its needs
    kickstart = render_files(load_inventory(LAB))["kickstart/n01.ks"]
    (tree / "n01.ks").write_text(kickstart)
    probe = ("import sys, json, dolly_core.cli, dolly_core.server, dolly_core.node, dolly_core.cook\n"
             "from dolly_core import tags\n"
             "import provision.installer\n"
             "from pykickstart.parser import KickstartParser\n"
             "from pykickstart.version import RHEL9, makeVersion\n"
             "parser = KickstartParser(makeVersion(RHEL9))\n"
             "parser.readKickstartFromString(open('/n01.ks').read())\n"
             "print(sys.version_info[:2] >= (3, 11), [s.script.count('dollyC') > 0 for s in parser.handler.scripts],\n"
             "      tags.piece_tagger('blake3', b'k' * 32).tag(b'head', b'body').hex())")
    result = subprocess.run(["chroot", str(tree), "/usr/bin/python3", "-c", probe], capture_output=True, text=True)
    blake3_tag = tags.Blake3Tagger(b"k" * 32).tag(b"head", b"body").hex()  # dollyC checks BLAKE3 tags there
    assert result.stdout.strip() == f"True [True] {blake3_tag}", result.stderr  # the kickstart's %post runs dollyC
    for program in ("mke2fs", "e2fsck", "resize2fs"):  # e2fsprogs' own, their libraries found (version line)
        version = subprocess.run(["chroot", str(tree), f"/sbin/{program}", "-V"], capture_output=True, text=True,
                                 check=False)
        assert re.search(rf"^{program} 1\.", version.stderr, re.M), (program, version.stderr)  # no /dev in chroot


@pytest.mark.vm
def test_installer_kernel_and_initrd_boot_to_python(initrd, tmp_path):
    """Direct kernel boot under TCG in a namespace of our own (nothing to reach): QEMU's user network
    (restricted: no way out) gives the DHCP lease; /init reports each step and powers off. The machine has
    real-hardware devices (an Intel 82574 NIC, an NVMe disk, an LSI MegaRAID SAS 1078): /init loads their
    drivers by PCI alias."""
    qemu = require_tool("qemu-system-x86_64")
    ns = f"pvq-{uuid.uuid4().hex[:6]}"
    serial = tmp_path / "serial.log"
    disk = tmp_path / "nvme.raw"
    disk.write_bytes(bytes(1 << 20))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        argv = [qemu, "-machine", "pc,accel=tcg", "-m", "512", "-display", "none", "-monitor", "none",
                "-no-reboot", "-kernel", str(initrd.kernel.vmlinuz), "-initrd", str(initrd.path),
                "-append", "console=ttyS0,115200 provision.poweroff BOOTIF=01-52-54-00-12-34-56",
                "-netdev", "user,id=n0,restrict=on", "-device", "e1000e,netdev=n0,mac=52:54:00:12:34:56",
                "-drive", f"if=none,id=d0,format=raw,file={disk}", "-device", "nvme,drive=d0,serial=pv0",
                "-device", "megasas",
                "-serial", f"file:{serial}"]
        started = time.monotonic()
        subprocess.run(netns.ns_argv(ns, argv), check=True, timeout=240, capture_output=True)
        seconds = time.monotonic() - started
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    lines = [line for line in serial.read_text(errors="replace").splitlines() if "provision-installer:" in line]
    assert lines and lines[0].startswith(MARKER), lines
    text = "\n".join(lines)
    assert "network eth0 10.0.2.15/24" in text and "python 3.11" in text and "powering off" in text, text
    assert re.search(r"modules loaded: \d+; for this machine: e1000e megaraid_sas nvme \(at", text), text
    print(f"\ninstaller: QEMU start to power-off {seconds:.1f} s; " + "; ".join(lines[1:]))


def test_mbr_partition_table_entries():
    sector = mbr_partition_table([(2048, 3145728, 0x83, True), (3147776, 65536, 0xEF, False)])
    assert len(sector) == 512 and sector[:446] == bytes(446) and sector[510:] == b"\x55\xaa"
    entries = [(sector[446 + 16 * i], sector[450 + 16 * i], *struct.unpack_from("<II", sector, 454 + 16 * i))
               for i in range(4)]
    assert entries == [(0x80, 0x83, 2048, 3145728), (0, 0xEF, 3147776, 65536), (0, 0, 0, 0), (0, 0, 0, 0)]
    with pytest.raises(ValueError):
        mbr_partition_table([(1, 1, 0x83, False)] * 5)


def test_bios_grub_goes_into_the_gap_before_the_first_partition(tmp_path):
    disk = tmp_path / "disk.raw"
    table = mbr_partition_table([(3000, 100, 0xEF, False), (2048, 900, 0x83, True)])
    disk.write_bytes(table + bytes(3100 * 512 - 512))
    boot_img, core_img = b"B" * 512, b"C" * (2047 * 512)  # fills the gap exactly (sectors 1..2047)
    with open(disk, "r+b") as out:
        write_bios_grub(out, boot_img, core_img)
    data = disk.read_bytes()
    assert data[:440] == b"B" * 440 and data[440:512] == table[440:]  # the partition table stays
    assert data[512:2048 * 512] == core_img and data[2048 * 512:2049 * 512] == bytes(512)
    with open(disk, "r+b") as out, pytest.raises(ProvisionError, match="does not fit"):
        write_bios_grub(out, boot_img, core_img + b"C")
    (tmp_path / "blank.raw").write_bytes(bytes(4096))
    with open(tmp_path / "blank.raw", "r+b") as out, pytest.raises(ProvisionError, match="no MBR"):
        write_bios_grub(out, boot_img, b"C")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _debugfs_cat(image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.vm
def test_golden_image_is_debian_with_ssh_and_boots_from_its_disk(tmp_path):
    """mmdebstrap build (cached), checked without mounting, then the disk image booted under TCG
    (SeaBIOS -> GRUB placed without loop devices -> Debian) to its serial login prompt."""
    require_root()
    for tool in ("mmdebstrap", "mkfs.ext4", "debugfs", "grub-mkimage", "qemu-system-x86_64"):
        require_tool(tool)
    started = time.monotonic()
    golden = golden_image()
    build_seconds = time.monotonic() - started
    assert _debugfs_cat(golden.rootfs, "/" + MARKER_FILE) == golden.marker
    assert _debugfs_cat(golden.rootfs, "/etc/fstab") == "LABEL=root / ext4 defaults 0 1\n"
    assert "linux /vmlinuz root=LABEL=root" in _debugfs_cat(golden.rootfs, "/boot/grub/grub.cfg")
    core = subprocess.run(["debugfs", "-R", f"cat /{BIOS_CORE}", str(golden.rootfs)], capture_output=True,
                          check=True).stdout
    with open(golden.disk, "rb") as disk:  # the BIOS GRUB on the disk is the one the image carries
        assert disk.read(512 + len(core))[512:] == core and len(core) > 10000
    efi = subprocess.run(["debugfs", "-R", f"cat /{EFI_CORE}", str(golden.rootfs)], capture_output=True,
                         check=True).stdout
    assert efi[:2] == b"MZ"  # a PE image: the installer copies it to an ESP as EFI/BOOT/BOOTX64.EFI
    assert "sshd" in subprocess.run(["debugfs", "-R", "ls /usr/sbin", str(golden.rootfs)],
                                    capture_output=True, text=True).stdout
    used_mib = golden.rootfs.stat().st_blocks * 512 >> 20
    assert used_mib < 300, f"golden image uses {used_mib} MiB"  # ~215: no perl, kernel modules by allowlist
    assert "provision.conf" in subprocess.run(["debugfs", "-R", "ls /etc/systemd/system/ifupdown-pre.service.d",
                                               str(golden.rootfs)], capture_output=True, text=True).stdout
    # real machines' disk and NIC drivers are there with everything they need (the installer kernel is the same)
    kernel = installer_kernel()
    subprocess.run(["debugfs", "-R", f"rdump /usr/lib/modules/{kernel.release} {tmp_path}", str(golden.rootfs)],
                   capture_output=True, check=True)
    needed = load_order((kernel.modules_dir / "modules.dep").read_text(), PCI_DRIVERS)
    assert [p for p in needed if not (tmp_path / kernel.release / p).is_file()] == []
    serial = tmp_path / "serial.log"
    boot_seconds = boot_disk_to_prompt(golden.disk, serial, snapshot=True, limit=240)
    console = serial.read_text(errors="replace")
    assert "Reached target" in console and "multi-user.target" in console
    print(f"\ngolden image: {used_mib} MiB used of {golden.rootfs.stat().st_size >> 20} MiB; "
          f"build/cache {build_seconds:.0f} s; QEMU start to login prompt {boot_seconds:.1f} s")


@pytest.mark.vm
def test_cli_images_names_the_cached_artifacts(initrd, capsys):
    assert main(["images"], env=os.environ) == ExitStatus.SUCCESS
    out = capsys.readouterr().out
    assert f"kernel {initrd.kernel.release}: {initrd.kernel.vmlinuz}" in out
    assert f"initrd: {initrd.path} (" in out and f"{len(initrd.modules)} modules" in out
