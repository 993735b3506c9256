"""What the model needs to know of a task: its input and output shapes (`TaskSpec`) and the layout of the
model family it is meant for (`ModelStyle`)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ModelStyle:
    """How a model family lays its encoder out. The default is elastiq's own encoder."""

    norm_first: bool = True  # pre-LN blocks (ours, ViT); False: post-LN (BERT)
    activation: str = "gelu"  # the MLP's, one of ACTIVATIONS
    norm_eps: float = 1e-5
    embedding_norm: bool = False  # a LayerNorm after the embeddings are summed (BERT)
    final_norm: bool = True  # a LayerNorm before pooling (pre-LN models)
    pooling: str = "mean"  # "mean" over real tokens, or "cls": the first token
    pooler: bool = False  # a dense + tanh layer on the pooled vector (BERT's pooler, RoBERTa's head)
    cls_token: bool = False  # a learned token put before the inputs (ViT)
    token_types: int = 0  # token-type embeddings (BERT); text inputs then carry type ids
    pad_token_id: int | None = None  # text: the padding id, masked out everywhere
    position_offset: int | None = None  # RoBERTa: positions count real tokens from this id; None: 0, 1, 2, ...
    positions: int | None = None  # rows of the position table (the pretrained model's); None: the sequence
    # a decoder LM (Llama, Qwen, GPT-2): causal attention, and every token's next-token logits from an LM head
    causal: bool = False
    norm: str = "layer"  # "layer" (LayerNorm) or "rms" (RMSNorm: Llama, Qwen)
    rope_theta: float | None = None  # rotary positions of this base (`supernet.rotary`), no position table
    gated_mlp: bool = False  # the MLP's hidden units are act(gate(x)) * up(x) (SwiGLU)
    heads_per_kv: int = 1  # query heads sharing one key and value head (grouped-query attention)
    qk_norm: bool = False  # an RMSNorm over each head's queries and keys, before the rotation (Qwen3)
    qkv_bias: bool = True  # biases of the query, key and value projections
    out_bias: bool = True  # of the attention's output projection
    mlp_bias: bool = True
    tie_embeddings: bool = False  # the LM head's weights are the token table

    def to_dict(self) -> dict:
        # the decoder fields only where they are not the default: an encoder's records stay what they were
        defaults = ModelStyle()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _DECODER_FIELDS or getattr(self, f.name) != getattr(defaults, f.name)}

    @property
    def position_table(self) -> bool:
        """Whether positions are a learned table added to the tokens (not rotated into queries and keys)."""
        return self.rope_theta is None


_DECODER_FIELDS = ("causal", "norm", "rope_theta", "gated_mlp", "heads_per_kv", "qk_norm", "qkv_bias", "out_bias",
                   "mlp_bias", "tie_embeddings")


@dataclass(frozen=True)
class TaskSpec:
    """What the model needs to know of a task: its input and output shapes, and the layout of the
    model it is meant for (`style`)."""

    input_kind: str  # "features": float (batch, tokens, input_dim); "tokens": int (batch, tokens) (a causal
    # style's: padded with style.pad_token_id where it has one); "text": int (batch, tokens, 2): token ids
    # and token-type ids, padded with style.pad_token_id
    input_dim: int  # features per token, or vocabulary size
    seq_len: int
    num_classes: int  # a causal style's: the vocabulary (every token's logits)
    style: ModelStyle = ModelStyle()
    # (rows, columns) where the tokens are an image's patches, row by row (after the [CLS] token): a stage
    # boundary then merges factor x factor patches; None: a sequence, merged factor tokens at a time
    patch_grid: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        data = {**vars(self), "style": self.style.to_dict()}
        if self.patch_grid is None:  # only where set: a sequence task's records stay what they were
            del data["patch_grid"]
        else:
            data["patch_grid"] = list(self.patch_grid)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TaskSpec:
        grid = data.get("patch_grid")
        return cls(**{**data, "style": ModelStyle(**data.get("style", {})),
                      "patch_grid": None if grid is None else tuple(grid)})


def sequence_tokens(task: TaskSpec) -> int:
    """The tokens of an input of `task` as its layers see it: the sequence, and the [CLS] token."""
    return task.seq_len + (1 if task.style.cls_token else 0)


def padded_kind(input_kind: str, style: ModelStyle) -> bool:
    """Whether inputs of this kind carry padding (ids equal to `style.pad_token_id`): texts, and a causal
    model's tokens."""
    return input_kind == "text" or (input_kind == "tokens" and style.causal)


def unpadded_tokens(task: TaskSpec) -> int | None:
    """The tokens every input of `task` has, where none is padded; else None."""
    if padded_kind(task.input_kind, task.style) and task.style.pad_token_id is not None:
        return None
    return sequence_tokens(task)


def position_rows(task: TaskSpec) -> int:
    """Rows of the position table: the pretrained model's, else one per token (and the [CLS] token); none
    where positions are rotary."""
    if not task.style.position_table:
        return 0
    if task.style.positions is not None:
        return task.style.positions
    return sequence_tokens(task)
