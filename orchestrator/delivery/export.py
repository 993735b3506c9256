"""`elastiq export`: the Pareto front of a study as models a user can ship.

For each selected trial the static subnet is extracted (and fine-tuned as the
search did), or, where `elastiq finetune` trained it, rebuilt with the weights of
its last recorded rung (their sha256 checked; the manifest says which). The
target's runtime builds its artifact (`model.onnx` on ONNX Runtime, with real
int8 kernels where the policy says 8 bits), and `model.pt2` holds the evaluated
model as a `torch.export` program. Each is saved, loaded back from disk and
checked:

- the extracted (or fine-tuned) model reproduces the accuracy recorded in the database exactly;
- the artifact, run through its runtime on the whole test split, and the
  exported program are each within one point of it (else nothing is moved
  into place, exit status 1);
- the artifact's latency, re-measured on the artifact loaded from disk, side by
  side with the other exported artifacts and with drift probes, is compared with
  the prediction and the constraint.

The front is taken on evaluated accuracy and measured latency. Where the search
only predicted latency, the archs that could be on the front (predicted minus
two standard deviations) are measured first, and the front is taken on those
measurements: never on predictions alone.

Everything is written to a temporary directory and moved into place at the end.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.config import StudyConfig
from orchestrator.delivery.outdir import OutputError, check_output_dir, staged, write_json
from orchestrator.errors import ExportVerificationFailed
from orchestrator.execution.evaluation import static_model
from orchestrator.execution.measuring import drift_probes, latency_row, register_target, target_of
from orchestrator.finetune.results import finetuned_run, with_finetuned
from orchestrator.search.driver import SPLIT
from orchestrator.search.objectives import Objectives
from orchestrator.search.pareto import pareto_front
from orchestrator.storage.schema import ExportRow, LatencyRow, connect, dumps, masked
from orchestrator.storage.study import (
    SUPERNET_ATTR,
    Evaluation,
    evaluations,
    require_study,
    stored_config,
    supernet_checkpoint,
)
from predictors.measure import Protocol, example_input, measure_beside_probes, measure_many
from predictors.runtimes import Program
from predictors.runtimes.base import check_agreement, with_quantized_layers_as
from predictors.target import HardwareTarget
from search_space import Arch, InputError
from supernet.checkpoint import sha256_file
from supernet.quant import FULL_PRECISION, QuantTable
from supernet.tasks import load_task
from supernet.train import evaluate, load_supernet

log = logging.getLogger("elastiq.export")
MANIFEST = "manifest.json"
EXPORTED_PROGRAM = "model.pt2"  # torch.export of the evaluated model, beside the runtime's artifact
QUANTIZED_TOLERANCE = 0.01  # one accuracy point


class ExportError(InputError):
    """Nothing to export, or an export that fails its own verification."""


@dataclass(frozen=True)
class Selection:
    trials: tuple[int, ...] = ()  # explicit trial numbers; empty: the front
    max_latency_ms: float | None = None
    accuracy_floor: str | float | None = None  # "majority", "none" or a fraction; None: the config's
    front_tolerance: str | float | None = None  # "standard-error" or a fraction; None: the config's

    def describe(self) -> str:
        if self.trials:
            return "trials " + ", ".join(map(str, self.trials))
        return "Pareto front" + (f" under {self.max_latency_ms} ms" if self.max_latency_ms is not None else "")


def export_study(storage: str, study_name: str, out: str | Path, selection: Selection = Selection(),
                 overwrite: bool = False) -> str:
    out = Path(out)
    check_output_dir(out, MANIFEST, replace=True)  # an earlier export may be up to date: decided below
    study = require_study(storage, study_name)
    config = stored_config(study, storage)
    objectives = Objectives.from_config(config.objectives, config.constraints)
    target = target_of(config)
    task = load_task(config.task.name, config.seed, config.task.options)
    supernet_sha = study.user_attrs[SUPERNET_ATTR]
    engine = connect(storage)  # upgrades an older elastiq schema, which has no exports table
    try:
        supernet = load_supernet(supernet_checkpoint(engine, config.supernet.checkpoint, supernet_sha), config.space,
                                 task, expected_sha256=supernet_sha)
        done = with_finetuned(evaluations(study), finetuned_run(study, engine), objectives)
        floor = None if selection.trials else accuracy_floor(config, task, done, selection.accuracy_floor)
        tolerance = front_tolerance(config, task, selection.front_tolerance)
        chosen = _choose(done, selection, objectives, config, engine, supernet, task, target, floor, tolerance)
        keys = sorted(e.trial for e in chosen)
        previous = _previous_export(out)
        if not overwrite and previous is not None and previous.get("study") == study_name and \
                previous.get("trials") == keys and previous.get("finetuned_weights", {}) == _weights_of(chosen) and \
                previous.get("supernet_sha256") == supernet_sha and _files_intact(out, previous):
            return f"{out}: export of trials {keys} is up to date (manifest verified); nothing to do"
        with staged(out, MANIFEST, replace=overwrite) as staging:  # refuses a non-empty --out first
            probes = _probe_latencies(engine, target) if objectives.needs_latency else []
            manifest = _write_models(staging, study_name, storage, config, target, task, supernet, supernet_sha,
                                     chosen, selection, probes, floor)
        try:
            with Session(engine) as session, session.begin():
                session.add(ExportRow(study=study_name, out_dir=str(out.resolve()), trials=dumps(keys),
                                      manifest_sha256=sha256_file(out / MANIFEST),
                                      summary=dumps(manifest["honesty"])))
        except Exception:
            shutil.rmtree(out, ignore_errors=True)  # an export the database does not know of is not kept
            raise
    finally:
        engine.dispose()
    return _summary_line(out, manifest)


# ---- which trials ---------------------------------------------------------------

def _choose(done: list[Evaluation], selection: Selection, objectives: Objectives, config: StudyConfig, engine,
            supernet, task, target, floor: AccuracyFloor | None, tolerance=None) -> list[Evaluation]:
    by_trial = {e.trial: e for e in done}
    if selection.trials:
        missing = [t for t in selection.trials if t not in by_trial]
        if missing:
            raise ExportError(f"study {config.study!r} has no completed trial {missing[0]}")
        return [by_trial[t] for t in dict.fromkeys(selection.trials)]
    unique = list({e.arch.key: e for e in reversed(done)}.values())[::-1]  # first trial of each arch
    if floor is not None:  # a model no better than always guessing the commonest label is of no use to anyone
        unique = [e for e in unique if e.metrics.get("accuracy", np.inf) > floor.value]
        if not unique:
            why = "always guessing the commonest label" if floor.source == "majority" else "export.accuracy_floor"
            raise ExportError(f"study {config.study!r}: every evaluated arch is at or below the accuracy floor "
                              f"{floor.value:.4f} ({why}); nothing is worth shipping (--accuracy-floor none, or "
                              f"export.accuracy_floor: none, ships them anyway)")
    if not objectives.needs_latency:
        return _front([e for e in unique if e.feasible], objectives, selection, tolerance)
    # measure the front taken on optimistic latencies (measured where known), again until every arch on it
    # is measured: an arch the first round's measurements push off lets in one that was not measured yet
    measured: dict[str, float] = {}
    while True:
        current = [_with_latency(e, measured[e.arch.key], objectives, source="measured at export")
                   if e.arch.key in measured else _with_latency(e, _optimistic_latency(e.metrics), objectives)
                   for e in unique]
        candidates = _front([e for e in current if e.feasible], objectives, selection, tolerance)
        unmeasured = [e for e in candidates if "latency_measured_ms" not in e.metrics]
        if not unmeasured:
            break
        measured.update(_measure_for_selection(unmeasured, config, engine, supernet, task, target))
    settled = [e for e in current if "latency_measured_ms" in e.metrics]
    chosen = _front([e for e in settled if e.feasible], objectives, selection, tolerance)
    if not chosen:
        raise ExportError(f"study {config.study!r}: the {selection.describe()} is empty (no feasible trial with a "
                          f"measured latency{' under the bound' if selection.max_latency_ms is not None else ''})")
    return chosen


@dataclass(frozen=True)
class AccuracyFloor:
    value: float
    source: str  # "majority" or "config"
    left_out: int  # evaluated archs at or below it


def accuracy_floor(config: StudyConfig, task, done: list[Evaluation] | None = None,
                   setting: str | float | None = None) -> AccuracyFloor | None:
    """The accuracy at or below which an arch is useless to ship (`setting`, else `export.accuracy_floor`):
    by default what always predicting the validation split's most common label scores."""
    if setting is None:
        setting = config.export.accuracy_floor
    if setting == "none":
        return None
    if setting == "majority":
        _, labels = task.split("val")
        value = float(torch.bincount(labels).max()) / max(1, len(labels))
    else:
        value = float(setting)
    left_out = 0 if done is None else len({e.arch.key for e in done if e.metrics.get("accuracy", np.inf) <= value})
    return AccuracyFloor(value, "majority" if setting == "majority" else "config", left_out)


