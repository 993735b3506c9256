"""The `elastiq` command line: the product surface (`space`: the space commands, in a module of their own).

Bad input of any kind prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import yaml

from orchestrator.cli.space import space
from search_space import ElastiqError

USAGE_ERROR = 2


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise click.BadParameter(f"{pair!r}: value is not valid YAML", param_hint="--set") from None
    return overrides


config_option = click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
                             help="Study config YAML.")
set_option = click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key, e.g. --set search.evaluations=50 (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="elastiq")
def cli() -> None:
    """elastiq: hardware-aware neural architecture search for transformers."""


cli.add_command(space)


@cli.group()
def config() -> None:
    """Inspect a study config."""


@config.command("show")
@config_option
@set_option
def config_show(config_path: str, set_pairs: tuple[str, ...]) -> None:
    """Validate a study config and print it resolved (defaults filled, space inlined)."""
    from orchestrator.config import config_as_dict, load_study_config

    study = load_study_config(config_path, _overrides(set_pairs))
    click.echo(yaml.safe_dump(config_as_dict(study), sort_keys=False), nl=False)


@cli.command("train-supernet")
@config_option
@set_option
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override supernet.steps.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train_supernet_command(config_path: str, set_pairs: tuple[str, ...], steps: int | None, progress: bool) -> None:
    """Train the supernet of a study, or continue it from its checkpoint."""
    from orchestrator.config import load_study_config
    from orchestrator.execution.training import run_supernet_training

    overrides = _overrides(set_pairs)
    if steps is not None:
        overrides["supernet.steps"] = steps
    click.echo(run_supernet_training(load_study_config(config_path, overrides), progress=progress))


@cli.command("evaluate")
@config_option
@set_option
@click.option("--arch", "arch_text", required=True, metavar="largest|smallest|JSON",
              help="The arch: largest, smallest, or an arch as JSON (as `space sample` prints).")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
def evaluate_command(config_path: str, set_pairs: tuple[str, ...], arch_text: str, split: str) -> None:
    """Print the accuracy of one arch with inherited weights: from the study's supernet checkpoint, or,
    before any training, straight from its pretrained model."""
    from orchestrator.config import load_study_config
    from orchestrator.execution.training import describe_arch_accuracy

    click.echo(describe_arch_accuracy(load_study_config(config_path, _overrides(set_pairs)), arch_text, split))


@cli.command("measure")
@config_option
@set_option
@click.option("-n", "count", type=click.IntRange(min=1), default=None, help="Override measure.archs.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def measure_command(config_path: str, set_pairs: tuple[str, ...], count: int | None, progress: bool) -> None:
    """Build (or complete) the latency dataset of the study's hardware target."""
    from orchestrator.config import load_study_config
    from orchestrator.execution.measuring import run_measure
    from orchestrator.search.latency_model import latency_predictor_report

    config = load_study_config(config_path, _overrides(set_pairs))
    click.echo(run_measure(config, count, progress=progress))
    click.echo(latency_predictor_report(config))


executor_option = click.option("--executor", type=click.Choice(["ray", "local"]), default=None,
                                help="Override search.executor (local: in-process, no Ray).")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True)


@cli.command("search")
@config_option
@set_option
@executor_option
@progress_option
def search_command(config_path: str, set_pairs: tuple[str, ...], executor: str | None, progress: bool) -> None:
    """Launch a hardware-aware search, or continue the study it names."""
    from orchestrator.config import load_study_config
    from orchestrator.search.driver import SearchDriver

    overrides = _overrides(set_pairs)
    if executor:
        overrides["search.executor"] = executor
    click.echo(SearchDriver(load_study_config(config_path, overrides), progress=progress).run())


@cli.command("resume")
@click.option("--storage", required=True, help="Database URL of the study.")
@click.option("--study", "study_name", required=True)
@click.option("--evaluations", type=click.IntRange(min=1), default=None, help="Raise the budget.")
@executor_option
@progress_option
def resume_command(storage: str, study_name: str, evaluations: int | None, executor: str | None,
                   progress: bool) -> None:
    """Continue a study to its budget from the database alone."""
    from orchestrator.config import config_as_dict, study_config_from_dict
    from orchestrator.search.driver import SearchDriver
    from orchestrator.storage.study import require_study, stored_config

    config = stored_config(require_study(storage, study_name), storage)
    data = config_as_dict(config)
    if evaluations:
        data["search"]["evaluations"] = evaluations
    if executor:
        data["search"]["executor"] = executor
    click.echo(SearchDriver(study_config_from_dict(data), progress=progress).run())


@cli.command("finetune")
@click.option("--storage", required=True, help="Database URL of the study.")
@click.option("--study", "study_name", required=True)
@click.option("--scheduler", type=click.Choice(["full", "asha", "lc"]), default=None,
              help="Override finetune.scheduler (full: no early stopping).")
@click.option("--steps", type=int, default=None, help="Override finetune.steps (each candidate's budget).")
@click.option("--lr", type=float, default=None, help="Override finetune.lr.")
@click.option("--distill", type=click.Choice(["none", "largest", "teacher"]), default=None,
              help="Override finetune.distill.")
