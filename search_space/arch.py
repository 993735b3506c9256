"""`Arch`: one architecture of a search space, frozen and canonical.

Only active layers are stored, so two descriptions of the same network are
equal and share one `key`. The key is a hash of the canonical JSON, hence
identical across processes and machines.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from search_space.errors import SpaceError
from search_space.layer_genes import GENE_KEYS


@dataclass(frozen=True, order=True)
class LayerArch:
    num_heads: int
    mlp_dim: int
    mixer: str  # the token mixer (`supernet.mixers`): softmax, linear, local, fourier, conv<k>, none
    bits: int
    # the layer genes (`search_space.layer_genes`), where its space gives the layer choices for them:
    # its own hidden size (None: the arch's embed_dim), the factor a stage boundary before it merges its
    # tokens by (None or 1: no boundary)
    width: int | None = None
    reduce: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"num_heads": self.num_heads, "mlp_dim": self.mlp_dim, "mixer": self.mixer, "bits": self.bits}
        # a gene only where given: an arch of a space without it keeps its key
        data.update({key: getattr(self, key) for key in GENE_KEYS if getattr(self, key) is not None})
        return data


_LAYER_FIELDS = ("num_heads", "mlp_dim", "mixer", "bits")
# the field's name before it held every token mixer: still read, and still what an arch's key hashes, so
# that an arch keeps the key its evaluations and latencies are stored under
FORMER_NAMES = {"mixer": "attention"}


@dataclass(frozen=True)
class Arch:
    embed_dim: int
    layers: tuple[LayerArch, ...]

    @property
    def depth(self) -> int:
        return len(self.layers)

    def width_of(self, index: int) -> int:
        """The hidden size layer `index` runs at: its own width, else the embedding's."""
        width = self.layers[index].width
        return self.embed_dim if width is None else width

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.width_of(i) for i in range(self.depth))

    @property
    def out_width(self) -> int:
        """The width the head reads: the last layer's."""
        return self.width_of(self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "layers": [layer.to_dict() for layer in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @functools.cached_property  # an Arch is frozen: its key never changes
    def key(self) -> str:
        stored = {"embed_dim": self.embed_dim, "layers": [former_names(layer.to_dict()) for layer in self.layers]}
        return hashlib.sha256(json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        if not isinstance(data, dict):
            raise SpaceError(f"arch: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"embed_dim", "layers"}
        if unknown:
            raise SpaceError(f"arch: unknown field(s) {sorted(map(str, unknown))}")
        for field in ("embed_dim", "layers"):
            if field not in data:
                raise SpaceError(f"arch: missing field '{field}'")
        if not isinstance(data["layers"], list) or not data["layers"]:
            raise SpaceError("arch.layers: expected a non-empty list")
        layers = []
        for i, layer in enumerate(data["layers"]):
            where = f"arch.layers[{i}]"
            if not isinstance(layer, dict):
                raise SpaceError(f"{where}: expected a mapping")
            layer = current_names(layer, where)
            unknown = set(layer) - set(_LAYER_FIELDS) - set(GENE_KEYS)
            if unknown:
                raise SpaceError(f"{where}: unknown field(s) {sorted(map(str, unknown))}")
            missing = [f for f in _LAYER_FIELDS if f not in layer]
            if missing:
                raise SpaceError(f"{where}: missing field(s) {missing}")
            layers.append(LayerArch(
                num_heads=_int(layer["num_heads"], f"{where}.num_heads"),
                mlp_dim=_int(layer["mlp_dim"], f"{where}.mlp_dim"),
                mixer=_str(layer["mixer"], f"{where}.mixer"),
                bits=_int(layer["bits"], f"{where}.bits"),
                **{key: _int(layer[key], f"{where}.{key}") for key in GENE_KEYS if key in layer}))
        return cls(embed_dim=_int(data["embed_dim"], "arch.embed_dim"), layers=tuple(layers))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpaceError(f"arch: not valid JSON ({exc.msg} at position {exc.pos})") from None
        return cls.from_dict(data)


def former_names(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` under the names they had before a rename (what keys and hashes are taken over)."""
    return {FORMER_NAMES.get(name, name): value for name, value in fields.items()}


def current_names(fields: dict[str, Any], where: str) -> dict[str, Any]:
    """`fields` as written before a rename (`attention`) or after (`mixer`), under the current names."""
    for name, former in FORMER_NAMES.items():
        if former in fields:
            if name in fields:
                raise SpaceError(f"{where}: give either {name} or {former} (its former name), not both")
            fields = {(name if key == former else key): value for key, value in fields.items()}
    return fields


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpaceError(f"{where}: expected an integer, got {value!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SpaceError(f"{where}: expected a string, got {value!r}")
    return value
