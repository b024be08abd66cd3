"""Field checks for the inventory: each returns the parsed value, or None after recording a problem."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from provision.model import IPv4
from provision.yaml_lines import FieldPath, YamlDocument

_MISSING = object()
_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_FILE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]+$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SAFE_TEXT = re.compile(r"^[^'\"`$\\]*$")  # ends up inside shell/kickstart lines: no quoting games
# crypt(3) hashes as written by openssl passwd / mkpasswd / passlib: md5, sha256, sha512, bcrypt, yescrypt
_CRYPT_HASH = re.compile(
    r"^(\$1\$[./0-9A-Za-z]{1,8}\$[./0-9A-Za-z]{22}"
    r"|\$5\$(rounds=\d+\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43}"
    r"|\$6\$(rounds=\d+\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}"
    r"|\$2[abxy]\$\d\d\$[./0-9A-Za-z]{53}"
    r"|\$g?y\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{1,86}\$[./0-9A-Za-z]{43})$"
)


_SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                  "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_SSH_KEY = re.compile(r"^(\S+) ([A-Za-z0-9+/]+={0,2})( [^'\"`$\\]*)?$")


def ssh_public_key_problem(line: str) -> str | None:
    """Why `line` is not an OpenSSH public key line (`type base64 [comment]`, no quotes or $ in the
    comment), or None when it is one."""
    m = _SSH_KEY.match(line.strip())
    if m is None:
        return "not an OpenSSH public key line (type, base64 key, optional comment without quotes or $)"
    if m.group(1) not in _SSH_KEY_TYPES:
        return f"unknown key type {m.group(1)!r} (known: {', '.join(_SSH_KEY_TYPES)})"
    try:
        blob = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        return "the key is not valid base64"
    kind = m.group(1).encode()
    if blob[:4] != len(kind).to_bytes(4, "big") or blob[4:4 + len(kind)] != kind:
        return f"the key's data is not a {m.group(1)} key"
    return None


def format_path(path: FieldPath) -> str:
    """("nodes", 3, "mac") -> "nodes[3].mac"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Problem:
    line: int
    path: FieldPath
    message: str

    def render(self, file: Path) -> str:
        return f"{file}:{self.line}: {format_path(self.path)}: {self.message}"


