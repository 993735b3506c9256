"""`make gpu-check`: elastiq's CUDA paths in one run on a GPU machine, with figures.

Each section runs on its own (a failure is recorded and the next one runs):

- `environment`: the GPU, torch, CUDA, the packages the check uses.
- `gpu_tests`: the tests marked `gpu` and not `slow`, from the files that do not need Ray (the slow
  one compiles an AOTInductor artifact for CUDA, which `aoti_digits` does).
- `digits_supernet`: the demo's supernet, in stages (`digits_stages.yaml`: tokens merged 2x2 at two
  boundaries), trained on the GPU under mixed precision (samples/s, peak memory, beside the same steps
  on this machine's CPU); its checkpoint, written from the GPU, loaded on the CPU with the same
  outputs, for an arch that merges tokens at both boundaries too.
- `cli_train_supernet`: `elastiq train-supernet` and `elastiq evaluate` with `supernet.device: cuda`.
- `evaluation_job`: a search worker's evaluation job on the GPU and on the CPU: the same accuracy.
- `bert_base_supernet`: a BERT-base-sized model (12 layers, 768 wide, random weights, built from a
  config) imported as a supernet (its largest arch checked against the Hugging Face model), trained
  on synthetic tokens as the pretrained recipe trains (the largest alone, then the sandwich taught by
  a frozen copy); checkpoint from the GPU loaded on the CPU with the same outputs.
- `finetune_trainer`: the fine-tuning stage's trainer on one of its subnets, distilled from the
  largest; its state loads on the CPU.
- `aoti_digits`, `aoti_bert`: AOTInductor artifacts compiled for the GPU (8-bit layers as cuBLAS int8
  products) from subnets on the CPU, checked against them, timed beside the eager subnet (its fake
  quantization, and all float32) at batch 1 and 32, with the accuracy of the artifact.

Figures go to OUT/gpu_check.json after every section, so a run cut short keeps what it measured.
Sections hand their models on as files (checkpoints in a scratch folder). The AOTInductor sections
run in a child process of their own, given `--isolated-limit` seconds (150: the whole check then
stays within 8 to 10 minutes): on the first GPU machine tried, compiling a one-layer model for CUDA
took 60 to 90 s and loading the package crashed or hung the process (torch 2.11), and that must cost
one section, not the run. Each test file of `gpu_tests` runs in its own pytest for the same reason, its
output in OUT/gpu_tests.log.
Exit status: 0 when every section passed, 1 when one failed, 2 without a GPU. `--rehearse` runs
every section on the CPU with tiny sizes: a check of this script where no GPU is.

    python bench/gpu_check.py --out runs/gpu-check            # on a GPU machine (make gpu-check)
    python bench/gpu_check.py --rehearse --out runs/gpu-rehearsal
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import faulthandler
import importlib.metadata
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 0
DIGITS_SPACE = ROOT / "configs" / "spaces" / "digits_stages.yaml"  # the demo's space, in stages
PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "onnxruntime", "numpy", "scikit-learn", "pydantic",
            "pytest")


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the full check on a GPU, or a rehearsal of it on a CPU."""

    digits_warmup: int = 50
    digits_steps: int = 300
    digits_cpu_steps: int = 50
    digits_batch: int = 128
    cli_steps: int = 60
    bert: dict = field(default_factory=dict)  # BertConfig overrides (none: BERT-base)
    bert_seq_len: int = 128
    bert_samples: tuple[int, int, int] = (2048, 256, 256)  # train, val, test
    bert_warmup: int = 30
    bert_steps: int = 150
    bert_batch: int = 32
    finetune_steps: int = 100
    batches: tuple[int, ...] = (1, 32)
    passes: int = 7
    min_digits_accuracy: float = 0.5  # the largest digits arch after warm-up + steps (chance: 0.1)


FULL = Sizes()
REHEARSAL = Sizes(digits_warmup=2, digits_steps=3, digits_cpu_steps=2, digits_batch=16, cli_steps=2,
                  bert=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64),
                  bert_seq_len=16, bert_samples=(64, 32, 32), bert_warmup=3, bert_steps=5, bert_batch=8,
                  finetune_steps=4, batches=(1, 4), passes=3, min_digits_accuracy=0.0)


