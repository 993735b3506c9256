"""The README table's rows of latency: runtimes, the latency predictor, measuring inside a search, export honesty,
quantized layers, token mixers, the sources of a measurement's spread: one function per results file."""

from __future__ import annotations

from bench.readme_table.common import PY, RESULTS, Row, load, n


def runtimes() -> list[Row]:
    """Rows of `bench/results/runtimes*.json`."""
    table: list[Row] = []
    if (r := load("runtimes.json")) is not None:
        others = [x for x in r["runtimes"] if x != "onnxruntime"]
        for batch, summary in r["summary"].items():
            table.append([f"runtimes side by side, {r['archs']} digits archs (smallest, largest, random), {batch}, "
                          f"1 thread: latency over ONNX Runtime int8 (the default), median",
                          f"fastest: **{summary['fastest']}**",
                          "; ".join(f"{x} {summary[f'{x}_over_onnxruntime_median']:.2f}x" for x in others),
                          "the default is the fastest", f"`{PY} bench/latency/runtimes.py`"])
        builds = r["build_seconds"].items()
        table.append(["runtimes: build time of one artifact, median (max)",
                      "; ".join(f"{x} {b['median_s']:.2f} s ({b['max_s']:.1f} s)" for x, b in builds),
                      "", "", "same run"])
    return table


def latency_predictor() -> list[Row]:
    """Rows of `bench/results/latency_predictor*.json`."""
    table: list[Row] = []
    for name in sorted(p.name for p in RESULTS.glob("latency_predictor_*.json")):
        r = load(name)
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
                      "MAPE <= 5%, tau >= 0.95", f"`{PY} bench/latency/latency_predictor.py`"])
        if "int8_effect" in r:
            e = r["int8_effect"]
            table.append([f"int8 effect on latency, largest arch, target {r['target']['name']}: all-int8 / all-fp32",
                          f"**{e['ratio']:.2f}**", f"{e['int8_ms']:.2f} / {e['fp32_ms']:.2f} ms", "", "same run"])
    return table


def search_latency() -> list[Row]:
    """Rows of `bench/results/search_latency*.json`."""
    table: list[Row] = []
    for name in sorted(p.name for p in RESULTS.glob("search_latency*.json")):
        r = load(name)
        spinning = f"{r.get('busy')} process{'es' if r.get('busy', 0) > 1 else ''}"
        busy = f", {spinning} spinning on the CPU beside it" if r.get("busy") else ""
        command = f"`{PY} bench/latency/search_latency.py --checkpoint CKPT --storage URL" + \
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
    return table


def export_honesty() -> list[Row]:
    """Rows of `bench/results/export_honesty*.json`."""
    table: list[Row] = []
    if (r := load("export_honesty.json")) is not None:
        table.append([f"exported {r['size'].get('runtime', 'TorchScript')} artifact size, largest arch "
                      "all-int8 / all-fp32", f"**{r['size']['ratio']:.2f}**",
                      f"{r['size']['int8_bytes']:,} / {r['size']['fp32_bytes']:,} bytes", "",
                      f"`{PY} bench/latency/export_honesty.py`"])
        table.append([f"latency honesty over the demo's exported fronts ({r['models']} models): median "
                      "abs(predicted - re-measured) / re-measured",
                      f"**{n(r['latency_median_abs_error_pct'], 1)}%**",
                      f"corrected for the machine's drift since the dataset: "
                      f"{n(r['latency_median_abs_error_drift_corrected_pct'], 1)}%"
                      + "".join(f"; {study}: {n(e['latency_median_abs_error_drift_corrected_pct'], 1)}% corrected"
                                for study, e in r["exports"].items()
                                if e.get("latency_median_abs_error_drift_corrected_pct") is not None),
                      "<= 5% corrected, per target", "same run"])
        table.append(["constraint honesty: exported models meeting the latency bound when re-measured",
                      f"**{100 * r['meets_latency_bound_share']:.0f}%**", "", ">= 95%", "same run"])
    return table