def _optimistic_latency(metrics: dict) -> float:
    if "latency_measured_ms" in metrics:
        return metrics["latency_measured_ms"]
    return max(0.0, metrics["latency_ms"] - 2 * metrics.get("latency_predicted_std_ms", 0.0))


def _with_latency(e: Evaluation, latency: float, objectives: Objectives, source: str | None = None) -> Evaluation:
    metrics = dict(e.metrics, latency_ms=latency)
    if source is not None:
        metrics["latency_measured_ms"] = latency
        metrics["latency_source"] = source
    return Evaluation(e.trial, e.arch, metrics, objectives.feasible(metrics), key=e.key)


def front_tolerance(config: StudyConfig, task, setting: str | float | None = None) -> Callable[[float], float] | None:
    """Accuracy -> the lead another arch needs over it to push it off the exported front (`setting`, else
    `export.front_tolerance`); None for the strict front."""
    if setting is None:
        setting = config.export.front_tolerance
    if setting == "standard-error":
        samples = max(1, len(task.split(SPLIT)[1]))  # the split the archs' accuracy was evaluated on
        return lambda accuracy: math.sqrt(max(0.0, accuracy * (1.0 - accuracy)) / samples)
    value = float(setting)
    return None if value == 0.0 else (lambda accuracy: value)


