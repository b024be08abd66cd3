"""Inventory: one YAML file -> a validated, frozen Inventory; every problem reported at once.

The schema is documented in docs/inventory.md; its keys are the fields of the model classes
(provision.model, read by schema.py). sections.py reads the cluster-wide sections, nodes.py and disks.py
the nodes, checks.py checks across them; paths.py finds the state directory and the inventory to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provision.bulk import cycle_collector_paused
from provision.errors import InputError
from provision.fields import Fields
from provision.inventory.checks import Checks
from provision.inventory.disks import FSTYPES, numbered_partitions, partition_number
from provision.inventory.nodes import Nodes
from provision.inventory.paths import LAST_INSTALL_FILE, resolve_inventory_path, state_dir
from provision.inventory.schema import TOP_KEYS, required
from provision.inventory.sections import Sections
from provision.model import Boot, Disk, Image, Inventory, Network, Node, Partition, Server
from provision.yaml_lines import MAX_TEXT, YamlSyntaxError, YamlTooLarge, load_yaml

__all__ = [
    "Inventory", "Node", "Server", "Network", "Boot", "Image", "Disk", "Partition",
    "load_inventory", "parse_inventory", "resolve_inventory_path", "state_dir",
    "FSTYPES", "LAST_INSTALL_FILE", "numbered_partitions", "partition_number",
]


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file. Raises InputError listing every problem."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT:
            raise InputError(f"{path}: {path.stat().st_size:,} bytes: an inventory is at most {MAX_TEXT >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the inventory: {exc}") from None
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    """Validate inventory YAML text; `path` names the file in messages."""
    with cycle_collector_paused():
        try:
            doc = load_yaml(text)
        except YamlTooLarge as exc:
            raise InputError(f"{path}:{exc.line}: refused: {exc}") from None
        except YamlSyntaxError as exc:
            raise InputError(f"{path}:{exc.line}: not valid YAML: {exc}") from None
        fields = Fields(doc)
        for dup in doc.duplicates:
            fields.problem(dup.path, "key given twice")
        inventory = _inventory(fields, path, doc.data)
    if fields.problems:
        count = len(fields.problems)
        lines = "\n".join("  " + p.render(path) for p in sorted(fields.problems, key=lambda p: p.line))
        raise InputError(f"{path}: {count} problem{'s' if count > 1 else ''} in the inventory:\n{lines}")
    assert inventory is not None
    return inventory


def _inventory(f: Fields, path: Path, data: Any) -> Inventory | None:
    """The whole document: each section, the nodes over `defaults:`, then the checks across them."""
    top = f.mapping((), data, TOP_KEYS, required(Inventory))
    if top is None:
        return None
    sections, checks = Sections(f, path), Checks(f)
    nodes = Nodes(f, checks, path)
    cluster = f.text(("cluster",), top["cluster"]) if "cluster" in top else path.stem
    server = sections.server(top.get("server"))
    network = sections.network(top.get("network"))
    boot = sections.boot(top.get("boot"))
    images = sections.images(top.get("images"))
    kickstart = sections.kickstart({} if top.get("kickstart") is None else top["kickstart"])
    dolly = sections.dolly({} if top.get("dolly") is None else top["dolly"])
    dhcp = sections.dhcp({} if top.get("dhcp") is None else top["dhcp"])
    ring = sections.ring({} if top.get("ring") is None else top["ring"], server)
    defaults = nodes.settings(("defaults",), {} if top.get("defaults") is None else top["defaults"], None)
    node_list = nodes.nodes(top.get("nodes"), defaults)
    if network is not None:
        checks.addresses(network, server, nodes.identities)
    if images is not None:
        checks.image_targets(images, nodes.disk_use)
    parts = (cluster, server, network, boot, images, kickstart, dolly, dhcp, ring, defaults, node_list)
    if f.problems or any(p is None for p in parts):
        return None
    return Inventory(path=path, cluster=cluster, server=server, network=network, boot=boot, images=images,
                     kickstart=kickstart, dolly=dolly, dhcp=dhcp, ring=ring, nodes=tuple(node_list),
                     default_bmc=defaults.get("bmc"))
