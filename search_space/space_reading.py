"""Reading a space's declaration (a YAML mapping or a dict): every key and choice checked, overrides
applied per layer, the result the fields of a `SearchSpace`; a problem is one `SpaceError` naming it."""

from __future__ import annotations

from typing import Any

from search_space.arch import current_names
from search_space.choice_lists import choices, int_choices, positive_int
from search_space.errors import SpaceError
from search_space.layer_choices import LayerChoices
from search_space.layer_genes import GENE_KEYS, LAYER_GENES
from search_space.registry import (
    DEFAULT_QUANT_BLOCK_SIZE,
    MIN_QUANT_BLOCK_SIZE,
    SUPPORTED_BITS,
    known_mixers,
    mixer_name,
)

MAX_DEPTH = 10_000  # layers: far beyond any transformer, and what a per-layer table can hold
MAX_MLP_RATIO = 1000.0
_TOP_KEYS = {"name", "head_dim", "local_window", "depth_heads", "embed_dim", "depth", "layer", "per_layer", "layers",
             "quantize_embeddings", "quant_block_size"}
_LAYER_KEYS = {"num_heads", "mlp_ratio", "mlp_dim", "mixer", "bits", *GENE_KEYS}


def space_fields(data: Any) -> dict[str, Any]:
    """The fields of the `SearchSpace` that `data` declares."""
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
    head_dim = positive_int(data.get("head_dim", 16), "space.head_dim")
    local_window = positive_int(data.get("local_window", 4), "space.local_window")
    depth_heads = data.get("depth_heads", False)
    if not isinstance(depth_heads, bool):
        raise SpaceError(f"space.depth_heads: expected true or false, got {depth_heads!r}")
    embed_dims = int_choices(data["embed_dim"], "space.embed_dim")
    depths = int_choices(data["depth"], "space.depth")
    max_depth = max(depths)
    if max_depth > MAX_DEPTH:
        raise SpaceError(f"space.depth: {max_depth} layers; elastiq supports up to {MAX_DEPTH:,}")
    base = data["layer"]
    if not isinstance(base, dict):
        raise SpaceError("space.layer: expected a mapping of per-layer choices")
    base = current_names(base, "space.layer")
    _check_layer_keys(base, "space.layer", require_all=True)

    per_layer = _per_layer_specs(base, data.get("per_layer", []) or [], max_depth)
    layers = tuple(_layer_choices(spec, f"space.layer[{i}]", max(embed_dims)) for i, spec in enumerate(per_layer))
    quantized = any(b < 32 for layer in layers for b in layer.bits)
    quantize_embeddings = data.get("quantize_embeddings", quantized)
    if not isinstance(quantize_embeddings, bool):
        raise SpaceError(f"space.quantize_embeddings: expected true or false, got {quantize_embeddings!r}")
    block = positive_int(data.get("quant_block_size", DEFAULT_QUANT_BLOCK_SIZE), "space.quant_block_size")
    if block < MIN_QUANT_BLOCK_SIZE or block & (block - 1):
        raise SpaceError(f"space.quant_block_size: {block} is not a power of two of at least "
                         f"{MIN_QUANT_BLOCK_SIZE}")
    _check_blocks(layers, embed_dims, head_dim, block)
    for gene in LAYER_GENES:
        if gene.key in base and max_depth == 1:
            raise SpaceError(f"space.layer.{gene.key}: {gene.one_layer}")
    return {"name": name, "head_dim": head_dim, "local_window": local_window, "embed_dims": embed_dims,
            "depths": depths, "layers": layers, "depth_heads": depth_heads, "quantize_embeddings": quantize_embeddings,
            "quant_block_size": block}


