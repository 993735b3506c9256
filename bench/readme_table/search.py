"""The README table's rows of the search: accuracy predictors, strategies, orchestration, resume, the wider spaces,
crash torture: one function per results file."""

from __future__ import annotations

import json
import math

import numpy as np

from bench.readme_table.common import PY, RESULTS, Row, boundaries, load, n, span


def accuracy_predictor() -> list[Row]:
    """Rows of `bench/results/accuracy_predictor*.json`."""
    table: list[Row] = []
    for path in sorted(RESULTS.glob("accuracy_predictor_*.json")):
        r = json.loads(path.read_text())
        res = r["results"]
        config = ("configs/mnist1d.yaml --checkpoint runs/bench/mnist1d-supernet.pt" if r["task"] == "mnist1d"
                  else "configs/digits.yaml --checkpoint CKPT")
        table.append([f"accuracy predictor on {r['task']}: {r['held_out']} held-out of {r['archs']} "
                      f"archs evaluated by a {r['supernet_steps']}-step supernet, trained on {r['train']}; "
                      f"accuracies span {r['accuracy_range'][0] * 100:.1f}-{r['accuracy_range'][1] * 100:.1f}% on "
                      f"{r['val_images']} val images",
                      f"Kendall tau **{res['elastiq_per_layer']['kendall_tau']:.2f}**",
                      f"as the search fits it {res['elastiq_as_searched']['kendall_tau']:.2f}; layer-averaged "
                      f"encoding {res['layer_averaged']['kendall_tau']:.2f}; val and test accuracy of the same archs "
                      f"agree at {r['val_vs_test_kendall_tau']:.2f}", ">= 0.8",
                      f"`{PY} bench/search/accuracy_predictor.py --config {config}`"])
    return table


def search_efficiency() -> list[Row]:
    """Rows of `bench/results/search_efficiency*.json`."""
    table: list[Row] = []
    for name, task in (("search_efficiency.json", "digits"), ("search_efficiency_mnist1d.json", "MNIST-1D")):
        if (r := load(name)) is None:
            continue
        budget, needed = r["evaluations_budget"], r["needed_to_99pct"]

        def median(strategy: str, needed=needed, budget=budget) -> str:
            runs = needed[strategy]
            reached = [n for n in runs if not math.isinf(n)]
            if len(reached) > len(runs) / 2:
                return f"{np.median(runs):.0f}"
            return f"> {budget} (reached in {len(reached)} of {len(runs)} runs)"

        def ratio(strategy: str, needed=needed, budget=budget) -> str:
            # a run that never reaches it counts as the budget: the ratio is then a lower bound
            capped = {k: float(np.median([min(n, budget) for n in v])) for k, v in needed.items()}
            bound = ">= " if any(math.isinf(n) for n in needed[strategy]) else ""
            return f"**{bound}{capped[strategy] / capped['evolutionary']:.1f}x**"

        others = [f"NSGA-II {median('nsga2')} ({ratio('nsga2')})"]
        others += [f"TPE {median('tpe')}"] if "tpe" in needed else []
        others += [f"random {median('random')} ({ratio('random')})"] if "random" in needed else []
        config = "" if task == "digits" else " --config configs/mnist1d.yaml --out bench/results/" + name
        strategies = "" if "tpe" in needed else " --strategies " + ",".join(needed)
        table.append([f"search efficiency on {task}: evaluations to 99% of the pooled front's hypervolume, "
                      f"{budget} per run, {r['seeds']} seeds (median)",
                      f"evolutionary **{median('evolutionary')}**", "; ".join(others),
                      ">= 3x fewer than NSGA-II, >= 2x fewer than random",
                      f"`{PY} bench/search/search_efficiency.py{config} --checkpoint CKPT --storage URL "
                      f"--seeds {r['seeds']}"
                      f"{strategies}`"])
    return table


def orchestration_overhead() -> list[Row]:
    """Rows of `bench/results/orchestration_overhead*.json`."""
    table: list[Row] = []
    if (r := load("orchestration_overhead.json")) is not None:
        s = r["seconds"]
        median = {key: float(np.median(s[key])) for key in ("local_beside_1", "ray_tune_1", "local_beside_2",
                                                            "ray_tune_2")}
        table.append([f"orchestration, {r['evaluations']} evaluations, medians of {r['rounds']} alternating rounds",
                      f"Ray Tune 1 worker {median['ray_tune_1']:.1f} s: **{r['ratio_ray1_over_local']:.2f}x** local; "
                      f"2 workers {median['ray_tune_2']:.1f} s: **{r['speedup_ray2_over_local']:.2f}x** speed-up",
                      f"local executor {median['local_beside_1']:.1f} s and {median['local_beside_2']:.1f} s",
                      "<= 1.2x; >= 1.6x", f"`{PY} bench/search/orchestration_overhead.py --checkpoint CKPT`"])
    return table


