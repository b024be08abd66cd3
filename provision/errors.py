"""Exit codes and the exception type that the CLI turns into messages."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1          # a command ran and something failed (a node, a service)
    USAGE = 2          # bad command line
    BAD_INPUT = 3      # invalid inventory, template or config file
    INTERRUPTED = 130


class ProvisionError(Exception):
    """An error with a message fit for the operator; carries its exit status."""

    exit_status = ExitStatus.ERROR

    def __init__(self, message: str, exit_status: ExitStatus | None = None):
        super().__init__(message)
        if exit_status is not None:
            self.exit_status = exit_status


class InputError(ProvisionError):
    """Bad input (inventory, templates, config): names file, field and value."""

    exit_status = ExitStatus.BAD_INPUT