def _front(feasible: list[Evaluation], objectives: Objectives, selection: Selection,
           tolerance: Callable[[float], float] | None = None) -> list[Evaluation]:
    if selection.max_latency_ms is not None:
        feasible = [e for e in feasible if e.metrics.get("latency_ms", np.inf) <= selection.max_latency_ms]
    if not feasible:
        raise ExportError(f"the {selection.describe()} is empty: no feasible completed trial")
    values = objectives.minimized([e.metrics for e in feasible])
    if tolerance is None or "accuracy" not in objectives.metrics:
        front = pareto_front(values)
    else:  # kept unless another is as good elsewhere and ahead on accuracy by more than the tolerance
        column = objectives.metrics.index("accuracy")
        others = [k for k in range(values.shape[1]) if k != column]
        front = [i for i, e in enumerate(feasible)
                 if not any(np.all(values[j, others] <= values[i, others])
                            and -values[j, column] > e.metrics["accuracy"] + tolerance(e.metrics["accuracy"])
                            for j in range(len(feasible)) if j != i)]
    return sorted((feasible[i] for i in front), key=lambda e: e.trial)


def _measure_for_selection(unmeasured: list[Evaluation], config, engine, supernet, task, target) -> dict[str, float]:
    """Measure the deployed models of archs whose latency was only predicted, beside drift probes
    (on the dataset's scale, as the search measures); stored as the target's measurements, so the
    next export (and search) reuse them."""
    log.info("measuring %d arch(s) whose latency the search only predicted", len(unmeasured))
    with Session(engine) as session, session.begin():
        target_id = register_target(session, target).id  # refuses another machine than the target's
        stored = {row.arch_key: row.median_ms for row in session.scalars(select(LatencyRow).where(
            LatencyRow.target_id == target_id, LatencyRow.backend == target.form,
            LatencyRow.arch_key.in_([e.arch.key for e in unmeasured])))}
        probes = drift_probes(session, target)
    todo = [e.arch for e in unmeasured if e.arch.key not in stored]
    if todo:
        inputs = example_input(task.spec, target)
        models = [target.deploy(supernet.extract(arch), inputs) for arch in todo]
        results, check = measure_beside_probes(
            models, [target.deploy(supernet.extract(arch), inputs) for arch, _ in probes],
            [m for _, m in probes], inputs, target, _protocol(config), config.measure.passes,
            np.random.default_rng(config.seed))
        if not check.accepted:
            raise ExportError(f"study {config.study!r}: latency of the candidates {check.reason}; export again "
                              f"when the machine is idle")
        with Session(engine) as session, session.begin():
            for arch, result in zip(todo, results, strict=True):
                session.add(latency_row(target_id, arch, result.to_dict(), source="export", form=target.form))
                stored[arch.key] = result.median_ms
    return stored