class CheckFailed(AssertionError):
    """A figure outside what the check accepts."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Context:
    device: str  # "cuda", or "cpu" in a rehearsal
    sizes: Sizes
    scratch: Path  # what one section leaves for a later one: checkpoints, the pretrained model's folder
    out: Path  # where the figures and logs go

    @property
    def rehearsal(self) -> bool:
        return self.device == "cpu"


# ---- helpers -----------------------------------------------------------------------------

def peak_memory_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def agreement_bound(model, logits) -> float:
    """What two devices may differ by: float32 rounding, plus a rounding step per fake-quantized layer
    (the rule runtimes' artifacts are held to)."""
    from supernet.quant import FULL_PRECISION, QuantLinear

    quantized = sum(isinstance(m, QuantLinear) and m.bits < FULL_PRECISION for m in model.modules())
    scale = max(1.0, float(logits.abs().max()))
    return (1e-3 if quantized == 0 else 0.01 + 0.02 * quantized / 6) * scale


def max_difference(a, b) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def same_outputs_on_the_cpu(on_device, checkpoint: Path, space, task, archs, x) -> dict[str, float]:
    """The checkpoint loaded on the CPU against the model it was written from, arch by arch."""
    import torch

    from supernet.train import load_supernet

    on_cpu = load_supernet(checkpoint, space, task)
    require(next(on_cpu.parameters()).device.type == "cpu", "the checkpoint did not load on the CPU")
    device = next(on_device.parameters()).device
    differences = {}
    on_device.eval()
    with torch.inference_mode():
        for name, arch in archs.items():
            expected = on_cpu(x, arch)
            got = on_device(x.to(device), arch)
            difference = max_difference(got, expected)
            bound = agreement_bound(on_cpu.extract(arch), expected)
            require(difference <= bound, f"{name}: logits on {device.type} and from the checkpoint on the CPU "
                                         f"differ by {difference:.3g} > {bound:.3g}")
            differences[f"{name}_max_logit_difference"] = difference
    return differences


def training_figures(result, batch: int, archs_per_step: int, device: str) -> dict[str, Any]:
    require(result.skipped_steps == 0, f"{result.skipped_steps} steps skipped (non-finite loss or gradient)")
    return {"steps": result.trained_now, "seconds": round(result.seconds, 3),
            "ms_per_step": round(1e3 * result.seconds / result.trained_now, 2),
            "samples_per_s": round(result.trained_now * batch / result.seconds, 1),
            "arch_passes_per_step": archs_per_step, "peak_memory_gib": peak_memory_gib(device)}


def all_8bit(arch):
    from search_space import Arch

    return Arch(arch.embed_dim, tuple(replace(layer, bits=8) for layer in arch.layers))


def staged(space, arch):
    """`arch` with every stage boundary its space offers, at the largest factor."""
    from search_space import Arch

    return Arch(arch.embed_dim, tuple(layer if space.layers[i].reduce is None
                                      else replace(layer, reduce=max(space.layers[i].reduce))
                                      for i, layer in enumerate(arch.layers)))


# ---- sections ------------------------------------------------------------------------------

def environment(ctx: Context) -> dict[str, Any]:
    import torch

    from supernet.device import available_memory

    figures: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                               "torch_cuda": torch.version.cuda, "cpu_cores": os.cpu_count(),
                               "memory_available_gib": round((available_memory() or 0) / 2**30, 1)}
    for name in PACKAGES:
        try:
            figures[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            figures[name] = None
    if ctx.device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        figures.update(gpu=properties.name, compute_capability=f"{properties.major}.{properties.minor}",
                       gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                       bf16=torch.cuda.is_bf16_supported(), gpus=torch.cuda.device_count())
    return figures


def gpu_tests(ctx: Context) -> dict[str, Any]:
    """pytest -m "gpu and not slow" on the test files that hold gpu tests and need no Ray (which the GPU
    machine lacks), each file in its own pytest: a test that crashes the interpreter takes only its
    file's later tests with it."""
    files, need_ray = [], []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        if "pytest.mark.gpu" not in text:
            continue
        needs_ray = re.search(r"^\s*(import ray|from ray)\b|\blocal_ray\b", text, re.MULTILINE)
        (need_ray if needs_ray else files).append(str(path.relative_to(ROOT)))
    require(bool(files), "no test file holds gpu tests")
    started = time.perf_counter()
    outcomes: dict[str, str] = {}
    problems, log = [], []
    for i, file in enumerate(files):
        junit = ctx.scratch / f"gpu-tests-{i}.xml"
        command = [sys.executable, "-m", "pytest", "-v", "-m", "gpu and not slow", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", file]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        output = done.stdout + done.stderr
        log.append(f"$ {' '.join(command[1:])}\n{output}\n(exit status {done.returncode})\n")
        if junit.exists():
            for case in ElementTree.parse(junit).getroot().iter("testcase"):
                name = f"{file}::{case.get('name')}"
                failed = case.find("failure") is not None or case.find("error") is not None
                outcomes[name] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
        else:  # the interpreter died: what -v printed says which tests ended, and which one was running
            ended, running = verbose_outcomes(output)
            outcomes.update(ended)
            if running:
                outcomes[running] = f"crashed the interpreter (exit status {done.returncode})"
            problems.append(f"{file}: pytest exited {done.returncode} without a report"
                            + (f" while running {running}" if running else ""))
        if done.returncode not in (0, 5):  # 5: every test deselected
            problems.append(f"{file}: pytest exited {done.returncode}")
    (ctx.out / "gpu_tests.log").write_text("\n".join(log))
    counts = {state: sum(o == state for o in outcomes.values()) for state in ("passed", "failed", "skipped")}
    figures = {"files": files, "left_out_needing_ray": need_ray, **counts,
               "not_passed": {name: o for name, o in outcomes.items() if o != "passed" and o != "skipped"},
               "seconds": round(time.perf_counter() - started, 1)}
    require(not problems and counts["failed"] == 0, "; ".join(problems) or f"{counts['failed']} gpu tests failed")
    if not ctx.rehearsal:  # on a GPU every one of them must have run
        require(counts["skipped"] == 0 and counts["passed"] > 0, f"{counts['skipped']} gpu tests skipped on a GPU")
    return figures


def verbose_outcomes(output: str) -> tuple[dict[str, str], str | None]:
    """From what `pytest -v` printed: each test that ended and how, and the test it was running when
    it stopped printing (None if every test it started ended)."""
    ended, running = {}, None
    for line in output.splitlines():
        match = re.match(r"(\S+::\S+)(?: (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS))?", line)
        if not match:
            continue
        name, result = match.groups()
        if result is None:
            running = name
        else:
            ended[name] = "failed" if result in ("FAILED", "ERROR") else result.lower()
            running = None if running == name else running
    return ended, running


def digits_supernet(ctx: Context) -> dict[str, Any]:
    import torch

    from search_space import SearchSpace
    from supernet.device import MixedPrecision
    from supernet.model import Supernet
    from supernet.tasks import load_task
    from supernet.train import TrainSettings, evaluate, train_supernet

    sizes = ctx.sizes
    task = load_task("digits", SEED)
    space = SearchSpace.from_yaml(DIGITS_SPACE)
    settings = TrainSettings(batch_size=sizes.digits_batch, lr=2e-3, warmup_steps=10, checkpoint_every=10**9)
    model = Supernet(space, task.spec, seed=SEED)
    checkpoint = ctx.scratch / "digits-supernet.pt"
    warm = train_supernet(model, task, replace(settings, steps=sizes.digits_warmup), SEED, checkpoint=checkpoint,
                          progress=False, device=ctx.device)
    require(warm.skipped_steps == 0, f"{warm.skipped_steps} warm-up steps skipped")
    largest, smallest = space.largest(), space.smallest()
    x_val = task.split("val")[0][:64]
    outputs = same_outputs_on_the_cpu(model, checkpoint, space, task,
                                      {"largest": largest, "smallest_8bit": all_8bit(smallest),
                                       "staged_8bit": all_8bit(staged(space, largest))}, x_val)
    reset_peak(ctx.device)
    timed = train_supernet(model, task, replace(settings, steps=sizes.digits_steps), SEED + 1, checkpoint=None,
                           progress=False, device=ctx.device)
    archs_per_step = 2 + settings.sandwich_random
    figures = {"precision": MixedPrecision(torch.device(ctx.device)).describe(),
               **training_figures(timed, settings.batch_size, archs_per_step, ctx.device), **outputs}
    cpu = train_supernet(Supernet(space, task.spec, seed=SEED), task, replace(settings, steps=sizes.digits_cpu_steps),
                         SEED, progress=False, device="cpu")
    figures["cpu_samples_per_s"] = round(cpu.trained_now * settings.batch_size / cpu.seconds, 1)
    figures["speedup_over_cpu"] = round(figures["samples_per_s"] / figures["cpu_samples_per_s"], 2)
    figures["val_accuracy_largest"] = evaluate(model, largest, task)
    figures["val_accuracy_smallest"] = evaluate(model, smallest, task)
    require(figures["val_accuracy_largest"] >= sizes.min_digits_accuracy,
            f"the largest arch reached {figures['val_accuracy_largest']:.3f} val accuracy after "
            f"{sizes.digits_warmup + sizes.digits_steps} steps")
    return figures


def digits_checkpoint(ctx: Context):
    """The digits space, task and the checkpoint that `digits_supernet` left."""
    from search_space import SearchSpace
    from supernet.tasks import load_task

    checkpoint = ctx.scratch / "digits-supernet.pt"
    require(checkpoint.exists(), "needs the digits_supernet section's checkpoint")
    return SearchSpace.from_yaml(DIGITS_SPACE), load_task("digits", SEED), checkpoint


def cli_train_supernet(ctx: Context) -> dict[str, Any]:
    """The product path: the CLI with the study config's `supernet.device`."""
    from orchestrator.cli import main

    base = ["-c", str(ROOT / "configs" / "digits.yaml"), "--set", f"supernet.device={ctx.device}",
            "--set", f"supernet.checkpoint={ctx.scratch / 'cli' / 'supernet.pt'}",
            "--set", f"storage=sqlite:///{ctx.scratch / 'cli' / 'elastiq.db'}"]
    texts = {}
    for name, argv in (("train", ["train-supernet", *base, "--steps", str(ctx.sizes.cli_steps), "--no-progress"]),
                       ("evaluate", ["evaluate", *base, "--arch", "largest"])):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
        texts[name] = out.getvalue().strip()
        require(status == 0, f"elastiq {argv[0]} exited {status}: {err.getvalue().strip()[-300:]}")
    require(f"on {ctx.device}" in texts["train"], f"train-supernet did not train on {ctx.device}: {texts['train']}")
    return {"train_supernet": texts["train"].splitlines(), "evaluate": texts["evaluate"].splitlines()}


def evaluation_job(ctx: Context) -> dict[str, Any]:
    from orchestrator.execution.evaluation import EvalJob, evaluate_arch
    from supernet.checkpoint import read_record

    space, _, checkpoint = digits_checkpoint(ctx)  # the job loads the supernet itself
    job = dict(arch=space.largest().to_json(), checkpoint=str(checkpoint), checkpoint_sha256=read_record(checkpoint)[
        "sha256"], space=json.dumps(space.to_dict(), sort_keys=True), task="digits", task_options="{}", seed=SEED)
    figures = {}
    for run, device in (("first", ctx.device), ("first", "cpu"), ("again", ctx.device)):  # again: loaded, warm
        started = time.perf_counter()
        result = evaluate_arch(EvalJob(**job, device=device))
        figures[f"accuracy_{device}"] = result["accuracy"]
        figures[f"seconds_{device}_{run}"] = round(time.perf_counter() - started, 3)
    difference = abs(figures[f"accuracy_{ctx.device}"] - figures["accuracy_cpu"])
    require(difference <= 0.01, f"accuracy on {ctx.device} and on the CPU differ by {difference:.4f}")
    return figures


def synthetic_text_task(vocab: int, seq_len: int, samples: tuple[int, int, int], spec, seed: int):
    """Token ids and token types, padded after a random length; the label is which of four class tokens
    stands second (after [CLS]): learned only by attending from the pooled token to it."""
    import torch

    from supernet.tasks import Task

    generator = torch.Generator().manual_seed(seed)
    total = sum(samples)
    first_class_token = 10 if vocab < 2000 else 1000
    ids = torch.randint(first_class_token + 4, vocab, (total, seq_len), generator=generator)
    labels = torch.randint(4, (total,), generator=generator)
    ids[:, 0] = 2 if vocab < 2000 else 101
    ids[:, 1] = first_class_token + labels
    lengths = torch.randint(seq_len // 2, seq_len + 1, (total,), generator=generator)
    ids[torch.arange(seq_len)[None, :] >= lengths[:, None]] = spec.style.pad_token_id
    x = torch.stack([ids, torch.zeros_like(ids)], dim=-1)
    bounds = [0, samples[0], samples[0] + samples[1], total]
    splits = {name: (x[bounds[i]:bounds[i + 1]], labels[bounds[i]:bounds[i + 1]])
              for i, name in enumerate(("train", "val", "test"))}
    return Task("synthetic-text", spec, splits)


def bert_base_supernet(ctx: Context) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from supernet.pretrained.importing import import_pretrained
    from supernet.train import TrainSettings, evaluate, train_supernet

    sizes = ctx.sizes
    torch.manual_seed(SEED)
    config = BertConfig(num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **sizes.bert)
    reference = BertForSequenceClassification(config).eval()
    reference.save_pretrained(ctx.scratch / "bert")
    pretrained, space, task = bert_space_and_task(ctx)
    spec = task.spec
    x_train = task.split("train")[0]
    model, report = import_pretrained(pretrained, space, spec, SEED, calibration=x_train[:64])
    largest, smallest = space.largest(), space.smallest()
    x = task.split("val")[0][:4]
    with torch.inference_mode():
        theirs = reference(input_ids=x[..., 0], token_type_ids=x[..., 1],
                           attention_mask=(x[..., 0] != spec.style.pad_token_id).long()).logits
        ours = model(x, largest)
    parameters = sum(p.numel() for p in reference.parameters())
    figures: dict[str, Any] = {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
                               "parameters": parameters, "seq_len": sizes.bert_seq_len, "batch": sizes.bert_batch,
                               "import": report.summary(),
                               "largest_vs_hugging_face_max_logit_difference": max_difference(ours, theirs)}
    require(figures["largest_vs_hugging_face_max_logit_difference"] <= 1e-3 * max(1.0, float(theirs.abs().max())),
            "the imported largest arch does not compute what the Hugging Face model computes")
    # the teacher here has learned little in its few steps: the students learn from the labels as much
    settings = TrainSettings(batch_size=sizes.bert_batch, lr=1e-4, weight_decay=0.01, warmup_steps=5,
                             teacher="pretrained", distill_weight=0.5, checkpoint_every=10**9)
    checkpoint = ctx.scratch / "bert-supernet.pt"
    before = evaluate(model, largest, task)
    reset_peak(ctx.device)
    alone = train_supernet(model, task, replace(settings, steps=sizes.bert_warmup, teacher_steps=sizes.bert_warmup),
                           SEED, checkpoint=checkpoint, progress=False, device=ctx.device)
    figures["largest_alone"] = training_figures(alone, sizes.bert_batch, 1, ctx.device)
    figures.update(same_outputs_on_the_cpu(model, checkpoint, space, task,
                                           {"largest": largest, "smallest_8bit": all_8bit(smallest)}, x))
    reset_peak(ctx.device)
    sandwich = train_supernet(model, task, replace(settings, steps=sizes.bert_steps, teacher_steps=0), SEED + 1,
                              checkpoint=None, progress=False, device=ctx.device)
    # the frozen teacher's pass, then the largest, the smallest and the random students
    figures["sandwich"] = training_figures(sandwich, sizes.bert_batch, 3 + settings.sandwich_random, ctx.device)
    figures["sandwich"]["tokens_per_s"] = round(figures["sandwich"]["samples_per_s"] * sizes.bert_seq_len)
    figures["val_accuracy_largest_before"] = before
    figures["val_accuracy_largest"] = evaluate(model, largest, task)
    figures["val_accuracy_smallest"] = evaluate(model, smallest, task)
    return figures


def bert_space_and_task(ctx: Context):
    """The pretrained model `bert_base_supernet` saved, its space and the synthetic task."""
    from search_space import SearchSpace
    from supernet.pretrained.importing import model_space, open_pretrained
    from supernet.task_spec import TaskSpec

    folder = ctx.scratch / "bert"
    require((folder / "config.json").exists(), "needs the bert_base_supernet section's model")
    pretrained = open_pretrained(folder)
    spec = TaskSpec("text", input_dim=pretrained.config.vocab_size, seq_len=ctx.sizes.bert_seq_len, num_classes=4,
                    style=pretrained.family.style(pretrained.config))
    task = synthetic_text_task(pretrained.config.vocab_size, ctx.sizes.bert_seq_len, ctx.sizes.bert_samples, spec,
                               SEED)
    return pretrained, SearchSpace.from_dict(model_space(pretrained)), task


def bert_from_checkpoint(ctx: Context):
    """The BERT-sized supernet (on the CPU) of the checkpoint `bert_base_supernet` wrote after its warm-up."""
    from supernet.train import load_supernet

    _, space, task = bert_space_and_task(ctx)
    checkpoint = ctx.scratch / "bert-supernet.pt"
    require(checkpoint.exists(), "needs the bert_base_supernet section's checkpoint")
    return space, task, load_supernet(checkpoint, space, task)


def finetune_trainer(ctx: Context) -> dict[str, Any]:
    import numpy as np
    import torch

    from supernet.finetune import Finetuner, FinetuneSettings
    from supernet.train import evaluate

    space, task, supernet = bert_from_checkpoint(ctx)
    supernet = supernet.to(ctx.device)
    arch = space.sample(np.random.default_rng(SEED))
    student, teacher = supernet.extract(arch), supernet.extract(space.largest())
    settings = FinetuneSettings(steps=ctx.sizes.finetune_steps, batch_size=ctx.sizes.bert_batch, lr=1e-4)
    trainer = Finetuner(student, task, settings, SEED, teacher=teacher, device=ctx.device)
    before = evaluate(student, None, task)
    reset_peak(ctx.device)
    started = time.perf_counter()
    trainer.train(settings.steps)
    if ctx.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    require(trainer.loop.skipped == 0, f"{trainer.loop.skipped} fine-tuning steps skipped")
    state = trainer.state()
    devices = {t.device.type for t in state["model"].values()}
    require(devices == {"cpu"}, f"the trainer's state holds tensors on {devices}")
    on_cpu = supernet.extract(arch).cpu()  # a fresh copy of the arch, given the trainer's state
    on_cpu.load_state_dict(state["model"])
    x = task.split("val")[0][:8]
    with torch.inference_mode():
        expected, got = on_cpu.eval()(x), student.eval()(x.to(ctx.device))
    difference = max_difference(got, expected)
    require(difference <= agreement_bound(on_cpu, expected),
            f"the trainer's state on the CPU differs by {difference:.3g}")
    return {"arch": arch.to_dict(), "steps": settings.steps, "seconds": round(seconds, 3),
            "samples_per_s": round(settings.steps * settings.batch_size / seconds, 1),
            "peak_memory_gib": peak_memory_gib(ctx.device), "val_accuracy_before": before,
            "val_accuracy_after": evaluate(student, None, task), "state_on_cpu_max_logit_difference": difference}


def aot_inductor_figures(ctx: Context, supernet, space, task, seq_len: int | None, arch=None) -> dict[str, Any]:
    """`arch` (default: the largest), all 8-bit, compiled by AOTInductor for the device from its subnet on
    the CPU."""
    import numpy as np
    import torch

    from predictors.measure import Protocol, example_input, measure_many
    from predictors.runtimes.base import check_agreement
    from predictors.target import HardwareTarget

    supernet = supernet.eval()
    arch = all_8bit(arch or space.largest())
    subnet = supernet.extract(arch).eval()
    target = HardwareTarget("gpu-check", device=ctx.device, runtime="aotinductor", batch_size=1, seq_len=seq_len)
    runtime = target.inference_runtime
    example = example_input(task.spec, target)
    started = time.perf_counter()
    artifact = runtime.build(subnet, example, ctx.device)
    build_seconds = time.perf_counter() - started
    program = runtime.load(artifact, ctx.device, target.threads)
    eager_quantized = copy.deepcopy(subnet).to(ctx.device)  # what the search evaluated, on the device
    x_val, y_val = task.split("val")
    check_agreement(program, eager_quantized, x_val[:32].to(ctx.device), runtime.name)  # raises where they differ

    def accuracy(model) -> float:
        with torch.inference_mode():
            return sum(int((model(x_val[i:i + 256].to(ctx.device)).argmax(-1).cpu() == y_val[i:i + 256]).sum())
                       for i in range(0, len(y_val), 256)) / len(y_val)

    deployed, simulated = accuracy(program), accuracy(eager_quantized)
    require(abs(deployed - simulated) <= 0.01, f"the artifact scores {deployed:.4f}, the subnet {simulated:.4f}")
    figures: dict[str, Any] = {"arch": f"{arch.to_json()}, every layer 8-bit", "build_seconds": round(build_seconds, 1),
                               "artifact_mib": round(len(artifact) / 2**20, 2), "val_accuracy_artifact": deployed,
                               "val_accuracy_subnet": simulated}
    eager_float = supernet.extract(space.largest()).eval()
    for batch in ctx.sizes.batches:
        at_batch = replace(target, batch_size=batch)
        inputs = example_input(task.spec, at_batch)
        program_ms, quantized_ms, float_ms = (m.median_ms for m in measure_many(
            [program, eager_quantized, eager_float], inputs, at_batch, Protocol(passes=ctx.sizes.passes),
            np.random.default_rng(SEED)))
        figures[f"b{batch}"] = {"aoti_int8_ms": round(program_ms, 4), "eager_fake_quant_ms": round(quantized_ms, 4),
                                "eager_fp32_ms": round(float_ms, 4),
                                "speedup_over_eager_fp32": round(float_ms / program_ms, 2)}
    return figures


def aoti_digits(ctx: Context) -> dict[str, Any]:
    from supernet.train import load_supernet

    space, task, checkpoint = digits_checkpoint(ctx)
    return aot_inductor_figures(ctx, load_supernet(checkpoint, space, task), space, task, None,
                                staged(space, space.largest()))


def aoti_bert(ctx: Context) -> dict[str, Any]:
    space, task, model = bert_from_checkpoint(ctx)
    return aot_inductor_figures(ctx, model, space, task, ctx.sizes.bert_seq_len)


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    section.__name__: section for section in (
        environment, gpu_tests, digits_supernet, cli_train_supernet, evaluation_job, bert_base_supernet,
        finetune_trainer, aoti_digits, aoti_bert)}


# ---- the run -------------------------------------------------------------------------------

ISOLATED = ("aoti_digits", "aoti_bert")  # each in a child process of its own (see the module's docstring)


def run_child(command: list[str], result: Path, limit: float) -> dict[str, Any]:
    """A section's entry from a child process that writes it to `result`; a child that dies, or is still
    running after `limit` seconds, gives a failed entry holding the end of what it printed (Python's
    fault handler prints the stack of a crash, and of a hang before the limit)."""
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        output, status = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
                         for part in (expired.stdout, expired.stderr))
        status = None
    if status == 0 and result.exists():
        return json.loads(result.read_text())
    if status is None:
        error = f"no result after {limit:.0f} s: the child process was stopped"
    elif status < 0:
        error = f"the child process died of signal {-status} ({signal.Signals(-status).name})"
    else:
        error = f"the child process exited {status} without a result"
    return {"ok": False, "error": error, "traceback": output[-6000:]}


def run_section(ctx: Context, name: str) -> dict[str, Any]:
    try:
        return {"ok": True, "figures": SECTIONS[name](ctx)}
    except Exception as exc:  # noqa: BLE001 - recorded; the next section runs
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                "traceback": traceback.format_exc()[-6000:]}


