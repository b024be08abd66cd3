"""A BMC's password, read when it is used: from its password_file (mode 0600 or stricter, owned by us) or its
password_env variable. The password never goes into a message, a log or the inventory."""

from __future__ import annotations

import os
import stat

from provision.errors import InputError
from provision.model import Bmc

MAX_PASSWORD = 1024


def password(bmc: Bmc, node: str) -> str:
    """The password for `node`'s BMC; InputError naming the file or variable (never the password) if unusable."""
    if bmc.password_env is not None:
        value = os.environ.get(bmc.password_env)
        if not value:
            raise InputError(f"{node}: bmc.password_env: the environment variable {bmc.password_env} is not set "
                             "(or empty)")
        return value
    path = bmc.password_file
    if path is None:
        raise InputError(f"{node}: bmc: no password_file or password_env")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InputError(f"{path}: bmc.password_file of {node}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: bmc.password_file of {node}: not a regular file")
        if info.st_mode & 0o077:
            raise InputError(f"{path}: bmc.password_file of {node}: mode {stat.S_IMODE(info.st_mode):04o} lets "
                             "others read it: chmod 600 it")
        if info.st_uid != os.geteuid():
            raise InputError(f"{path}: bmc.password_file of {node}: owned by uid {info.st_uid}, not by us "
                             f"({os.geteuid()})")
        data = file.read(MAX_PASSWORD + 1)
    text = data.decode("utf-8", "replace").rstrip("\r\n")
    if not text or len(data) > MAX_PASSWORD or "\n" in text:
        raise InputError(f"{path}: bmc.password_file of {node}: want the password alone on one line "
                         f"(at most {MAX_PASSWORD} bytes)")
    return text