class Fields:
    """Reads typed fields out of a YAML document and collects every problem (never stops at the first)."""

    def __init__(self, doc: YamlDocument):
        self.doc = doc
        self.problems: list[Problem] = []

    def problem(self, path: FieldPath, message: str, value: Any = _MISSING) -> None:
        if value is not _MISSING:
            message = f"{message}: {_show(value)}"
        self.problems.append(Problem(self.doc.line(path), path, message))

    def mapping(
        self, path: FieldPath, value: Any, known: Iterable[str], required: Iterable[str] = ()
    ) -> dict | None:
        """A mapping with only `known` keys and all `required` ones."""
        if not isinstance(value, dict):
            self.problem(path, "expected a mapping (key: value lines)", value)
            return None
        known = tuple(known)
        for key in value:
            if key not in known:
                self.problem(path + (key,), f"unknown key (known keys: {', '.join(known)})", key)
        for key in required:
            if value.get(key) is None:
                self.problem(path + (key,), "missing required field")
        return value

    def checked(self, m: dict, path: FieldPath, key: str, check: Callable, *args: Any) -> Any:
        """check(path.key, value, *args) if the key has a value, else None (mapping() reports missing ones)."""
        value = m.get(key)
        return None if value is None else check(path + (key,), value, *args)

    def sequence(self, path: FieldPath, value: Any) -> list | None:
        if not isinstance(value, list):
            self.problem(path, "expected a list", value)
            return None
        return value

    def nonempty_sequence(self, path: FieldPath, value: Any, what: str) -> list | None:
        """A list of at least one `what`."""
        items = self.sequence(path, value)
        if items is not None and not items:
            self.problem(path, f"at least one {what} is needed")
            return None
        return items

    def text(self, path: FieldPath, value: Any, pattern: re.Pattern | None = None, what: str = "") -> str | None:
        if isinstance(value, (int, float, bool)) and path in self.doc.raw:
            value = self.doc.raw[path]  # a plain scalar such as `no` or `0800` meant as text
        if not isinstance(value, str) or not value.strip():
            self.problem(path, "expected a non-empty string", value)
            return None
        if "\n" in value or "\r" in value:
            self.problem(path, "must be a single line", value)
            return None
        if pattern is not None and not pattern.match(value):
            self.problem(path, f"invalid {what}", value)
            return None
        return value

    def integer(self, path: FieldPath, value: Any, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(path, f"expected a whole number from {low} to {high}", value)
            return None
        return value

    def port(self, path: FieldPath, value: Any) -> int | None:
        return self.integer(path, value, 1, 65535)

    def seconds(self, path: FieldPath, value: Any, high: float) -> float | None:
        """A duration: a number above 0 and at most `high` (seconds)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
            self.problem(path, f"expected a number of seconds above 0 and at most {high:g}", value)
            return None
        return float(value)

    def boolean(self, path: FieldPath, value: Any) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, "expected true or false", value)
            return None
        return value

    def choice(self, path: FieldPath, value: Any, enum_type: type) -> Any:
        allowed = [member.value for member in enum_type]
        if value not in allowed:
            self.problem(path, f"expected one of {', '.join(allowed)}", value)
            return None
        return enum_type(value)

    def ipv4(self, path: FieldPath, value: Any) -> IPv4 | None:
        if isinstance(value, str):
            try:
                return IPv4(value)
            except ValueError:
                pass
        self.problem(path, "malformed IPv4 address", value)
        return None

    def subnet(self, path: FieldPath, value: Any) -> IPv4Network | None:
        if not isinstance(value, str) or "/" not in value:
            self.problem(path, "expected an IPv4 subnet in CIDR form like 10.0.0.0/24", value)
            return None
        try:
            return IPv4Network(value)
        except ValueError as exc:
            self.problem(path, f"malformed IPv4 subnet ({exc})", value)
            return None

    def mac(self, path: FieldPath, value: Any) -> str | None:
        text = value.lower() if isinstance(value, str) else None
        if text is None or not _MAC.match(text):
            self.problem(path, "malformed MAC address (want six hex pairs like 02:00:00:00:00:01)", value)
            return None
        text = text.replace("-", ":")
        if int(text[:2], 16) & 1:
            self.problem(path, "multicast/broadcast MAC address cannot be a node's NIC", value)
            return None
        return text

    def hostname(self, path: FieldPath, value: Any) -> str | None:
        """An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens."""
        text = self.text(path, value)
        if text is None:
            return None
        labels = text.lower().split(".")
        if len(text) > 253 or not all(_LABEL.match(label) for label in labels):
            self.problem(
                path, "invalid host name (RFC 1123: letters, digits and inner hyphens, labels of 1-63)", value
            )
            return None
        return text

    def ssh_keys(self, path: FieldPath, value: Any) -> tuple[str, ...] | None:
        """A list of OpenSSH public key lines or absolute paths of files holding such lines."""
        items = self.sequence(path, value)
        if items is None:
            return None
        keys = []
        for i, item in enumerate(items):
            text = self.text(path + (i,), item)
            if text is None:
                continue
            if text.startswith("/"):
                if _FILE_PATH.match(text):
                    keys.append(text)
                else:
                    self.problem(path + (i,), "invalid path of a public key file", text)
                continue
            problem = ssh_public_key_problem(text)
            if problem:
                self.problem(path + (i,), problem, text)
            else:
                keys.append(text.strip())
        return tuple(keys) if len(keys) == len(items) else None

    def kernel_args(self, path: FieldPath, value: Any) -> str | None:
        """Kernel arguments (none: ""), which end up inside shell and kickstart lines."""
        if value is None or value == "":
            return ""
        return self.text(path, value, _SAFE_TEXT, "kernel arguments (no quotes, $ or backslashes)")

    def crypt_hash(self, path: FieldPath, value: Any) -> str | None:
        """A password hash; the value is never echoed (it may be a plaintext password by mistake)."""
        if not isinstance(value, str) or not _CRYPT_HASH.match(value):
            shown = f"<hidden, {len(value)} characters>" if isinstance(value, str) else _show(value)
            self.problem(
                path,
                "must be a crypt(3) hash like $6$... or $y$... (make one with `openssl passwd -6`),"
                f" never a plaintext password: {shown}",
            )
            return None
        return value