def run(ctx: Context, names: list[str], isolated: set[str], limit: float) -> dict[str, Any]:
    report: dict[str, Any] = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "device": ctx.device, "rehearsal": ctx.rehearsal, "sections": {}}
    path = ctx.out / "gpu_check.json"
    for name in names:
        started = time.perf_counter()
        if name in isolated:
            result = ctx.scratch / f"section-{name}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--scratch",
                       str(ctx.scratch), "--out", str(ctx.out), "--isolated-limit", str(limit)]
            command += ["--rehearse"] if ctx.rehearsal else []
            entry = run_child(command, result, limit)
            entry["isolated"] = True
        else:
            entry = run_section(ctx, name)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        report["sections"][name] = entry
        report["ok"] = all(section["ok"] for section in report["sections"].values())
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        state = "ok    " if entry["ok"] else "FAILED"
        print(f"{state} {name:20s} {entry['seconds']:7.1f} s  {entry.get('error', '')[:300]}", flush=True)
    return report


def probe(wheels: Path) -> int:
    """Before anything is installed: the wheels' Python must be this one (they are built for one)."""
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for wheel in sorted(wheels.glob("*.whl")):
        built_for = re.findall(r"-(cp3\d+)-", wheel.name)
        if built_for and built_for[0] != here:
            print(f"elastiq: error: gpu-check: {wheel.name} is built for {built_for[0]}, this Python is {here}: run "
                  f"make gpu-wheels for this Python", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check")
    parser.add_argument("--rehearse", action="store_true", help="every section on the CPU, with tiny sizes")
    parser.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument("--isolate", default="", help="comma-separated sections to run in a child process too "
                                                      f"(always: {', '.join(ISOLATED)})")
    parser.add_argument("--isolated-limit", type=float, default=150.0,
                        help="seconds an isolated section may run before it is stopped and recorded as failed")
    parser.add_argument("--probe", type=Path, metavar="WHEELS", default=None,
                        help="only check that this Python sees a GPU and can install the wheels in WHEELS")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # a child process: this one section
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)  # ... with its parent's scratch folder
    args = parser.parse_args(argv)
    chosen = [s for s in (args.only.split(",") if args.only else SECTIONS) if s]
    unknown = [s for s in chosen + [s for s in args.skip.split(",") if s] if s not in SECTIONS]
    if unknown:
        print(f"elastiq: error: gpu-check: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})",
              file=sys.stderr)
        return 2
    names = [s for s in chosen if s not in args.skip.split(",")]
    isolated = set(ISOLATED) | {s for s in args.isolate.split(",") if s}
    if isolated - set(SECTIONS):
        print(f"elastiq: error: gpu-check: unknown section {sorted(isolated - set(SECTIONS))[0]!r} to isolate",
              file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print(f"elastiq: error: gpu-check: {sys.executable} cannot import torch", file=sys.stderr)
        return 2
    if not args.rehearse and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"elastiq: error: gpu-check: no CUDA GPU is visible (torch {torch.__version__}, {build}); run it on a "
              f"machine with one, or give --rehearse to run its sections on the CPU", file=sys.stderr)
        return 2
    if args.probe is not None:
        return probe(args.probe)
    args.out.mkdir(parents=True, exist_ok=True)
    device, sizes = ("cpu", REHEARSAL) if args.rehearse else ("cuda", FULL)
    if args.section:  # a child: its entry goes to the scratch folder, a crash's stack to stderr
        faulthandler.enable()
        faulthandler.dump_traceback_later(max(1.0, args.isolated_limit - 15), exit=True)
        entry = run_section(Context(device, sizes, args.scratch, args.out), args.section)
        (args.scratch / f"section-{args.section}.json").write_text(json.dumps(entry, default=str))
        return 0
    with tempfile.TemporaryDirectory(prefix="elastiq-gpu-check-") as scratch:
        ctx = Context(device, sizes, Path(scratch), args.out)
        report = run(ctx, names, isolated, args.isolated_limit)
    print(f"{'all sections passed' if report['ok'] else 'FAILED'}: figures in {args.out / 'gpu_check.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
