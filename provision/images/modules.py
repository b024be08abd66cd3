"""Kernel module load order from depmod's modules.dep, for a busybox `insmod` that resolves nothing itself.

modules.dep has one line per module, `path: dep1 dep2 ...`, with every (transitive) dependency listed so
that loading them from the last to the first works (modprobe's order). A name matches with `-` and `_`
treated alike, as modprobe does.
"""

from __future__ import annotations

from collections.abc import Iterable

from provision.errors import ProvisionError

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
# Drivers of real machines' disk controllers and NICs (NVMe, SAS RAID/HBA; Intel, Realtek, Broadcom), in the
# installer initrd and the golden image besides QEMU's virtio/e1000/AHCI. NICs that need firmware files
# (non-free: bnx2x, some r8169 chips) need a site initrd and image with them.
PCI_DRIVERS = ("nvme", "megaraid_sas", "mpt3sas", "e1000e", "igb", "ixgbe", "i40e", "r8169", "tg3", "bnxt_en")


def module_name(path: str) -> str:
    """kernel/drivers/net/virtio_net.ko -> virtio_net."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """modules.dep text -> {module path: dependency paths as listed}."""
    deps = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[path.strip()] = tuple(rest.split())
    return deps


def load_order(modules_dep: str, wanted: Iterable[str]) -> list[str]:
    """Paths of the `wanted` modules and everything they need, each after its dependencies, each once.
    An unknown name is a ProvisionError naming it."""
    deps = parse_modules_dep(modules_dep)
    by_name = {module_name(path): path for path in deps}
    order: list[str] = []
    placed: set[str] = set()

    def place(path: str, visiting: frozenset[str]) -> None:
        if path in placed or path in visiting:
            return
        for dep in reversed(deps.get(path, ())):
            place(dep, visiting | {path})
        placed.add(path)
        order.append(path)

    unknown = [name for name in wanted if name.replace("-", "_") not in by_name]
    if unknown:
        raise ProvisionError(f"kernel module(s) not in modules.dep: {', '.join(unknown)}")
    for name in wanted:
        place(by_name[name.replace("-", "_")], frozenset())
    return order


def dep_lines(modules_dep: str, paths: Iterable[str]) -> str:
    """The modules.dep lines of `paths` (as depmod wrote them): a modules.dep for a tree holding just these."""
    deps = parse_modules_dep(modules_dep)
    return "".join(f"{path}: {' '.join(deps[path])}\n".replace(": \n", ":\n") for path in paths)


def pci_alias_lines(modules_alias: str, names: Iterable[str]) -> str:
    """The `alias pci:... <module>` lines of modules.alias for the modules `names`."""
    wanted = {name.replace("-", "_") for name in names}
    return "".join(f"{line}\n" for line in modules_alias.splitlines()
                   if line.startswith("alias pci:") and line.split()[-1].replace("-", "_") in wanted)
