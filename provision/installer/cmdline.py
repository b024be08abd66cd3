"""The kernel command line a node boots with: inst.ks=URL, provision.boot_url=URL, BOOTIF=01-<mac>."""

from __future__ import annotations

from dataclasses import dataclass

from provision.errors import ProvisionError


@dataclass(frozen=True)
class Cmdline:
    kickstart_url: str
    boot_url: str | None
    bootif: str | None  # the boot NIC's MAC, aa:bb:..., from BOOTIF=01-aa-bb-...


def kernel_arg_url(text: str, *keys: str) -> str | None:
    """The http(s) URL given by the first of `keys` on a kernel command line (e.g. inst.ks=...)."""
    for arg in text.split():
        key, _, value = arg.partition("=")
        if key in keys and value.startswith(("http://", "https://")):
            return value
    return None


def kickstart_url(text: str) -> str | None:
    """The URL of `inst.ks=` (or the older `ks=`) on a kernel command line."""
    return kernel_arg_url(text, "inst.ks", "ks")


def boot_url(text: str) -> str | None:
    """The URL of `provision.boot_url=`: where the node asks whether it is due for install."""
    return kernel_arg_url(text, "provision.boot_url")


def parse_cmdline(text: str) -> Cmdline:
    """The installer's settings from a kernel command line; a missing inst.ks= is an error."""
    ks = kickstart_url(text)
    if ks is None:
        raise ProvisionError(f"kernel command line has no inst.ks=http(s)://... : {text.strip()!r}")
    bootif = None
    for arg in text.split():
        key, _, value = arg.partition("=")
        if key == "BOOTIF" and value.startswith("01-"):
            bootif = value[3:].lower().replace("-", ":")
    return Cmdline(ks, boot_url(text), bootif)
