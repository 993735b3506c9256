"""`elastiq report`: what a search found, as two pictures and a table.

- `front.png`: every evaluation in grey, the feasible Pareto front highlighted
  and coloured by its share of quantized (8-, 4- or 2-bit) layers, the constraint drawn; one panel per
  study, side by side, so the fronts of two hardware targets compare at a glance;
- `hypervolume.png`: hypervolume against evaluations, per study;
- `summary.md`: per study, the front as a table, the quantization policy the
  front chose, and the honesty figures of its exports.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.config import StudyConfig
from orchestrator.delivery.outdir import staged
from orchestrator.finetune.results import finetuned_run, with_finetuned
from orchestrator.search.objectives import Objectives
from orchestrator.search.pareto import pareto_front
from orchestrator.storage.history import exports_of, hypervolume_history
from orchestrator.storage.schema import connect
from orchestrator.storage.study import Evaluation, evaluations, require_study, stored_config
from search_space.layer_genes import factor_of, has_boundaries

SUMMARY = "summary.md"
UNITS = {"latency_ms": "latency (ms)", "params": "parameters", "bytes": "model size (bytes)", "macs": "MACs",
         "accuracy": "accuracy (%)", "perplexity": "perplexity", "memory_mb": "memory (MiB)"}


@dataclass
class StudyView:
    name: str
    config: StudyConfig
    objectives: Objectives
    done: list[Evaluation]
    front: list[Evaluation]
    history: list[tuple[int, float]]
    exports: list[dict]
    tuned_front: list[Evaluation] = field(default_factory=list)  # the fine-tuned front (`elastiq finetune`)
    finetune: dict | None = None  # the current fine-tuning run's settings and counts

    @property
    def x_metric(self) -> str:
        """The plot's cost axis: the first minimized objective that is not the task's quality."""
        return next((m for m, d in zip(self.objectives.metrics, self.objectives.directions, strict=True)
                     if d == "minimize" and m != self.objectives.quality), self.objectives.metrics[-1])

    @property
    def y_metric(self) -> str:
        """The plot's quality axis: accuracy or perplexity, where an objective."""
        quality = self.objectives.quality
        return quality if quality in self.objectives.metrics else next(
            (m for m, d in zip(self.objectives.metrics, self.objectives.directions, strict=True)
             if d == "maximize"), self.objectives.metrics[0])

    def quantized_share(self, evaluations_: list[Evaluation]) -> float:
        layers = [layer for e in evaluations_ for layer in e.arch.layers]
        return sum(layer.bits < 32 for layer in layers) / len(layers) if layers else 0.0

    @property
    def title(self) -> str:
        t = self.config.target
        return f"{self.name}: target {t.name} (batch {t.batch_size}, {t.threads} thread{'s' * (t.threads > 1)})"


def load_view(storage: str, name: str, engine) -> StudyView:
    study = require_study(storage, name)
    config = stored_config(study, storage)
    objectives = Objectives.from_config(config.objectives, config.constraints)
    done = list({e.arch.key: e for e in reversed(evaluations(study))}.values())[::-1]
    feasible = [e for e in done if e.feasible]
    front = [feasible[i] for i in pareto_front(objectives.minimized([e.metrics for e in feasible]))] \
        if feasible else []
    history = hypervolume_history(engine, name)
    exports = [{"out_dir": e.out_dir, "trials": e.trials, **e.summary} for e in exports_of(engine, name)]
    run = finetuned_run(study, engine)
    view = StudyView(name, config, objectives, done, front, history, exports)
    if run is not None and run.trained():
        tuned = [e for e in with_finetuned(done, run, objectives) if e.feasible]
        view.tuned_front = [tuned[i] for i in pareto_front(objectives.minimized([e.metrics for e in tuned]))] \
            if tuned else []
        view.finetune = {**run.settings, **run.counts(), "steps_trained": run.steps_trained()}
    return view


def write_report(storage: str, names: list[str], out: str | Path) -> str:
    out = Path(out)
    engine = connect(storage, create=False)
    try:
        views = [load_view(storage, name, engine) for name in names]
    finally:
        engine.dispose()
    with staged(out, SUMMARY, replace=True) as staging:  # a report is regenerated whole
        _plot_fronts(views, staging / "front.png")
        _plot_hypervolume(views, staging / "hypervolume.png")
        (staging / SUMMARY).write_text(_summary(views))
    sizes = ", ".join(f"{v.name}: {len(v.front)} on the front of {len(v.done)}" for v in views)
    return f"report written to {out} (front.png, hypervolume.png, {SUMMARY}); {sizes}"