def _protocol(config: StudyConfig) -> Protocol:
    return Protocol(**config.measure.protocol_options())


def _probe_latencies(engine, target) -> list[tuple[Arch, float]]:
    """The target's drift probes with their stored latency: measured again beside the exported
    models, they tell how much faster or slower the machine runs now than its dataset says."""
    with Session(engine) as session:
        return [(arch, m.median_ms) for arch, m in drift_probes(session, target)]


# ---- writing and verifying ---------------------------------------------------------

def _write_models(staging: Path, study_name, storage, config, target, task, supernet, supernet_sha,
                  chosen: list[Evaluation], selection: Selection, probes: list[tuple[Arch, float]],
                  floor: AccuracyFloor | None) -> dict[str, Any]:
    torch.set_num_threads(1)  # the search evaluated with one thread: same arithmetic, same predictions
    bound = next((c.bound for c in config.constraints if c.metric == "latency_ms" and c.op == "<="), None)
    entries, programs = [], []
    for e in chosen:
        folder = staging / f"trial-{e.trial:05d}-{e.arch.key[:8]}"
        folder.mkdir()
        entry, program = _export_one(folder, e, config, task, supernet, target)
        entries.append(entry)
        programs.append(program)
        log.info("exported trial %d (%s): test accuracy %.4f", e.trial, e.arch.key[:8], entry["accuracy_test"])
    inputs = example_input(task.spec, target)
    probe_programs = [target.deploy(supernet.extract(arch), inputs) for arch, _ in probes]
    measured = measure_many(programs + probe_programs, inputs, target, _protocol(config), config.measure.passes,
                            np.random.default_rng(config.seed))
    measurements, probe_now = measured[:len(programs)], measured[len(programs):]
    # the machine's speed now relative to when the latency dataset was measured (1: unchanged)
    drift = float(np.median([m.median_ms / then for m, (_, then) in zip(probe_now, probes, strict=True)])) \
        if probes else None
    for entry, folder_name, m in zip(entries, [f"trial-{e.trial:05d}-{e.arch.key[:8]}" for e in chosen],
                                     measurements, strict=True):
        predicted = entry.get("latency_predicted_ms")
        entry.update(latency_remeasured_ms=m.median_ms, latency_remeasured_iqr_ms=m.iqr_ms,
                     latency_remeasured_flagged=m.flagged,
                     latency_error_pct=None if predicted is None else 100 * (predicted - m.median_ms) / m.median_ms,
                     machine_drift=drift,
                     latency_error_drift_corrected_pct=None if predicted is None or drift is None
                     else 100 * (predicted * drift - m.median_ms) / m.median_ms,
                     latency_bound_ms=bound, meets_latency_bound=None if bound is None else m.median_ms <= bound)
        write_json(staging / folder_name / "metrics.json", entry)
    files = {str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    manifest = {
        "elastiq_export": 1, "study": study_name, "storage": masked(storage), "selection": selection.describe(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "supernet_sha256": supernet_sha,
        "target": target.to_dict(), "objectives": dict(config.objectives),
        "constraints": [str(c) for c in config.constraints], "trials": sorted(e.trial for e in chosen),
        "accuracy_floor": None if floor is None else {"accuracy": floor.value, "source": floor.source,
                                                      "archs_left_out": floor.left_out},
        "front_tolerance": None if selection.trials else (selection.front_tolerance if selection.front_tolerance
                                                          is not None else config.export.front_tolerance),
        "models": [{k: entry[k] for k in ("trial", "arch_key", "dir", "weights", "accuracy_test",
                                          "latency_remeasured_ms", "latency_predicted_ms", "meets_latency_bound",
                                          "program_bytes")}
                   for entry in entries],
        "finetuned_weights": _weights_of(chosen),
        "honesty": _honesty(entries, drift), "files": files,
    }
    write_json(staging / MANIFEST, manifest)
    return manifest


def _weights_of(chosen: list[Evaluation]) -> dict[str, str]:
    """Trial -> sha256 of the fine-tuned weights it ships (none: inherited)."""
    return {str(e.trial): e.metrics["finetuned"]["checkpoint_sha256"] for e in chosen if "finetuned" in e.metrics}


def finetuned_model(supernet, e: Evaluation) -> torch.nn.Module:
    """The static model of a fine-tuned arch, with the weights of its last recorded rung (checked by sha256)."""
    record = e.metrics["finetuned"]
    path = Path(record["checkpoint"])
    if not path.is_file() or sha256_file(path) != record["checkpoint_sha256"]:
        raise ExportError(f"trial {e.trial}: its fine-tuned weights {path} are missing or not those of rung "
                          f"{record['rung']} (sha256 differs); run `elastiq finetune` again to restore them")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = supernet.extract(e.arch)
    model.load_state_dict(state["model"])
    return model.eval()


def _export_one(folder: Path, e: Evaluation, config: StudyConfig, task, supernet,
                target: HardwareTarget) -> tuple[dict, Program]:
    arch = e.arch
    finetuned = e.metrics.get("finetuned")
    if finetuned is not None:
        simulated = finetuned_model(supernet, e)
    else:
        simulated = static_model(supernet, arch, task, config.search.finetune_steps, config.seed)
    recorded = e.metrics["accuracy"]
    val_simulated = evaluate(simulated, None, task, SPLIT)
    if abs(val_simulated - recorded) > 1e-9:
        raise ExportError(f"trial {e.trial}: the {'fine-tuned' if finetuned else 'extracted'} model scores "
                          f"{val_simulated:.6f} on {SPLIT}, the study recorded {recorded:.6f}; refusing to export a "
                          f"model that is not the one evaluated")
    x_test, y_test = task.split("test")
    test_simulated = evaluate(simulated, None, task, "test")
    runtime = target.executor
    (folder / runtime.artifact).write_bytes(runtime.build(simulated, x_test[:1], target.device))
    program = runtime.load((folder / runtime.artifact).read_bytes(), target.device, target.threads)  # from disk
    check_agreement(program, simulated, x_test[:32], runtime.name)
    val_deployed, test_deployed = accuracy(program, task, SPLIT), accuracy(program, task, "test")
    _require_within_a_point(e.trial, runtime.artifact, test_deployed, test_simulated)
    _save_exported_program(simulated, x_test[:1], folder / EXPORTED_PROGRAM)
    reloaded = torch.export.load(str(folder / EXPORTED_PROGRAM)).module()
    test_exported_program = accuracy(reloaded, task, "test")
    _require_within_a_point(e.trial, EXPORTED_PROGRAM, test_exported_program, test_simulated)
    saved_bytes = (folder / runtime.artifact).stat().st_size
    fp32_bytes = len(runtime.build(full_precision(simulated), x_test[:1], target.device))  # every layer fp32
    torch.save(simulated.state_dict(), folder / "state_dict.pt")
    torch.save({"input": x_test[:1].clone(), "label": y_test[:1].clone()}, folder / "example.pt")
    write_json(folder / "arch.json", {"arch": arch.to_dict(), "arch_key": arch.key, "space": config.space.to_dict(),
                                      "task": config.task.name, "task_options": config.task.options,
                                      "input_shape": list(x_test.shape[1:]), "input_dtype": str(x_test.dtype),
                                      "labels": task.labels, "input": _input_note(task)})
    _ship_preprocessing(folder, config)
    quantized = sum(layer.bits < 32 for layer in arch.layers)
    entry = {
        "trial": e.trial, "arch_key": arch.key, "dir": folder.name, "arch": arch.to_dict(),
        "weights": "fine-tuned" if finetuned else "inherited",
        "finetuned": None if finetuned is None else {k: finetuned[k] for k in ("run_key", "rung", "steps", "ended",
                                                                                 "checkpoint_sha256")},
        "accuracy_inherited": e.metrics.get("accuracy_inherited", recorded),
        "accuracy_recorded": recorded, "accuracy_val": val_simulated, "accuracy_val_deployed": val_deployed,
        "accuracy_test_simulated": test_simulated, "accuracy_test": test_deployed,
        "accuracy_test_exported_program": test_exported_program,
        "quantized_delta_points": 100 * (val_deployed - val_simulated),
        "quantized_within_1_point": abs(val_deployed - val_simulated) <= QUANTIZED_TOLERANCE,
        "matches_record": True, "runtime": runtime.name, "artifact": runtime.artifact,
        "params": int(e.metrics.get("params", 0)), "macs": int(e.metrics.get("macs", 0)),
        "bytes_analytic": int(e.metrics.get("bytes", 0)), "program_bytes": saved_bytes,
        "fp32_program_bytes": fp32_bytes, "size_ratio_to_fp32": saved_bytes / fp32_bytes,
        "quantized_layers": quantized, "layers": arch.depth,
        "latency_predicted_ms": e.metrics.get("latency_predicted_ms"),
        "latency_predicted_std_ms": e.metrics.get("latency_predicted_std_ms"),
        "latency_search_ms": e.metrics.get("latency_measured_ms"),
        "latency_search_source": e.metrics.get("latency_source", "measured in the search")
        if "latency_measured_ms" in e.metrics else None,
        "measured_form": target.form,
    }
    return entry, program


PREPROCESSING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                       "vocab.json", "merges.txt", "preprocessor_config.json")


def _ship_preprocessing(folder: Path, config: StudyConfig) -> None:
    """The pretrained model's tokenizer or image processor files, which prepare the model's inputs."""
    if config.supernet.pretrained is None:
        return
    source = Path(config.supernet.pretrained)
    for name in PREPROCESSING_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)


