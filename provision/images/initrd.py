"""The installer initrd: a gzip'd newc cpio with busybox, python3-minimal and this project (with pykickstart,
blake3 and what they require, from this Python's site-packages), and the NIC and disk modules of the installer
kernel in load order, plus real machines' PCI drivers that /init loads for the devices it finds; /init is
provision/scripts/installer-init.sh.

Everything comes from Debian packages unpacked (not installed): busybox-static, bash (the kickstart %post interpreter), python3.X-minimal and
libpython3.X-minimal with a few modules of libpython3.X-stdlib, three programs of e2fsprogs (mke2fs,
e2fsck, resize2fs: ext file systems made, checked and grown) with its /etc/mke2fs.conf, and the shared
libraries they need (found with readelf, so an extension module whose libraries are not shipped is left out). Python's
modules are byte-compiled by the initrd's own interpreter (chroot, unchecked-hash .pyc files).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from provision.errors import ProvisionError
from provision.images import debs
from provision.images.cache import Cache
from provision.images.cpio import write_newc
from provision.images.kernel import Kernel, installer_kernel
from provision.images.modules import PCI_DRIVERS, dep_lines, load_order, pci_alias_lines

BUILDER_VERSION = 4  # change when what goes into the initrd changes in a way the recipe does not show
INITRD_FILE = "initrd.img"
MARKER = "provision-installer: initrd up"  # the first line /init writes on the console
# Network (virtio, e1000) and disk (virtio, IDE/SATA, SCSI disks) drivers, the root file systems.
MODULES = ("virtio_pci", "virtio_net", "e1000", "virtio_blk", "ata_piix", "ahci", "sd_mod",
           "crc32c_generic", "ext4", "vfat", "nls_cp437", "nls_ascii")
# PCI_DRIVERS (real machines' disk controllers and NICs) are loaded only for a PCI device they drive (busybox
# modprobe with their PCI aliases), as each costs a TCG machine ~0.1 s to load.
# Pure-Python modules of libpython3.X-stdlib that this project and pykickstart use (python3-minimal lacks them).
STDLIB_EXTRA = ("json", "dataclasses", "tarfile", "uuid", "hmac", "gzip", "_compression", "shlex", "http",
                "lzma", "bz2", "secrets", "base64", "random", "bisect", "hashlib", "tempfile", "shutil",
                "fnmatch", "glob", "typing", "textwrap", "string", "pathlib", "ntpath", "urllib", "email",
                "quopri", "calendar", "locale", "socketserver", "ipaddress", "contextvars", "queue", "mimetypes",
                "gettext", "concurrent")
LIB_PACKAGES = ("libc6", "zlib1g", "libexpat1", "libtinfo6", "libgcc-s1",
                "libext2fs2", "libcom-err2", "libblkid1", "libuuid1")  # the last four for e2fsprogs
E2FSPROGS = ("mke2fs", "e2fsck", "resize2fs")  # of package e2fsprogs, into /sbin (before busybox's mke2fs)
PROJECT_PACKAGES = ("dolly_core", "provision")
SITE = Path("usr") / "lib" / "python3" / "dist-packages"  # where they and DISTRIBUTIONS go
# pykickstart: the installer reads kickstarts with it (not packaged by Debian 12); blake3: dollyC checks the
# ring's BLAKE3 piece tags with it (its extension module must be built for the initrd's Python).
DISTRIBUTIONS = ("pykickstart", "blake3")
_UNUSED_EXTENSIONS = re.compile(r"^(_test|_xx|xx|_ctypes_test|ossaudiodev|audioop|_lsprof)")  # of lib-dynload
_NEEDED = re.compile(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]")


@dataclass(frozen=True)
class Initrd:
    path: Path
    kernel: Kernel
    modules: tuple[str, ...]  # load order, paths under lib/modules/<release>/


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def project_digest(root: Path = project_root()) -> str:
    """sha256 over this project's Python files that go into the initrd, and the init script."""
    digest = hashlib.sha256()
    files = sorted(p for pkg in PROJECT_PACKAGES for p in (root / pkg).rglob("*") if p.is_file()
                   and "__pycache__" not in p.parts)
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def distributions(names: Iterable[str] = DISTRIBUTIONS) -> list[metadata.Distribution]:
    """The installed distributions `names` and everything they require (extras left out), each once."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop(0)
        key = name.lower().replace("-", "_")
        if key in found:
            continue
        try:
            dist = found[key] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ProvisionError(f"initrd: Python distribution {name} is not installed here") from None
        for requirement in dist.requires or ():
            spec, _, marker = requirement.partition(";")
            if "extra" not in marker:
                todo.append(re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0))
    return list(found.values())


def python_packages() -> list[str]:
    """python3.X-minimal, libpython3.X-minimal, libpython3.X-stdlib for Debian's current python3."""
    minimal = debs.dependency("python3-minimal", "python3.")
    version = minimal.removesuffix("-minimal")  # python3.11
    return [minimal, f"lib{version}-minimal", f"lib{version}-stdlib"]


