"""Which blocks should a shallower decoder keep? The k most important by ShortGPT's block influence (what
`space from-model`'s import does) against the first k (dropping the last blocks, the usual baseline), on a
small Llama-style model trained here on real text.

The corpus: the full `Description:` of this machine's Debian packages (`apt-cache dumpavail`), documents in a
seeded order; a byte-level BPE vocabulary of 2,048 trained on it with `tokenizers`. The model: 8 layers, hidden
128, 4 query and 2 key-value heads of 32, SwiGLU 352, rotary positions, tied head; trained with a seed for
`--steps` steps (AdamW, batches of `--batch` sequences of 128 tokens), then saved with `save_pretrained` and
read back as a user's model. Each depth k is then the model's largest arch cut to k blocks, inherited with no
further training: its validation perplexity (held-out text, never trained on) with the blocks kept by
influence and with the first k.

    .venv/bin/python bench/examples/lm_block_order.py [--steps 500 --batch 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from search_space import Arch, SearchSpace  # noqa: E402
from supernet.pretrained.importing import import_pretrained, model_space, open_pretrained  # noqa: E402
from supernet.tasks import load_task  # noqa: E402
from supernet.training.train import evaluate  # noqa: E402

OUT = ROOT / "bench" / "results" / "lm_block_order.json"
SEQ_LEN = 128


def corpus(folder: Path, seed: int, documents: int) -> None:
    """The packages' descriptions (first line and the lines after it), `documents` of them in a seeded order:
    the first 90% in train.jsonl, then 5% each in val.jsonl and test.jsonl (never trained on)."""
    lists = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    texts, current = [], None
    for line in lists.splitlines():
        if line.startswith("Description:"):
            current = [line.removeprefix("Description:").strip()]
            texts.append(current)
        elif current is not None and line.startswith(" "):
            current.append("" if line.strip() == "." else line.strip())
        else:
            current = None
    unique = sorted({"\n".join(t) for t in texts})
    order = np.random.default_rng(seed).permutation(len(unique))[:documents]
    ends = {"train": int(0.9 * len(order)), "val": int(0.95 * len(order)), "test": len(order)}
    begin = 0
    for split, end in ends.items():
        lines = [json.dumps({"text": unique[i]}) for i in order[begin:end]]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        begin = end


def pretrained(folder: Path, data: Path, steps: int, batch: int, seed: int) -> dict:
    """Train the model on the training documents and save it as a user's download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    train = [json.loads(line)["text"] for line in (data / "train.jsonl").read_text().splitlines()]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(train, trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    stream = [t for ids in fast(train)["input_ids"] for t in [*ids, fast.eos_token_id]]
    tokens = torch.tensor(stream[: (len(stream) // (SEQ_LEN + 1)) * (SEQ_LEN + 1)]).view(-1, SEQ_LEN + 1)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    started, model = time.perf_counter(), model.train()
    for _ in range(steps):
        rows = tokens[torch.randint(len(tokens), (batch,), generator=generator)]
        loss = model(input_ids=rows[:, :-1], labels=rows[:, :-1]).loss  # transformers shifts the labels
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    return {"train_seconds": time.perf_counter() - started, "train_tokens": int(tokens.numel()),
            "final_train_loss": loss.item()}


def perplexity_by_depth(folder: Path, data: Path, seed: int) -> dict:
    """Each depth's inherited validation perplexity, blocks kept by influence and the first ones."""
    model = open_pretrained(folder)
    task = load_task("causal-lm", seed, {**{split: str(data / f"{name}.jsonl") for split, name in
                                             (("train", "train"), ("validation", "val"), ("test", "test"))},
                                          "seq_len": SEQ_LEN, "model": str(folder)})
    space = SearchSpace.from_dict(model_space(model))
    calibration = task.split("train")[0][:64]
    ordered, report = import_pretrained(model, space, task.spec, seed, calibration)
    first = import_pretrained(model, space, task.spec, seed, None)[0]  # the checkpoint's order: the first k
    largest = space.largest()
    rows = {}
    for depth in space.depths:
        arch = Arch(largest.embed_dim, largest.layers[:depth])
        rows[str(depth)] = {"influence": evaluate(ordered, arch, task), "first": evaluate(first, arch, task)}
        print(f"depth {depth}: influence {rows[str(depth)]['influence']:.2f}, first {rows[str(depth)]['first']:.2f}")
    return {"block_order": report.orders["blocks"][0], "by_depth": rows,
            "val_sequences": len(task.split("val")[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus(Path(tmp), args.seed, args.documents)
        training = pretrained(Path(tmp) / "model", Path(tmp), args.steps, args.batch, args.seed)
        print(f"pretrained: {training}")
        result = {"steps": args.steps, "batch": args.batch, "documents": args.documents, **training,
                  **perplexity_by_depth(Path(tmp) / "model", Path(tmp), args.seed)}
    OUT.write_text(json.dumps(result, indent=2))
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