def _input_note(task) -> str:
    kind = task.spec.input_kind
    if kind == "text":
        return ("int64 (batch, tokens, 2): the tokenizer's input_ids and token_type_ids, padded to "
                f"{task.spec.seq_len} tokens")
    if task.name == "image-folder":
        return ("float32 (batch, patches, channels * patch * patch): the image processor's pixel_values cut into "
                "patches (supernet.user_data.patches)")
    return f"{kind}: as the task {task.name!r} makes them"


def accuracy(model, task, split: str, batch_size: int = 512) -> float:
    """Accuracy of a runtime's program (or any callable on a batch), batched as `evaluate` batches:
    activations are quantized per batch, so the same batches give the same numbers."""
    x, y = task.split(split)
    correct = 0
    with torch.inference_mode():
        for begin in range(0, len(y), batch_size):
            logits = model(x[begin:begin + batch_size])
            correct += int((logits.argmax(dim=-1) == y[begin:begin + batch_size]).sum())
    return correct / len(y)


def _require_within_a_point(trial: int, artifact: str, got: float, expected: float) -> None:
    if abs(got - expected) > QUANTIZED_TOLERANCE:
        raise ExportVerificationFailed(
            f"trial {trial}: {artifact} scores {100 * got:.2f}% on the test split, the evaluated model "
            f"{100 * expected:.2f}%: more than one point apart; nothing was exported")


