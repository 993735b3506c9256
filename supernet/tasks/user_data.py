"""The user's data: `text` (CSV, JSON Lines or Parquet files) and `image-folder` (one subfolder of
images per class), read through the `datasets` library and prepared by the pretrained model's own
tokenizer or image processor (`model`: the study's `supernet.pretrained`, put in by the config).

Splits come from the files the user names, or a seeded split of the training file. Labels are the
training split's names in sorted order (numerically for integers), stored with the task; a label
of another split that the training split lacks is refused. Nothing is written: `datasets` keeps its
cache in a temporary directory, removed after reading.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from supernet.task_spec import TaskSpec
from supernet.tasks.base import Task, TaskError
from supernet.tasks.base import check_int as _check_int

TEXT_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_OPTIONS = {"train": "train", "val": "validation", "test": "test"}
HELD_OUT = 0.1  # default share of the training file for each split not given as a file


def pretrained_model(task: str, model: str | None):
    from supernet.pretrained.importing import open_pretrained

    if model is None:
        raise TaskError(f"task {task} needs supernet.pretrained: its data is prepared by that model's "
                        f"{'tokenizer' if task == 'text' else 'image processor'}")
    return open_pretrained(model)


def named_files(task: str, files: dict[str, str | None]) -> dict[str, Path]:
    named = {}
    for split, value in files.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise TaskError(f"task {task}: {SPLIT_OPTIONS[split]} must be a path, got {value!r}")
        named[split] = Path(value)
    if "train" not in named:
        raise TaskError(f"task {task}: option 'train' (a file or folder of training data) is required")
    return named


def seeded_splits(task: str, count: int, given: set[str], seed: int, held_out: float) -> dict[str, list[int]]:
    """Indices into the `count` training rows for the training split and each split not `given` as a
    file (`held_out` of the rows each)."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    missing = [split for split in ("val", "test") if split not in given]
    held = int(round(held_out * count))
    if count - held * len(missing) < 1 or (missing and held < 1):
        raise TaskError(f"task {task}: {count} rows are too few to hold out {', '.join(missing)} from the "
                        f"training file")
    parts, begin = {}, 0
    for split in missing:
        parts[split] = order[begin:begin + held]
        begin += held
    parts["train"] = order[begin:]
    return parts


def check_held_out(task: str, held_out) -> float:
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not 0 < held_out <= 0.4:
        raise TaskError(f"task {task}: held_out must be a fraction in (0, 0.4], got {held_out!r}")
    return float(held_out)


def _label_names(task: str, values: list) -> list[str]:
    if not values:
        raise TaskError(f"task {task}: the training split has no rows")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return [str(v) for v in sorted(set(int(v) for v in values))]
    return sorted({str(v) for v in values})


def _encode_labels(task: str, split: str, values: list, names: list[str]) -> torch.Tensor:
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise TaskError(f"task {task}: split {split!r} has label(s) {unknown[:5]} that the training split lacks "
                        f"(labels: {names[:10]})")
    return torch.tensor([index[str(v)] for v in values], dtype=torch.long)


# ---- text ----------------------------------------------------------------------

def _read_table(task: str, path: Path, columns: list[str]) -> dict[str, list]:
    import datasets

    kind = TEXT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise TaskError(f"task {task}: {path}: unknown format (give {', '.join(sorted(TEXT_FORMATS))})")
    if not path.is_file():
        raise TaskError(f"task {task}: {path}: no such file")
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="elastiq-data-") as cache:
        try:
            table = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=cache,
                                          keep_in_memory=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure of the user's file is bad input
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TaskError(f"task {task}: {path}: cannot be read as {kind} ({first[:200]})") from None
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise TaskError(f"task {task}: {path} has no column(s) {missing}; its columns: {table.column_names}")
        rows = {c: list(table[c]) for c in columns}
    if not rows[columns[0]]:
        raise TaskError(f"task {task}: {path} has no rows")
    for column in columns[:-1]:  # the text columns
        bad = next((i for i, v in enumerate(rows[column]) if not isinstance(v, str)), None)
        if bad is not None:
            raise TaskError(f"task {task}: {path}: column {column!r} holds a value that is not text at "
                            f"{_row_name(path, bad)}")
    label = columns[-1]
    # an empty cell would become a class of its own (and turn integer labels into floats beside it)
    empty = next((i for i, v in enumerate(rows[label]) if v is None or (isinstance(v, str) and not v.strip())), None)
    if empty is not None:
        raise TaskError(f"task {task}: {path}: the label {label!r} is empty at {_row_name(path, empty)}; "
                        f"every row needs a label")
    return rows


def _row_name(path: Path, index: int) -> str:
    """Where data row `index` (0-based) is, as a user finds it in the file."""
    if path.suffix.lower() == ".csv":
        return f"row {index + 1} (line {index + 2}, after the header)"
    if path.suffix.lower() in (".json", ".jsonl"):
        return f"record {index + 1}"
    return f"row {index + 1}"


