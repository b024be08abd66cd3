"""Load YAML into plain Python values and remember the line of every field (for error messages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

try:  # libyaml's parser is several times faster; the pure-Python one gives the same nodes
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

FieldPath = tuple[str | int, ...]

MAX_TEXT = 8 << 20  # bytes of YAML: ~100,000 nodes' worth of inventory
MAX_ALIASED = 100_000  # values built by expanding aliases (each use of `*anchor` copies its whole value)

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"


class YamlSyntaxError(Exception):
    """The text is not valid YAML; carries the 1-based line."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


class YamlTooLarge(YamlSyntaxError):
    """Valid YAML, but more than a loader takes (MAX_TEXT, MAX_ALIASED)."""


@dataclass(frozen=True)
class DuplicateKey:
    path: FieldPath
    line: int


@dataclass
class YamlDocument:
    """Parsed data plus, for each field path, its line and the raw text of a plain scalar."""

    data: Any
    lines: dict[FieldPath, int]
    raw: dict[FieldPath, str]
    duplicates: list[DuplicateKey]

    def line(self, path: FieldPath) -> int:
        """The line of `path`, else of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def load_yaml(text: str) -> YamlDocument:
    """Parse one YAML document. Raises YamlSyntaxError; YamlTooLarge for a text over MAX_TEXT bytes and for
    aliases that expand to more than MAX_ALIASED values (nested anchors grow exponentially: "billion laughs")."""
    if len(text) > MAX_TEXT:
        raise YamlTooLarge(f"the file is over {MAX_TEXT >> 20} MiB: not an inventory", 1)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(f"{exc.problem or exc.context}", line) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), 1) from None
    finally:
        loader.dispose()
    doc = YamlDocument(data=None, lines={(): 1}, raw={}, duplicates=[])
    if root is not None:
        doc.lines[()] = root.start_mark.line + 1
        doc.data = _Builder(loader, doc).build(root, ())
    return doc


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument):
        self.loader = loader
        self.doc = doc
        self._seen: set[int] = set()  # the nodes built once: meeting one again is an alias
        self._open: set[int] = set()  # the nodes being built: meeting one of them is an alias to itself
        self._alias_depth = 0
        self._aliased = 0

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        if id(node) in self._open:
            raise YamlTooLarge("an alias refers to the value that holds it (an endless value)", node.start_mark.line + 1)
        again = id(node) in self._seen
        self._seen.add(id(node))
        self._open.add(id(node))
        self._alias_depth += again
        try:
            if self._alias_depth:
                self._aliased += 1
                if self._aliased > MAX_ALIASED:
                    raise YamlTooLarge(f"aliases expand to more than {MAX_ALIASED:,} values (anchors nested in "
                                          f"each other?)", node.start_mark.line + 1)
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return self._scalar(node, path)
        finally:
            self._alias_depth -= again
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict:
        if any(k.tag == _MERGE for k, _ in node.value):
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                key = str(getattr(key_node, "value", key))
            child = path + (key,)
            line = key_node.start_mark.line + 1
            if key in result:
                self.doc.duplicates.append(DuplicateKey(child, line))
            self.doc.lines[child] = line
            result[key] = self.build(value_node, child)
        return result

    def _sequence(self, node: yaml.SequenceNode, path: FieldPath) -> list:
        items = []
        for index, item in enumerate(node.value):
            child = path + (index,)
            self.doc.lines[child] = item.start_mark.line + 1
            items.append(self.build(item, child))
        return items

    def _scalar(self, node: yaml.ScalarNode, path: FieldPath) -> Any:
        if node.style is None:  # plain scalar: keep the text for fields that want a string
            self.doc.raw[path] = node.value
            # YAML 1.1 reads 10:20:30 as a base-60 number; in an inventory it is a MAC or time.
            if node.tag in (_INT, _FLOAT) and ":" in node.value:
                return node.value
        return self.loader.construct_object(node, deep=True)
