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
from `pipeline.json`, written by bench/pipeline.py).

    python bench/baselines.py --config configs/examples/minilm-manpages.yaml --run runs/minilm
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.search.pareto import hypervolume as pareto_hypervolume  # noqa: E402
from search_space import InputError  # noqa: E402


class BaselineError(Exception):
    """Input the comparison cannot run on."""


# ---- the baselines -------------------------------------------------------------------

class TokenInput(torch.nn.Module):
    """A Hugging Face classifier taking elastiq's text input: (batch, tokens, 2) token ids and types."""

    def __init__(self, model, pad_token_id: int):
        super().__init__()
        self.model, self.pad_token_id = model, pad_token_id

    def forward(self, x):
        ids, types = x[..., 0], x[..., 1]
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_token_id).long(),
                          token_type_ids=types).logits


def truncated(path: Path, depth: int, labels: int, seed: int):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)  # the new classifier's initial weights
    hf_logging.set_verbosity_error()  # the dropped layers and the new classifier are announced as warnings
    return AutoModelForSequenceClassification.from_pretrained(
        str(path), num_hidden_layers=depth, num_labels=labels, local_files_only=True, trust_remote_code=False,
        use_safetensors=True)


def fine_tune(model, x, y, settings: dict, seed: int, teacher=None, distill_weight: float = 0.0) -> float:
    """Train `model` (wrapped) on (x, y) for settings["steps"] steps; the seconds it took."""
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    steps, warmup = settings["steps"], settings["warmup_steps"]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    batches = torch.Generator().manual_seed(seed)
    model.train()
    started = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(y), (settings["batch_size"],), generator=batches)
        logits = model(x[index])
        loss = F.cross_entropy(logits, y[index])
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(x[index]).softmax(-1)
            loss = (1 - distill_weight) * loss + distill_weight * F.kl_div(logits.log_softmax(-1), soft,
                                                                           reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return time.perf_counter() - started


def to_onnx(model, example, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.cat([example, example]),), dynamo=True, verbose=False,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},))
    program.save(str(path))


def int8(fp32: Path, out: Path, weights: str = "s8") -> None:
    """The two lines a user writes: signed int8 weights (ONNX Runtime's default), or unsigned, which its
    documentation suggests where the CPU lacks VNNI (signed weights there are slower and may saturate)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8)


# ---- running and timing ---------------------------------------------------------------

def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_accuracy(sess, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    name = sess.get_inputs()[0].name
    predicted = np.concatenate([sess.run(None, {name: x[i:i + batch]})[0].argmax(-1) for i in range(0, len(y), batch)])
    return float((predicted == y).mean())


def interleaved_latency(sessions: list, example: np.ndarray, rounds: int, repeats: int, seed: int) -> list[float]:
    """Per session, the median over rounds of the median of `repeats` timed runs; each round visits every
    session once in a random order, so drift of the machine falls on all alike."""
    rng = np.random.default_rng(seed)
    names = [s.get_inputs()[0].name for s in sessions]
    for s, n in zip(sessions, names, strict=True):  # warm-up
        for _ in range(3):
            s.run(None, {n: example})
    medians = [[] for _ in sessions]
    for _ in range(rounds):
        for i in rng.permutation(len(sessions)):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                sessions[i].run(None, {names[i]: example})
                times.append(time.perf_counter() - started)
            medians[i].append(float(np.median(times)) * 1e3)
    return [float(np.median(m)) for m in medians]


# ---- comparing ------------------------------------------------------------------------

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
        raise BaselineError(f"{manifest_path}: no export (run bench/pipeline.py or `elastiq export` first)")
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
    from predictors.measure import example_input
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
    labels = len(task.labels)
    x_train, y_train = task.split("train")
    x_test, y_test = task.split("test")
    pad = task.spec.style.pad_token_id if task.spec.style.pad_token_id is not None else 0
    s = config.supernet
    settings = {"steps": steps, "batch_size": s.batch_size, "lr": s.lr, "weight_decay": s.weight_decay,
                "warmup_steps": s.warmup_steps}
    target = config.target.to_target()
    if target.device != "cpu":
        raise BaselineError(f"target {target.name}: the baselines run on ONNX Runtime on a CPU, not {target.device}")
    threads = target.threads
    print(f"baselines of {config.study}: depths {depths} (distilled: {distilled}), {steps} steps each, "
          f"batch {s.batch_size}, lr {s.lr}; {len(exported)} exported models", flush=True)

    built: list[dict] = []
    seconds = 0.0
    # trained baselines are kept in the run's folder, named for what made them: a second comparison (after
    # another export) trains nothing again
    folder = Path(args.cache) if args.cache else run_dir / "baselines"
    folder.mkdir(parents=True, exist_ok=True)
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

    teacher = None
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
    if args.train_only:
        print(f"trained: {len(built)} baselines in {folder} ({seconds:.0f} s of training)")
        return 0
    everything = built + exported
    sessions = [session(m["path"], threads) for m in everything]
    xt, yt = x_test.numpy(), y_test.numpy()
    for m, sess in zip(everything, sessions, strict=True):
        m["accuracy"] = test_accuracy(sess, xt, yt)
        m["size_mb"] = m["path"].stat().st_size / 1e6
    batch_example = example_input(task.spec, target).numpy()  # the study's own timing input
    latencies = interleaved_latency(sessions, batch_example, args.rounds, args.repeats, config.seed)
    for m, latency in zip(everything, latencies, strict=True):
        m["latency_ms"] = latency
        m["path"] = str(m["path"].relative_to(ROOT)) if m["path"].is_relative_to(ROOT) else m["path"].name
    full = next(m for m in built if m["name"].endswith("fp32"))
    verdict = compare(built, exported, full)
    pipeline_path = run_dir / "pipeline.json"
    pipeline = json.loads(pipeline_path.read_text())["seconds"] if pipeline_path.is_file() else None
    verdict.update(baseline_train_seconds=seconds, elastiq_seconds=pipeline,
                   elastiq_total_seconds=sum(pipeline.values()) if pipeline else None)
    for m in everything:
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "steps": steps, "threads": threads,
                               "models": everything, "verdict": verdict}, indent=2, default=str))
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