def needed_libraries(elf: Path) -> list[str]:
    out = debs.run(["readelf", "-d", str(elf)], f"readelf {elf.name}").stdout
    return _NEEDED.findall(out)


def installer_initrd(env: Mapping[str, str] = os.environ, modules: Sequence[str] = MODULES,
                     pci_drivers: Sequence[str] = PCI_DRIVERS) -> Initrd:
    """The installer initrd for the installer kernel, from the cache or built into it."""
    cache = Cache.of(env)
    kernel = installer_kernel(env)
    modules_dep = (kernel.modules_dir / "modules.dep").read_text()
    order = load_order(modules_dep, modules)
    drivers = [path for path in load_order(modules_dep, pci_drivers) if path not in order]
    packages = ["busybox-static", "bash", "e2fsprogs", *python_packages(), *LIB_PACKAGES]
    versions = [debs.candidate(p) for p in packages]
    dists = distributions()
    recipe = {"artifact": "initrd", "builder": BUILDER_VERSION, "kernel": kernel.release,
              "debs": [d.spec for d in versions], "modules": order, "pci_drivers": drivers,
              "stdlib_extra": list(STDLIB_EXTRA),
              "project": project_digest(), "distributions": [f"{d.name}=={d.version}" for d in dists]}

    def make(work: Path) -> None:
        unpacked = {}
        for deb, deb_file in zip(versions, debs.fetch(cache, versions)):
            unpacked[deb.package] = work / "debs" / deb.package
            debs.unpack(deb_file, unpacked[deb.package])
        tree = work / "root"
        _assemble(tree, unpacked, kernel, order, dists)
        add_pci_drivers(tree, kernel, order, drivers, pci_drivers)
        with open(work / INITRD_FILE, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                                   compresslevel=9) as out:
            write_newc(tree, out)
        shutil.rmtree(work / "debs")
        shutil.rmtree(tree)

    return Initrd(cache.build("initrd", recipe, make) / INITRD_FILE, kernel, tuple(order))


def add_pci_drivers(tree: Path, kernel: Kernel, order: Sequence[str], drivers: Sequence[str],
                     names: Sequence[str]) -> None:
    """The PCI drivers and what they need, with a modules.dep of every module in the initrd and a modules.alias
    of the drivers' PCI aliases, for /init's `modprobe -a $(cat /sys/bus/pci/devices/*/modalias)`."""
    modules = tree / "lib" / "modules" / kernel.release
    for rel in drivers:
        copy_file(kernel.modules_dir / rel, modules / rel)
    modules_dep = (kernel.modules_dir / "modules.dep").read_text()
    (modules / "modules.dep").write_text(dep_lines(modules_dep, [*order, *drivers]))
    (modules / "modules.alias").write_text(pci_alias_lines((kernel.modules_dir / "modules.alias").read_text(), names))