@click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
              help="Override a finetune or ray key, e.g. --set rungs=8 --set ray.workers=4 (repeatable).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="A bar of rungs done of the budget, candidates finished and stopped, and the best margin.")
def finetune_command(storage: str, study_name: str, scheduler: str | None, steps: int | None, lr: float | None,
                     distill: str | None, set_pairs: tuple[str, ...], progress: bool) -> None:
    """Fine-tune the study's front (and the archs near it) as Ray Tune trials, stopping early those a
    scheduler finds will not stay on the front; run again to continue after a crash."""
    from orchestrator.finetune.stage import FinetuneStage

    overrides = _overrides(set_pairs)
    given = {"scheduler": scheduler, "steps": steps, "lr": lr, "distill": distill}
    overrides.update({key: value for key, value in given.items() if value is not None})
    click.echo(FinetuneStage(storage, study_name, overrides, progress=progress).run())


@cli.command("status")
@click.option("--storage", required=True, help="Database URL of the study.")
@click.option("--study", "study_name", required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(storage: str, study_name: str, as_json: bool) -> None:
    """Trial counts, best per objective, Pareto size, hypervolume and budget used."""
    from orchestrator.delivery.status import format_status, study_status

    click.echo(format_status(study_status(storage, study_name), as_json))


@cli.command("export")
@click.option("--storage", required=True, help="Database URL of the study.")
@click.option("--study", "study_name", required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory to write (made whole or not at all).")
@click.option("--trial", "trials", multiple=True, type=click.IntRange(min=0),
              help="Export this trial instead of the front (repeatable).")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Export the front under this latency.")
@click.option("--accuracy-floor", default=None, metavar="majority|none|FRACTION",
              help="Leave off the front archs at or below this accuracy (default: the study's export.accuracy_floor, "
                   "'majority': what always guessing the commonest label scores).")
@click.option("--front-tolerance", default=None, metavar="standard-error|FRACTION",
              help="Keep on the front an arch that another beats on accuracy by no more than this (default: the "
                   "study's export.front_tolerance, 0: the strict front; 'standard-error': that of its validation "
                   "accuracy).")
@click.option("--overwrite", is_flag=True, help="Export again, replacing an earlier export in --out.")
def export_command(storage: str, study_name: str, out: str, trials: tuple[int, ...], max_latency_ms: float | None,
                   accuracy_floor: str | None, front_tolerance: str | None, overwrite: bool) -> None:
    """Export the Pareto-optimal models of a study: the target runtime's artifacts (ONNX with real
    int8 kernels by default), torch.export programs, state dicts, metrics, and a manifest of sha256s;
    each one verified."""
    from orchestrator.delivery.export import Selection, export_study

    if trials and max_latency_ms is not None:
        raise click.UsageError("give --trial or --max-latency-ms, not both")
    floor = _export_setting("accuracy_floor", accuracy_floor, "give 'majority', 'none' or a fraction in [0, 1)")
    tolerance = _export_setting("front_tolerance", front_tolerance, "give 'standard-error' or a fraction in [0, 1)")
    click.echo(export_study(storage, study_name, out, Selection(tuple(trials), max_latency_ms, floor, tolerance),
                            overwrite))


def _export_setting(key: str, value: str | None, message: str):
    """An `export` config value given on the command line, checked as the config checks it (None: not given)."""
    if value is None:
        return None
    from pydantic import ValidationError

    from orchestrator.config import ExportConfig

    try:
        return getattr(ExportConfig(**{key: value}), key)
    except ValidationError:
        raise click.BadParameter(message, param_hint="--" + key.replace("_", "-")) from None


@cli.command("report")
@click.option("--storage", required=True, help="Database URL of the studies.")
@click.option("--study", "study_names", required=True, multiple=True,
              help="Study to report (repeat to put several targets' fronts side by side).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write.")
def report_command(storage: str, study_names: tuple[str, ...], out: str) -> None:
    """Plots of the front and of the hypervolume, and a markdown summary."""
    from orchestrator.delivery.report import write_report

    click.echo(write_report(storage, list(dict.fromkeys(study_names)), out))


class _EchoHandler(logging.Handler):
    """Log lines on stderr, through click so progress bars and test capture see them."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"elastiq: {record.getMessage()}", err=True)


def _setup_logging() -> None:
    logger = logging.getLogger("elastiq")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    try:
        cli.main(args=argv, prog_name="elastiq", standalone_mode=False)
    except ElastiqError as exc:  # bad input (2) or a failed run (1): see search_space.errors
        _fail(str(exc))
        return exc.exit_status
    except click.exceptions.Abort:
        return _fail("aborted")
    except click.ClickException as exc:
        return _fail(exc.format_message())
    except KeyboardInterrupt:
        return _fail("interrupted")
    except Exception as exc:
        from orchestrator.storage.schema import database_failure

        lost = database_failure(exc)  # raised by the database driver, through SQLAlchemy or Optuna
        if lost is None:
            raise
        _fail(f"the database failed during the run ({lost}); what was committed is kept: run the same "
              f"command again, or `elastiq resume`, once it is back")
        return 1
    return 0


def _fail(message: str) -> int:
    # one line, whatever the message carries
    click.echo(f"elastiq: error: {' '.join(message.split())}", err=True)
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
