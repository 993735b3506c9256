"""The root of every error elastiq reports itself, in the lowest package because every package raises one.

The CLI catches `ElastiqError` alone: it prints the message as one line on stderr and exits with the
error's `exit_status`: 2 for bad input a user can fix (`InputError`: nothing was written), 1 for a run
that failed without any fault of its input (`RunFailed`: what was committed is kept).
"""


class ElastiqError(Exception):
    exit_status = 1


class InputError(ElastiqError, ValueError):
    """Bad user input; the message names the offending file or field."""

    exit_status = 2


class RunFailed(ElastiqError, RuntimeError):
    """A run that failed on good input (workers or a node lost, an artifact that does not compute what was
    evaluated); the message says what is kept and how to go on."""


class SpaceError(InputError):
    """Invalid search space or architecture."""
