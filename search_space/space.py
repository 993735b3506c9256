"""`SearchSpace`: the set of architectures, declared in YAML or a dict.

    name: digits
    head_dim: 16            # fixed per-head width; a layer's attention width is heads * head_dim
    local_window: 4         # tokens each side seen by `local` attention
    depth_heads: false      # true: a head (pooler, classifier) for each depth, not one for all
    quantize_embeddings: true  # token/position tables stored int8 (default: on when a layer may be quantized)
    quant_block_size: 32    # 4- and 2-bit layers: one weight scale per this many inputs (a power of two >= 16)
    embed_dim: [64, 96, 128]
    depth: [1, 2, 3, 4]
    layer:                  # choices of every layer ...
      num_heads: [2, 4]
      mlp_ratio: [1, 2, 4]  # hidden = round(ratio * embed_dim); or mlp_dim: [absolute sizes]
      attention: [softmax, linear, local]
      bits: [32, 8]
    per_layer:              # ... unless overridden by layer index (heterogeneous spaces)
      - layers: [0, 1]
        num_heads: [4]

Internally an architecture is also a *genome*: one choice index per decision
(embed dim, depth, then four per layer slot up to the maximum depth). Genes of
inactive slots are kept so that mutation and crossover can bring them back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search_space import sampling
from search_space.arch import Arch, LayerArch
from search_space.errors import SpaceError
from search_space.layer_choices import LayerChoices
from search_space.registry import ATTENTION_TYPES, DEFAULT_QUANT_BLOCK_SIZE, MIN_QUANT_BLOCK_SIZE, SUPPORTED_BITS
from search_space.yaml_input import read_yaml

MAX_DEPTH = 10_000  # layers: far beyond any transformer, and what a per-layer table can hold
MAX_MLP_RATIO = 1000.0
_TOP_KEYS = {"name", "head_dim", "local_window", "depth_heads", "embed_dim", "depth", "layer", "per_layer", "layers",
             "quantize_embeddings", "quant_block_size"}
_LAYER_KEYS = {"num_heads", "mlp_ratio", "mlp_dim", "attention", "bits"}
GENES_PER_LAYER = 4  # num_heads, mlp, attention, bits


@dataclass(frozen=True)
class SearchSpace:
    name: str
    head_dim: int
    local_window: int
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    layers: tuple[LayerChoices, ...]  # one per slot, len == max(depths)
    # a head per depth: a shallow subnet's last layer then feeds a head of its own, since one head
    # cannot read both the first layer's and the last one's outputs of a pretrained model
    depth_heads: bool = False
    # the token, position and token-type tables stored int8 (each row on its own scale)
    quantize_embeddings: bool = False
    quant_block_size: int = DEFAULT_QUANT_BLOCK_SIZE  # inputs per weight scale of 4- and 2-bit layers

    # ---- construction -------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        data = read_yaml(path, SpaceError)
        try:
            return cls.from_dict(data)
        except SpaceError as exc:
            raise SpaceError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        if not isinstance(data, dict):
            raise SpaceError(f"space: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise SpaceError(f"space: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_TOP_KEYS)}")
        if "layers" in data:  # the canonical form of `to_dict`: every layer spelled out
            data = _from_canonical(data)
        for key in ("embed_dim", "depth", "layer"):
            if key not in data:
                raise SpaceError(f"space: missing key '{key}'")
        name = data.get("name", "space")
        if not isinstance(name, str) or not name:
            raise SpaceError("space.name: expected a non-empty string")
        head_dim = _positive_int(data.get("head_dim", 16), "space.head_dim")
        local_window = _positive_int(data.get("local_window", 4), "space.local_window")
        depth_heads = data.get("depth_heads", False)
        if not isinstance(depth_heads, bool):
            raise SpaceError(f"space.depth_heads: expected true or false, got {depth_heads!r}")
        embed_dims = _int_choices(data["embed_dim"], "space.embed_dim")
        depths = _int_choices(data["depth"], "space.depth")
        max_depth = max(depths)
        if max_depth > MAX_DEPTH:
            raise SpaceError(f"space.depth: {max_depth} layers; elastiq supports up to {MAX_DEPTH:,}")
        base = data["layer"]
        if not isinstance(base, dict):
            raise SpaceError("space.layer: expected a mapping of per-layer choices")
        _check_layer_keys(base, "space.layer", require_all=True)

        per_layer: list[dict[str, Any]] = [dict(base) for _ in range(max_depth)]
        overrides = data.get("per_layer", []) or []
        if not isinstance(overrides, list):
            raise SpaceError("space.per_layer: expected a list of overrides")
        for j, override in enumerate(overrides):
            where = f"space.per_layer[{j}]"
            if not isinstance(override, dict) or "layers" not in override:
                raise SpaceError(f"{where}: expected a mapping with a 'layers' list of indices")
            indices = override["layers"]
            if not isinstance(indices, list) or not indices:
                raise SpaceError(f"{where}.layers: expected a non-empty list of layer indices")
            body = {k: v for k, v in override.items() if k != "layers"}
            _check_layer_keys(body, where, require_all=False)
            for index in indices:
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < max_depth:
                    raise SpaceError(f"{where}.layers: {index!r} is not a layer index in [0, {max_depth - 1}]")
                if "mlp_ratio" in body or "mlp_dim" in body:
                    per_layer[index].pop("mlp_ratio", None)
                    per_layer[index].pop("mlp_dim", None)
                per_layer[index].update(body)

        layers = tuple(_layer_choices(spec, f"space.layer[{i}]") for i, spec in enumerate(per_layer))
        quantized = any(b < 32 for layer in layers for b in layer.bits)
        quantize_embeddings = data.get("quantize_embeddings", quantized)
        if not isinstance(quantize_embeddings, bool):
            raise SpaceError(f"space.quantize_embeddings: expected true or false, got {quantize_embeddings!r}")
        block = _positive_int(data.get("quant_block_size", DEFAULT_QUANT_BLOCK_SIZE), "space.quant_block_size")
        if block < MIN_QUANT_BLOCK_SIZE or block & (block - 1):
            raise SpaceError(f"space.quant_block_size: {block} is not a power of two of at least "
                             f"{MIN_QUANT_BLOCK_SIZE}")
        _check_blocks(layers, embed_dims, head_dim, block)
        return cls(name=name, head_dim=head_dim, local_window=local_window, embed_dims=embed_dims, depths=depths,
                   layers=layers, depth_heads=depth_heads, quantize_embeddings=quantize_embeddings,
                   quant_block_size=block)

    def to_dict(self) -> dict[str, Any]:
        """Canonical form: every layer spelled out (overrides already applied)."""
        data = {"name": self.name, "head_dim": self.head_dim, "local_window": self.local_window,
                "embed_dim": list(self.embed_dims), "depth": list(self.depths),
                "layers": [layer.to_dict() for layer in self.layers]}
        if self.depth_heads:  # only then: the hash of a space without them stays what it was
            data["depth_heads"] = True
        if self.quantize_embeddings or self.bit_widths != (32,):  # likewise; written where it is not the default
            data["quantize_embeddings"] = self.quantize_embeddings
        if any(b < 8 for b in self.bit_widths):  # the block size matters only then
            data["quant_block_size"] = self.quant_block_size
        return data

    @property
    def table_bits(self) -> int:
        """The bits the embedding tables are read at: 8 where the space quantizes them, else 32."""
        return 8 if self.quantize_embeddings else 32

    @property
    def hash(self) -> str:
        """Identity of the space's content (the name excluded): checkpoints carry it."""
        canonical = self.to_dict()
        canonical.pop("name")
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()

    # ---- sizes -------------------------------------------------------
    @property
    def max_depth(self) -> int:
        return len(self.layers)

    @property
    def max_embed_dim(self) -> int:
        return max(self.embed_dims)

    def max_heads(self, layer: int) -> int:
        return max(self.layers[layer].num_heads)

    def max_mlp_dim(self, layer: int) -> int:
        choices = self.layers[layer]
        return max(max(choices.mlp_dims(e)) for e in self.embed_dims)

    @property
    def attention_types(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for layer in self.layers:
            seen.update(dict.fromkeys(layer.attention))
        return tuple(seen)

    @property
    def bit_widths(self) -> tuple[int, ...]:
        return tuple(sorted({b for layer in self.layers for b in layer.bits}, reverse=True))

    def cardinality(self) -> int:
        """Exact number of distinct architectures (a Python int, no overflow)."""
        total, depths = 0, set(self.depths)
        for embed_dim in self.embed_dims:
            prefix = 1  # archs of the first `depth` layers, built up layer by layer
            for depth in range(1, self.max_depth + 1):
                prefix *= self.layers[depth - 1].options(embed_dim)
                if depth in depths:
                    total += prefix
        return total

    # ---- validation --------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        """Return `arch` if it belongs to the space; otherwise raise naming the field."""
        if arch.embed_dim not in self.embed_dims:
            raise SpaceError(f"arch.embed_dim: {arch.embed_dim} not in {list(self.embed_dims)}")
        if arch.depth not in self.depths:
            raise SpaceError(f"arch depth {arch.depth} (number of layers) not in {list(self.depths)}")
        for i, layer in enumerate(arch.layers):
            choices = self.layers[i]
            allowed = {"num_heads": choices.num_heads, "mlp_dim": choices.mlp_dims(arch.embed_dim),
                       "attention": choices.attention, "bits": choices.bits}
            for field, values in allowed.items():
                value = getattr(layer, field)
                if value not in values:
                    raise SpaceError(f"arch.layers[{i}].{field}: {value!r} not in {list(values)}")
        return arch

    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except SpaceError:
            return False
        return True

    # ---- genome ------------------------------------------------------
    def gene_sizes(self) -> np.ndarray:
        sizes = [len(self.embed_dims), len(self.depths)]
        for layer in self.layers:
            sizes += [len(layer.num_heads), len(layer.mlp_options), len(layer.attention), len(layer.bits)]
        return np.asarray(sizes, dtype=np.int64)

    def decode(self, genes: Sequence[int]) -> Arch:
        genes = [int(g) for g in genes]
        embed_dim = self.embed_dims[genes[0]]
        depth = self.depths[genes[1]]
        layers = []
        for i in range(depth):
            choices = self.layers[i]
            h, m, a, b = genes[2 + GENES_PER_LAYER * i: 2 + GENES_PER_LAYER * (i + 1)]
            layers.append(LayerArch(num_heads=choices.num_heads[h], mlp_dim=choices.mlp_hidden(m, embed_dim),
                                    attention=choices.attention[a], bits=choices.bits[b]))
        return Arch(embed_dim=embed_dim, layers=tuple(layers))

    def genome(self, arch: Arch, rng: np.random.Generator | None = None) -> np.ndarray:
        """Genes of `arch`; inactive slots are drawn from `rng` (or set to 0 without one)."""
        self.validate(arch)
        sizes = self.gene_sizes()
        genes = rng.integers(0, sizes) if rng is not None else np.zeros_like(sizes)
        genes[0] = self.embed_dims.index(arch.embed_dim)
        genes[1] = self.depths.index(arch.depth)
        for i, layer in enumerate(arch.layers):
            choices = self.layers[i]
            genes[2 + GENES_PER_LAYER * i: 2 + GENES_PER_LAYER * (i + 1)] = [
                choices.num_heads.index(layer.num_heads), choices.mlp_index(layer.mlp_dim, arch.embed_dim),
                choices.attention.index(layer.attention), choices.bits.index(layer.bits)]
        return genes

    # ---- sampling and variation (see search_space.sampling) -----------
    def sample(self, rng: np.random.Generator, mode: str = "depth_uniform") -> Arch:
        return sampling.sample(self, rng, mode)

    def smallest(self) -> Arch:
        return sampling.smallest(self)

    def largest(self) -> Arch:
        return sampling.largest(self)

    def mutate(self, arch: Arch, prob: float, rng: np.random.Generator) -> Arch:
        return sampling.mutate(self, arch, prob, rng)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        return sampling.crossover(self, a, b, rng)

    def summary(self) -> str:
        lines = [f"space {self.name!r} (hash {self.hash[:12]})",
                 f"  embed_dim {list(self.embed_dims)}, depth {list(self.depths)}, head_dim {self.head_dim}, "
                 f"local_window {self.local_window}" + (", a head per depth" if self.depth_heads else "")
                 + (", int8 embeddings" if self.quantize_embeddings else "")
                 + (f", {self.quant_block_size}-input weight blocks below 8 bits"
                    if any(b < 8 for b in self.bit_widths) else "")]
        groups: list[tuple[list[int], LayerChoices]] = []
        for i, layer in enumerate(self.layers):
            if groups and groups[-1][1] == layer:
                groups[-1][0].append(i)
            else:
                groups.append(([i], layer))
        for indices, layer in groups:
            span = f"{indices[0]}" if len(indices) == 1 else f"{indices[0]}-{indices[-1]}"
            lines.append(f"  layers {span}: heads {list(layer.num_heads)}, {layer.mlp_key} {list(layer.mlp_options)}, "
                         f"attention {list(layer.attention)}, bits {list(layer.bits)}")
        lines.append(f"  cardinality {self.cardinality():,}")
        return "\n".join(lines)


def _from_canonical(data: dict) -> dict:
    if "layer" in data or "per_layer" in data:
        raise SpaceError("space: give either 'layers' (every layer) or 'layer' with 'per_layer', not both")
    layers = data["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(x, dict) for x in layers):
        raise SpaceError("space.layers: expected a non-empty list of per-layer choices")
    rest = {k: v for k, v in data.items() if k != "layers"}
    return {**rest, "layer": layers[0], "per_layer": [{"layers": [i], **spec} for i, spec in enumerate(layers) if i]}


def _check_layer_keys(spec: dict, where: str, require_all: bool) -> None:
    unknown = set(spec) - _LAYER_KEYS
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_LAYER_KEYS)}")
    if "mlp_ratio" in spec and "mlp_dim" in spec:
        raise SpaceError(f"{where}: give either mlp_ratio or mlp_dim, not both")
    if require_all:
        missing = [k for k in ("num_heads", "attention", "bits") if k not in spec]
        if "mlp_ratio" not in spec and "mlp_dim" not in spec:
            missing.append("mlp_ratio or mlp_dim")
        if missing:
            raise SpaceError(f"{where}: missing key(s) {missing}")


