"""The README table's rows of fine-tuning: the stage's schedulers, learning-curve calibration, the PFN's training: one
function per results file."""

from __future__ import annotations

import json

from bench.readme_table.common import PY, ROOT, Row, load


def finetune_stage() -> list[Row]:
    """Rows of `bench/results/finetune_stage*.json`."""
    table: list[Row] = []
    if (r := load("finetune_stage.json")) is not None:
        st = r["settings"]
        f = st["finetune"]
        cost = {"latency_ms": "latency", "macs": "MACs", "params": "parameters"}[st.get("cost", "latency_ms")]
        command = (f"`{PY} bench/finetune/finetune_stage.py --config configs/mnist1d.yaml --checkpoint CKPT "
                   "--storage URL"
                   f"{' --cost ' + st['cost'] if st.get('cost', 'latency_ms') != 'latency_ms' else ''}`")
        if (runs := r.get("schedulers")) is not None:
            full = runs["full"]
            inherited = full["inherited_hypervolume"]
            gain_pct = 100 * (full["hypervolume"] / inherited - 1)
            for name, label in (("asha", "ASHA on the front margin"),
                                ("lc", "learning-curve extrapolation by the PFN (`lc`)"),
                                ("lc-families", "learning-curve extrapolation by the parametric families "
                                                "(`lc`, `curve_model` families)")):
                if (run := runs.get(name)) is None:
                    continue
                table.append([f"fine-tuning stage, MNIST-1D front (accuracy vs {cost}, {full['candidates']} "
                              f"candidates, {f['steps']} steps in {f['rungs']} rungs, 2 Tune workers): {label} / "
                              f"every candidate to the full budget",
                              f"**{run['wall_ratio_to_full']:.2f}x** wall time ({run['wall_s']:.0f} s), "
                              f"hypervolume {run['hypervolume_rel_diff_pct']:+.2f}%",
                              f"full: {full['wall_s']:.0f} s; steps trained {run['steps_ratio_to_full']:.2f}x; "
                              f"{run['stopped']} of {run['candidates']} stopped early; of the hypervolume that "
                              f"fine-tuning adds to the inherited front ({gain_pct:+.2f}%), "
                              f"{100 * (run['hypervolume'] - inherited) / (full['hypervolume'] - inherited):.0f}% kept",
                              "<= 0.4x, hypervolume within 1%, 80% of the gain kept", command])
        if (e := r.get("export_vs_alone")) is not None and e["models"]:
            deltas = [m["delta_points"] for m in e["models"]]
            by = e.get("curve_model", "families")  # results of before the PFN: the families' lc run
            table.append([f"exported fine-tuned front (`elastiq export`, lc run, {by}), test accuracy against the same "
                          f"archs trained alone from scratch for the same total budget ({st['supernet_steps']} + "
                          f"{f['steps']} steps)",
                          f"median **{e['median_delta_points']:+.2f}** points; {e['within_1_point_share']:.0%} "
                          f"within 1 point or above", f"{len(deltas)} models: "
                          + ", ".join(f"{d:+.1f}" for d in deltas), "within 1 point", command])
    return table


def curve_calibration() -> list[Row]:
    """Rows of `bench/results/curve_calibration*.json`."""
    table: list[Row] = []
    if (r := load("curve_calibration.json")) is not None:
        sets = ", ".join(f"{name.partition('@')[0]} ({v['curves']} curves of {'/'.join(map(str, v['rungs']))} "
                         f"rungs)" for name, v in r["sets"].items())
        command = f"`{PY} bench/finetune/curve_calibration.py " + " ".join(f"--run {u} {n}" for u, n in r["runs"]) + "`"
        for variant, label in (("pfn+start", "the PFN, from the inherited accuracy and the rungs (what `lc` uses)"),
                               ("families", "the parametric families, from the rungs (what `lc` used before)")):
            v = r["all"][variant]
            seen = "; ".join(f"{k} seen: {100 * b['coverage_90']:.0f}%, {b['mean_log_likelihood']:.2f}"
                             for k, b in v["by_rungs_seen"].items())
            table.append([f"learning-curve calibration on real held-out curves, every full fine-tuning curve of "
                          f"{sets}, cut after 2 .. R-1 rungs: {label}",
                          f"**{100 * v['coverage_90']:.0f}%** of {v['predictions']} finals inside the 90% interval; "
                          f"mean log-likelihood **{v['mean_log_likelihood']:.2f}**",
                          f"by rungs seen (coverage, log-likelihood): {seen}; median interval "
                          f"{v['median_interval_width_points']:.1f} points; {v['median_ms_per_curve']:.1f} ms a curve",
                          "85-95%; < 20 ms a curve", command])
    return table


def curve_pfn_training() -> list[Row]:
    """The row of the learning-curve PFN's shipped manifest."""
    table: list[Row] = []
    manifest = ROOT / "predictors/curve_pfn/shipped/manifest.json"
    if manifest.exists():
        t = json.loads(manifest.read_text())["training"]
        table.append(["learning-curve PFN training (`predictors/curve_pfn/train.py`, seed 0, "
                      f"{t['threads']} thread): wall time, curves of the prior seen, held-out loss",
                      f"**{t['wall_s'] / 60:.1f} min**, {t['curves_seen']:,} curves",
                      f"negative log-likelihood of held-out prior curves (6 rungs, 2 and 5 seen) "
                      f"{t['held_out_nll']:.3f}; {t['steps']} steps of {t['batch']}", "<= 30 min",
                      f"`{PY} -m predictors.curve_pfn.train --out predictors/curve_pfn/shipped`"])
    return table
