"""A subcommand as a value, for modules that define more than one (the others are modules themselves)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from provision.errors import ExitStatus


@dataclass(frozen=True)
class Command:
    NAME: str
    HELP: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Mapping[str, str]], ExitStatus]