def resume_scale() -> list[Row]:
    """Rows of `bench/results/resume_scale*.json`."""
    table: list[Row] = []
    for name in sorted(p.name for p in RESULTS.glob("resume_scale_*.json")):
        r = load(name)
        if "front_and_hypervolume_s" not in r:
            continue
        table.append([f"a SQLite study of {r['trials']:,} trials",
                      f"resume to the first new evaluation **{r['resume_to_first_evaluation_s']:.1f} s** (after a "
                      f"crash: {r['resume_after_crash_to_first_evaluation_s']:.1f} s); status "
                      f"**{r['status_s']:.1f} s**; front and hypervolume {r['front_and_hypervolume_s']:.1f} s", "",
                      "resume <= 5 s; status and front <= 2 s",
                      f"`{PY} bench/search/resume_scale.py --checkpoint CKPT --trials {r['trials']}`"])
    return table


def flexibert_search() -> list[Row]:
    """Rows of `bench/results/flexibert_search*.json`."""
    table: list[Row] = []
    for task in ("mnist1d", "listops"):
        if (r := load(f"flexibert_search_{task}.json")) is None or task not in r["tasks"]:
            continue
        t = r["tasks"][task]
        flexi = t["runs"]["flexi"]["front"]
        mixers = sorted({m for p in flexi for m in p["mixers"]})
        widened = sum(len(set(p["widths"])) > 1 for p in flexi)
        matched = [m for m in t["matched_within_1_point"] if m["speedup_b32"]]
        best = max((m["speedup_b32"] for m in matched), default=None)
        command = (f"`{PY} bench/search/flexibert_search.py --tasks {task} --steps {r['steps']} --batch-size "
                   f"{r['batch_size']} --evaluations {r['evaluations']} --dir runs/bench/flexibert-search-{task} "
                   f"--out bench/results/flexibert_search_{task}.json`")
        crossed = t.get("base_front_in_flexi_supernet", [])
        drops = [100 * (c["accuracy_base_supernet"] - c["accuracy_flexi_supernet"]) for c in crossed]
        loss = (f"; the old front's models inherit a median {float(np.median(drops)):.1f} points less from the "
                "wider space's supernet" if crossed else "")
        table.append([f"search on {task} with and without FlexiBERT's choices (fourier, conv3, conv7, a width per "
                      f"layer), the same budget ({r['steps']} supernet steps, {r['evaluations']} evaluations), "
                      "accuracy (val) against the front's latency re-measured on ONNX Runtime, 1 thread: "
                      "hypervolume with / without",
                      f"**{t['hypervolume_ratio_b32']:.2f}x** (b32), {t['hypervolume_ratio_b1']:.2f}x (b1)",
                      f"front accuracy {span(t['runs']['base']['front'])} without, {span(flexi)} with; "
                      f"the wider front's mixers: {', '.join(mixers)}; {widened} of {len(flexi)} models with "
                      f"unequal layer widths; at most 1 point less accurate, up to "
                      + (f"{best:.2f}x faster at b32" if best else "none as accurate") + loss,
                      "> 1: the wider front dominates; 1.5x faster at equal accuracy", command])
    return table