def text(seed: int = 0, train: str | None = None, validation: str | None = None, test: str | None = None,
         text: str = "text", text_pair: str | None = None, label: str = "label", seq_len: int = 128,
         held_out: float = HELD_OUT, model: str | None = None) -> Task:
    """Sequence classification on the user's files, tokenized by the pretrained model's tokenizer to
    `seq_len` tokens (padded; longer texts are cut). A split without a file is `held_out` of the
    training file."""
    held_out = check_held_out("text", held_out)
    pretrained = pretrained_model("text", model)
    if pretrained.family.input_kind != "text":
        raise TaskError(f"task text: pretrained model {pretrained.path} is a {pretrained.family.name} model, "
                        f"not a text encoder")
    _check_int("text", "seq_len", seq_len, 2, 1 << 20)
    style = pretrained.family.style(pretrained.config)
    usable = style.positions - (0 if style.position_offset is None else style.position_offset + 1)
    if seq_len > usable:
        raise TaskError(f"task text: seq_len {seq_len} exceeds the {usable} positions of pretrained model "
                        f"{pretrained.path}")
    for option, value in (("text", text), ("label", label), ("text_pair", text_pair)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TaskError(f"task text: {option} must be a column name, got {value!r}")
    columns = [text] + ([text_pair] if text_pair else []) + [label]
    files = named_files("text", {"train": train, "val": validation, "test": test})
    tables = {split: _read_table("text", path, columns) for split, path in files.items()}
    if len(tables) < 3:
        whole = tables["train"]
        for split, index in seeded_splits("text", len(whole[label]), set(tables), seed, held_out).items():
            tables[split] = {c: [whole[c][i] for i in index] for c in columns}
    names = _label_names("text", tables["train"][label])
    tokenizer = tokenizer_of(pretrained)
    splits = {}
    for split in ("train", "val", "test"):
        rows = tables[split]
        encoded = tokenizer(rows[text], rows[text_pair] if text_pair else None, padding="max_length",
                            truncation=True, max_length=seq_len, return_token_type_ids=True)
        ids = torch.tensor(encoded["input_ids"], dtype=torch.long)
        types = torch.tensor(encoded["token_type_ids"], dtype=torch.long)
        if int(ids.max()) >= pretrained.config.vocab_size:
            raise TaskError(f"task text: the tokenizer of {pretrained.path} gives ids beyond the model's vocabulary "
                            f"({pretrained.config.vocab_size})")
        splits[split] = (torch.stack([ids, types], dim=-1), _encode_labels("text", split, rows[label], names))
    spec = TaskSpec("text", input_dim=pretrained.config.vocab_size, seq_len=seq_len, num_classes=len(names),
                    style=style)
    return Task("text", spec, splits, labels=names)


def tokenizer_of(pretrained, task: str = "text"):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(pretrained.path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskError(f"task {task}: pretrained model {pretrained.path} has no usable tokenizer "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


# ---- image folders -------------------------------------------------------------------

def _read_images(folder: Path) -> tuple[list, list[str]]:
    import datasets

    if not folder.is_dir():
        raise TaskError(f"task image-folder: {folder}: no such folder")
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="elastiq-data-") as cache:
        try:
            table = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=cache,
                                          keep_in_memory=True)
        except Exception as exc:  # noqa: BLE001 - a folder it cannot read is bad input
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TaskError(f"task image-folder: {folder}: no images read ({first[:200]})") from None
        if len(table) == 0 or "label" not in table.column_names:
            raise TaskError(f"task image-folder: {folder}: no images in class subfolders")
        classes = table.features["label"].names
        images = [image.convert("RGB") for image in list(table["image"])]
        labels = [classes[i] for i in list(table["label"])]
    return images, labels


def image_folder(seed: int = 0, train: str | None = None, validation: str | None = None, test: str | None = None,
                 held_out: float = HELD_OUT, model: str | None = None) -> Task:
    """Image classification on folders of class subfolders, prepared by the pretrained model's image
    processor and cut into the model's patches (each patch's pixels channel by channel, patches row by
    row: the order of ViT's patch convolution)."""
    held_out = check_held_out("image-folder", held_out)
    pretrained = pretrained_model("image-folder", model)
    if pretrained.family.input_kind != "features":
        raise TaskError(f"task image-folder: pretrained model {pretrained.path} is not an image model")
    files = named_files("image-folder", {"train": train, "val": validation, "test": test})
    read = {split: _read_images(path) for split, path in files.items()}
    if len(read) < 3:
        images, labels = read["train"]
        for split, index in seeded_splits("image-folder", len(labels), set(read), seed, held_out).items():
            read[split] = ([images[i] for i in index], [labels[i] for i in index])
    names = _label_names("image-folder", read["train"][1])
    processor = _image_processor(pretrained)
    config = pretrained.config
    patch, channels = config.patch_size, config.num_channels
    splits = {}
    for split in ("train", "val", "test"):
        images, labels = read[split]
        pixels = torch.as_tensor(np.asarray(processor(images, return_tensors="np")["pixel_values"]),
                                 dtype=torch.float32)
        expected = (channels, config.image_size, config.image_size)
        if tuple(pixels.shape[1:]) != expected:
            raise TaskError(f"task image-folder: the image processor of {pretrained.path} gives images of shape "
                            f"{tuple(pixels.shape[1:])}, not the model's {expected}")
        splits[split] = (patches(pixels, patch), _encode_labels("image-folder", split, labels, names))
    grid = config.image_size // patch
    spec = TaskSpec("features", input_dim=channels * patch * patch, seq_len=grid * grid, num_classes=len(names),
                    style=pretrained.family.style(config), patch_grid=(grid, grid))
    return Task("image-folder", spec, splits, labels=names)


def patches(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """(n, channels, h, w) -> (n, patches, channels * patch * patch), as ViT's patch convolution reads them."""
    n, c, h, w = pixels.shape
    grid = pixels.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(n, (h // patch) * (w // patch), c * patch * patch).contiguous()


def _image_processor(pretrained):
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(pretrained.path), local_files_only=True, use_fast=False,
                                                  trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskError(f"task image-folder: pretrained model {pretrained.path} has no usable image processor "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