def quantized_layers() -> list[Row]:
    """Rows of `bench/results/quantized_layers*.json`."""
    table: list[Row] = []
    if (r := load("quantized_layers.json")) is not None:
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
                              ratios, "", "", f"`{PY} bench/latency/quantized_layers.py`"])
    return table


def token_mixers() -> list[Row]:
    """Rows of `bench/results/token_mixers*.json`."""
    table: list[Row] = []
    if (r := load("token_mixers.json")) is not None:
        spec = r["layer"]
        for batch in (1, 32):
            for tokens in sorted({v["tokens"] for v in r["layers"]}):
                at = {v["mixer"]: v for v in r["layers"] if v["batch"] == batch and v["tokens"] == tokens}
                others = ", ".join(f"{m} {v['vs_softmax']:.2f}x" for m, v in at.items() if m != "softmax")
                table.append([f"one encoder layer per token mixer ({spec['embed']} wide, {spec['heads']} heads of "
                              f"{spec['head_dim']}, MLP {spec['mlp']}, fp32), ONNX Runtime, {tokens} tokens, b{batch}, "
                              f"1 thread: latency over softmax's ({at['softmax']['ms']:.3f} ms), medians of "
                              "interleaved rounds", others, "", "", f"`{PY} bench/latency/token_mixers.py`"])
        forms = ", ".join(f"{v['tokens']} tokens b{v['batch']} {v['dft_over_matmul']:.1f}x"
                          for v in r["fourier_forms"])
        table.append(["the Fourier mixing alone (128 features): ONNX Runtime's `DFT` operator over the matrix "
                      "product elastiq ships", forms, "", "ship the faster", "same run"])
    return table


SLOW_LABEL = "1.25x"  # `bench/latency/spread_sources.SLOW`


def spread_sources() -> list[Row]:
    """Rows of `bench/results/spread_sources.json`."""
    if (r := load("spread_sources.json")) is None:
        return []
    v, slow, e = r["variants"], r["slow_state"], r["estimators"]

    def estimator(name: str) -> str:
        x = e[name]
        return (f"{100 * x['halves_apart_median']:.2f}% ({100 * x['halves_apart_p90']:.2f}%), "
                f"tau {x['kendall_tau']:.3f}")

    def figures(name: str) -> str:
        x = v[name]
        return (f"{name}: within {100 * x['spread_within_run']:.1f}%, median moves "
                f"{100 * x['median_between_runs']:.1f}%, minimum {100 * x['minimum_between_runs']:.1f}%")
    return [[f"latency spread, one digits artifact (int8 layers), batch 1, 1 thread, {r['runs']} runs of "
             f"{r['samples']} samples per variant in shuffled rounds: spread within a run (median over runs), "
             f"how far the median and the minimum move between runs",
             figures("default") + f"; slow state (over {SLOW_LABEL} the minimum) {100 * slow['slow_share']:.0f}% of "
             f"{slow['samples']:,} samples in a row, its stretches up to **{slow['stretch_max_ms']:.0f} ms**",
             "; ".join(figures(name) for name in v if name != "default"),
             "within a pass <= 5%", f"`{PY} bench/latency/spread_sources.py`"],
            [f"latency estimators, {e['archs']} digits archs side by side, {e['rounds']} rounds of a {e['burst']}-call "
             f"burst: each estimator on the first and the second half of the rounds, the gap between them: median "
             f"(90th percentile), Kendall tau",
             "minimum of the samples " + estimator("min_of_samples"),
             "; ".join(f"{name.replace('_', ' ')} {estimator(name)}" for name in e
                       if isinstance(e[name], dict) and name != "min_of_samples"),
             "", "same run"]]