def _save_exported_program(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """The evaluated model (fake quantization, fp32 arithmetic) as a `torch.export` program, batch free."""
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(model.eval(), (torch.cat([example, example]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def full_precision(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose quantized layers and embedding tables run in fp32 with the same weights."""
    def plain(module: torch.nn.Module) -> torch.nn.Module:
        if isinstance(module, QuantTable):
            module.bits = FULL_PRECISION  # a table of the copy: read as it is stored
            return module
        linear = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        linear.load_state_dict(module.state_dict())
        return linear

    return with_quantized_layers_as(model, plain, tables=True)


def _honesty(entries: list[dict], drift: float | None) -> dict[str, Any]:
    errors = [abs(e["latency_error_pct"]) for e in entries if e["latency_error_pct"] is not None]
    corrected = [abs(e["latency_error_drift_corrected_pct"]) for e in entries
                 if e["latency_error_drift_corrected_pct"] is not None]
    met = [e["meets_latency_bound"] for e in entries if e["meets_latency_bound"] is not None]
    return {
        "models": len(entries),
        "finetuned_models": sum(e["weights"] == "fine-tuned" for e in entries),
        "latency_median_abs_error_pct": float(np.median(errors)) if errors else None,
        "machine_drift": drift,
        "latency_median_abs_error_drift_corrected_pct": float(np.median(corrected)) if corrected else None,
        "meets_latency_bound_share": float(np.mean(met)) if met else None,
        "size_ratio_to_fp32_median": float(np.median([e["size_ratio_to_fp32"] for e in entries])),
        "quantized_within_1_point_share": float(np.mean([e["quantized_within_1_point"] for e in entries])),
        "max_quantized_delta_points": float(max(abs(e["quantized_delta_points"]) for e in entries)),
    }


def _summary_line(out: Path, manifest: dict) -> str:
    h = manifest["honesty"]
    parts = [f"exported {h['models']} model(s) of study {manifest['study']} to {out}"]
    floor = manifest.get("accuracy_floor")
    if floor:
        parts.append(f"{floor['archs_left_out']} evaluated arch(s) left out at or below the accuracy floor "
                     f"{floor['accuracy']:.4f}" + (" (always guessing the commonest label)"
                                                    if floor["source"] == "majority" else ""))
    if "finetuned_models" in h:
        parts.append(f"{h['finetuned_models']} with fine-tuned weights, {h['models'] - h['finetuned_models']} "
                     f"with inherited weights")
    if h["latency_median_abs_error_pct"] is not None:
        parts.append(f"latency predicted vs re-measured: median |error| {h['latency_median_abs_error_pct']:.1f}%")
    if h["machine_drift"] is not None:
        parts.append(f"the machine runs at {h['machine_drift']:.2f}x the latency of its dataset's measurement "
                     f"(median |error| corrected for it: {h['latency_median_abs_error_drift_corrected_pct']:.1f}%)")
    if h["meets_latency_bound_share"] is not None:
        parts.append(f"{h['meets_latency_bound_share']:.0%} meet the latency bound when re-measured")
    parts.append(f"int8 quantization within 1 point: {h['quantized_within_1_point_share']:.0%}")
    return "; ".join(parts)


# ---- reading an export back -----------------------------------------------------------

def _previous_export(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _files_intact(out: Path, manifest: dict) -> bool:
    files = manifest.get("files", {})
    return bool(files) and all((out / name).is_file() and sha256_file(out / name) == sha
                               for name, sha in files.items())


def verify_export(out: str | Path) -> dict:
    """The manifest of an export whose every file matches its sha256; refuses anything else."""
    out = Path(out)
    manifest = _previous_export(out)
    if manifest is None:
        raise OutputError(f"{out} holds no readable {MANIFEST}")
    if not _files_intact(out, manifest):
        raise OutputError(f"{out}: a file does not match the sha256 in {MANIFEST}")
    return manifest
