"""Family adapters: how a Hugging Face checkpoint's config and weights map onto the elastic model.

Each adapter is a small class: which `model_type`s it reads, the `ModelStyle` of its layout, and a
table from the checkpoint's weight names to the supernet's (`weight_map`; a name with a conversion where
the checkpoint lays a weight out otherwise). Names are matched with or without the base model's prefix
(`bert.`, `roberta.`, `vit.`, `model.`), as a bare model (`BertModel`) or one with a head saves them.
This module holds the encoders; `decoder_families` the decoder LMs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from torch import Tensor

from search_space import InputError
from supernet.subnet import ACTIVATIONS
from supernet.task_spec import ModelStyle


class PretrainedError(InputError):
    """A pretrained model that is missing, unsupported, or whose weights do not match its config."""


@dataclass(frozen=True)
class Dims:
    """The sizes of a pretrained model."""

    hidden: int
    heads: int
    intermediate: int
    layers: int
    positions: int  # rows of its position table, or (rotary positions) the longest sequence it was made for
    head_size: int | None = None  # where the config gives it (Qwen3's need not be hidden / heads)
    kv_heads: int | None = None  # key and value heads, where fewer than the query heads (grouped-query attention)

    @property
    def heads_per_kv(self) -> int:
        return self.heads // self.kv_heads if self.kv_heads else 1

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.heads


class Converted(NamedTuple):
    """A checkpoint weight that needs a conversion into the supernet's layout (GPT-2's fused, transposed
    projections)."""

    name: str
    convert: Callable[[Tensor], Tensor]


class Family(ABC):
    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    prefix: ClassVar[str]  # the base model's name in a checkpoint with a head
    input_kind: ClassVar[str]  # "text" (token ids and types), "features" (image patches), "tokens" (an LM's)
    causal: ClassVar[bool] = False  # a decoder LM

    def dims(self, config: Any) -> Dims:
        hidden, heads = config.hidden_size, config.num_attention_heads
        if hidden % heads:
            raise PretrainedError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        return Dims(hidden, heads, config.intermediate_size, config.num_hidden_layers, self.positions(config))

    def check(self, config: Any) -> None:
        if config.hidden_act not in ACTIVATIONS:
            raise PretrainedError(f"activation {config.hidden_act!r} is not supported (supported: "
                                  f"{', '.join(sorted(ACTIVATIONS))})")

    @abstractmethod
    def positions(self, config: Any) -> int: ...

    @abstractmethod
    def style(self, config: Any) -> ModelStyle: ...

    @abstractmethod
    def weight_map(self, config: Any, layers: int) -> dict[str, str | Converted]:
        """Supernet weight name -> checkpoint weight name (without the prefix), for every weight the
        checkpoint must hold; the head's optional weights are in `head_map`."""

    @abstractmethod
    def head_map(self) -> dict[str, tuple[str, ...]]:
        """Supernet weight name -> checkpoint names, in order of preference, of the weights a bare
        encoder may lack (pooler, classifier): imported where one is present with the right shape,
        else learned from a seeded init."""


