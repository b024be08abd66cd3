"""Subcommands of `provision`.

Each module here defines NAME, HELP, add_arguments(parser) and run(args, env) -> ExitStatus.
Register a new one by adding it to ALL (the order is the order of `provision --help`).
"""

from provision.commands import lab, render

ALL = [render, lab]
