"""The losses and scores of a model's logits against labels: one label per sample (classification), or one per
token (a language model's next tokens: logits (batch, tokens, vocabulary), labels (batch, tokens)). Each row of
logits (a sample's, or a token's) counts once; every caller uses these, so a task's shape is decided here."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def _rows(logits: Tensor) -> Tensor:
    return logits.reshape(-1, logits.shape[-1])


def label_loss(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of each row on its label (`reduction` "sum": summed over the rows)."""
    return F.cross_entropy(_rows(logits), labels.reshape(-1), reduction=reduction)


def distillation_loss(logits: Tensor, soft_targets: Tensor) -> Tensor:
    """KL divergence of each row's prediction from the teacher's probabilities, the mean over rows."""
    return F.kl_div(_rows(logits).log_softmax(dim=-1), _rows(soft_targets), reduction="batchmean")


def hits(logits: Tensor, labels: Tensor) -> Tensor:
    """1.0 where a row's most likely class is its label, else 0.0, flat over the rows."""
    return (_rows(logits).argmax(dim=-1) == labels.reshape(-1).to(logits.device)).float()


def perplexity(total_loss: float, rows: int) -> float:
    """exp of the mean loss per token (inf where it overflows)."""
    mean = total_loss / max(rows, 1)
    return math.exp(mean) if mean < 700 else math.inf


__all__ = ["distillation_loss", "hits", "label_loss", "perplexity"]