def _per_layer_specs(base: dict, overrides: Any, max_depth: int) -> list[dict[str, Any]]:
    """Each layer slot's declared choices: `base`, updated by the `per_layer` overrides that name it."""
    per_layer: list[dict[str, Any]] = [dict(base) for _ in range(max_depth)]
    if not isinstance(overrides, list):
        raise SpaceError("space.per_layer: expected a list of overrides")
    for j, override in enumerate(overrides):
        where = f"space.per_layer[{j}]"
        if not isinstance(override, dict) or "layers" not in override:
            raise SpaceError(f"{where}: expected a mapping with a 'layers' list of indices")
        indices = override["layers"]
        if not isinstance(indices, list) or not indices:
            raise SpaceError(f"{where}.layers: expected a non-empty list of layer indices")
        body = current_names({k: v for k, v in override.items() if k != "layers"}, where)
        _check_layer_keys(body, where, require_all=False)
        genes = [gene for gene in LAYER_GENES if gene.key in body]
        for index in indices:
            is_index = isinstance(index, int) and not isinstance(index, bool)
            beyond = [gene.beyond_depth(where, index, max_depth) for gene in genes if is_index and index >= max_depth]
            if any(beyond):
                raise SpaceError(next(message for message in beyond if message))
            if not is_index or not 0 <= index < max_depth:
                raise SpaceError(f"{where}.layers: {index!r} is not a layer index in [0, {max_depth - 1}]")
            if index == 0 and genes:
                raise SpaceError(f"{where}: {genes[0].first_layer}")
            if "mlp_ratio" in body or "mlp_dim" in body:
                per_layer[index].pop("mlp_ratio", None)
                per_layer[index].pop("mlp_dim", None)
            per_layer[index].update(body)

    for gene in LAYER_GENES:  # a gene given to every layer applies from layer 1 on (the stem feeds layer 0)
        per_layer[0].pop(gene.key, None)
    return per_layer


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
        missing = [k for k in ("num_heads", "mixer", "bits") if k not in spec]
        if "mlp_ratio" not in spec and "mlp_dim" not in spec:
            missing.append("mlp_ratio or mlp_dim")
        if missing:
            raise SpaceError(f"{where}: missing key(s) {missing}")


def _layer_choices(spec: dict, where: str, max_width: int) -> LayerChoices:
    mixer = choices(spec["mixer"], f"{where}.mixer")
    for name in mixer:
        definition = mixer_name(name)
        if definition is None:
            raise SpaceError(f"{where}.mixer: unknown mixer {name!r}; known: {known_mixers()}")
        problem = definition.check(name)
        if problem is not None:
            raise SpaceError(f"{where}.mixer: {problem}")
    genes = {g.key: g.read(spec[g.key], f"{where}.{g.key}", max_width) for g in LAYER_GENES if g.key in spec}
    bits = int_choices(spec["bits"], f"{where}.bits", positive=False)
    for b in bits:
        if b not in SUPPORTED_BITS:
            raise SpaceError(f"{where}.bits: unsupported bit width {b}; supported: {list(SUPPORTED_BITS)}")
    num_heads = int_choices(spec["num_heads"], f"{where}.num_heads")
    if "mlp_ratio" in spec:
        ratios = choices(spec["mlp_ratio"], f"{where}.mlp_ratio")
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= MAX_MLP_RATIO:
                raise SpaceError(f"{where}.mlp_ratio: {r!r} is not a ratio in (0, {MAX_MLP_RATIO:g}]")
        return LayerChoices(num_heads=num_heads, mixer=mixer, bits=bits, mlp_ratio=tuple(float(r) for r in ratios),
                            **genes)
    return LayerChoices(num_heads=num_heads, mixer=mixer, bits=bits,
                        mlp_dim=int_choices(spec["mlp_dim"], f"{where}.mlp_dim"), **genes)


def _check_blocks(layers: tuple[LayerChoices, ...], embed_dims: tuple[int, ...], head_dim: int, block: int) -> None:
    """Below 8 bits a layer's weights are quantized in blocks of `block` inputs: every input width such
    a layer may take (the embedding, its heads' width, its MLP width) must be a multiple of it."""
    for i, layer in enumerate(layers):
        low = [b for b in layer.bits if b < 8]
        if not low:
            continue
        hidden = sorted({w for e in embed_dims for w in layer.widths(e)})
        label = "embed_dim" if layer.width is None else "the layer's width"
        widths = [(label, w) for w in hidden] + [("num_heads * head_dim", h * head_dim)
                                                                for h in layer.num_heads]
        widths += [("the MLP width", m) for w in hidden for m in layer.mlp_dims(w)]
        for what, width in widths:
            if width % block:
                raise SpaceError(f"space.layer[{i}]: a {low[0]}-bit layer quantizes its weights in blocks of "
                                 f"quant_block_size {block} inputs, and {what} {width} is not a multiple of it")
