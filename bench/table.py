"""The README's benchmark table, written from `bench/results/*.json`.

Each row comes from one result file and names the command that wrote it; a
result that is not there yet is left out. Run by `make bench` after the scripts.

    .venv/bin/python bench/table.py [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
PY = ".venv/bin/python"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _span(front: list[dict]) -> str:
    accuracies = [100 * p["accuracy"] for p in front]
    return f"{min(accuracies):.1f}-{max(accuracies):.1f}%"


def _n(value, digits: int = 2) -> str:
    return "not reached" if value is None or (isinstance(value, float) and math.isinf(value)) \
        else f"{value:.{digits}f}"


def rows() -> list[list[str]]:
    table = []
    if (r := _load("slicing_overhead.json")) is not None:
        by = {(row["arch"], row["batch"]): row for row in r["rows"]}
        ratio = lambda a, b: by[(a, b)]["supernet_ms"] / by[(a, b)]["static_ms"]  # noqa: E731
        table.append(["slicing overhead: largest arch run in the supernet / its extracted model, 1 thread",
                      f"**{ratio('largest', 1):.2f}** (batch 1), **{ratio('largest', 32):.2f}** (batch 32)",
                      f"smallest arch: {ratio('smallest', 1):.2f} / {ratio('smallest', 32):.2f}", "<= 1.10",
                      f"`{PY} bench/slicing_overhead.py`"])
    if (r := _load("supernet_quality.json")) is not None:
        s = r["summary"]
        table.append([f"supernet quality on digits: inherited vs trained alone, {s['steps']} steps",
                      f"largest **{s['largest_gap_points']:.1f}** points behind, smallest "
                      f"**{s['smallest_gap_points']:.1f}**", "the same archs trained alone", "within 2 points",
                      f"`{PY} bench/supernet_quality.py --standalone-steps 1000 --jobs 2`"])
        table.append([f"ranking fidelity, {s['subnets']} archs", f"Kendall tau **{s['kendall_tau']:.2f}**",
                      f"Spearman {s['spearman']:.2f}", ">= 0.6", "same run"])
        table.append(["all-int8 vs fp32, same weights, no retraining",
                      f"drop median **{s['int8_drop_points_median']:.2f}**, max {s['int8_drop_points_max']:.2f} "
                      "points", "", "<= 1 point", "same run"])
    for name in sorted(p.name for p in RESULTS.glob("supernet_quality_mnist1d*.json")):
        s = _load(name)["summary"]
        val, test = s["random_subnets_ranking"]["val"], s["random_subnets_ranking"]["test"]
        floor = s["val_vs_test_kendall_tau"]
        command = (f"`{PY} bench/supernet_quality.py --config configs/mnist1d.yaml --steps {s['steps']} --subnets "
                   f"{s['subnets'] - 2} --standalone-steps {s['standalone_steps_random']} --jobs 2"
                   + ("" if name == "supernet_quality_mnist1d.json" else f" --out bench/results/{name}") + "`")
        table.append([f"supernet quality on MNIST-1D: inherited vs trained alone, {s['steps']} steps (val and test)",
                      f"largest **{s['largest_gap_points']:.1f}** points behind, smallest "
                      f"**{s['smallest_gap_points']:.1f}**", "the same archs trained alone", "within 3 points",
                      command])
        table.append([f"ranking fidelity on MNIST-1D, {s['subnets'] - 2} random archs (depth, attention, bits), "
                      f"inherited from the {s['steps']}-step supernet vs trained alone "
                      f"{s['standalone_steps_random']} steps (val)",
                      f"Kendall tau **{val['kendall_tau']:.2f}**, within a depth **{val['within_depth_tau']:.2f}**",
                      f"on test {test['kendall_tau']:.2f} / {test['within_depth_tau']:.2f}; val and test agree at "
                      f"{floor['standalone']:.2f} (alone), {floor['inherited']:.2f} (inherited)",
                      ">= 0.75; within a depth >= 0.5", "same run"])
    for name, task in (("supernet_recipe.json", "MNIST-1D"), ("supernet_recipe_3000.json", "MNIST-1D"),
                       ("supernet_recipe_digits.json", "digits")):
        if (r := _load(name)) is None:
            continue
        complete = [row for row in r["table"] if "largest" in row and "smallest" in row]
        for recipe in dict.fromkeys(row["recipe"] for row in complete):
            rows_ = [row for row in complete if row["recipe"] == recipe]
            budgets = " / ".join(str(row["steps"]) for row in rows_)
            gaps = {arch: " / ".join(f"**{row[arch]['gap_mean']:.1f}** ± {row[arch]['gap_std']:.1f}" for row in rows_)
                    for arch in ("largest", "smallest")}
            inherited = " / ".join(f"{row['largest']['inherited_mean']:.1f}" for row in rows_)
            alone = " / ".join(f"{row['largest']['alone_mean']:.1f}" for row in rows_)
            changes = ", ".join(f"{k}: {v}" for k, v in r["recipes"][recipe].items()) or "as configured"
            steps = ",".join(str(row["steps"]) for row in rows_)
            command = (f"`{PY} bench/supernet_recipe.py --config {r['config']} --steps {steps} --seeds "
                       f"{rows_[0]['largest']['seeds']} --recipes {recipe} --jobs 2`")
            table.append([f"supernet recipe `{recipe}` on {task} ({changes}), "
                          f"{budgets} steps, {rows_[0]['largest']['seeds']} seeds: points behind the same arch "
                          f"trained alone (val)", f"largest {gaps['largest']}; smallest {gaps['smallest']}",
                          f"largest inherited {inherited}, alone {alone}", "within 3 points",
                          command])
    if (r := _load("runtimes.json")) is not None:
        others = [x for x in r["runtimes"] if x != "onnxruntime"]
        for batch, summary in r["summary"].items():
            table.append([f"runtimes side by side, {r['archs']} digits archs (smallest, largest, random), {batch}, "
                          f"1 thread: latency over ONNX Runtime int8 (the default), median",
                          f"fastest: **{summary['fastest']}**",
                          "; ".join(f"{x} {summary[f'{x}_over_onnxruntime_median']:.2f}x" for x in others),
                          "the default is the fastest", f"`{PY} bench/runtimes.py`"])
        builds = r["build_seconds"].items()
        table.append(["runtimes: build time of one artifact, median (max)",
                      "; ".join(f"{x} {b['median_s']:.2f} s ({b['max_s']:.1f} s)" for x, b in builds),
                      "", "", "same run"])
    for name in sorted(p.name for p in RESULTS.glob("latency_predictor_*.json")):
        r = _load(name)
        res = r["results"]
        low, high = r["latency_range_ms"]
        runtime = r["target"].get("runtime") or "TorchScript + torch.ao int8 (before runtimes; not re-measured)"
        table.append([f"latency predictor, target {r['target']['name']} on {runtime} ({low:.2f}-{high:.2f} ms), "
                      f"{r['held_out']} held-out of {r['archs_measured']} measured",
                      f"MAPE **{res['elastiq']['mape']:.2f}%**, tau **{res['elastiq']['kendall_tau']:.3f}**",
                      f"OFA lookup table {res['ofa_lookup_table']['mape']:.2f}% / "
                      f"{res['ofa_lookup_table']['kendall_tau']:.3f}; HAT layer-averaged MLP "
                      f"{res['hat_mlp_layer_averaged']['mape']:.2f}% / "
                      f"{res['hat_mlp_layer_averaged']['kendall_tau']:.3f}; noise floor CV "
                      f"{r['noise_floor']['cv_of_repeated_measurements_pct']:.0f}%",
                      "MAPE <= 5%, tau >= 0.95", f"`{PY} bench/latency_predictor.py`"])
        if "int8_effect" in r:
            e = r["int8_effect"]
            table.append([f"int8 effect on latency, largest arch, target {r['target']['name']}: all-int8 / all-fp32",
                          f"**{e['ratio']:.2f}**", f"{e['int8_ms']:.2f} / {e['fp32_ms']:.2f} ms", "", "same run"])
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
                      f"`{PY} bench/accuracy_predictor.py --config {config}`"])
    for name, task in (("search_efficiency.json", "digits"), ("search_efficiency_mnist1d.json", "MNIST-1D")):
        if (r := _load(name)) is None:
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
                      f"`{PY} bench/search_efficiency.py{config} --checkpoint CKPT --storage URL --seeds {r['seeds']}"
                      f"{strategies}`"])
    if (r := _load("orchestration_overhead.json")) is not None:
        s = r["seconds"]
        median = {key: float(np.median(s[key])) for key in ("local_beside_1", "ray_tune_1", "local_beside_2",
                                                            "ray_tune_2")}
        table.append([f"orchestration, {r['evaluations']} evaluations, medians of {r['rounds']} alternating rounds",
                      f"Ray Tune 1 worker {median['ray_tune_1']:.1f} s: **{r['ratio_ray1_over_local']:.2f}x** local; "
                      f"2 workers {median['ray_tune_2']:.1f} s: **{r['speedup_ray2_over_local']:.2f}x** speed-up",
                      f"local executor {median['local_beside_1']:.1f} s and {median['local_beside_2']:.1f} s",
                      "<= 1.2x; >= 1.6x", f"`{PY} bench/orchestration_overhead.py --checkpoint CKPT`"])
    for name in sorted(p.name for p in RESULTS.glob("search_latency*.json")):
        r = _load(name)
        spinning = f"{r.get('busy')} process{'es' if r.get('busy', 0) > 1 else ''}"
        busy = f", {spinning} spinning on the CPU beside it" if r.get("busy") else ""
        command = f"`{PY} bench/search_latency.py --checkpoint CKPT --storage URL" + \
            (f" --busy {r['busy']}`" if r.get("busy") else "`")
        measured, refused = r["measured_in_search"], r["refused_in_search"]
        if measured:
            stored = (f"**{r['search_vs_alone_median_abs_pct']:.1f}%** (signed median "
                      f"{r['search_vs_alone_median_signed_pct']:+.1f}%)")
            raw = f"raw, before the drift probes' correction: {r['raw_search_vs_alone_median_abs_pct']:.1f}%; "
        else:
            stored, raw = "none stored: **every batch refused**", ""
        table.append([f"latency measured inside a Ray search ({r['workers']} workers on this machine{busy}) vs the "
                      f"same archs measured alone right after: median abs difference",
                      stored, f"noise floor (the same archs measured alone twice) "
                      f"{r['noise_floor_median_abs_pct']:.1f}%; {raw}{measured} archs stored, {refused} refused",
                      "within the noise floor", command])
        table.append([f"latency predictor after that search{busy and ' (busy)'} added its measurements to the "
                      f"target's dataset: CV MAPE", f"**{r['with_search_cv_mape_pct']:.1f}%** "
                      f"(**{r['cv_mape_ratio']:.2f}x**)", f"on the dataset alone ({r['dataset_size']} archs measured "
                      f"alone): {r['dataset_cv_mape_pct']:.1f}%", "<= 1.5x", "same run"])
    for name in sorted(p.name for p in RESULTS.glob("resume_scale_*.json")):
        r = _load(name)
        if "front_and_hypervolume_s" not in r:
            continue
        table.append([f"a SQLite study of {r['trials']:,} trials",
                      f"resume to the first new evaluation **{r['resume_to_first_evaluation_s']:.1f} s** (after a "
                      f"crash: {r['resume_after_crash_to_first_evaluation_s']:.1f} s); status "
                      f"**{r['status_s']:.1f} s**; front and hypervolume {r['front_and_hypervolume_s']:.1f} s", "",
                      "resume <= 5 s; status and front <= 2 s",
                      f"`{PY} bench/resume_scale.py --checkpoint CKPT --trials {r['trials']}`"])
    if (r := _load("export_honesty.json")) is not None:
        table.append([f"exported {r['size'].get('runtime', 'TorchScript')} artifact size, largest arch "
                      "all-int8 / all-fp32", f"**{r['size']['ratio']:.2f}**",
                      f"{r['size']['int8_bytes']:,} / {r['size']['fp32_bytes']:,} bytes", "",
                      f"`{PY} bench/export_honesty.py`"])
        table.append([f"latency honesty over the demo's exported fronts ({r['models']} models): median "
                      "abs(predicted - re-measured) / re-measured",
                      f"**{_n(r['latency_median_abs_error_pct'], 1)}%**",
                      f"corrected for the machine's drift since the dataset: "
                      f"{_n(r['latency_median_abs_error_drift_corrected_pct'], 1)}%", "", "same run"])
        table.append(["constraint honesty: exported models meeting the latency bound when re-measured",
                      f"**{100 * r['meets_latency_bound_share']:.0f}%**", "", ">= 95%", "same run"])
    if (r := _load("quantized_layers.json")) is not None:
        for layer, size in (("minilm", "MiniLM's size (384 wide, 12 heads, MLP 1536, 32 tokens)"),
                            ("digits", "the digits space's widest (128 wide, 8 heads, MLP 512, 16 tokens)")):
            for batch in (1, 32):
                forms = {v["form"]: v for v in r.values() if v["layer"] == layer and v["batch"] == batch}
                if "32" not in forms:
                    continue
                fp32 = forms["32"]
                ratios = ", ".join(f"{form} {v['ms'] / fp32['ms']:.2f}x ({v['bytes'] / fp32['bytes']:.2f}x bytes)"
                                   for form, v in forms.items() if form != "32")
                table.append([f"one encoder layer of {size}, ONNX Runtime, b{batch}, 1 thread: latency and bytes over "
                              f"fp32 ({fp32['ms']:.3f} ms, {fp32['bytes']:,} bytes), medians of interleaved rounds",
                              ratios, "", "", f"`{PY} bench/quantized_layers.py`"])
    if (r := _load("token_mixers.json")) is not None:
        spec = r["layer"]
        for batch in (1, 32):
            for tokens in sorted({v["tokens"] for v in r["layers"]}):
                at = {v["mixer"]: v for v in r["layers"] if v["batch"] == batch and v["tokens"] == tokens}
                others = ", ".join(f"{m} {v['vs_softmax']:.2f}x" for m, v in at.items() if m != "softmax")
                table.append([f"one encoder layer per token mixer ({spec['embed']} wide, {spec['heads']} heads of "
                              f"{spec['head_dim']}, MLP {spec['mlp']}, fp32), ONNX Runtime, {tokens} tokens, b{batch}, "
                              f"1 thread: latency over softmax's ({at['softmax']['ms']:.3f} ms), medians of "
                              "interleaved rounds", others, "", "", f"`{PY} bench/token_mixers.py`"])
        forms = ", ".join(f"{v['tokens']} tokens b{v['batch']} {v['dft_over_matmul']:.1f}x"
                          for v in r["fourier_forms"])
        table.append(["the Fourier mixing alone (128 features): ONNX Runtime's `DFT` operator over the matrix "
                      "product elastiq ships", forms, "", "ship the faster", "same run"])
    for task in ("mnist1d", "listops"):
        if (r := _load(f"flexibert_search_{task}.json")) is None or task not in r["tasks"]:
            continue
        t = r["tasks"][task]
        flexi = t["runs"]["flexi"]["front"]
        mixers = sorted({m for p in flexi for m in p["mixers"]})
        widened = sum(len(set(p["widths"])) > 1 for p in flexi)
        matched = [m for m in t["matched_within_1_point"] if m["speedup_b32"]]
        best = max((m["speedup_b32"] for m in matched), default=None)
        command = (f"`{PY} bench/flexibert_search.py --tasks {task} --steps {r['steps']} --batch-size "
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
                      f"front accuracy {_span(t['runs']['base']['front'])} without, {_span(flexi)} with; "
                      f"the wider front's mixers: {', '.join(mixers)}; {widened} of {len(flexi)} models with "
                      f"unequal layer widths; at most 1 point less accurate, up to "
                      + (f"{best:.2f}x faster at b32" if best else "none as accurate") + loss,
                      "> 1: the wider front dominates; 1.5x faster at equal accuracy", command])
    for name in ("stage_search.json", "stage_search_listops.json"):
        for task, t in ((_load(name) or {}).get("tasks") or {}).items():
            r = _load(name)
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
                          f"front accuracy {_span(t['runs']['base']['front'])} without, {_span(staged)} with; "
                          f"{merged} of {len(staged)} staged front models merge tokens; MACs (b1) "
                          f"{macs(t['runs']['base']['front'])} without, {macs(staged)} with"
                          + (f"; the one-stage front's models in the staged supernet: a median "
                             f"{float(np.median(drops)):+.1f} points" if drops else "")
                          + (f"; staged front: supernet vs extracted at most {max(e['extracted'] for e in exact):.0e}, "
                             f"vs ONNX Runtime {max(e['onnxruntime'] for e in exact):.0e}" if exact else "")
                          + _boundaries(t.get("base_front_with_boundaries", [])),
                          "1.5x faster at b32 within 1 point, on one task",
                          f"`{PY} bench/stage_search.py --tasks {','.join(r['tasks'])} --steps {r['steps']} "
                          f"--batch-size {r['batch_size']} --evaluations {r['evaluations']} --dir runs/bench/"
                          f"{name.removesuffix('.json').replace('_', '-')} --out bench/results/{name}`"])
    if (r := _load("quantized_search.json")) is not None:
        with_4, without_4 = r["runs"]["with-4-bit"], r["runs"]["without-4-bit"]
        smallest = lambda run: min(p["bytes"] for p in run["front"])  # noqa: E731
        best = lambda run: max(p["accuracy"] for p in run["front"])  # noqa: E731
        matched = [m for m in r["matched"] if m["bytes_with"]]
        ratio = float(np.median([m["bytes_with"] / m["bytes_without"] for m in matched])) if matched else None
        table.append(["search on the digits space, accuracy (val) against the artifact's bytes, the same budget with "
                      "`bits: [32, 8, 4]` and with `[32, 8]` (a supernet each, the demo's recipe)",
                      f"4-bit layers on the front: **{100 * with_4['layer_share']['4']:.0f}%**; front bytes at equal"
                      f" or better accuracy: median **{_n(ratio)}x** of the front without 4-bit; hypervolume "
                      f"**{r['hypervolume_ratio']:.3f}x**",
                      f"fronts of {len(with_4['front'])} and {len(without_4['front'])}; smallest model "
                      f"{smallest(with_4):,} vs {smallest(without_4):,} bytes; best accuracy "
                      f"{100 * best(with_4):.1f}% vs {100 * best(without_4):.1f}%", "",
                      f"`{PY} bench/quantized_search.py`"])
    if (r := _load("distributed_training.json")) is not None:
        command = f"`{PY} bench/distributed_training.py --steps {r['steps']}`"
        runs = r["distributed"]
        pct = lambda accuracy: " / ".join(f"{100 * accuracy[k]:.1f}" for k in ("largest", "smallest", "random_mean"))  # noqa: E731
        int8, fp32 = runs["int8"], runs["fp32"]
        own = int8["two_workers_own_ranges"]["samples_per_s"] / int8["one_process"]["samples_per_s"]
        table.append([f"supernet training throughput, digits, batch {r['batch_size']}, {r['steps']} steps: "
                      "2 Ray Train workers x 1 thread (DDP, gloo) / 1 process x 2 threads, training loop only",
                      f"**{int8['throughput_ratio']:.2f}x** ({int8['two_workers']['samples_per_s']:.0f} / "
                      f"{int8['one_process']['samples_per_s']:.0f} samples/s)",
                      f"each worker quantizing with its own shard's activation ranges (no all-reduce per int8 "
                      f"layer): {own:.2f}x; float32-only space: {fp32['throughput_ratio']:.2f}x; Ray Train start-up "
                      f"and teardown {int8['two_workers']['wall_seconds'] - int8['two_workers']['seconds']:.0f} s",
                      ">= 0.9x", command])
        if (t := r.get("throughput")) is not None:
            m = t["median_samples_per_s"]
            table.append([f"the same throughput, medians of {t['rounds']} alternating rounds of {t['steps']} steps",
                          f"**{t['ratio']:.2f}x** ({m['two_workers']:.0f} / {m['one_process']:.0f} samples/s)",
                          f"each worker with its own shard's ranges: {t['ratio_own_ranges']:.2f}x", ">= 0.9x",
                          f"`{PY} bench/distributed_training.py --steps {t['steps']} --parts throughput --rounds "
                          f"{t['rounds']}`"])
        for name, label in (("int8", "the space's int8 policies"), ("fp32", "float32 only")):
            run = runs[name]
            beside = (f"1 process: {pct(run['accuracy_one_process'])}%; the rounding floor, the same process at "
                      f"1 thread: {run['weights_one_thread']['relative_l2']:.3f}, "
                      f"{pct(run['accuracy_one_thread'])}%")
            if "weights_own_ranges" in run:
                beside += (f"; workers with their own shards' ranges: {run['weights_own_ranges']['relative_l2']:.3f}, "
                           f"{pct(run['accuracy_own_ranges'])}%")
            table.append([f"equivalence, {label}: 2 workers vs 1 process x 2 threads, same global batch and steps: "
                          "relative L2 weight difference; val accuracy largest / smallest / mean of 24 random",
                          f"**{run['weights']['relative_l2']:.3f}**; {pct(run['accuracy_two_workers'])}%", beside,
                          "accuracies within 0.5 points", "same run"])
        m = r["archs_per_pass"]
        plain, multi = m["1"], m["3"]
        table.append(["several archs in one pass: `archs_per_pass` 3 (the 3 students in one pass, each on a third "
                      "of the batch) / the plain sandwich, 1 process x 2 threads",
                      f"**{m['speedup']:.2f}x** samples/s; val accuracy largest / smallest / mean of 24 random "
                      f"{pct(multi['accuracy'])}%", f"plain: {pct(plain['accuracy'])}%", "", command])
        o = r["sandwich_overhead"]
        table.append(["supernet training overhead: one sandwich step (largest, smallest int8, 2 random; forward, "
                      "backward, AdamW) / the sum of one step of each as a static model, 2 threads, medians",
                      f"**{o['ratio']:.2f}x**", f"{o['sandwich_ms']:.1f} ms / {o['static_sum_ms']:.1f} ms",
                      "<= 1.15x", "same run"])
    if (r := _load("finetune_stage.json")) is not None:
        st = r["settings"]
        f = st["finetune"]
        cost = {"latency_ms": "latency", "macs": "MACs", "params": "parameters"}[st.get("cost", "latency_ms")]
        command = (f"`{PY} bench/finetune_stage.py --config configs/mnist1d.yaml --checkpoint CKPT --storage URL"
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
    if (r := _load("curve_calibration.json")) is not None:
        sets = ", ".join(f"{name.partition('@')[0]} ({v['curves']} curves of {'/'.join(map(str, v['rungs']))} "
                         f"rungs)" for name, v in r["sets"].items())
        command = f"`{PY} bench/curve_calibration.py " + " ".join(f"--run {u} {n}" for u, n in r["runs"]) + "`"
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
    manifest = ROOT / "predictors/curve_pfn/shipped/manifest.json"
    if manifest.exists():
        t = json.loads(manifest.read_text())["training"]
        table.append(["learning-curve PFN training (`predictors/curve_pfn/train.py`, seed 0, "
                      f"{t['threads']} thread): wall time, curves of the prior seen, held-out loss",
                      f"**{t['wall_s'] / 60:.1f} min**, {t['curves_seen']:,} curves",
                      f"negative log-likelihood of held-out prior curves (6 rungs, 2 and 5 seen) "
                      f"{t['held_out_nll']:.3f}; {t['steps']} steps of {t['batch']}", "<= 30 min",
                      f"`{PY} -m predictors.curve_pfn.train --out predictors/curve_pfn/shipped`"])
    if (r := _load("torture.json")) is not None:
        s = r["search"]
        table.append([f"crash torture: driver killed with SIGKILL {s['kills']} times at seeded points of its progress",
                      f"{s['complete']}/{s['budget']} evaluations, {s['archs_evaluated_twice']} evaluated twice, "
                      f"{s['running_left']} left RUNNING, same as uninterrupted: **{s['same_as_uninterrupted']}**",
                      "", "nothing lost", f"`{PY} bench/torture.py --config STUDY.yaml`"])
    return table


def _boundaries(rows: list[dict]) -> str:
    """The same networks without and with every stage boundary: the b32 speed-ups and accuracy changes."""
    if not rows:
        return ""
    cells = [f"{'largest' if r.get('largest') else r['depth']}: "
             f"{r['one_stage_ms_b32'] / r['every_boundary_ms_b32']:.2f}x "
             f"({100 * (r['every_boundary_accuracy'] - r['one_stage_accuracy']):+.1f} pt)" for r in rows]
    return "; the same networks with every boundary, in the staged supernet, by depth: b32 " + ", ".join(cells)


def render() -> str:
    lines = ["| what | elastiq | beside it, same run | bar | command |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args()
    readme = Path(args.readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render()}\n{END}{tail}")
    print(render())


if __name__ == "__main__":
    main()
