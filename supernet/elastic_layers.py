"""The elastic building blocks every elastic module is made of: a Linear and the norms, each computing on
the top-left slice of its largest weights (as wide as its input, as many outputs as asked) and producing
its static counterpart (`get_active_subnet`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from supernet.quant import DEFAULT_BLOCK_SIZE, FULL_PRECISION, QuantLinear, quantized_linear
from supernet.task_spec import ModelStyle


def parameter_copy(src: Tensor) -> nn.Parameter:
    return nn.Parameter(src.detach().clone())


def _static_linear(weight: Tensor, bias: Tensor | None, bits: int, block_size: int) -> nn.Linear:
    out_features, in_features = weight.shape
    layer = (QuantLinear(in_features, out_features, bias is not None, bits, block_size) if bits < FULL_PRECISION
             else nn.Linear(in_features, out_features, bias is not None))
    layer.weight = parameter_copy(weight)
    if bias is not None:
        layer.bias = parameter_copy(bias)
    return layer


class ElasticLinear(nn.Linear):
    """A Linear of the largest size; the active path uses weight[:out, :in]. Below 8 bits its weights
    are quantized in blocks of `block_size` inputs (a constant of the space)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 block_size: int = DEFAULT_BLOCK_SIZE):
        super().__init__(in_features, out_features, bias=bias)
        self.block_size = block_size

    def forward(self, x: Tensor, out_features: int | None = None, bits: int = FULL_PRECISION) -> Tensor:
        weight, bias = self.weight, self.bias
        in_features = x.shape[-1]
        # full-size layers skip slicing: the largest arch must cost what a static model costs
        if out_features is not None and out_features != self.out_features:
            weight = weight[:out_features]
            bias = bias[:out_features] if bias is not None else None
        if in_features != self.in_features:
            weight = weight[:, :in_features]
        if bits >= FULL_PRECISION:
            return F.linear(x, weight, bias)
        return quantized_linear(x, weight, bias, bits, self.block_size)

    def get_active_subnet(self, in_features: int, out_features: int, bits: int = FULL_PRECISION) -> nn.Linear:
        bias = self.bias[:out_features] if self.bias is not None else None
        return _static_linear(self.weight[:out_features, :in_features], bias, bits, self.block_size)


class ElasticLayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        dim = x.shape[-1]
        if dim == self.normalized_shape[0]:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(x, (dim,), self.weight[:dim], self.bias[:dim], self.eps)

    def get_active_subnet(self, dim: int) -> nn.LayerNorm:
        norm = nn.LayerNorm(dim, eps=self.eps)
        norm.weight, norm.bias = parameter_copy(self.weight[:dim]), parameter_copy(self.bias[:dim])
        return norm


class ElasticRMSNorm(nn.RMSNorm):
    """RMSNorm (Llama, Qwen) over the active channels."""

    def forward(self, x: Tensor) -> Tensor:
        dim = x.shape[-1]
        return F.rms_norm(x, (dim,), self.weight[:dim], self.eps)

    def get_active_subnet(self, dim: int) -> nn.RMSNorm:
        norm = nn.RMSNorm(dim, eps=self.eps)
        norm.weight = parameter_copy(self.weight[:dim])
        return norm


def elastic_norm(dim: int, style: ModelStyle) -> ElasticLayerNorm | ElasticRMSNorm:
    return ElasticRMSNorm(dim, eps=style.norm_eps) if style.norm == "rms" else ElasticLayerNorm(dim, eps=style.norm_eps)
