"""Debian packages as build inputs: the candidate version apt would install, downloaded into the cache
with `apt-get download` (nothing is installed on this machine) and unpacked with `dpkg-deb -x`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.images.cache import Cache


@dataclass(frozen=True)
class Deb:
    package: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.package}={self.version}"

    @property
    def file_glob(self) -> str:
        """apt-get download's file name, any architecture (an epoch's `:` is written %3a)."""
        return f"{self.package}_{self.version.replace(':', '%3a')}_*.deb"


def run(argv: Sequence[str], what: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a build tool; a failure is a ProvisionError with `what` and the tool's own words."""
    if shutil.which(argv[0]) is None:
        raise ProvisionError(f"{what}: `{argv[0]}` is not installed")
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise ProvisionError(f"{what}: `{' '.join(map(str, argv[:4]))} ...` failed ({proc.returncode}): {output}")
    return proc


def candidate(package: str) -> Deb:
    """The version `apt-get install package` would take now."""
    out = run(["apt-cache", "show", "--no-all-versions", package], f"Debian package {package}").stdout
    for line in out.splitlines():
        if line.startswith("Version: "):
            return Deb(package, line.split(None, 1)[1])
    raise ProvisionError(f"Debian package {package} has no installable version (apt-get update?)")


def dependency(package: str, prefix: str) -> str:
    """The first package named `prefix...` that `package` depends on (linux-image-amd64 -> linux-image-6.1...)."""
    out = run(["apt-cache", "depends", package], f"dependencies of {package}").stdout
    for line in out.splitlines():
        kind, _, name = line.strip().partition(": ")
        if kind in ("Depends", "PreDepends") and name.startswith(prefix):
            return name
    raise ProvisionError(f"Debian package {package} depends on no {prefix}* package")


def fetch(cache: Cache, debs: Sequence[Deb]) -> list[Path]:
    """The .deb files of `debs` (in order), downloaded into <cache>/debs/ unless they are there already."""
    cache.debs.mkdir(parents=True, exist_ok=True)
    missing = [d for d in debs if not list(cache.debs.glob(d.file_glob))]
    if missing:
        work = cache.debs / ".download"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *(d.spec for d in missing)],
            "apt-get download", cwd=work)
        for path in work.glob("*.deb"):
            path.rename(cache.debs / path.name)
        shutil.rmtree(work, ignore_errors=True)
    paths = []
    for deb in debs:
        found = sorted(cache.debs.glob(deb.file_glob))
        if not found:
            raise ProvisionError(f"apt-get download gave no file for {deb.spec}")
        paths.append(found[0])
    return paths


def unpack(deb_file: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", str(deb_file), str(dest)], f"unpacking {deb_file.name}")
