"""Add nodes to an inventory's text, keeping its comments and layout (a text edit, not a YAML dump), and
replace the file with it: validated by the inventory loader first, written atomically, the file as it was
before kept as `<file>.bak`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from provision.discovery.naming import NewNode
from provision.errors import InputError
from provision.inventory import parse_inventory
from provision.model import Inventory
from provision.outputs import write_atomic


def append_nodes(text: str, nodes: Sequence[NewNode], path: Path) -> str:
    """`text` with `nodes` added after the last item of its top-level `nodes:` list, in that item's style
    (a flow mapping `- {name: .., mac: "..", ip: ..}` or a block mapping) and indentation (an empty list,
    `nodes: []`, becomes a block list of flow mappings indented by two); a node found through
    its BMC gets `bmc: {address: ..}` too (the rest of its BMC is defaults.bmc), and one whose request said its
    firmware `firmware: bios|uefi`. Pure."""
    items = _nodes_sequence(text, path)
    lines = text.splitlines(keepends=True)
    if not items.value:
        return _first_nodes(lines, items, nodes)
    last = items.value[-1]
    first_line = lines[last.start_mark.line]
    dash = first_line.rfind("-", 0, last.start_mark.column)
    if dash < 0:  # the item does not start on its dash's line
        raise InputError(f"{path}:{last.start_mark.line + 1}: nodes: cannot tell the list's layout: "
                         f"{first_line.strip()!r}")
    indent = " " * dash
    key_indent = " " * last.start_mark.column
    new = []
    for node in nodes:
        if isinstance(last, yaml.MappingNode) and last.flow_style:
            new.append(_flow_line(indent, node))
        else:
            new.append(f'{indent}- name: {node.name}\n{key_indent}mac: "{node.mac}"\n{key_indent}ip: {node.ip}\n'
                       + "".join(f"{key_indent}{e}\n" for e in _extra_fields(node)))
    end = _last_line(last) + 1
    if end == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines[:end] + new + lines[end:])


def _extra_fields(node: NewNode) -> list[str]:
    return ([f"firmware: {node.firmware}"] if node.firmware else []) + \
        ([f"bmc: {{address: {node.bmc_address}}}"] if node.bmc_address else [])


def _flow_line(indent: str, node: NewNode) -> str:
    return (f'{indent}- {{name: {node.name}, mac: "{node.mac}", ip: {node.ip}'
            + "".join(f", {e}" for e in _extra_fields(node)) + "}\n")


def _first_nodes(lines: list[str], items: yaml.Node, nodes: Sequence[NewNode]) -> str:
    """The `nodes: []` line as `nodes:` (its comment kept), the new nodes below it."""
    line = items.start_mark.line
    key = lines[line]
    colon = key.index(":")
    comment = key[key.index("#"):].rstrip("\n") if "#" in key[colon:] else ""
    head = key[:colon + 1] + (f"  {comment}" if comment else "") + "\n"
    return "".join(lines[:line] + [head] + [_flow_line("  ", node) for node in nodes] + lines[line + 1:])


def _nodes_sequence(text: str, path: Path) -> yaml.Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "nodes":
                if not isinstance(value, yaml.SequenceNode) or value.value and value.flow_style:
                    raise InputError(f"{path}:{key.start_mark.line + 1}: nodes: discovery appends to a block list "
                                     f"(`- {{name: .., mac: .., ip: ..}}` lines) or to an empty one (`nodes: []`)")
                if not value.value:
                    return yaml.SequenceNode("tag:yaml.org,2002:seq", [], key.start_mark, key.end_mark)
                return value
    raise InputError(f"{path}: nodes: no top-level `nodes:` list to append to")


def _last_line(node: yaml.Node) -> int:
    """The 0-based line where `node`'s own text ends (a block mapping's end mark is past what follows it)."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        mark = node.end_mark
        return mark.line - 1 if mark.column == 0 and mark.line > node.start_mark.line else mark.line
    children = [v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode) else node.value
    return max((_last_line(c) for c in children), default=node.start_mark.line)


def replace_inventory(path: Path, text: str, backup: bool = True) -> Inventory:
    """Validate `text` as the inventory at `path` (an error leaves the file untouched), keep the file as it is
    now as `<path>.bak` (unless `backup` is False: an earlier call of this run made it), then replace it
    atomically, keeping its mode. Returns the new inventory."""
    inventory = parse_inventory(text, path)
    mode = os.stat(path).st_mode & 0o777
    if backup:
        bak = path.with_name(path.name + ".bak")
        write_atomic(bak, path.read_text(encoding="utf-8"))
        os.chmod(bak, mode)
    write_atomic(path, text)
    os.chmod(path, mode)
    return inventory
