"""Failures of a run that are not bad input: one line on stderr and exit status 1."""

from search_space import RunFailed


class WorkersLost(RunFailed):
    """No Ray worker can run: each died (and its retries too) before finishing a job.
    The study is intact; the unfinished trials run again on resume."""


class TargetLost(RunFailed):
    """No live node of the Ray cluster holds the hardware target: latency cannot be measured.
    The study is intact; the batch runs again on resume."""


class ExportVerificationFailed(RunFailed):
    """An exported artifact that does not compute what was evaluated: nothing is moved into place."""


class FinetuneFailed(RunFailed):
    """Candidates whose fine-tuning failed (and its retries too). What was recorded is kept: the same
    `elastiq finetune` continues them."""