def _linear(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"}


def _blocks(layers: int, projections: str, norm1: str, norm2: str) -> dict[str, str]:
    """The encoder layers' weights, named as BERT and ViT both name them but for where the Q/K/V
    projections and the two LayerNorms sit."""
    names: dict[str, str] = {}
    for i in range(layers):
        ours, theirs = f"blocks.{i}", f"encoder.layer.{i}"
        for projection in ("query", "key", "value"):
            names |= _linear(f"{ours}.attention.{projection}", f"{theirs}.{projections}.{projection}")
        names |= _linear(f"{ours}.attention.out", f"{theirs}.attention.output.dense")
        names |= _linear(f"{ours}.norm1", f"{theirs}.{norm1}")
        names |= _linear(f"{ours}.mlp.fc1", f"{theirs}.intermediate.dense")
        names |= _linear(f"{ours}.mlp.fc2", f"{theirs}.output.dense")
        names |= _linear(f"{ours}.norm2", f"{theirs}.{norm2}")
    return names


def _optional(ours: str, *theirs: str) -> dict[str, tuple[str, ...]]:
    return {f"{ours}.{part}": tuple(f"{name}.{part}" for name in theirs) for part in ("weight", "bias")}


class BertFamily(Family):
    """BERT: post-LN blocks, embedding LayerNorm, token types, [CLS] pooler (dense + tanh)."""

    name = "bert"
    model_types = ("bert",)
    prefix = "bert."
    input_kind = "text"

    def positions(self, config: Any) -> int:
        return config.max_position_embeddings

    def check(self, config: Any) -> None:
        super().check(config)
        kind = getattr(config, "position_embedding_type", "absolute") or "absolute"
        if kind != "absolute":
            raise PretrainedError(f"position_embedding_type {kind!r} is not supported (absolute only)")
        if getattr(config, "is_decoder", False):
            raise PretrainedError("a decoder (is_decoder: true) is not an encoder elastiq can import")

    def style(self, config: Any) -> ModelStyle:
        return ModelStyle(norm_first=False, activation=config.hidden_act, norm_eps=config.layer_norm_eps,
                          embedding_norm=True, final_norm=False, pooling="cls", pooler=True,
                          token_types=config.type_vocab_size, pad_token_id=config.pad_token_id,
                          positions=self.positions(config))

    def weight_map(self, config: Any, layers: int) -> dict[str, str]:
        names = {"stem.embed.weight": "embeddings.word_embeddings.weight",
                 "stem.position": "embeddings.position_embeddings.weight",
                 "stem.token_type": "embeddings.token_type_embeddings.weight",
                 **_linear("stem.norm", "embeddings.LayerNorm")}
        return names | _blocks(layers, "attention.self", "attention.output.LayerNorm", "output.LayerNorm")

    def head_map(self) -> dict[str, tuple[str, ...]]:
        return {**_optional("head.pooler", "pooler.dense"), **_optional("head.classifier", "classifier")}


class RobertaFamily(BertFamily):
    """RoBERTa: BERT's layout; positions count real tokens from the padding id on; its
    classification head (dense + tanh, out_proj) is BERT's pooler and classifier."""

    name = "roberta"
    model_types = ("roberta", "xlm-roberta", "camembert")
    prefix = "roberta."

    def style(self, config: Any) -> ModelStyle:
        base = super().style(config)
        return ModelStyle(**{**base.to_dict(), "position_offset": config.pad_token_id})

    def head_map(self) -> dict[str, tuple[str, ...]]:
        # a checkpoint with a classification head has no pooler: the head's dense layer plays its part
        return {**_optional("head.pooler", "classifier.dense", "pooler.dense"),
                **_optional("head.classifier", "classifier.out_proj")}


class VitFamily(Family):
    """ViT: pre-LN blocks, patches embedded by a linear map (the patch convolution's weights), a
    [CLS] token, the final LayerNorm, the classifier on [CLS]. The task gives patches already cut."""

    name = "vit"
    model_types = ("vit",)
    prefix = "vit."
    input_kind = "features"

    def positions(self, config: Any) -> int:
        return (config.image_size // config.patch_size) ** 2 + 1

    def check(self, config: Any) -> None:
        super().check(config)
        if config.image_size % config.patch_size:
            raise PretrainedError(f"image_size {config.image_size} is not a multiple of patch_size "
                                  f"{config.patch_size}")

    def style(self, config: Any) -> ModelStyle:
        return ModelStyle(norm_first=True, activation=config.hidden_act, norm_eps=config.layer_norm_eps,
                          final_norm=True, pooling="cls", cls_token=True, positions=self.positions(config))

    def weight_map(self, config: Any, layers: int) -> dict[str, str]:
        names = {"stem.embed.weight": "embeddings.patch_embeddings.projection.weight",
                 "stem.embed.bias": "embeddings.patch_embeddings.projection.bias",
                 "stem.cls_token": "embeddings.cls_token", "stem.position": "embeddings.position_embeddings",
                 **_linear("head.norm", "layernorm")}
        return names | _blocks(layers, "attention.attention", "layernorm_before", "layernorm_after")

    def head_map(self) -> dict[str, tuple[str, ...]]:
        return _optional("head.classifier", "classifier")


ENCODER_FAMILIES: tuple[Family, ...] = (BertFamily(), RobertaFamily(), VitFamily())