def _layer_choices(spec: dict, where: str) -> LayerChoices:
    attention = _choices(spec["attention"], f"{where}.attention")
    for name in attention:
        if not isinstance(name, str) or name not in ATTENTION_TYPES:
            raise SpaceError(f"{where}.attention: unknown attention type {name!r}; known: {sorted(ATTENTION_TYPES)}")
    bits = _int_choices(spec["bits"], f"{where}.bits", positive=False)
    for b in bits:
        if b not in SUPPORTED_BITS:
            raise SpaceError(f"{where}.bits: unsupported bit width {b}; supported: {list(SUPPORTED_BITS)}")
    num_heads = _int_choices(spec["num_heads"], f"{where}.num_heads")
    if "mlp_ratio" in spec:
        ratios = _choices(spec["mlp_ratio"], f"{where}.mlp_ratio")
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= MAX_MLP_RATIO:
                raise SpaceError(f"{where}.mlp_ratio: {r!r} is not a ratio in (0, {MAX_MLP_RATIO:g}]")
        return LayerChoices(num_heads=num_heads, attention=attention, bits=bits,
                            mlp_ratio=tuple(float(r) for r in ratios))
    return LayerChoices(num_heads=num_heads, attention=attention, bits=bits,
                        mlp_dim=_int_choices(spec["mlp_dim"], f"{where}.mlp_dim"))


