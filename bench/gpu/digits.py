"""gpu-check's digits sections: the staged supernet on the GPU, `elastiq train-supernet` and `evaluate` on cuda, a
search worker's evaluation job."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import replace
from typing import Any

from bench.gpu.common import (
    DIGITS_SPACE,
    ROOT,
    SEED,
    Context,
    all_8bit,
    require,
    reset_peak,
    same_outputs_on_the_cpu,
    staged,
    training_figures,
)


def digits_supernet(ctx: Context) -> dict[str, Any]:
    import torch

    from search_space import SearchSpace
    from supernet.device import MixedPrecision
    from supernet.model import Supernet
    from supernet.tasks import load_task
    from supernet.training.train import TrainSettings, evaluate, train_supernet

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
