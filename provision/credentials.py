"""The credentials of one install: the ring secret dollyS and every dollyC share, and a token per node.

Both are new for every run of `provision install` (the ring secret comes from `dolly.secret_file` when the
inventory names one). A node fetches its credentials once, from its own address, before it starts dollyC
(GET /api/nodes/<name>/credentials); its state reports and host-key requests then carry its token. A second
fetch for the same node in the same run is refused: a host that takes over the node's address afterwards
gets neither the token nor the ring secret.
"""

from __future__ import annotations

import re
import secrets
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from provision.errors import InputError, ProvisionError
from provision.outputs import write_bytes_durably

# A secret travels inside JSON and a shell variable of the %post: no quotes, backslashes or blanks.
SECRET = re.compile(r"^[A-Za-z0-9+/=._~-]{16,512}$")


class CredentialsTaken(ProvisionError):
    """The node's credentials were fetched before in this run."""


def read_secret_file(path: Path) -> str:
    """A site's ring secret: a file only its owner may read, 16-512 characters of [A-Za-z0-9+/=._~-]."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"dolly.secret_file: cannot read {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"dolly.secret_file: {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                         f"chmod 600 it")
    if not SECRET.match(text):
        raise InputError(f"dolly.secret_file: {path} must hold 16-512 characters of A-Z a-z 0-9 + / = . _ ~ -")
    return text


class RunCredentials:
    """The ring secret and the node tokens of one install; each node's pair is delivered once."""

    def __init__(self, ring_secret: str, tokens: dict[str, str]):
        self.ring_secret, self.tokens = ring_secret, tokens
        self._delivered: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def fresh(cls, names: Iterable[str], secret_file: Path | None = None) -> RunCredentials:
        ring_secret = read_secret_file(secret_file) if secret_file else secrets.token_hex(32)
        return cls(ring_secret, {name: secrets.token_hex(32) for name in names})

    def write_secret(self, path: Path) -> None:
        """The ring secret for dollyS --secret-file: written durably, readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_durably(path, self.ring_secret.encode() + b"\n", mode=0o600)

    def deliver(self, name: str) -> dict[str, str]:
        """The node's credentials, the first time they are asked for; KeyError for a node not installing."""
        token = self.tokens[name]
        with self._lock:
            if name in self._delivered:
                raise CredentialsTaken(f"the credentials of {name} were fetched before in this install")
            self._delivered.add(name)
        return {"name": name, "token": token, "ring_secret": self.ring_secret}
