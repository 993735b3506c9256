"""Optuna mapping: suggest an `Arch` from a trial and read it back from params.

Every decision of every layer slot is always suggested, so the search space
Optuna sees is static (its multivariate samplers need that); genes of inactive
slots are ignored when the `Arch` is built. Parameter values are the choices as
declared in the space (an `mlp_ratio` space suggests ratios).
"""

from __future__ import annotations

from typing import Any

from search_space.arch import FORMER_NAMES, Arch, LayerArch
from search_space.errors import SpaceError
from search_space.layer_genes import LAYER_GENES, WIDTH
from search_space.space import SearchSpace

# a field's parameter name: the one studies in databases hold (`layer{i}.attention` for the mixer: Optuna's
# samplers match parameters by name, so a resumed study keeps its former name)
PARAM_NAMES = {"mixer": FORMER_NAMES["mixer"]}


def _param_choices(space: SearchSpace) -> dict[str, tuple]:
    choices: dict[str, tuple] = {"embed_dim": space.embed_dims, "depth": space.depths}
    for i, layer in enumerate(space.layers):
        choices[f"layer{i}.num_heads"] = layer.num_heads
        choices[f"layer{i}.{layer.mlp_key}"] = layer.mlp_options
        choices[f"layer{i}.{PARAM_NAMES['mixer']}"] = layer.mixer
        choices[f"layer{i}.bits"] = layer.bits
        choices.update({f"layer{i}.{g.key}": getattr(layer, g.key) for g in LAYER_GENES
                        if getattr(layer, g.key) is not None})
    return choices


def distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of every parameter (optuna imported only here)."""
    from optuna.distributions import CategoricalDistribution

    return {name: CategoricalDistribution(list(values)) for name, values in _param_choices(space).items()}


def suggest_arch(space: SearchSpace, trial: Any) -> Arch:
    params = {name: trial.suggest_categorical(name, list(values))
              for name, values in _param_choices(space).items()}
    return arch_from_params(space, params)


def arch_from_params(space: SearchSpace, params: dict[str, Any]) -> Arch:
    choices = _param_choices(space)
    for name in ("embed_dim", "depth"):
        if name not in params:
            raise SpaceError(f"params: missing '{name}'")
    embed_dim, depth = params["embed_dim"], params["depth"]
    if depth not in space.depths:
        raise SpaceError(f"params.depth: {depth!r} not in {list(space.depths)}")
    layers = []
    for i in range(depth):
        layer = space.layers[i]
        values = {}
        genes = tuple(g.key for g in LAYER_GENES if getattr(layer, g.key) is not None)
        for field in ("num_heads", layer.mlp_key, PARAM_NAMES["mixer"], "bits", *genes):
            name = f"layer{i}.{field}"
            if name not in params:
                raise SpaceError(f"params: missing '{name}'")
            if params[name] not in choices[name]:
                raise SpaceError(f"params.{name}: {params[name]!r} not in {list(choices[name])}")
            values[field] = params[name]
        option = layer.mlp_options.index(values[layer.mlp_key])
        mixer = values[PARAM_NAMES["mixer"]]
        layers.append(LayerArch(num_heads=layer.heads_of(mixer, values["num_heads"]),
                                mlp_dim=layer.mlp_hidden(option, values.get(WIDTH.key) or embed_dim),
                                mixer=mixer, bits=values["bits"], **{key: values[key] for key in genes}))
    return space.validate(Arch(embed_dim=embed_dim, layers=tuple(layers)))


def params_from_arch(space: SearchSpace, arch: Arch) -> dict[str, Any]:
    """Params of every slot; inactive slots take each choice's first value."""
    genes = space.genome(arch)
    names = ["embed_dim", "depth"]
    for i, layer in enumerate(space.layers):  # the genome's order; a layer without a gene's choices has it at 0
        names += [f"layer{i}.{field}" for field in ("num_heads", layer.mlp_key, PARAM_NAMES["mixer"], "bits")]
        names += [f"layer{i}.{g.key}" if getattr(layer, g.key) is not None else "" for g in space.genes]
    choices = _param_choices(space)
    return {name: choices[name][int(gene)] for name, gene in zip(names, genes, strict=True) if name}
