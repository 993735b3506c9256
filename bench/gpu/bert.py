"""gpu-check's BERT-base-sized supernet (imported, trained as the pretrained recipe trains) and the fine-tuning trainer
on the GPU."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench.gpu.common import (
    SEED,
    Context,
    agreement_bound,
    all_8bit,
    max_difference,
    peak_memory_gib,
    require,
    reset_peak,
    same_outputs_on_the_cpu,
    training_figures,
)


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
    from supernet.training.train import TrainSettings, evaluate, train_supernet

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
    from supernet.training.train import load_supernet

    _, space, task = bert_space_and_task(ctx)
    checkpoint = ctx.scratch / "bert-supernet.pt"
    require(checkpoint.exists(), "needs the bert_base_supernet section's checkpoint")
    return space, task, load_supernet(checkpoint, space, task)

def finetune_trainer(ctx: Context) -> dict[str, Any]:
    import numpy as np
    import torch

    from supernet.training.finetune import Finetuner, FinetuneSettings
    from supernet.training.train import evaluate

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
