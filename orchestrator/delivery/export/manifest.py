"""An export's honesty: every exported artifact's latency re-measured on the artifact loaded from disk,
side by side with the others and with drift probes, compared with the prediction and the bound; then the
manifest, which lists every file with its sha256."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import StudyConfig
from orchestrator.delivery.export.building import ExportedModel
from orchestrator.delivery.export.selection import AccuracyFloor, Selection
from orchestrator.delivery.outdir import write_json
from orchestrator.storage.schema import masked
from orchestrator.storage.study import Evaluation
from predictors.measure import LatencyMeasurement, example_input, measure_beside_probes
from predictors.runtimes import Program
from predictors.target import HardwareTarget
from search_space import Arch
from supernet.checkpoint import sha256_file

MANIFEST = "manifest.json"
log = logging.getLogger("elastiq.export")


def remeasured(models: list[ExportedModel], programs: list[Program], probes: list[tuple[Arch, LatencyMeasurement]],
               config, task, supernet, target: HardwareTarget) -> tuple[list[ExportedModel], float | None]:
    """The models with their re-measured latency, and the machine's drift (its speed now relative to when the
    latency dataset was measured; 1: unchanged; None without probes), measured beside the drift probes as
    the search measures (`measure_beside_probes`: one drift formula, one noise floor). The latency reported
    is the one measured now; the drift corrects only the prediction's error."""
    inputs = example_input(task.spec, target)
    measured, check = measure_beside_probes(
        programs, [target.deploy(supernet.extract(arch), inputs) for arch, _ in probes], [m for _, m in probes],
        inputs, target, config.measure.to_protocol(), np.random.default_rng(config.seed))
    drift = check.drift if probes else None
    if probes and not check.accepted:
        log.warning("re-measuring the exports: %s", check.reason)
    bound = next((c.bound for c in config.constraints if c.metric == "latency_ms" and c.op == "<="), None)
    out = []
    for model, normalized in zip(models, measured, strict=True):
        m = normalized if normalized.drift is None else replace(  # as measured now
            normalized, latency_ms=normalized.raw_latency_ms, iqr_ms=normalized.iqr_ms * normalized.drift)
        predicted = model.latency_predicted_ms
        out.append(replace(
            model, latency_remeasured_ms=m.latency_ms, latency_remeasured_iqr_ms=m.iqr_ms,
            latency_remeasured_flagged=m.flagged,
            latency_error_pct=None if predicted is None else 100 * (predicted - m.latency_ms) / m.latency_ms,
            machine_drift=drift,
            latency_error_drift_corrected_pct=None if predicted is None or drift is None
            else 100 * (predicted * drift - m.latency_ms) / m.latency_ms,
            latency_bound_ms=bound, meets_latency_bound=None if bound is None else m.latency_ms <= bound))
    return out, drift


def write_manifest(staging: Path, study_name: str, storage: str, config: StudyConfig, target: HardwareTarget,
                   supernet_sha: str, chosen: list[Evaluation], selection: Selection, models: list[ExportedModel],
                   drift: float | None, floor: AccuracyFloor | None) -> dict[str, Any]:
    for model in models:
        write_json(staging / model.dir / "metrics.json", model.to_dict())
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
        "models": [{k: getattr(model, k) for k in ("trial", "arch_key", "dir", "weights", "accuracy_test",
                                                   "latency_remeasured_ms", "latency_predicted_ms",
                                                   "meets_latency_bound", "program_bytes")}
                   for model in models],
        "finetuned_weights": weights_of(chosen),
        "honesty": _honesty(models, drift), "files": files,
    }
    write_json(staging / MANIFEST, manifest)
    return manifest


def weights_of(chosen: list[Evaluation]) -> dict[str, str]:
    """Trial -> sha256 of the fine-tuned weights it ships (none: inherited)."""
    return {str(e.trial): e.metrics["finetuned"]["checkpoint_sha256"] for e in chosen if "finetuned" in e.metrics}


def _honesty(models: list[ExportedModel], drift: float | None) -> dict[str, Any]:
    errors = [abs(m.latency_error_pct) for m in models if m.latency_error_pct is not None]
    corrected = [abs(m.latency_error_drift_corrected_pct) for m in models
                 if m.latency_error_drift_corrected_pct is not None]
    met = [m.meets_latency_bound for m in models if m.meets_latency_bound is not None]
    return {
        "models": len(models),
        "finetuned_models": sum(m.weights == "fine-tuned" for m in models),
        "latency_median_abs_error_pct": float(np.median(errors)) if errors else None,
        "machine_drift": drift,
        "latency_median_abs_error_drift_corrected_pct": float(np.median(corrected)) if corrected else None,
        "meets_latency_bound_share": float(np.mean(met)) if met else None,
        "size_ratio_to_fp32_median": float(np.median([m.size_ratio_to_fp32 for m in models])),
        "quantized_within_1_point_share": float(np.mean([m.quantized_within_1_point for m in models])),
        "max_quantized_delta_points": float(max(abs(m.quantized_delta_points) for m in models)),
    }


def summary_line(out: Path, manifest: dict) -> str:
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
