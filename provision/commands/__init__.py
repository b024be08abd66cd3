"""Subcommands of `provision`.

Each entry of ALL has NAME, HELP, add_arguments(parser) and run(args, env) -> ExitStatus (and may have
ALIASES, other names it answers to): a module, or a
commands.command.Command value where one module defines several. The order is that of `provision --help`.
"""

from provision.commands import dhcp, flip, images, install, lab, remote, render, status

ALL = [render, install, status, flip.to_local, flip.to_install, remote.run, remote.verify, dhcp, lab, images]
