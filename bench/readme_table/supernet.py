"""The README table's rows of the supernet: slicing, quality against training alone, recipes, distributed training: one
function per results file."""

from __future__ import annotations

from bench.readme_table.common import PY, RESULTS, Row, load


def slicing_overhead() -> list[Row]:
    """Rows of `bench/results/slicing_overhead*.json`."""
    table: list[Row] = []
    if (r := load("slicing_overhead.json")) is not None:
        by = {(row["arch"], row["batch"]): row for row in r["rows"]}
        ratio = lambda a, b: by[(a, b)]["supernet_ms"] / by[(a, b)]["static_ms"]  # noqa: E731
        table.append(["slicing overhead: largest arch run in the supernet / its extracted model, 1 thread",
                      f"**{ratio('largest', 1):.2f}** (batch 1), **{ratio('largest', 32):.2f}** (batch 32)",
                      f"smallest arch: {ratio('smallest', 1):.2f} / {ratio('smallest', 32):.2f}", "<= 1.10",
                      f"`{PY} bench/supernet/slicing_overhead.py`"])
    return table


def supernet_quality() -> list[Row]:
    """Rows of `bench/results/supernet_quality*.json`."""
    table: list[Row] = []
    if (r := load("supernet_quality.json")) is not None:
        s = r["summary"]
        table.append([f"supernet quality on digits: inherited vs trained alone, {s['steps']} steps",
                      f"largest **{s['largest_gap_points']:.1f}** points behind, smallest "
                      f"**{s['smallest_gap_points']:.1f}**", "the same archs trained alone", "within 2 points",
                      f"`{PY} bench/supernet/supernet_quality.py --standalone-steps 1000 --jobs 2`"])
        table.append([f"ranking fidelity, {s['subnets']} archs", f"Kendall tau **{s['kendall_tau']:.2f}**",
                      f"Spearman {s['spearman']:.2f}", ">= 0.6", "same run"])
        table.append(["all-int8 vs fp32, same weights, no retraining",
                      f"drop median **{s['int8_drop_points_median']:.2f}**, max {s['int8_drop_points_max']:.2f} "
                      "points", "", "<= 1 point", "same run"])
    return table


def supernet_quality_mnist1d() -> list[Row]:
    """Rows of `bench/results/supernet_quality_mnist1d*.json`."""
    table: list[Row] = []
    for name in sorted(p.name for p in RESULTS.glob("supernet_quality_mnist1d*.json")):
        s = load(name)["summary"]
        val, test = s["random_subnets_ranking"]["val"], s["random_subnets_ranking"]["test"]
        floor = s["val_vs_test_kendall_tau"]
        command = (f"`{PY} bench/supernet/supernet_quality.py --config configs/mnist1d.yaml --steps {s['steps']} "
                   "--subnets "
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
    return table


def supernet_recipe() -> list[Row]:
    """Rows of `bench/results/supernet_recipe*.json`."""
    table: list[Row] = []
    for name, task in (("supernet_recipe.json", "MNIST-1D"), ("supernet_recipe_3000.json", "MNIST-1D"),
                       ("supernet_recipe_digits.json", "digits")):
        if (r := load(name)) is None:
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
            command = (f"`{PY} bench/supernet/supernet_recipe.py --config {r['config']} --steps {steps} --seeds "
                       f"{rows_[0]['largest']['seeds']} --recipes {recipe} --jobs 2`")
            table.append([f"supernet recipe `{recipe}` on {task} ({changes}), "
                          f"{budgets} steps, {rows_[0]['largest']['seeds']} seeds: points behind the same arch "
                          f"trained alone (val)", f"largest {gaps['largest']}; smallest {gaps['smallest']}",
                          f"largest inherited {inherited}, alone {alone}", "within 3 points",
                          command])
    return table


def distributed_training() -> list[Row]:
    """Rows of `bench/results/distributed_training*.json`."""
    table: list[Row] = []
    if (r := load("distributed_training.json")) is not None:
        command = f"`{PY} bench/supernet/distributed_training.py --steps {r['steps']}`"
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
                          f"`{PY} bench/supernet/distributed_training.py --steps {t['steps']} --parts throughput "
                          "--rounds "
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
    return table


def lm_block_order() -> list[Row]:
    """Rows of `bench/results/lm_block_order.json`."""
    r = load("lm_block_order.json")
    if r is None:
        return []
    depths = r["by_depth"]
    return [[f"decoder LM (Llama-style, 8 layers, trained here {r['steps']} steps of {r['batch']} x 128 tokens on "
             f"Debian's package descriptions in {r['train_seconds']:.0f} s): inherited val perplexity of each depth "
             f"with no further training, blocks kept by block influence / the first k",
             "; ".join(f"{d}: **{v['influence']:.1f}** / {v['first']:.1f}" for d, v in depths.items()),
             f"block order {r['block_order']}; {r['val_sequences']} val sequences of held-out descriptions; "
             "uniform guess 2048", "",
             f"`{PY} bench/examples/lm_block_order.py`"]]
