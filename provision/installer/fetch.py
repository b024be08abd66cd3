"""What a node asks the provision server over HTTP: a file (its kickstart), and whether it is due for install."""

from __future__ import annotations

import json
import time
import urllib.request

from provision.errors import ProvisionError

ATTEMPTS = 5  # each failed GET waits 1, 2, 3, 4, 5 s


def http_get(url: str) -> bytes:
    """The body of `url`; a failure (no answer, an HTTP error) is tried again, then a ProvisionError."""
    last = None
    for attempt in range(ATTEMPTS):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.read()
        except OSError as exc:
            last = exc
            time.sleep(1 + attempt)
    raise ProvisionError(f"GET {url} failed: {last}")


def boot_mode(boot_url: str) -> str:
    """What the server says this node boots: `install` or `local` (its answer to provision.boot_url)."""
    return json.loads(http_get(boot_url))["boot"]


def due_for_install(boot_url: str) -> bool:
    """Whether the server says install: a node whose flip to local boot did not reach its boot config must
    not reinstall itself on every boot."""
    return boot_mode(boot_url) == "install"
