"""What a space needs before its supernet exists: the memory of its weights, and a task it can run.

Checked before anything is allocated or written, so that a space with a width of extra zeros, a
convolution longer than the task's sequence, or a stage boundary its tokens cannot be reduced at is
one line on stderr, not an allocator's failure or a shape error inside a worker.
"""

from __future__ import annotations

import math

from search_space import InputError, SearchSpace
from search_space.registry import MIXERS
from supernet.device import available_memory
from supernet.mixers import mixer_of, offered
from supernet.task_spec import TaskSpec, position_rows, sequence_tokens
from supernet.token_reduction import boundary_parameter_count, check_boundaries


class SupernetTooLarge(InputError):
    """A space whose supernet would not fit in this machine's memory (a width with extra zeros)."""


def supernet_parameter_count(space: SearchSpace, task: TaskSpec) -> int:
    """The parameters `Supernet(space, task)` holds, counted before anything is allocated."""
    e, style = space.max_embed_dim, task.style
    count = task.input_dim * e + (0 if task.input_kind in ("tokens", "text") else e) + position_rows(task) * e
    count += style.token_types * e + (e if style.cls_token else 0) + (2 * e if style.embedding_norm else 0)  # stem
    for i in range(space.max_depth):
        inner, hidden = space.max_heads(i) * space.head_dim, space.max_mlp_dim(i)
        kv_inner = inner // style.heads_per_kv
        count += 2 * 2 * e  # two norms
        count += (e * inner + inner) + 2 * (e * kv_inner + kv_inner) + inner * e + e  # query, key, value, out
        count += sum(math.prod(shape) for d, names in offered(space.layers[i].mixer).items()  # a mixer's own
                     for shape in d.weight_shapes(names, inner).values())
        count += (e * e + e) if space.has_layer_widths and i > 0 else 0  # the join from the previous layer
        count += (2 if style.gated_mlp else 1) * (e * hidden + hidden) + hidden * e + e  # the MLP
        count += boundary_parameter_count(space, task, i, e)
    head = (2 * e if style.final_norm else 0) + (e * e + e if style.pooler else 0) + e * task.num_classes \
        + task.num_classes
    heads = 1 + (sum(1 for depth in space.depths if depth < space.max_depth) if space.depth_heads else 0)
    return count + heads * head


def check_space_fits_task(space: SearchSpace, task: TaskSpec) -> None:
    """Refuse a space the task's inputs cannot run: a convolution kernel longer than the sequence, or a
    stage boundary that some arch would put where it leaves no token or does not divide the patch grid."""
    check_boundaries(space, task)
    tokens = sequence_tokens(task)
    for i, layer in enumerate(space.layers):
        for name in layer.mixer:
            problem = mixer_of(name).check_task(name, tokens)
            if problem is not None:
                raise InputError(f"space {space.name!r}: layer {i}'s {problem}")
    if task.style.causal:
        check_decoder_space(space, task)


def check_decoder_space(space: SearchSpace, task: TaskSpec) -> None:
    """A decoder LM's layers see no later token, keep whole groups of query heads per key and value head,
    and run one after another at one width (its blocks are ordered by importance, which no join or stage
    boundary between two of them survives)."""
    group = task.style.heads_per_kv
    for i, layer in enumerate(space.layers):
        seeing = [name for name in layer.mixer if not mixer_of(name).causal]
        if seeing:
            raise InputError(f"space {space.name!r}: layer {i}'s mixer {seeing[0]} lets a token see later ones; a "
                             f"causal language model's layers take {', '.join(causal_mixers())}")
        odd = [h for h in layer.num_heads if h % group]
        if odd:
            raise InputError(f"space {space.name!r}: layer {i}'s num_heads {odd[0]} is not a multiple of the "
                             f"model's {group} query heads per key-value head (grouped-query attention keeps whole "
                             f"groups)")
    genes = [gene.key for gene in space.genes]
    if genes:
        raise InputError(f"space {space.name!r}: a causal language model's space takes no {genes[0]} gene")


def causal_mixers() -> list[str]:
    return [d.grammar for d in MIXERS.values() if getattr(d, "causal", False)]


def ensure_fits_in_memory(space: SearchSpace, task: TaskSpec, copies: int = 1, purpose: str = "hold") -> int:
    """Refuse a supernet whose float32 weights, `copies` times (4 to train with AdamW: weights,
    gradients, two moments), exceed the available memory, or a space the task cannot run
    (`check_space_fits_task`); return the bytes needed."""
    check_space_fits_task(space, task)
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
