"""What a user ships without elastiq, beside elastiq's exported front: the pretrained model truncated
to its first k layers, fine-tuned alone, quantized with ONNX Runtime in two lines.

For every depth k (default: 1 to the model's), the pretrained model (a `save_pretrained` directory)
is loaded by `transformers` with its first k layers (`AutoModelForSequenceClassification`,
`num_hidden_layers=k`), fine-tuned alone on the study's own training split with plain torch (AdamW,
the study's batch size, learning rate, weight decay and warm-up, then cosine decay), once on the
labels and once distilled from the fine-tuned full model (DistilBERT-style: (1 - w) x labels + w x
the teacher's soft predictions, w the study's `supernet.distill_weight`). Each trains for as many
steps as elastiq spent on each exported model (`supernet.steps` + `finetune.steps`). Each is
exported to ONNX (the same input as elastiq's artifacts: token ids and token types, the mask made
inside) and shipped as a user would: `onnxruntime.quantization.quantize_dynamic` (int8 weights);
the full model also in fp32.

Then every baseline and every model of the export (`--models`, from `elastiq export`) run on ONNX
Runtime with the study target's threads and batch size: test accuracy, and latency measured in
interleaved rounds (each round times every model once, in a seeded random order; a model's latency
is the median over rounds of its round's median). Printed and written to `--out`: each baseline
against the fastest exported model within one point of it, both fronts' hypervolume (accuracy x
latency saved, up to 1.5x the fp32 full model's latency, in units of that latency), the speed-up
at the full model's accuracy, and both sides' wall time (the baselines' training here; elastiq's
from `pipeline.json`, written by bench/examples/pipeline.py).

    python bench/examples/baselines.py --config configs/examples/minilm-manpages.yaml --run runs/minilm
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.examples.user_alternative import (  # noqa: E402
    TokenInput,
    fine_tune,
    int8,
    interleaved_latency,
    session,
    test_accuracy,
    to_onnx,
    truncated,
)
from orchestrator.search.pareto import hypervolume as pareto_hypervolume  # noqa: E402
from search_space import InputError  # noqa: E402


class BaselineError(Exception):
    """Input the comparison cannot run on."""


def hypervolume(points: list[dict], reference_ms: float, unit_ms: float) -> float:
    """Area under the front's accuracy staircase from each model's latency to `reference_ms`, in units
    of `unit_ms` (accuracy 1 over the whole range: reference_ms / unit_ms)."""
    if not points:
        return 0.0
    minimized = np.array([[p["latency_ms"], -p["accuracy"]] for p in points])
    return pareto_hypervolume(minimized, np.array([reference_ms, 0.0])) / unit_ms


def compare(baselines: list[dict], exported: list[dict], full: dict) -> dict:
    rows = []
    for b in sorted(baselines, key=lambda p: p["latency_ms"]):
        matches = [e for e in exported if e["latency_ms"] <= b["latency_ms"] and e["accuracy"] >= b["accuracy"] - 0.01]
        best = max(matches, key=lambda e: e["accuracy"]) if matches else None
        rows.append({"baseline": b["name"], "accuracy": b["accuracy"], "latency_ms": b["latency_ms"],
                     "matched_by": best and best["name"], "match_accuracy": best and best["accuracy"],
                     "match_latency_ms": best and best["latency_ms"]})
    reference = 1.5 * full["latency_ms"]
    hv_base = hypervolume(baselines, reference, full["latency_ms"])
    hv_ours = hypervolume(exported, reference, full["latency_ms"])
    level = full["accuracy"] - 0.01

    def fastest(points):
        reaching = [p for p in points if p["accuracy"] >= level]
        return min(reaching, key=lambda p: p["latency_ms"]) if reaching else None

    fb, fe = fastest(baselines), fastest(exported)
    return {"rows": rows, "matched": sum(r["matched_by"] is not None for r in rows), "baselines": len(rows),
            "hypervolume_baselines": hv_base, "hypervolume_elastiq": hv_ours,
            "hypervolume_ratio": hv_ours / hv_base if hv_base else None,
            "full_accuracy": full["accuracy"], "fastest_baseline_at_full_accuracy": fb and fb["name"],
            "fastest_elastiq_at_full_accuracy": fe and fe["name"],
            "speedup_at_full_accuracy": fb["latency_ms"] / fe["latency_ms"] if fb and fe else None}


# ---- the run --------------------------------------------------------------------------

def parse_depths(text: str | None, layers: int) -> list[int]:
    if text is None:
        return list(range(1, layers + 1))
    try:
        depths = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise BaselineError(f"--depths {text!r}: give layer counts such as 1,2,3") from None
    outside = [d for d in depths if not 1 <= d <= layers]
    if outside or not depths:
        raise BaselineError(f"--depths {text!r}: depth {outside[0] if outside else '(none)'} is outside the "
                            f"model's 1..{layers} layers")
    return depths


def exported_models(run: Path) -> list[dict]:
    manifest_path = run / "models" / "manifest.json"
    if not manifest_path.is_file():
        raise BaselineError(f"{manifest_path}: no export (run bench/examples/pipeline.py or `elastiq export` first)")
    manifest = json.loads(manifest_path.read_text())
    return [{"name": f"elastiq trial {m['trial']}", "path": run / "models" / m["dir"] / "model.onnx",
             "trial": m["trial"], "dir": m["dir"]} for m in manifest["models"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the study's config")
    parser.add_argument("--run", required=True, help="the pipeline's folder: models/ (the export), pipeline.json; "
                        "the trained baselines are kept in its baselines/")
    parser.add_argument("--cache", default=None,
                        help="folder of trained baselines to reuse and add to (default: the run's baselines/)")
    parser.add_argument("--depths", default=None, help="comma-separated layer counts (default: 1 to the model's)")
    parser.add_argument("--distill-depths", default=None, help="depths also trained distilled (default: --depths)")
    parser.add_argument("--steps", type=int, default=None,
                        help="each baseline's steps (default: supernet.steps + finetune.steps)")
    parser.add_argument("--train-only", action="store_true",
                        help="train (or find) the baselines and stop: no export needed, nothing measured (run it "
                        "beside the pipeline, then compare once the pipeline has exported)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="JSON to write (default: bench/results/baselines_STUDY.json)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (BaselineError, InputError) as exc:  # InputError: the project's own refusals (config, model, data)
        print(f"elastiq: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from orchestrator.config import load_study_config
    from supernet.pretrained.importing import open_pretrained
    from supernet.tasks import load_task

    config = load_study_config(args.config)
    if config.supernet.pretrained is None:
        raise BaselineError(f"{args.config}: supernet.pretrained is not set: baselines truncate a pretrained model")
    model_path = Path(config.supernet.pretrained)
    layers = open_pretrained(model_path).dims.layers
    depths = parse_depths(args.depths, layers)
    distilled = parse_depths(args.distill_depths, layers) if args.distill_depths else depths
    run_dir = Path(args.run)
    exported = [] if args.train_only else exported_models(run_dir)
    steps = args.steps or config.supernet.steps + config.finetune.steps
    if steps < 1:
        raise BaselineError("--steps must be at least 1")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"baselines_{config.study}.json"
    task = load_task(config.task.name, config.seed, config.task.options)
    target = config.target.to_target()
    if target.device != "cpu":
        raise BaselineError(f"target {target.name}: the baselines run on ONNX Runtime on a CPU, not {target.device}")
    s = config.supernet
    print(f"baselines of {config.study}: depths {depths} (distilled: {distilled}), {steps} steps each, "
          f"batch {s.batch_size}, lr {s.lr}; {len(exported)} exported models", flush=True)
    # trained baselines are kept in the run's folder, named for what made them: a second comparison (after
    # another export) trains nothing again
    folder = Path(args.cache) if args.cache else run_dir / "baselines"
    folder.mkdir(parents=True, exist_ok=True)
    built, seconds = train_baselines(config, task, model_path, layers, depths, distilled, steps, folder)
    if args.train_only:
        print(f"trained: {len(built)} baselines in {folder} ({seconds:.0f} s of training)")
        return 0
    everything = built + exported
    measure_side_by_side(everything, task, target, args.rounds, args.repeats, config.seed)
    full = next(m for m in built if m["name"].endswith("fp32"))
    verdict = compare(built, exported, full)
    pipeline_path = run_dir / "pipeline.json"
    pipeline = json.loads(pipeline_path.read_text())["seconds"] if pipeline_path.is_file() else None
    verdict.update(baseline_train_seconds=seconds, elastiq_seconds=pipeline,
                   elastiq_total_seconds=sum(pipeline.values()) if pipeline else None)
    print_comparison(everything, verdict, seconds, pipeline)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "steps": steps, "threads": target.threads,
                               "models": everything, "verdict": verdict}, indent=2, default=str))
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def train_baselines(config, task, model_path: Path, layers: int, depths: list[int], distilled: list[int],
                    steps: int, folder: Path) -> tuple[list[dict], float]:
    """Every baseline, trained (or found in `folder`) and written as fp32 and int8 ONNX: the entries to
    measure, and the seconds their training took."""
    labels = len(task.labels)
    x_train, y_train = task.split("train")
    x_test, _ = task.split("test")
    pad = task.spec.style.pad_token_id if task.spec.style.pad_token_id is not None else 0
    s = config.supernet
    settings = {"steps": steps, "batch_size": s.batch_size, "lr": s.lr, "weight_decay": s.weight_decay,
                "warmup_steps": s.warmup_steps}
    recipe = {"study": config.study, "model": str(model_path), "labels": task.labels, "seed": config.seed,
              "settings": settings, "distill_weight": s.distill_weight}

    def named(depth: int, distill: bool) -> str:
        digest = hashlib.sha256(json.dumps({**recipe, "depth": depth, "distill": distill},
                                           sort_keys=True).encode()).hexdigest()[:10]
        return f"{depth}-layers{'-distilled' if distill else ''}-{digest}"

    def full_model():
        from safetensors.torch import load_file, save_file

        weights = folder / f"{named(layers, False)}.safetensors"
        model = TokenInput(truncated(model_path, layers, labels, config.seed), pad)
        if weights.is_file():
            model.load_state_dict(load_file(str(weights)))
            return model.eval(), 0.0
        took = fine_tune(model, x_train, y_train, settings, config.seed)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        return model, took

    built: list[dict] = []
    seconds, teacher = 0.0, None
    for depth in sorted(set(depths) | {layers}, reverse=True):  # the full model first: it teaches
        for distill in ((False, True) if depth in distilled and depth != layers else (False,)):
            stem = named(depth, distill)
            fp32, quantized, unsigned, record = (folder / f"{stem}{suffix}" for suffix in
                                                 (".onnx", ".int8.onnx", ".uint8.onnx", ".json"))
            name = f"first {depth} layer{'s' if depth > 1 else ''}" + (", distilled" if distill else "")
            if not (fp32.is_file() and quantized.is_file() and record.is_file()):
                if depth == layers:
                    model, took = full_model()
                    teacher = model
                else:
                    if distill and teacher is None:
                        teacher, _ = full_model()
                    model = TokenInput(truncated(model_path, depth, labels, config.seed), pad)
                    took = fine_tune(model, x_train, y_train, settings, config.seed,
                                     teacher if distill else None, s.distill_weight)
                to_onnx(model, x_test[:1], fp32)
                int8(fp32, quantized)
                record.write_text(json.dumps({"train_seconds": took}))
                print(f"  {name}: trained in {took:.0f} s", flush=True)
            if not unsigned.is_file():
                int8(fp32, unsigned, "u8")
            took = json.loads(record.read_text())["train_seconds"]
            seconds += took
            for path, weights in ((quantized, "int8"), (unsigned, "int8 (uint8 weights)")):
                built.append({"name": f"{name}, {weights}", "path": path, "depth": depth, "distilled": distill,
                              "train_seconds": took if path is quantized else 0.0})
            if depth == layers:
                built.append({"name": name + ", fp32", "path": fp32, "depth": depth, "distilled": False,
                              "train_seconds": 0.0})
    return built, seconds


def measure_side_by_side(models: list[dict], task, target, rounds: int, repeats: int, seed: int) -> None:
    """Each model's test accuracy, size and latency (interleaved rounds, the study's timing input), in place."""
    from predictors.measure import example_input

    sessions = [session(m["path"], target.threads) for m in models]
    x_test, y_test = task.split("test")
    xt, yt = x_test.numpy(), y_test.numpy()
    for m, sess in zip(models, sessions, strict=True):
        m["accuracy"] = test_accuracy(sess, xt, yt)
        m["size_mb"] = m["path"].stat().st_size / 1e6
    latencies = interleaved_latency(sessions, example_input(task.spec, target).numpy(), rounds, repeats, seed)
    for m, latency in zip(models, latencies, strict=True):
        m["latency_ms"] = latency
        m["path"] = str(m["path"].relative_to(ROOT)) if m["path"].is_relative_to(ROOT) else m["path"].name


def print_comparison(models: list[dict], verdict: dict, seconds: float, pipeline: dict | None) -> None:
    for m in models:
        print(f"{m['name']:<50} test {m['accuracy']:.4f}  {m['latency_ms']:6.2f} ms  {m['size_mb']:5.1f} MB")
    print(f"matched: {verdict['matched']} of {verdict['baselines']} baselines have an exported model at no more "
          f"latency within 1 point")
    for row in verdict["rows"]:
        match = "none" if row["matched_by"] is None else \
            f"{row['matched_by']} ({row['match_accuracy']:.4f}, {row['match_latency_ms']:.2f} ms)"
        print(f"  {row['baseline']:<48} {row['accuracy']:.4f} {row['latency_ms']:6.2f} ms -> {match}")
    ratio = verdict["hypervolume_ratio"]
    print(f"hypervolume: elastiq {verdict['hypervolume_elastiq']:.4f}, baselines {verdict['hypervolume_baselines']:.4f}"
          + (f" ({ratio:.3f}x)" if ratio else ""))
    speedup = verdict["speedup_at_full_accuracy"]
    print(f"at the full model's accuracy ({verdict['full_accuracy']:.4f} - 1 point): fastest baseline "
          f"{verdict['fastest_baseline_at_full_accuracy']}, fastest export "
          f"{verdict['fastest_elastiq_at_full_accuracy']}" + (f": {speedup:.2f}x faster" if speedup else ""))
    print(f"wall time: baselines' training {seconds:.0f} s; elastiq's pipeline "
          + (f"{verdict['elastiq_total_seconds']:.0f} s {pipeline}" if pipeline else "(no pipeline.json)"))


if __name__ == "__main__":
    sys.exit(main())
