"""Decoder LM adapters: the Llama family (Llama, SmolLM, TinyLlama), Qwen2, Qwen3 and GPT-2.

Llama's layout is the modern decoder's: pre-norm blocks with RMSNorm, rotary positions, grouped-query
attention, a SwiGLU MLP, a final RMSNorm and an LM head (tied to the token table where the config says
so). Qwen2 adds biases to the query, key and value projections; Qwen3 instead normalises each head's
queries and keys. GPT-2 is the older one: learned positions, LayerNorm, a GELU MLP, biases everywhere,
and its projections stored fused and transposed (`Conv1D`), converted here.

What these adapters do not read is refused, never approximated: scaled rotary positions (Llama 3's
`rope_type: llama3`, YaRN, ...), partial rotation, sliding-window layers of a Qwen config, GPT-2's
attention scaled by the layer index.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from supernet.pretrained.families import Converted, Dims, Family, PretrainedError
from supernet.subnet import ACTIVATIONS
from supernet.task_spec import ModelStyle


def _named(ours: str, theirs: str, bias: bool) -> dict[str, str]:
    return {f"{ours}.weight": f"{theirs}.weight", **({f"{ours}.bias": f"{theirs}.bias"} if bias else {})}


class LlamaFamily(Family):
    """Llama, SmolLM, TinyLlama: RMSNorm, rotary positions, grouped-query attention, SwiGLU."""

    name = "llama"
    model_types: tuple[str, ...] = ("llama",)
    prefix = "model."
    input_kind = "tokens"
    causal = True
    qkv_bias_default = False  # Qwen2's projections have biases whatever the config says
    qk_norm = False  # Qwen3's norm of each head's queries and keys

    def dims(self, config: Any) -> Dims:
        heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or \
            config.num_attention_heads
        if heads % kv_heads:
            raise PretrainedError(f"num_key_value_heads {kv_heads} does not divide num_attention_heads {heads} "
                                  f"(grouped-query attention shares each key-value head among whole groups)")
        explicit = getattr(config, "head_dim", None)
        if not explicit and config.hidden_size % heads:
            raise PretrainedError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads {heads}")
        head_size = explicit or config.hidden_size // heads
        return Dims(config.hidden_size, heads, config.intermediate_size, config.num_hidden_layers,
                    self.positions(config), head_size=head_size, kv_heads=kv_heads)

    def positions(self, config: Any) -> int:
        return config.max_position_embeddings

    def check(self, config: Any) -> None:
        super().check(config)
        rope = rope_theta(config)  # raises for scaled positions
        if rope <= 0:
            raise PretrainedError(f"rope_theta {rope} is not positive")
        factor = getattr(config, "partial_rotary_factor", 1.0) or 1.0
        if factor != 1.0:
            raise PretrainedError(f"partial_rotary_factor {factor} is not supported (whole heads rotate)")
        if getattr(config, "use_sliding_window", False):
            raise PretrainedError("use_sliding_window: true is not supported (a search may offer `sliding` layers)")
        if getattr(config, "pretraining_tp", 1) not in (None, 1):
            raise PretrainedError(f"pretraining_tp {config.pretraining_tp} is not supported (1 only)")

    def style(self, config: Any) -> ModelStyle:
        dims = self.dims(config)
        bias = bool(getattr(config, "attention_bias", False))
        return ModelStyle(norm_first=True, activation=config.hidden_act, norm_eps=config.rms_norm_eps,
                          final_norm=True, causal=True, norm="rms", rope_theta=rope_theta(config), gated_mlp=True,
                          heads_per_kv=dims.heads_per_kv, qk_norm=self.qk_norm, qkv_bias=bias or self.qkv_bias_default,
                          out_bias=bias, mlp_bias=bool(getattr(config, "mlp_bias", False)),
                          tie_embeddings=bool(config.tie_word_embeddings), positions=self.positions(config))

    def weight_map(self, config: Any, layers: int) -> dict[str, str | Converted]:
        style = self.style(config)
        names: dict[str, str | Converted] = {"stem.embed.weight": "embed_tokens.weight",
                                             "head.norm.weight": "norm.weight"}
        if not style.tie_embeddings:
            names["head.classifier.weight"] = "lm_head.weight"
        for i in range(layers):
            ours, theirs = f"blocks.{i}", f"layers.{i}"
            for projection, name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
                names |= _named(f"{ours}.attention.{projection}", f"{theirs}.self_attn.{name}", style.qkv_bias)
            names |= _named(f"{ours}.attention.out", f"{theirs}.self_attn.o_proj", style.out_bias)
            if style.qk_norm:
                names |= {f"{ours}.attention.q_norm.weight": f"{theirs}.self_attn.q_norm.weight",
                          f"{ours}.attention.k_norm.weight": f"{theirs}.self_attn.k_norm.weight"}
            names[f"{ours}.norm1.weight"] = f"{theirs}.input_layernorm.weight"
            names[f"{ours}.norm2.weight"] = f"{theirs}.post_attention_layernorm.weight"
            for part, name in (("gate", "gate_proj"), ("fc1", "up_proj"), ("fc2", "down_proj")):
                names |= _named(f"{ours}.mlp.{part}", f"{theirs}.mlp.{name}", style.mlp_bias)
        return names

    def head_map(self) -> dict[str, tuple[str, ...]]:
        return {}


class Qwen2Family(LlamaFamily):
    """Qwen2 (and Qwen2.5): Llama's layout, with biases on the query, key and value projections."""

    name = "qwen2"
    model_types = ("qwen2",)
    qkv_bias_default = True


