"""One exported model: built, saved, loaded back from disk and verified.

The static subnet is extracted (and fine-tuned as the search did), or, where `elastiq finetune` trained it,
rebuilt with the weights of its last recorded rung (their sha256 checked). The target's runtime builds its
artifact, and `model.pt2` holds the evaluated model as a `torch.export` program. Checked:

- the extracted (or fine-tuned) model reproduces the accuracy recorded in the database exactly;
- the artifact, run through its runtime on the whole test split, and the exported program are each within
  one point of it (else nothing is moved into place, exit status 1).
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from orchestrator.config import StudyConfig
from orchestrator.delivery.export.selection import ExportError
from orchestrator.delivery.outdir import write_json
from orchestrator.errors import ExportVerificationFailed
from orchestrator.execution.evaluation import static_model
from orchestrator.search.driver import SPLIT
from orchestrator.storage.study import Evaluation
from predictors.runtimes import Program
from predictors.runtimes.base import check_agreement, full_precision
from predictors.target import HardwareTarget
from supernet.checkpoint import sha256_file
from supernet.training.train import evaluate

EXPORTED_PROGRAM = "model.pt2"  # torch.export of the evaluated model, beside the runtime's artifact
QUANTIZED_TOLERANCE = 0.01  # one accuracy point
PREPROCESSING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                       "vocab.json", "merges.txt", "preprocessor_config.json")


@dataclass(frozen=True)
class ExportedModel:
    """What an export says of one model (its `metrics.json`)."""

    trial: int
    arch_key: str
    dir: str
    arch: dict[str, Any]
    weights: str  # "fine-tuned" or "inherited"
    finetuned: dict[str, Any] | None  # run, rung, steps, how it ended, weights' sha256
    accuracy_inherited: float
    accuracy_recorded: float  # on the validation split, as the study recorded it
    accuracy_val: float  # of the model rebuilt here: equal to the record
    accuracy_val_deployed: float  # of the runtime's artifact
    accuracy_test_simulated: float
    accuracy_test: float  # of the runtime's artifact
    accuracy_test_exported_program: float
    quantized_delta_points: float
    quantized_within_1_point: bool
    matches_record: bool
    runtime: str
    artifact: str
    params: int
    macs: int
    bytes_analytic: int
    program_bytes: int
    fp32_program_bytes: int  # the same model with every layer and table in fp32
    size_ratio_to_fp32: float
    quantized_layers: int
    layers: int
    latency_predicted_ms: float | None
    latency_predicted_std_ms: float | None
    latency_search_ms: float | None
    latency_search_source: str | None
    measured_on: str  # what its latency figures are measured on (HardwareTarget.measured_on)
    # re-measured on the artifact loaded from disk, beside the other exported models and drift probes
    latency_remeasured_ms: float | None = None
    latency_remeasured_iqr_ms: float | None = None
    latency_remeasured_flagged: bool | None = None
    latency_error_pct: float | None = None
    machine_drift: float | None = None
    latency_error_drift_corrected_pct: float | None = None
    latency_bound_ms: float | None = None
    meets_latency_bound: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def export_one(folder: Path, e: Evaluation, config: StudyConfig, task, supernet,
               target: HardwareTarget) -> tuple[ExportedModel, Program]:
    """Build, save and verify one model in `folder`; its record and its loaded artifact (to measure)."""
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
    runtime = target.inference_runtime
    (folder / runtime.artifact).write_bytes(runtime.build(simulated, x_test[:1], target.device))
    program = runtime.load((folder / runtime.artifact).read_bytes(), target.device, target.threads)  # from disk
    check_agreement(program, simulated, x_test[:32], runtime.name)
    val_deployed, test_deployed = evaluate(program, None, task, SPLIT), evaluate(program, None, task, "test")
    _require_within_a_point(e.trial, runtime.artifact, test_deployed, test_simulated)
    _save_exported_program(simulated, x_test[:1], folder / EXPORTED_PROGRAM)
    reloaded = torch.export.load(str(folder / EXPORTED_PROGRAM)).module()
    test_exported_program = evaluate(reloaded, None, task, "test")
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
    measured_in_search = "latency_measured_ms" in e.metrics
    model = ExportedModel(
        trial=e.trial, arch_key=arch.key, dir=folder.name, arch=arch.to_dict(),
        weights="fine-tuned" if finetuned else "inherited",
        finetuned=None if finetuned is None else {k: finetuned[k] for k in ("run_key", "rung", "steps", "ended",
                                                                              "checkpoint_sha256")},
        accuracy_inherited=e.metrics.get("accuracy_inherited", recorded),
        accuracy_recorded=recorded, accuracy_val=val_simulated, accuracy_val_deployed=val_deployed,
        accuracy_test_simulated=test_simulated, accuracy_test=test_deployed,
        accuracy_test_exported_program=test_exported_program,
        quantized_delta_points=100 * (val_deployed - val_simulated),
        quantized_within_1_point=abs(val_deployed - val_simulated) <= QUANTIZED_TOLERANCE,
        matches_record=True, runtime=runtime.name, artifact=runtime.artifact,
        params=int(e.metrics.get("params", 0)), macs=int(e.metrics.get("macs", 0)),
        bytes_analytic=int(e.metrics.get("bytes", 0)), program_bytes=saved_bytes,
        fp32_program_bytes=fp32_bytes, size_ratio_to_fp32=saved_bytes / fp32_bytes,
        quantized_layers=sum(layer.bits < 32 for layer in arch.layers), layers=arch.depth,
        latency_predicted_ms=e.metrics.get("latency_predicted_ms"),
        latency_predicted_std_ms=e.metrics.get("latency_predicted_std_ms"),
        latency_search_ms=e.metrics.get("latency_measured_ms"),
        latency_search_source=e.metrics.get("latency_source", "measured in the search") if measured_in_search
        else None,
        measured_on=target.measured_on,
    )
    return model, program


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
                "patches (supernet.tasks.user_data.patches)")
    return f"{kind}: as the task {task.name!r} makes them"


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
