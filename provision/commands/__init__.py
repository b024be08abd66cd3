"""Subcommands of `provision`.

Each entry of ALL has NAME, HELP, add_arguments(parser) and run(args, env) -> ExitStatus (and may have
ALIASES, other names it answers to): a module, or a
commands.command.Command value where one module defines several. The order is that of `provision --help`.
"""

from provision.commands import dhcp, discover, flip, images, install, lab, power, remote, render, serve, status

ALL = [render, install, serve, status, flip.to_local, flip.to_install, flip.to_diskless,
       remote.run, remote.verify, power, dhcp, discover, lab, images]
