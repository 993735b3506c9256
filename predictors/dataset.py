"""The latency dataset: stratified archs, each built by the target's runtime and measured in isolation.

Archs are stratified over depth and width (every depth x embed-dim cell in
turn) and over mixer and bit width (each arch leans towards one type
and one width, cycling, with the rest of its layers drawn at random), so the
predictor sees homogeneous and mixed archs across the whole range.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from predictors.measure import Protocol, example_input, measure_many
from predictors.target import HardwareTarget
from search_space import Arch, LayerArch, SearchSpace
from search_space.sampling import draw_genes
from supernet.model import Supernet


def stratified_archs(space: SearchSpace, count: int, rng: np.random.Generator, lean: float = 0.7) -> list[Arch]:
    cells = list(itertools.product(space.depths, space.embed_dims))
    rng.shuffle(cells)
    mixer_cycle = itertools.cycle(rng.permutation(space.mixers).tolist())
    bits_cycle = itertools.cycle(rng.permutation(space.bit_widths).tolist())
    archs: list[Arch] = []
    seen: set[str] = set()
    tries = 0
    while len(archs) < count and tries < 50 * count:
        tries += 1
        depth, embed_dim = cells[len(archs) % len(cells)]
        leaning, bits = next(mixer_cycle), next(bits_cycle)
        layers = []
        for i in range(depth):
            choices = space.layers[i]
            widths = choices.widths(int(embed_dim))
            width = int(widths[rng.integers(len(widths))])
            dims = choices.mlp_dims(width)
            pick = lambda options, preferred: preferred if preferred in options and rng.random() < lean \
                else options[rng.integers(len(options))]  # noqa: E731
            heads = int(choices.num_heads[rng.integers(len(choices.num_heads))])
            mlp_dim = int(dims[rng.integers(len(dims))])
            mixer = pick(choices.mixer, leaning)
            layer_bits = int(pick(choices.bits, bits))
            layers.append(LayerArch(num_heads=choices.heads_of(mixer, heads), mlp_dim=mlp_dim,
                                    mixer=mixer, bits=layer_bits, width=None if choices.width is None else width,
                                    **draw_genes(choices, rng)))
        arch = space.validate(Arch(int(embed_dim), tuple(layers)))
        if arch.key not in seen:  # nothing is measured twice
            seen.add(arch.key)
            archs.append(arch)
    return archs


@dataclass(frozen=True)
class LatencyRecord:
    arch: Arch
    target: HardwareTarget
    measurement: Any  # LatencyMeasurement

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "arch_key": self.arch.key, "target": self.target.to_dict(),
                **self.measurement.to_dict()}


def measure_archs(supernet: Supernet, archs: list[Arch], target: HardwareTarget, protocol: Protocol = Protocol(),
                  chunk: int = 250, seed: int = 0, progress: bool = True) -> Iterator[LatencyRecord]:
    """Build each arch's artifact on the target's runtime and measure them side by side in
    `protocol.passes` rounds (see `predictors.measure`), chunk by chunk, yielding each chunk's
    records as soon as they are final, so a crash loses one chunk at most."""
    inputs = example_input(supernet.task, target)
    rng = np.random.default_rng(seed)
    bar = tqdm(total=len(archs), desc=f"measure {target.name}", unit="arch", disable=not progress,
               dynamic_ncols=True)
    for begin in range(0, len(archs), chunk):
        part = archs[begin:begin + chunk]
        deployed = [target.deploy(supernet.extract(arch), inputs) for arch in part]
        for arch, measurement in zip(part, measure_many(deployed, inputs, target, protocol, rng),
                                     strict=True):
            yield LatencyRecord(arch, target, measurement)
        bar.update(len(part))
    bar.close()
