"""`causal-lm`: causal language modelling on the user's text files, for a pretrained decoder LM.

The files are plain text (`.txt`, each file one document), or JSON Lines, JSON, CSV or Parquet with a
text column (each row one document), read through `datasets`. The documents are tokenized by the model's
own tokenizer, joined with its end-of-sequence token between them, and packed into sequences of `seq_len`
tokens: sample i reads tokens [i L, (i + 1) L) and learns each next token, [i L + 1, (i + 1) L]. A split
without a file of its own is `held_out` of the training file's sequences, drawn with the seed, so that a
held-out sequence's tokens are never trained on. The quality a model reaches is its perplexity on a split:
exp of its mean loss per token (`supernet.training.train.evaluate`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from supernet.task_spec import TaskSpec
from supernet.tasks.base import Task, TaskError
from supernet.tasks.base import check_int as _check_int
from supernet.tasks.user_data import check_held_out, named_files, pretrained_model, seeded_splits, tokenizer_of

NAME = "causal-lm"
FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def causal_lm(seed: int = 0, train: str | None = None, validation: str | None = None, test: str | None = None,
              text: str = "text", seq_len: int = 256, held_out: float = 0.1, model: str | None = None) -> Task:
    """Sequences of `seq_len` tokens of the user's text and their next tokens (see the module)."""

    held_out = check_held_out(NAME, held_out)
    pretrained = pretrained_model(NAME, model)
    if not pretrained.family.causal:
        raise TaskError(f"task {NAME}: pretrained model {pretrained.path} is a {pretrained.family.name} model, not a "
                        f"decoder LM (llama, qwen2, qwen3, gpt2)")
    _check_int(NAME, "seq_len", seq_len, 2, 1 << 20)
    positions = pretrained.dims.positions
    if seq_len > positions:
        raise TaskError(f"task {NAME}: seq_len {seq_len} exceeds the {positions} positions of pretrained model "
                        f"{pretrained.path}")
    if not isinstance(text, str) or not text:
        raise TaskError(f"task {NAME}: text must be a column name, got {text!r}")
    files = named_files(NAME, {"train": train, "val": validation, "test": test})
    tokenizer = tokenizer_of(pretrained, NAME)
    vocab = pretrained.config.vocab_size
    sequences = {split: _sequences(path, _documents(path, text), tokenizer, seq_len, vocab)
                 for split, path in files.items()}
    if len(sequences) < 3:
        whole = sequences["train"]
        for split, index in seeded_splits(NAME, len(whole[0]), set(sequences), seed, held_out).items():
            sequences[split] = (whole[0][index], whole[1][index])
    spec = TaskSpec("tokens", input_dim=vocab, seq_len=seq_len, num_classes=vocab,
                    style=pretrained.family.style(pretrained.config))
    return Task(NAME, spec, sequences, metric="perplexity")


def _documents(path: Path, column: str) -> list[str]:
    import datasets

    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise TaskError(f"task {NAME}: {path}: unknown format (give {', '.join(sorted(FORMATS))})")
    if not path.is_file():
        raise TaskError(f"task {NAME}: {path}: no such file")
    options = {"sample_by": "document"} if kind == "text" else {}
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="elastiq-data-") as cache:
        try:
            table = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=cache,
                                          keep_in_memory=True, **options)
        except Exception as exc:  # noqa: BLE001 - any parse failure of the user's file is bad input
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TaskError(f"task {NAME}: {path}: cannot be read as {kind} ({first[:200]})") from None
        name = "text" if kind == "text" else column
        if name not in table.column_names:
            raise TaskError(f"task {NAME}: {path} has no column {name!r}; its columns: {table.column_names}")
        documents = list(table[name])
    bad = next((i for i, v in enumerate(documents) if not isinstance(v, str)), None)
    if bad is not None:
        raise TaskError(f"task {NAME}: {path}: column {column!r} holds a value that is not text at row {bad + 1}")
    return [d for d in documents if d.strip()]


def _sequences(path: Path, documents: list[str], tokenizer, seq_len: int, vocab: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, next tokens), each (sequences, seq_len), packed from the documents in their order."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"] if documents else []:
        stream += ids + ([eos] if eos is not None else [])
    count = (len(stream) - 1) // seq_len
    if count < 1:
        raise TaskError(f"task {NAME}: {path} holds {len(stream):,} tokens, too few for one sequence of seq_len "
                        f"{seq_len} and its next token")
    tokens = torch.tensor(np.asarray(stream[:count * seq_len + 1], dtype=np.int64))
    if int(tokens.max()) >= vocab:
        raise TaskError(f"task {NAME}: the tokenizer gives ids beyond the model's vocabulary ({vocab})")
    return tokens[:-1].view(count, seq_len).clone(), tokens[1:].view(count, seq_len).clone()