# ---- pictures ------------------------------------------------------------------

def _scaled(view: StudyView, metric: str, values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values * 100 if metric == "accuracy" else values


def _plot_fronts(views: list[StudyView], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(views), figsize=(6.2 * len(views), 4.8), squeeze=False, sharey=True)
    scatter = None
    for ax, view in zip(axes[0], views, strict=True):
        x, y = view.x_metric, view.y_metric
        infeasible = [e for e in view.done if not e.feasible]
        feasible = [e for e in view.done if e.feasible]
        for group, marker, label in ((feasible, "o", "evaluated"), (infeasible, "x", "infeasible")):
            if group:
                ax.scatter([e.metrics[x] for e in group], _scaled(view, y, [e.metrics[y] for e in group]),
                           s=14, c="0.72", marker=marker, label=f"{label} ({len(group)})", zorder=1)
        front = sorted(view.front, key=lambda e: e.metrics[x])
        if front:
            fx = [e.metrics[x] for e in front]
            fy = _scaled(view, y, [e.metrics[y] for e in front])
            ax.step(fx, fy, where="post", color="tab:blue", lw=1.2, zorder=2)
            share = [view.quantized_share([e]) for e in front]
            scatter = ax.scatter(fx, fy, c=share, cmap="viridis", vmin=0, vmax=1, s=46, edgecolors="black",
                                 linewidths=0.6, zorder=3, label=f"Pareto front ({len(front)})")
        tuned = sorted(view.tuned_front, key=lambda e: e.metrics[x])
        if tuned:
            ax.step([e.metrics[x] for e in tuned], _scaled(view, y, [e.metrics[y] for e in tuned]), where="post",
                    color="tab:orange", lw=1.2, zorder=2, label=f"fine-tuned front ({len(tuned)})")
        for constraint in view.config.constraints:
            if constraint.metric == x:
                ax.axvline(constraint.bound, color="tab:red", ls="--", lw=1.2, label=f"constraint {constraint}")
        source = Counter(e.metrics.get("latency_measured_ms") is not None for e in view.done)
        x_label = UNITS.get(x, x)
        if x == "latency_ms":
            x_label += ", measured" if source[True] >= source[False] else ", predicted"
        ax.set_xlabel(x_label)
        ax.set_ylabel(UNITS.get(y, y))
        ax.set_title(view.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes[0].tolist(), label="share of the model's layers quantized", shrink=0.9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _plot_hypervolume(views: list[StudyView], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(views), figsize=(5.2 * len(views), 3.8), squeeze=False)
    for ax, view in zip(axes[0], views, strict=True):
        if view.history:
            evaluations_, hv = zip(*view.history, strict=True)
            ax.plot(evaluations_, hv, marker="o", ms=3, color="tab:blue")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume (" + " x ".join(UNITS.get(m, m) for m in view.objectives.metrics) + ")",
                      fontsize=8)
        ax.set_title(view.title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the summary ---------------------------------------------------------------

def _summary(views: list[StudyView]) -> str:
    lines = ["# elastiq report", "", "![Pareto fronts](front.png)", "", "![Hypervolume](hypervolume.png)", ""]
    policies = []
    for view in views:
        share = view.quantized_share(view.front)
        all_share = view.quantized_share(view.done)
        policies.append(f"- **{view.name}** (target {view.config.target.name}, batch "
                        f"{view.config.target.batch_size}): {share:.0%} of the front's layers are quantized "
                        f"(against {all_share:.0%} over all evaluated archs).")
    lines += ["## Quantization policy of each front", "", *policies, ""]
    for view in views:
        lines += _study_section(view)
    return "\n".join(lines) + "\n"


def _study_section(view: StudyView) -> list[str]:
    hv = view.history[-1][1] if view.history else 0.0
    lines = [f"## {view.title}", "",
             f"{len(view.done)} archs evaluated ({sum(e.feasible for e in view.done)} feasible), strategy "
             f"{view.config.search.strategy}; objectives "
             + ", ".join(f"{m} ({d})" for m, d in view.config.objectives.items())
             + (("; constraints " + ", ".join(str(c) for c in view.config.constraints)) if view.config.constraints
                else "") + f"; hypervolume {hv:.4g}.", ""]
    if not view.front:
        return lines + ["No feasible evaluation: the front is empty.", ""]
    metrics = list(view.objectives.metrics) + [m for m in ("params", "bytes") if m not in view.objectives.metrics]
    widths = any(layer.width is not None for e in view.front for layer in e.arch.layers)  # a heterogeneous space
    stages = any(has_boundaries(e.arch) for e in view.front)  # a space with stage boundaries
    lines += ["| trial | " + " | ".join(UNITS.get(m, m) for m in metrics) + " | latency source | bits per layer | "
              "mixer |" + (" width per layer |" if widths else "") + (" stages: layers, tokens, MACs |" if stages
                                                                           else ""),
              "|---" * (len(metrics) + 4 + widths + stages) + "|"]
    for e in sorted(view.front, key=lambda e: e.metrics[view.x_metric]):
        cells = [f"{e.metrics[m] * 100:.2f}" if m == "accuracy" else f"{e.metrics[m]:.4g}" for m in metrics]
        source = "measured" if e.metrics.get("latency_measured_ms") is not None else "predicted"
        bits = "/".join(str(layer.bits) for layer in e.arch.layers)
        mixers = ", ".join(f"{k} x{n}" for k, n in Counter(layer.mixer for layer in e.arch.layers).items())
        lines.append(f"| {e.trial} | " + " | ".join(cells) + f" | {source} | {bits} | {mixers} |"
                     + (" " + "/".join(map(str, e.arch.widths)) + " |" if widths else "")
                     + (f" {_stages(e)} |" if stages else ""))
    lines.append("")
    lines += _finetune_section(view)
    for export in view.exports[-1:]:
        lines += [f"Last export, {export['models']} models in `{export['out_dir']}`: "
                  + _honesty_sentence(export), ""]
    return lines


def _stages(e) -> str:
    """An arch's stages: the layers of each, the tokens they see and their MACs (from its evaluation)."""
    starts = [0] + [i for i in range(e.arch.depth) if factor_of(e.arch, i) > 1] + [e.arch.depth]
    cells = []
    for k, (first, end) in enumerate(zip(starts, starts[1:], strict=False)):
        tokens, macs = e.metrics.get(f"stage{k}_tokens"), e.metrics.get(f"stage{k}_macs")
        span = f"{first}" if end - first == 1 else f"{first}-{end - 1}"
        cells.append(f"{span}: " + ("?" if tokens is None else f"{tokens:.0f} tok, {macs / 1e6:.3g}M"))
    return "; ".join(cells)


def _finetune_section(view: StudyView) -> list[str]:
    if view.finetune is None:
        return []
    f = view.finetune
    budget = f["candidates"] * f["steps"]
    lines = [f"Fine-tuned ({f['scheduler']}, {f['steps']} steps in {f['rungs']} rungs, distillation {f['distill']}): "
             f"{f['candidates']} candidates, {f['finished']} finished, {f['stopped']} stopped early, "
             f"{f['unfinished']} unfinished; {f['steps_trained']} of {budget} steps trained. The fine-tuned front:", "",
             f"| trial | accuracy inherited (%) | accuracy fine-tuned (%) | {UNITS.get(view.x_metric, view.x_metric)} "
             f"| steps | ended |", "|---|---|---|---|---|---|"]
    for e in sorted(view.tuned_front, key=lambda e: e.metrics[view.x_metric]):
        tuned = e.metrics.get("finetuned")
        inherited = e.metrics.get("accuracy_inherited", e.metrics["accuracy"])
        lines.append(f"| {e.trial} | {inherited * 100:.2f} | {e.metrics['accuracy'] * 100:.2f} | "
                     f"{e.metrics[view.x_metric]:.4g} | {tuned['steps'] if tuned else 0} | "
                     f"{(tuned['ended'] or 'unfinished') if tuned else 'not a candidate'} |")
    return lines + [""]


def _honesty_sentence(h: dict) -> str:
    parts = []
    if h.get("latency_median_abs_error_pct") is not None:
        parts.append(f"predicted vs re-measured latency, median |error| {h['latency_median_abs_error_pct']:.1f}%")
    if h.get("machine_drift") is not None:
        parts.append(f"the machine ran at {h['machine_drift']:.2f}x the latency it had when the latency dataset was "
                     f"measured; corrected for that, median |error| "
                     f"{h['latency_median_abs_error_drift_corrected_pct']:.1f}%")
    if h.get("meets_latency_bound_share") is not None:
        parts.append(f"{h['meets_latency_bound_share']:.0%} meet the latency bound when re-measured")
    parts.append(f"int8 / fp32 program size, median {h['size_ratio_to_fp32_median']:.2f}")
    return "; ".join(parts) + "."