def _check_blocks(layers: tuple[LayerChoices, ...], embed_dims: tuple[int, ...], head_dim: int, block: int) -> None:
    """Below 8 bits a layer's weights are quantized in blocks of `block` inputs: every input width such
    a layer may take (the embedding, its heads' width, its MLP width) must be a multiple of it."""
    for i, layer in enumerate(layers):
        low = [b for b in layer.bits if b < 8]
        if not low:
            continue
        widths = [("embed_dim", e) for e in embed_dims] + [("num_heads * head_dim", h * head_dim)
                                                            for h in layer.num_heads]
        widths += [("the MLP width", m) for e in embed_dims for m in layer.mlp_dims(e)]
        for what, width in widths:
            if width % block:
                raise SpaceError(f"space.layer[{i}]: a {low[0]}-bit layer quantizes its weights in blocks of "
                                 f"quant_block_size {block} inputs, and {what} {width} is not a multiple of it")


def _choices(values: Any, where: str) -> tuple:
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise SpaceError(f"{where}: empty choice list")
    for value in values:
        if not isinstance(value, (int, float, str)):  # bool is an int: refused by the typed checks after
            raise SpaceError(f"{where}: {_short(value)} is not a number or a name; expected a list of choices")
    if len(set(values)) != len(values):
        raise SpaceError(f"{where}: duplicate choices in {values}")
    return tuple(values)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _int_choices(values: Any, where: str, positive: bool = True) -> tuple[int, ...]:
    values = _choices(values, where)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpaceError(f"{where}: {v!r} is not an integer")
        if positive and v <= 0:
            raise SpaceError(f"{where}: {v} is not a positive size")
    return values


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpaceError(f"{where}: expected a positive integer, got {value!r}")
    return value
