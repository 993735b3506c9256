"""Errors for input a user can get wrong.

Every package raises a subclass of `InputError` for bad input; the CLI prints
its message as one line on stderr and exits with status 2.
"""


class InputError(ValueError):
    """Bad user input; the message names the offending file or field."""


class SpaceError(InputError):
    """Invalid search space or architecture."""
