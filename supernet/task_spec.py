"""What the model needs to know of a task: its input and output shapes (`TaskSpec`) and the layout of the
model family it is meant for (`ModelStyle`)."""

from __future__ import annotations

from dataclasses import dataclass


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

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass(frozen=True)
class TaskSpec:
    """What the model needs to know of a task: its input and output shapes, and the layout of the
    model it is meant for (`style`)."""

    input_kind: str  # "features": float (batch, tokens, input_dim); "tokens": int (batch, tokens);
    # "text": int (batch, tokens, 2): token ids and token-type ids, padded with style.pad_token_id
    input_dim: int  # features per token, or vocabulary size
    seq_len: int
    num_classes: int
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


def unpadded_tokens(task: TaskSpec) -> int | None:
    """The tokens every input of `task` has, where none is padded; else None."""
    if task.input_kind == "text" and task.style.pad_token_id is not None:
        return None
    return sequence_tokens(task)


def position_rows(task: TaskSpec) -> int:
    """Rows of the position table: the pretrained model's, else one per token (and the [CLS] token)."""
    if task.style.positions is not None:
        return task.style.positions
    return sequence_tokens(task)
