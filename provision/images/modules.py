"""Kernel module load order from depmod's modules.dep, for a busybox `insmod` that resolves nothing itself.

modules.dep has one line per module, `path: dep1 dep2 ...`, with every (transitive) dependency listed so
that loading them from the last to the first works (modprobe's order). A name matches with `-` and `_`
treated alike, as modprobe does.
"""

from __future__ import annotations

from collections.abc import Iterable

from provision.errors import ProvisionError

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


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
