"""`elastiq space`: check a search space, sample it, write one from a pretrained model."""

from __future__ import annotations

import os
import sys

import click
import numpy as np
import yaml

import supernet  # noqa: F401 - registers the token mixers, whose names a space declares
from search_space import SAMPLE_MODES, InputError, SearchSpace


@click.group()
def space() -> None:
    """Inspect a search space."""


@space.command("check")
@click.argument("space_path", type=click.Path(dir_okay=False))
def space_check(space_path: str) -> None:
    """Validate SPACE_PATH and print a summary with its cardinality."""
    click.echo(SearchSpace.from_yaml(space_path).summary())


@space.command("sample")
@click.argument("space_path", type=click.Path(dir_okay=False))
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--mode", default="depth_uniform", show_default=True, type=click.Choice(SAMPLE_MODES))
def space_sample(space_path: str, count: int, seed: int, mode: str) -> None:
    """Print COUNT random architectures of SPACE_PATH as JSON lines, each as soon as it is drawn."""
    search_space = SearchSpace.from_yaml(space_path)
    rng = np.random.default_rng(seed)
    try:
        for _ in range(count):
            click.echo(search_space.sample(rng, mode).to_json())
            sys.stdout.flush()  # a reader sees each line at once, whatever N is
    except BrokenPipeError:  # the reader has what it wanted (`| head -3`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@space.command("from-model")
@click.argument("model_path", type=click.Path(file_okay=False))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The space YAML to write (not overwritten).")
@click.option("--mixers", "--attention", "mixers", default=None,
              metavar="softmax[,linear][,local][,fourier][,conv<k>][,none] | causal[,sliding][,none]",
              help="Token mixers to offer, the model's own first (default: it alone; softmax for an encoder, "
                   "causal for a decoder LM). The model learned its own alone; at the short sequences of most "
                   "classification tasks the others save little and their training takes from the shared weights.")
@click.option("--reduce", "reduce", default=None, metavar="LAYER[,LAYER...]:FACTOR[,FACTOR...]",
              help="Stage boundaries the search may put before these layers, merging tokens by these factors "
                   "(1: no boundary), e.g. 2,4:1,2. Omit 1 to force a boundary (the model is then no arch).")
def space_from_model(model_path: str, out_path: str, mixers: str, reduce: str | None) -> None:
    """Write a space whose largest arch is the pretrained model at MODEL_PATH (its depth, heads, MLP
    size, hidden size; its own mixer, full precision), with smaller choices: every depth from one
    layer (an encoder's first layers kept, a decoder's most important blocks), heads and MLP sizes down
    to a quarter, int8 layers (and a decoder's 4-bit ones); with --reduce, stage boundaries (the new
    projections start as pooling and train with the sandwich rule)."""
    from pathlib import Path

    from search_space.registry import known_mixers, mixer_name
    from supernet.checkpoint import atomic_write
    from supernet.preflight import causal_mixers
    from supernet.pretrained.importing import model_space, open_pretrained, own_mixer

    out = Path(out_path)
    if out.exists():
        raise InputError(f"{out}: already exists; give another path or remove it")
    boundaries = _reduce_option(reduce) if reduce is not None else None
    model = open_pretrained(model_path)
    own = own_mixer(model)
    names = tuple(dict.fromkeys(k.strip() for k in (own if mixers is None else mixers).split(",") if k.strip()))
    unknown = [k for k in names if mixer_name(k) is None or mixer_name(k).check(k) is not None]
    if unknown or not names or names[0] != own:
        raise InputError(f"--mixers {mixers!r}: give {own} (the model's own) first, then any of {known_mixers()}")
    if model.family.causal and boundaries is not None:
        raise InputError("--reduce: a decoder LM's tokens are not merged (each one is a step of generation)")
    seeing = [k for k in names if model.family.causal and not getattr(mixer_name(k), "causal", False)]
    if seeing:
        raise InputError(f"--mixers {mixers!r}: {seeing[0]} lets a token see later ones; a decoder LM's layers take "
                         f"{', '.join(causal_mixers())}")
    data = model_space(model, mixers=names)
    if boundaries is not None:
        data["per_layer"] = [{"layers": boundaries[0], "reduce": boundaries[1]}]
    space = SearchSpace.from_dict(data)  # what is written is a valid space
    header = (f"# written by `elastiq space from-model` from {model_path} ({model.family.name}): the largest arch\n"
              f"# (first mixer, widest, deepest, full precision) is the model itself"
              + (", its embedding tables\n# stored int8 (quantize_embeddings: false keeps them fp32)\n"
                 if data["quantize_embeddings"] else "\n"))
    atomic_write(out, lambda f: f.write((header + yaml.safe_dump(data, sort_keys=False)).encode()))
    click.echo(space.summary())
    click.echo(f"written to {out}")


def _reduce_option(text: str) -> tuple[list[int], list[int]]:
    """`--reduce 2,4:1,2` -> ([2, 4], [1, 2])."""
    layers, sep, factors = text.partition(":")
    try:
        parsed = ([int(v) for v in layers.split(",")], [int(v) for v in factors.split(",")])
    except ValueError:
        parsed = None
    if not sep or parsed is None:
        raise InputError(f"--reduce {text!r}: give layer indices, a colon, then factors, e.g. 2,4:1,2")
    return parsed
