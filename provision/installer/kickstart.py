"""A node's kickstart read with pykickstart (RHEL 9 syntax), and its %post scripts."""

from __future__ import annotations

from dataclasses import dataclass

from provision.errors import ProvisionError


@dataclass(frozen=True)
class PostScript:
    script: str
    interpreter: str
    in_chroot: bool
    error_on_fail: bool


def read_kickstart(text: str, source: str = "kickstart"):
    """The pykickstart handler (RHEL 9 syntax) of a kickstart's text; one pykickstart refuses is a
    ProvisionError naming `source` and pykickstart's reason."""
    try:
        from pykickstart.errors import KickstartError
        from pykickstart.parser import KickstartParser
        from pykickstart.version import RHEL9, makeVersion
    except ImportError:
        raise ProvisionError("pykickstart is not installed (pip install pykickstart): kickstarts are read "
                             "with it") from None
    handler = makeVersion(RHEL9)
    try:
        KickstartParser(handler).readKickstartFromString(text)
    except KickstartError as exc:
        raise ProvisionError(f"{source}: {' '.join(str(exc).split())}") from None
    return handler


def post_scripts(handler) -> list[PostScript]:
    """The kickstart's %post sections, in order."""
    from pykickstart.constants import KS_SCRIPT_POST

    return [PostScript(s.script, s.interp or "/bin/sh", s.inChroot, s.errorOnFail)
            for s in handler.scripts if s.type == KS_SCRIPT_POST]
