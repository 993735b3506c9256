"""The elastic transformer: one set of weights holding every arch of a space.

A pre-LN encoder whose every dimension is sliced from the largest weights
(weight entanglement, as in AutoFormer and HAT): the active path uses the
top-left block of each weight matrix, so it slices and never masks. Each
elastic module produces its static counterpart with `get_active_subnet`
(as in Once-for-All), and `Supernet.extract(arch)` assembles them into a
plain model that holds only the sliced weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import Arch, InputError, LayerArch, SearchSpace
from supernet.attention import AttentionKernel, make_kernel
from supernet.quant import FULL_PRECISION, QuantLinear, quantized_linear


@dataclass(frozen=True)
class TaskSpec:
    """What the model needs to know of a task: its input and output shapes."""

    input_kind: str  # "features": float (batch, tokens, input_dim); "tokens": int (batch, tokens)
    input_dim: int  # features per token, or vocabulary size
    seq_len: int
    num_classes: int


def _copy(src: Tensor) -> nn.Parameter:
    return nn.Parameter(src.detach().clone())


def _static_linear(weight: Tensor, bias: Tensor | None, bits: int) -> nn.Linear:
    out_features, in_features = weight.shape
    layer = (QuantLinear(in_features, out_features, bias is not None, bits) if bits < FULL_PRECISION
             else nn.Linear(in_features, out_features, bias is not None))
    layer.weight = _copy(weight)
    if bias is not None:
        layer.bias = _copy(bias)
    return layer


# ---- elastic building blocks -------------------------------------------

class ElasticLinear(nn.Linear):
    """A Linear of the largest size; the active path uses weight[:out, :in]."""

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
        return quantized_linear(x, weight, bias, bits)

    def get_active_subnet(self, in_features: int, out_features: int, bits: int = FULL_PRECISION) -> nn.Linear:
        bias = self.bias[:out_features] if self.bias is not None else None
        return _static_linear(self.weight[:out_features, :in_features], bias, bits)


class ElasticLayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        dim = x.shape[-1]
        if dim == self.normalized_shape[0]:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(x, (dim,), self.weight[:dim], self.bias[:dim], self.eps)

    def get_active_subnet(self, dim: int) -> nn.LayerNorm:
        norm = nn.LayerNorm(dim, eps=self.eps)
        norm.weight, norm.bias = _copy(self.weight[:dim]), _copy(self.bias[:dim])
        return norm


def _mix_heads(q: Tensor, k: Tensor, v: Tensor, kernel: AttentionKernel, num_heads: int) -> Tensor:
    """(batch, tokens, heads * head_dim) projections -> kernel per head -> merged."""
    batch, tokens, inner = q.shape
    split = lambda t: t.view(batch, tokens, num_heads, inner // num_heads).transpose(1, 2)  # noqa: E731
    return kernel(split(q), split(k), split(v)).transpose(1, 2).reshape(batch, tokens, inner)


class ElasticAttention(nn.Module):
    """Q/K/V/O shared by every attention type; heads sliced with a fixed head dim."""

    def __init__(self, embed_dim: int, max_heads: int, head_dim: int, window: int, attention_types: tuple[str, ...]):
        super().__init__()
        self.head_dim = head_dim
        inner = max_heads * head_dim
        self.query = ElasticLinear(embed_dim, inner)
        self.key = ElasticLinear(embed_dim, inner)
        self.value = ElasticLinear(embed_dim, inner)
        self.out = ElasticLinear(inner, embed_dim)
        self.kernels = nn.ModuleDict({name: make_kernel(name, window) for name in attention_types})

    def forward(self, x: Tensor, num_heads: int, attention: str, bits: int) -> Tensor:
        inner = num_heads * self.head_dim
        mixed = _mix_heads(self.query(x, inner, bits), self.key(x, inner, bits), self.value(x, inner, bits),
                           self.kernels[attention], num_heads)
        return self.out(mixed, x.shape[-1], bits)

    def get_active_subnet(self, embed_dim: int, num_heads: int, attention: str, bits: int) -> Attention:
        inner = num_heads * self.head_dim
        return Attention(
            query=self.query.get_active_subnet(embed_dim, inner, bits),
            key=self.key.get_active_subnet(embed_dim, inner, bits),
            value=self.value.get_active_subnet(embed_dim, inner, bits),
            out=self.out.get_active_subnet(inner, embed_dim, bits),
            kernel=make_kernel(attention, self.kernels[attention].window), num_heads=num_heads)


class ElasticMLP(nn.Module):
    def __init__(self, embed_dim: int, max_hidden: int):
        super().__init__()
        self.fc1 = ElasticLinear(embed_dim, max_hidden)
        self.fc2 = ElasticLinear(max_hidden, embed_dim)

    def forward(self, x: Tensor, hidden: int, bits: int) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x, hidden, bits)), x.shape[-1], bits)

    def get_active_subnet(self, embed_dim: int, hidden: int, bits: int) -> MLP:
        return MLP(self.fc1.get_active_subnet(embed_dim, hidden, bits),
                   self.fc2.get_active_subnet(hidden, embed_dim, bits))


class ElasticBlock(nn.Module):
    def __init__(self, embed_dim: int, max_heads: int, head_dim: int, max_hidden: int, window: int,
                 attention_types: tuple[str, ...]):
        super().__init__()
        self.norm1 = ElasticLayerNorm(embed_dim)
        self.attention = ElasticAttention(embed_dim, max_heads, head_dim, window, attention_types)
        self.norm2 = ElasticLayerNorm(embed_dim)
        self.mlp = ElasticMLP(embed_dim, max_hidden)

    def forward(self, x: Tensor, layer: LayerArch) -> Tensor:
        x = x + self.attention(self.norm1(x), layer.num_heads, layer.attention, layer.bits)
        return x + self.mlp(self.norm2(x), layer.mlp_dim, layer.bits)

    def get_active_subnet(self, embed_dim: int, layer: LayerArch) -> Block:
        return Block(self.norm1.get_active_subnet(embed_dim),
                     self.attention.get_active_subnet(embed_dim, layer.num_heads, layer.attention, layer.bits),
                     self.norm2.get_active_subnet(embed_dim),
                     self.mlp.get_active_subnet(embed_dim, layer.mlp_dim, layer.bits))


class ElasticStem(nn.Module):
    """Input -> tokens of the active embedding dim, plus learned positions."""

    def __init__(self, task: TaskSpec, embed_dim: int):
        super().__init__()
        self.input_kind = task.input_kind
        if task.input_kind == "tokens":
            self.embed = nn.Embedding(task.input_dim, embed_dim)
        else:
            self.embed = ElasticLinear(task.input_dim, embed_dim)
        self.position = nn.Parameter(torch.zeros(task.seq_len, embed_dim))

    def forward(self, x: Tensor, embed_dim: int) -> Tensor:
        if self.input_kind == "tokens":
            tokens = F.embedding(x, self.embed.weight[:, :embed_dim])
        else:
            tokens = self.embed(x, embed_dim)
        return tokens + self.position[: x.shape[1], :embed_dim]

    def get_active_subnet(self, embed_dim: int) -> Stem:
        if self.input_kind == "tokens":
            embed = nn.Embedding.from_pretrained(self.embed.weight[:, :embed_dim].detach().clone(), freeze=False)
        else:
            embed = self.embed.get_active_subnet(self.embed.in_features, embed_dim)
        return Stem(embed, _copy(self.position[:, :embed_dim]))


class ElasticHead(nn.Module):
    """Final norm, mean over tokens, classifier."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.norm = ElasticLayerNorm(embed_dim)
        self.classifier = ElasticLinear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.norm(x).mean(dim=1))

    def get_active_subnet(self, embed_dim: int) -> Head:
        return Head(self.norm.get_active_subnet(embed_dim),
                    self.classifier.get_active_subnet(embed_dim, self.classifier.out_features))