def stage_search() -> list[Row]:
    """Rows of `bench/results/stage_search*.json`."""
    table: list[Row] = []
    for name in ("stage_search.json", "stage_search_listops.json"):
        for task, t in ((load(name) or {}).get("tasks") or {}).items():
            r = load(name)
            staged = t["runs"]["staged"]["front"]
            merged = sum(p["tokens_per_layer"][-1] < p["tokens_per_layer"][0] for p in staged)
            matched = [m for m in t["matched_within_1_point"] if m["speedup_b32"]]
            best = max(matched, key=lambda m: m["speedup_b32"], default=None)
            merging = [p for p in staged if p["tokens_per_layer"][-1] < p["tokens_per_layer"][0]]
            by_merging = [(b["ms_b32"] / m["ms_b32"], b, m) for b in t["runs"]["base"]["front"]
                          for m in merging if m["accuracy"] >= b["accuracy"] - 0.01]
            merged_best = max(by_merging, key=lambda x: x[0], default=None)
            drops = [100 * (c["accuracy_staged_supernet"] - c["accuracy_base_supernet"])
                     for c in t.get("base_front_in_staged_supernet", [])]
            exact = t.get("staged_exactness", [])
            macs = lambda front: f"{min(p['macs_b1'] for p in front) / 1e6:.2f}-{max(p['macs_b1'] for p in front) / 1e6:.2f}M"  # noqa: E731,E501
            table.append([f"search on {task} with and without stage boundaries (tokens merged 2 by 2 or 2x2 before "
                          f"some layers), the same budget ({r['steps']} supernet steps of {r['batch_size']}, "
                          f"{r['evaluations']} evaluations), accuracy (val) against the front's latency re-measured "
                          "on ONNX Runtime, 1 thread: hypervolume with / without",
                          f"**{t['hypervolume_ratio_b32']:.2f}x** (b32), {t['hypervolume_ratio_b1']:.2f}x (b1); "
                          + (f"at most 1 point less accurate, up to {best['speedup_b32']:.2f}x faster at b32 "
                             f"({100 * best['accuracy']:.1f}% -> {100 * best['staged_accuracy']:.1f}%)" if best
                             else "nothing within 1 point")
                          + (f"; by a model that merges tokens **{merged_best[0]:.2f}x** "
                             f"({100 * merged_best[1]['accuracy']:.1f}% -> {100 * merged_best[2]['accuracy']:.1f}%)"
                             if merged_best else "; by a model that merges tokens: **none**"),
                          f"front accuracy {span(t['runs']['base']['front'])} without, {span(staged)} with; "
                          f"{merged} of {len(staged)} staged front models merge tokens; MACs (b1) "
                          f"{macs(t['runs']['base']['front'])} without, {macs(staged)} with"
                          + (f"; the one-stage front's models in the staged supernet: a median "
                             f"{float(np.median(drops)):+.1f} points" if drops else "")
                          + (f"; staged front: supernet vs extracted at most {max(e['extracted'] for e in exact):.0e}, "
                             f"vs ONNX Runtime {max(e['onnxruntime'] for e in exact):.0e}" if exact else "")
                          + boundaries(t.get("base_front_with_boundaries", [])),
                          "1.5x faster at b32 within 1 point, on one task",
                          f"`{PY} bench/search/stage_search.py --tasks {','.join(r['tasks'])} --steps {r['steps']} "
                          f"--batch-size {r['batch_size']} --evaluations {r['evaluations']} --dir runs/bench/"
                          f"{name.removesuffix('.json').replace('_', '-')} --out bench/results/{name}`"])
    return table


def quantized_search() -> list[Row]:
    """Rows of `bench/results/quantized_search*.json`."""
    table: list[Row] = []
    if (r := load("quantized_search.json")) is not None:
        with_4, without_4 = r["runs"]["with-4-bit"], r["runs"]["without-4-bit"]
        smallest = lambda run: min(p["bytes"] for p in run["front"])  # noqa: E731
        best = lambda run: max(p["accuracy"] for p in run["front"])  # noqa: E731
        matched = [m for m in r["matched"] if m["bytes_with"]]
        ratio = float(np.median([m["bytes_with"] / m["bytes_without"] for m in matched])) if matched else None
        table.append(["search on the digits space, accuracy (val) against the artifact's bytes, the same budget with "
                      "`bits: [32, 8, 4]` and with `[32, 8]` (a supernet each, the demo's recipe)",
                      f"4-bit layers on the front: **{100 * with_4['layer_share']['4']:.0f}%**; front bytes at equal"
                      f" or better accuracy: median **{n(ratio)}x** of the front without 4-bit; hypervolume "
                      f"**{r['hypervolume_ratio']:.3f}x**",
                      f"fronts of {len(with_4['front'])} and {len(without_4['front'])}; smallest model "
                      f"{smallest(with_4):,} vs {smallest(without_4):,} bytes; best accuracy "
                      f"{100 * best(with_4):.1f}% vs {100 * best(without_4):.1f}%", "",
                      f"`{PY} bench/search/quantized_search.py`"])
    return table


def torture() -> list[Row]:
    """Rows of `bench/results/torture*.json`."""
    table: list[Row] = []
    if (r := load("torture.json")) is not None:
        s = r["search"]
        table.append([f"crash torture: driver killed with SIGKILL {s['kills']} times at seeded points of its progress",
                      f"{s['complete']}/{s['budget']} evaluations, {s['archs_evaluated_twice']} evaluated twice, "
                      f"{s['running_left']} left RUNNING, same as uninterrupted: **{s['same_as_uninterrupted']}**",
                      "", "nothing lost", f"`{PY} bench/search/torture.py --config STUDY.yaml`"])
    return table
