"""Opening a pretrained model directory and importing its weights into a supernet.

A model is a local directory in `save_pretrained` format: `config.json`, safetensors weights
(`model.safetensors`, or shards with their index), and the tokenizer or image processor. Nothing
in it executes: the config is JSON, the weights are safetensors, and a directory holding only
pickled weights (`pytorch_model.bin`) is refused. The weights are imported into a supernet of the
model's own space (every dimension the model's), heads and neurons are put in importance order on
calibration batches, and the result is sliced into the study's supernet, whose space may be smaller.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from search_space import SearchSpace
from search_space.registry import DEFAULT_QUANT_BLOCK_SIZE
from supernet.model import Supernet
from supernet.pretrained.decoder_families import DECODER_FAMILIES
from supernet.pretrained.families import ENCODER_FAMILIES, Converted, Dims, Family, PretrainedError
from supernet.task_spec import TaskSpec

log = logging.getLogger("elastiq.supernet")

DEFAULT_MIXERS = ("softmax", "linear", "local")  # softmax first: the largest arch is the model
DECODER_MIXERS = ("causal", "sliding", "none")  # causal first, likewise
FAMILIES: tuple[Family, ...] = ENCODER_FAMILIES + DECODER_FAMILIES


def family_of(config: Any) -> Family:
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            family.check(config)
            return family
    supported = sorted(t for f in FAMILIES for t in f.model_types)
    raise PretrainedError(f"model type {model_type!r} is not supported; supported: {', '.join(supported)} "
                          f"(BERT-style encoders for sequence classification, ViT for image classification, "
                          f"decoder LMs for causal language modelling)")


@dataclass(frozen=True)
class PretrainedModel:
    path: Path
    config: Any  # transformers' PretrainedConfig, read from config.json
    family: Family
    dims: Dims

    @property
    def label_names(self) -> list[str] | None:
        """The classifier's labels, in its order, where the checkpoint's config names them."""
        id2label = getattr(self.config, "id2label", None) or {}
        names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(len(id2label))]
        return names if names and not all(re.fullmatch(r"LABEL_\d+", n) for n in names) else None


def open_pretrained(path: str | Path) -> PretrainedModel:
    """The model at `path` (a `save_pretrained` directory), its family and sizes; refuses anything else."""
    path = Path(path)
    if not path.is_dir():
        raise PretrainedError(f"pretrained model {path}: no such directory (give a directory written by "
                              f"save_pretrained, holding config.json and safetensors weights)")
    if not (path / "config.json").is_file():
        raise PretrainedError(f"pretrained model {path}: no config.json")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PretrainedError(f"pretrained model {path}: unreadable config.json ({first})") from None
    try:
        family = family_of(config)
        dims = family.dims(config)
    except PretrainedError as exc:
        raise PretrainedError(f"pretrained model {path}: {exc}") from None
    except AttributeError as exc:
        raise PretrainedError(f"pretrained model {path}: config.json lacks a field ({exc})") from None
    _weight_files(path)  # refuse a directory without safetensors now, before anything is trained
    return PretrainedModel(path, config, family, dims)


def _weight_files(path: Path) -> list[Path]:
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise PretrainedError(f"pretrained model {path}: unreadable {index.name}") from None
        files = [path / shard for shard in shards]
        if not all(f.is_file() and f.parent == path for f in files):
            raise PretrainedError(f"pretrained model {path}: {index.name} names shards that are not in the directory")
        return files
    pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
    hint = f" ({', '.join(pickled)} are pickled: convert them to safetensors)" if pickled else ""
    raise PretrainedError(f"pretrained model {path}: no model.safetensors{hint}")


def read_weights(model: PretrainedModel) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights: dict[str, Tensor] = {}
    for file in _weight_files(model.path):
        try:
            weights.update(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PretrainedError(f"pretrained model {model.path}: {file.name} is not readable safetensors "
                                  f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return weights


def model_space(model: PretrainedModel, name: str | None = None,
                mixers: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A space whose largest arch is the model: every depth from one layer to the model's, heads and MLP
    sizes down to a quarter, the model's own mixer first (`mixers`, default: the family's offer), full
    precision the largest bit width.

    An encoder keeps its first layers at each depth, each depth with a head of its own. A text model's
    embedding tables are stored int8 (half its parameters are the token table); an image model's only
    table is its positions (about 1% of it), left fp32 so that its largest arch stays exactly the model.

    A decoder keeps its most important blocks (the import orders them), one final norm and LM head for
    every depth; query heads go in whole groups of its key-value heads; layers may also be 4-bit
    (weights in blocks, ONNX Runtime's MatMulNBits) where its sizes are whole blocks; its tables stay
    fp32 (its LM head may be the token table)."""
    d, decoder = model.dims, model.family.causal
    own = own_mixer(model)
    mixers = mixers or (DECODER_MIXERS if decoder else DEFAULT_MIXERS)

    def steps(full: int) -> list[int]:
        return sorted({max(1, round(full * k / 4)) for k in (1, 2, 3, 4)})

    if mixers[0] != own:
        raise PretrainedError(f"mixers {list(mixers)}: {own} must come first (the pretrained model's own)")
    heads, mlp = [g * d.heads_per_kv for g in steps(d.heads // d.heads_per_kv)], steps(d.intermediate)
    # 4-bit weights come in blocks of inputs: every layer input must be whole blocks
    blocks = all(n % DEFAULT_QUANT_BLOCK_SIZE == 0 for n in [d.hidden, *mlp, *(h * d.head_dim for h in heads)])
    return {"name": name or f"{model.family.name}-{d.layers}x{d.hidden}", "head_dim": d.head_dim,
            "local_window": 8 if not decoder else 64, "depth_heads": not decoder,
            "quantize_embeddings": model.family.input_kind == "text",
            "embed_dim": [d.hidden], "depth": list(range(1, d.layers + 1)),
            "layer": {"num_heads": heads, "mlp_dim": mlp, "mixer": list(mixers),
                      "bits": [32, 8, 4] if decoder and blocks else [32, 8]}}


def own_mixer(model: PretrainedModel) -> str:
    """The mixer the model learned (a space from it offers it first): causal for a decoder, else softmax."""
    return DECODER_MIXERS[0] if model.family.causal else DEFAULT_MIXERS[0]


def check_space_fits(space: SearchSpace, model: PretrainedModel) -> None:
    """The space's largest arch must lie inside the model, with the model's head width."""
    d, problems = model.dims, []
    if space.head_dim != d.head_dim:
        problems.append(f"head_dim {space.head_dim} is not the model's {d.head_dim}")
    if space.max_embed_dim > d.hidden:
        problems.append(f"embed_dim {space.max_embed_dim} exceeds the model's hidden size {d.hidden}")
    if space.max_depth > d.layers:
        problems.append(f"depth {space.max_depth} exceeds the model's {d.layers} layers")
    for i in range(space.max_depth):
        if space.max_heads(i) > d.heads:
            problems.append(f"layer {i}: {space.max_heads(i)} heads exceed the model's {d.heads}")
        if space.max_mlp_dim(i) > d.intermediate:
            problems.append(f"layer {i}: MLP size {space.max_mlp_dim(i)} exceeds the model's {d.intermediate}")
    if problems:
        raise PretrainedError(f"space {space.name!r} does not fit pretrained model {model.path}: {problems[0]}"
                              + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
                              + "; `elastiq space from-model` writes one that does")


@dataclass
class ImportReport:
    imported: int  # tensors taken from the checkpoint
    new: list[str] = field(default_factory=list)  # weights learned from a seeded init (a new classifier)
    orders: dict[str, list[list[int]]] | None = None  # the importance order applied, per layer

    def summary(self) -> str:
        new = f"; new: {', '.join(self.new)}" if self.new else ""
        order = ("; blocks, heads and neurons in importance order" if self.orders and "blocks" in self.orders
                 else "; heads and neurons in importance order" if self.orders else "")
        return f"imported {self.imported} tensors{new}{order}"


def _own_shape(name: str, tensor: Tensor) -> Tensor:
    """A checkpoint tensor in the supernet's layout (ViT's patch convolution as a linear map, its
    [CLS] token and positions without the batch axis)."""
    if name == "stem.embed.weight" and tensor.dim() == 4:
        return tensor.reshape(tensor.shape[0], -1)
    if name == "stem.cls_token" and tensor.dim() == 3:
        return tensor.reshape(tensor.shape[-1])
    if name == "stem.position" and tensor.dim() == 3:
        return tensor.reshape(-1, tensor.shape[-1])
    return tensor


def full_supernet(model: PretrainedModel, spec: TaskSpec, seed: int, labels: list[str] | None = None
                  ) -> tuple[Supernet, ImportReport]:
    """A supernet of the model's own space holding the model's weights: its largest arch is the model."""
    space = SearchSpace.from_dict({**model_space(model), "depth_heads": False, "quantize_embeddings": False})
    full = Supernet(space, spec, seed=seed)
    weights = read_weights(model)
    family, prefix = model.family, model.family.prefix
    ours = full.state_dict()
    buffers = {name for name, _ in full.named_buffers()}

    def find(name: str) -> Tensor | None:
        for candidate in (prefix + name, name):
            if candidate in weights:
                return weights[candidate]
        return None

    state, report = {}, ImportReport(imported=0)
    for target, source in family.weight_map(model.config, model.dims.layers).items():
        source, convert = (source.name, source.convert) if isinstance(source, Converted) else (source, None)
        tensor = find(source)
        if tensor is None:
            raise PretrainedError(f"pretrained model {model.path}: weight {prefix}{source} is missing")
        tensor = _own_shape(target, tensor.float() if convert is None else convert(tensor.float()))
        if tensor.shape != ours[target].shape:
            raise PretrainedError(f"pretrained model {model.path}: weight {source} has shape {tuple(tensor.shape)}, "
                                  f"its config says {tuple(ours[target].shape)} (weights that do not match the "
                                  f"config)")
        state[target] = tensor
    for target, sources in family.head_map().items():
        if target not in ours:
            continue
        found = [t for t in (find(s) for s in sources) if t is not None and t.shape == ours[target].shape]
        if found:
            state[target] = found[0].float()
    _align_classifier(state, model, labels, report)
    if spec.style.tie_embeddings:  # one parameter under two names
        state["head.classifier.weight"] = state["stem.embed.weight"]
    for target in ours:
        if target not in state and target not in buffers:
            report.new.append(target)
    full.load_state_dict({**ours, **state})
    report.imported = len(state)
    report.new = sorted({name.rsplit(".", 1)[0] for name in report.new})
    return full.eval(), report


def _align_classifier(state: dict[str, Tensor], model: PretrainedModel, labels: list[str] | None,
                      report: ImportReport) -> None:
    """A checkpoint's classifier of the task's size is kept, its rows in the task's label order where
    both name their labels; for labels of other names a new one is learned."""
    if "head.classifier.weight" not in state:
        return
    names = model.label_names
    if labels is None or names is None:
        return  # unnamed on one side: the classes are matched by position
    if sorted(names) != sorted(labels):
        log.info("the checkpoint's classifier is for other labels (%s): a new one is learned", names[:10])
        state.pop("head.classifier.weight")
        state.pop("head.classifier.bias", None)
        return
    rows = torch.tensor([names.index(label) for label in labels])
    state["head.classifier.weight"] = state["head.classifier.weight"][rows]
    if "head.classifier.bias" in state:
        state["head.classifier.bias"] = state["head.classifier.bias"][rows]


def sliced_into(target: Supernet, source: Supernet) -> Supernet:
    """`target` holding the top-left slice of each of `source`'s weights (the first layers); a head of
    a shallower depth starts as a copy of the model's head. What the model has no weight for (a
    convolution's kernel, a join between layer widths) keeps `target`'s own seeded start (a join: the
    identity), and is trained as any other choice."""
    theirs = source.state_dict()
    state = {}
    for name, tensor in target.state_dict().items():
        slices = tuple(slice(0, n) for n in tensor.shape)
        origin = "head." + name.split(".", 2)[2] if name.startswith("exits.") and name not in theirs else name
        state[name] = theirs[origin][slices].clone() if origin in theirs else tensor
    target.load_state_dict(state)
    return target


def import_pretrained(model: PretrainedModel, space: SearchSpace, spec: TaskSpec, seed: int,
                      calibration: Tensor | None, labels: list[str] | None = None) -> tuple[Supernet, ImportReport]:
    """The study's supernet holding the model's weights, heads and neurons in importance order on
    `calibration` inputs (None: in the checkpoint's order)."""
    from supernet.pretrained.importance import order_blocks_by_importance, reorder_by_importance

    check_space_fits(space, model)
    full, report = full_supernet(model, spec, seed, labels)
    if calibration is not None:
        report.orders = reorder_by_importance(full, calibration)
        if spec.style.causal:
            report.orders["blocks"] = [order_blocks_by_importance(full, calibration)]
    return sliced_into(Supernet(space, spec, seed=seed), full).eval(), report