class Qwen3Family(LlamaFamily):
    """Qwen3: Llama's layout, each head's queries and keys RMS-normalised before their rotation."""

    name = "qwen3"
    model_types = ("qwen3",)
    qk_norm = True


def _transposed(tensor: Tensor) -> Tensor:
    return tensor.t() if tensor.dim() == 2 else tensor


def _third(index: int):
    """One of the query, key and value parts of GPT-2's fused `c_attn` (its weight stored transposed)."""
    def convert(tensor: Tensor) -> Tensor:
        return _transposed(tensor).chunk(3, dim=0)[index]
    return convert


class Gpt2Family(Family):
    """GPT-2: learned positions, pre-LN LayerNorm blocks, GELU MLP, biases everywhere, tied LM head."""

    name = "gpt2"
    model_types = ("gpt2",)
    prefix = "transformer."
    input_kind = "tokens"
    causal = True

    def dims(self, config: Any) -> Dims:
        hidden, heads = config.n_embd, config.n_head
        if hidden % heads:
            raise PretrainedError(f"n_embd {hidden} is not a multiple of n_head {heads}")
        return Dims(hidden, heads, config.n_inner or 4 * hidden, config.n_layer, self.positions(config))

    def positions(self, config: Any) -> int:
        return config.n_positions

    def check(self, config: Any) -> None:
        if config.activation_function not in ACTIVATIONS:
            raise PretrainedError(f"activation {config.activation_function!r} is not supported (supported: "
                                  f"{', '.join(sorted(ACTIVATIONS))})")
        if getattr(config, "scale_attn_by_inverse_layer_idx", False):
            raise PretrainedError("scale_attn_by_inverse_layer_idx: true is not supported")
        if not getattr(config, "scale_attn_weights", True):
            raise PretrainedError("scale_attn_weights: false is not supported")
        if getattr(config, "add_cross_attention", False):
            raise PretrainedError("add_cross_attention: true is not supported (a decoder LM alone)")

    def style(self, config: Any) -> ModelStyle:
        return ModelStyle(norm_first=True, activation=config.activation_function, norm_eps=config.layer_norm_epsilon,
                          final_norm=True, causal=True, positions=self.positions(config),
                          tie_embeddings=bool(getattr(config, "tie_word_embeddings", True)))

    def weight_map(self, config: Any, layers: int) -> dict[str, str | Converted]:
        names: dict[str, str | Converted] = {"stem.embed.weight": "wte.weight", "stem.position": "wpe.weight",
                                             "head.norm.weight": "ln_f.weight", "head.norm.bias": "ln_f.bias"}
        if not getattr(config, "tie_word_embeddings", True):
            names["head.classifier.weight"] = "lm_head.weight"
        for i in range(layers):
            ours, theirs = f"blocks.{i}", f"h.{i}"
            for index, projection in enumerate(("query", "key", "value")):
                for part in ("weight", "bias"):
                    names[f"{ours}.attention.{projection}.{part}"] = Converted(f"{theirs}.attn.c_attn.{part}",
                                                                              _third(index))
            for mine, fused in (("attention.out", "attn.c_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                names[f"{ours}.{mine}.weight"] = Converted(f"{theirs}.{fused}.weight", _transposed)
                names[f"{ours}.{mine}.bias"] = f"{theirs}.{fused}.bias"
            names |= _named(f"{ours}.norm1", f"{theirs}.ln_1", True) | _named(f"{ours}.norm2", f"{theirs}.ln_2", True)
        return names

    def head_map(self) -> dict[str, tuple[str, ...]]:
        return {}


def rope_theta(config: Any) -> float:
    """The base of the config's rotary positions; scaled positions are refused."""
    parameters = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = parameters.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise PretrainedError(f"rotary positions of rope_type {kind!r} are not supported (default only)")
    return float(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


DECODER_FAMILIES: tuple[Family, ...] = (LlamaFamily(), Qwen2Family(), Qwen3Family(), Gpt2Family())
