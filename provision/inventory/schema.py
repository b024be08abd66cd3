"""The inventory's keys, read off the model classes (provision.model): a section's known keys are its class's
fields in order, the required ones those without a default (fields marked OPTIONAL_KEY or NOT_A_KEY aside)."""

from __future__ import annotations

import dataclasses
from typing import Any

from provision.model import NOT_A_KEY, OPTIONAL_KEY, Inventory, Node


def keys(cls: type) -> tuple[str, ...]:
    """The keys a section of the inventory may have: the fields of `cls` that are inventory keys."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.metadata != NOT_A_KEY)


def required(cls: type) -> tuple[str, ...]:
    """The keys a section of the inventory must have: fields of `cls` without a default, unless optional."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.metadata not in (NOT_A_KEY, OPTIONAL_KEY)
                 and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


def default(cls: type, key: str) -> Any:
    """The default of field `key` of `cls` (what the inventory means by leaving the key out)."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == key)


# A node's settings are Node's fields with a default; `defaults:` gives them for every node, before `nodes:`.
NODE_SETTINGS = tuple(k for k in keys(Node) if k not in required(Node))
SETTING_DEFAULTS = {k: default(Node, k) for k in NODE_SETTINGS}
TOP_KEYS = (*(k for k in keys(Inventory) if k != "nodes"), "defaults", "nodes")