# ---- the supernet ----------------------------------------------------------

class SupernetTooLarge(InputError):
    """A space whose supernet would not fit in this machine's memory (a width with extra zeros)."""


def supernet_parameter_count(space: SearchSpace, task: TaskSpec) -> int:
    """The parameters `Supernet(space, task)` holds, counted before anything is allocated."""
    e = space.max_embed_dim
    count = task.input_dim * e + (0 if task.input_kind == "tokens" else e) + task.seq_len * e  # stem
    for i in range(space.max_depth):
        inner, hidden = space.max_heads(i) * space.head_dim, space.max_mlp_dim(i)
        count += 2 * 2 * e  # two norms
        count += 3 * (e * inner + inner) + inner * e + e  # query, key, value, out
        count += e * hidden + hidden + hidden * e + e  # the MLP
    return count + 2 * e + e * task.num_classes + task.num_classes  # head


def available_memory() -> int | None:
    """Bytes this process can still allocate: the system's available memory, within a cgroup's limit."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = max(0, int(limit) - used) if available is None else min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def ensure_fits_in_memory(space: SearchSpace, task: TaskSpec, copies: int = 1, purpose: str = "hold") -> int:
    """Refuse a supernet whose float32 weights, `copies` times (4 to train with AdamW: weights,
    gradients, two moments), exceed the available memory; return the bytes needed."""
    needed = 4 * copies * supernet_parameter_count(space, task)
    available = available_memory()
    if available is not None and needed > available:
        raise SupernetTooLarge(
            f"space {space.name!r}: its supernet has {supernet_parameter_count(space, task):,} parameters; to "
            f"{purpose} it needs {_gib(needed)} of memory and {_gib(available)} is available (a width or depth "
            f"with extra zeros?)")
    return needed


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace, task: TaskSpec, seed: int = 0):
        super().__init__()
        ensure_fits_in_memory(space, task)  # before the allocator tries hundreds of GB
        self.space, self.task = space, task
        embed_dim = space.max_embed_dim
        self.stem = ElasticStem(task, embed_dim)
        self.blocks = nn.ModuleList(
            ElasticBlock(embed_dim, space.max_heads(i), space.head_dim, space.max_mlp_dim(i), space.local_window,
                         space.layers[i].attention)
            for i in range(space.max_depth))
        self.head = ElasticHead(embed_dim, task.num_classes)
        generator = torch.Generator().manual_seed(seed)
        self.apply(lambda module: _init_weights(module, generator))

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        h = self.stem(x, arch.embed_dim)
        for block, layer in zip(self.blocks, arch.layers, strict=False):
            h = block(h, layer)
        return self.head(h)

    def extract(self, arch: Arch) -> Subnet:
        """A static model of `arch`: plain layers holding copies of the sliced weights."""
        self.space.validate(arch)
        with torch.no_grad():
            subnet = Subnet(
                self.stem.get_active_subnet(arch.embed_dim),
                [block.get_active_subnet(arch.embed_dim, layer) for block, layer in zip(self.blocks, arch.layers,
                                                                                         strict=False)],
                self.head.get_active_subnet(arch.embed_dim),
                arch_json=arch.to_json())
        return subnet.train(self.training)


def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02, generator=generator)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, ElasticStem):
        nn.init.normal_(module.position, std=0.02, generator=generator)


# ---- static counterparts (what extraction produces) -------------------------

class Attention(nn.Module):
    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear, out: nn.Linear,
                 kernel: AttentionKernel, num_heads: int):
        super().__init__()
        self.query, self.key, self.value, self.out = query, key, value, out
        self.kernel = kernel
        self.num_heads = num_heads

    def forward(self, x: Tensor) -> Tensor:
        return self.out(_mix_heads(self.query(x), self.key(x), self.value(x), self.kernel, self.num_heads))


class MLP(nn.Module):
    def __init__(self, fc1: nn.Linear, fc2: nn.Linear):
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, norm1: nn.LayerNorm, attention: Attention, norm2: nn.LayerNorm, mlp: MLP):
        super().__init__()
        self.norm1, self.attention, self.norm2, self.mlp = norm1, attention, norm2, mlp

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Stem(nn.Module):
    def __init__(self, embed: nn.Module, position: nn.Parameter):
        super().__init__()
        self.embed = embed
        self.position = position

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x) + self.position[: x.shape[1]]


class Head(nn.Module):
    def __init__(self, norm: nn.LayerNorm, classifier: nn.Linear):
        super().__init__()
        self.norm, self.classifier = norm, classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.norm(x).mean(dim=1))


class Subnet(nn.Module):
    """A static transformer extracted from the supernet; depends on nothing of it."""

    def __init__(self, stem: Stem, blocks: list[Block], head: Head, arch_json: str):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.arch_json = arch_json

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
