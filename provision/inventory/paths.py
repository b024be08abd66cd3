"""Where provision keeps its state, and which inventory a command uses when it is given none."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from provision.errors import InputError

DEFAULT_STATE_DIR = "/var/lib/provision"
LAST_INSTALL_FILE = "last-install.json"


def state_dir(env: Mapping[str, str]) -> Path:
    """The state directory: $PROVISION_STATE_DIR, else /var/lib/provision."""
    return Path(env.get("PROVISION_STATE_DIR") or DEFAULT_STATE_DIR)


def resolve_inventory_path(arg: str | None, env: Mapping[str, str]) -> Path:
    """--inventory, else $PROVISION_INVENTORY, else the inventory recorded by the last install."""
    if arg:
        return Path(arg)
    if env.get("PROVISION_INVENTORY"):
        return Path(env["PROVISION_INVENTORY"])
    record = state_dir(env) / LAST_INSTALL_FILE
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))["inventory"]
    except FileNotFoundError:
        raise InputError(
            f"no inventory given: pass --inventory FILE or set PROVISION_INVENTORY (no last install in {record})"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{record}: unreadable last-install record ({exc}); pass --inventory FILE") from None
    if not isinstance(recorded, str) or not recorded:
        raise InputError(f"{record}: field inventory: expected a path, got {recorded!r}")
    return Path(recorded)