def latency_protocol() -> list[Row]:
    """Rows of `bench/results/latency_protocol.json`."""
    if (r := load("latency_protocol.json")) is None:
        return []
    table: list[Row] = []
    for t in r["targets"]:
        fastest, median = t["fastest_call"], t["median_of_burst_medians"]

        def figures(x: dict) -> str:
            cv = " and ".join(f"{p['cv_mape_pct']:.2f}%" for p in x["predictor"])
            return (f"two measurements apart by {x['apart_median_pct']:.2f}% (90th percentile "
                    f"{x['apart_p90_pct']:.2f}%), tau {x['kendall_tau']:.3f}; predictor CV MAPE {cv}")
        table.append([f"latency protocol, {t['archs']} archs of {t['config'].rsplit('/', 1)[-1]} (target "
                      f"{t['target']}, b{t['batch_size']}, {fastest['latency_range_ms'][0]:.2f}-"
                      f"{fastest['latency_range_ms'][1]:.2f} ms), each measured twice by `elastiq measure`'s protocol: "
                      f"the fastest call (the latency now) against the median of the burst medians (before), "
                      f"from the same calls",
                      f"fastest call: **{figures(fastest)}**, on the unflagged archs **"
                      + " and ".join(f"{p['cv_mape_pct']:.2f}%" for p in fastest["predictor_unflagged"])
                      + f"**; halves' gap {t['gap_median_pct']:.2f}% (median), "
                      f"flagged {' and '.join(map(str, t['flagged']))}; measuring took "
                      f"{' and '.join(f'{s:.1f}' for s in t['measure_s'])} s",
                      f"median of burst medians: {figures(median)}; the calls themselves spread "
                      f"{t['calls_spread_pct']:.1f}%",
                      "CV MAPE <= 3% (demo), <= 4% (MiniLM); flagged <= 10%",
                      f"`{PY} bench/latency/latency_protocol.py`"])
    return table


def decoder_latency() -> list[Row]:
    """Rows of `bench/results/decoder_latency.json`."""
    r = load("decoder_latency.json")
    if r is None:
        return []
    command = f"`{PY} bench/latency/decoder_latency.py`"
    table = [[f"decoder LM, decode latency with a KV cache (ONNX Runtime, 1 thread, batch 1; {r['model']}): "
              f"{r['archs']} archs at context {c}, latency predictor cross-validated",
              f"MAPE **{d['cv_mape_pct']:.2f}%**, tau {d['kendall_tau']:.3f} ({d['model']}); on the "
              f"{d['unflagged']['archs']} unflagged (what a study fits on) **{d['unflagged']['cv_mape_pct']:.2f}%**, "
              f"tau {d['unflagged']['kendall_tau']:.3f}",
              f"{d['latency_ms_range'][0]:.3f}-{d['latency_ms_range'][1]:.3f} ms; largest {d['largest_ms']:.3f} ms "
              f"against a bandwidth floor of {d['largest_floor_ms']:.3f} ms ({r['bandwidth_gb_s']:.1f} GB/s); "
              f"median {d['over_floor_median']:.1f}x the floor; halves of rounds apart "
              f"{d['halves_gap_median_pct']:.2f}% (median), {d['flagged']} flagged", "MAPE <= 5%", command]
             for c, d in r["decode"].items()]
    p = r["prefill"]
    table.append([f"decoder LM, prefill of {p['tokens']} tokens, same archs", f"{p['latency_ms_range'][0]:.2f}-"
                  f"{p['latency_ms_range'][1]:.2f} ms", f"largest {p['per_token_largest_ms']:.3f} ms a token", "",
                  "same run"])
    if "grouped_against_repeated" in r:
        ab = r["grouped_against_repeated"]
        table.append(["decoder LM, the largest arch's decoding, each key-value head serving its query heads in place "
                      "/ the cache repeated per query head first (the form before), side by side",
                      "; ".join(f"{c}: **{v['ratio']:.2f}x**" for c, v in ab.items()),
                      "; ".join(f"{c}: {v['grouped_ms']:.2f} / {v['repeated_ms']:.2f} ms" for c, v in ab.items()),
                      "", "same run"])
    for row in r["scaling"].values():
        cells = "; ".join(f"{c}: {v['ms']:.3f} ms (floor {v['floor_ms']:.3f}, cache read {v['kv_read_mb']:.2f} MiB)"
                          for c, v in row["by_context"].items())
        layers = row["arch"]["layers"]
        table.append([f"decoder LM, decode latency by context, an arch of {len(layers)} layer"
                      f"{'s' if len(layers) > 1 else ''} "
                      f"({', '.join(sorted({x['mixer'] for x in layers}))})", cells, "", "", "same run"])
    return table