def copy_file(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` (parents made; a symlink stays a symlink)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        dst.unlink(missing_ok=True)
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copy2(src, dst)


def _assemble(tree: Path, unpacked: Mapping[str, Path], kernel: Kernel, order: list[str],
              dists: Sequence[metadata.Distribution]) -> None:
    """Lay out the initrd's root in `tree` from the unpacked packages (package -> directory), the kernel
    and this project."""
    python_debs = python_packages()
    python = python_debs[0].removesuffix("-minimal")  # python3.11
    _add_programs(tree, unpacked)
    _add_python(tree, unpacked, python_debs, dists)
    _add_libraries(tree, unpacked, python)
    modules = tree / "lib" / "modules" / kernel.release  # kernel modules in load order
    for rel in order:
        copy_file(kernel.modules_dir / rel, modules / rel)
    (modules / "load-order").write_text("".join(f"{rel}\n" for rel in order))
    _byte_compile(tree, python)


def _add_programs(tree: Path, unpacked: Mapping[str, Path]) -> None:
    """busybox, bash (the kickstart's %post interpreter), e2fsprogs' programs, /init and udhcpc's script."""
    copy_file(unpacked["busybox-static"] / "bin" / "busybox", tree / "bin" / "busybox")
    copy_file(unpacked["bash"] / "bin" / "bash", tree / "bin" / "bash")
    for program in E2FSPROGS:  # /init's `busybox --install` keeps them (it links only names not taken)
        copy_file(unpacked["e2fsprogs"] / "sbin" / program, tree / "sbin" / program)
    copy_file(unpacked["e2fsprogs"] / "etc" / "mke2fs.conf", tree / "etc" / "mke2fs.conf")
    for name, target in (("installer-init.sh", "init"), ("udhcpc.sh", "etc/udhcpc.sh")):
        path = tree / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(resources.files("provision").joinpath(f"scripts/{name}").read_bytes())
        path.chmod(0o755)


def _add_python(tree: Path, unpacked: Mapping[str, Path], python_debs: Sequence[str],
                dists: Sequence[metadata.Distribution]) -> None:
    """The interpreter, python3-minimal's stdlib, the extra modules and extensions (of `python_debs`, see
    python_packages), this project and `dists`."""
    minimal, lib_minimal, lib_stdlib = python_debs
    python = minimal.removesuffix("-minimal")
    copy_file(unpacked[minimal] / "usr" / "bin" / python, tree / "usr" / "bin" / python)
    os.symlink(python, tree / "usr" / "bin" / "python3")
    stdlib = _stdlib(python)
    for package in (minimal, lib_minimal, lib_stdlib):
        root = unpacked[package]
        for path in sorted((root / stdlib).rglob("*")) if (root / stdlib).is_dir() else ():
            rel = path.relative_to(root / stdlib)
            if rel.parts[0] == "lib-dynload" and _UNUSED_EXTENSIONS.match(rel.name):
                continue
            if path.is_file() and (package != lib_stdlib or rel.parts[0].removesuffix(".py") in STDLIB_EXTRA
                                   or rel.parts[0] == "lib-dynload"):
                copy_file(path, tree / stdlib / rel)
    site = tree / SITE
    for package in PROJECT_PACKAGES:
        shutil.copytree(project_root() / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    copy_distributions(dists, site, python)


def copy_distributions(dists: Sequence[metadata.Distribution], site: Path, python: str) -> None:
    """Copy the files of `dists` into `site` (no byte code); ProvisionError for an extension module that is not
    built for `python` (python3.11: a cpython-311 or abi3 module)."""
    abi = re.compile(rf"\.(cpython-{python.removeprefix('python').replace('.', '')}-[^.]+|abi3)\.so$")
    for dist in dists:
        for file in dist.files or ():
            rel = Path(str(file))
            if rel.suffix == ".so" and not abi.search(rel.name):
                raise ProvisionError(f"initrd: {dist.name}'s extension module {rel.name} is not built for the "
                                     f"initrd's {python}: install this project on a {python} to build it")
            if ".." not in rel.parts and "__pycache__" not in rel.parts and rel.suffix != ".pyc":
                copy_file(Path(dist.locate_file(file)), site / rel)


def _stdlib(python: str) -> Path:
    return Path("usr") / "lib" / python


def _add_libraries(tree: Path, unpacked: Mapping[str, Path], python: str) -> None:
    """The shared libraries the interpreter, bash, e2fsprogs and the kept extension modules need, from the
    lib packages; a stdlib extension module needing one that is not there is removed, a distribution's is an
    error."""
    libdir = Path("lib") / "x86_64-linux-gnu"
    available = {p.name: p for package in LIB_PACKAGES for d in (unpacked[package] / libdir,
                 unpacked[package] / "usr" / libdir) if d.is_dir() for p in d.iterdir()}
    elves = [tree / "bin" / "bash", *(tree / "sbin" / p for p in E2FSPROGS), tree / "usr" / "bin" / python,
             *(tree / _stdlib(python) / "lib-dynload").glob("*.so"), *(tree / SITE).rglob("*.so")]
    # libgcc_s is no DT_NEEDED of anything, but glibc dlopens it to unwind a thread that ends (pthread_exit,
    # pthread_cancel): without it dollyC's threads abort the process at exit.
    wanted: set[str] = {"ld-linux-x86-64.so.2", "libgcc_s.so.1"}
    for elf in elves:
        needed = needed_libraries(elf)
        missing = [n for n in needed if n not in available]
        if elf.suffix == ".so" and missing and tree / SITE in elf.parents:  # a distribution's: needed
            raise ProvisionError(f"initrd: {elf.name} needs {', '.join(missing)}, in none of {', '.join(LIB_PACKAGES)}")
        if elf.suffix == ".so" and missing:
            elf.unlink()  # e.g. _ssl, _hashlib (libssl), _lzma (liblzma): not shipped
            continue
        wanted.update(needed)
    for name in sorted(wanted):
        if name not in available:
            raise ProvisionError(f"initrd: {name} (needed by python, bash or e2fsprogs) is in none of "
                                 f"{', '.join(LIB_PACKAGES)}")
        src = available[name].resolve()
        copy_file(src, tree / libdir / src.name)
        if src.name != name:
            os.symlink(src.name, tree / libdir / name)
    (tree / "lib64").mkdir()
    os.symlink(f"/{libdir}/ld-linux-x86-64.so.2", tree / "lib64" / "ld-linux-x86-64.so.2")


def _byte_compile(tree: Path, python: str) -> None:
    """Byte-compile the stdlib and site-packages with the initrd's own interpreter (unchecked-hash .pyc)."""
    proc = subprocess.run(["chroot", str(tree), f"/usr/bin/{python}", "-m", "compileall", "-q",
                           "--invalidation-mode", "unchecked-hash", f"/{_stdlib(python)}", f"/{SITE}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProvisionError(f"initrd: byte-compiling with its python failed: {(proc.stderr or proc.stdout)[-2000:]}")
