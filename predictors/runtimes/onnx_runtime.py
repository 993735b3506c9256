"""ONNX Runtime: the default runtime of CPU targets.

Quantized layers and tables are lowered to ONNX Runtime's kernels (`onnx_lowering`). Other layers
stay fp32; the session applies every graph optimization, with the target's threads, as a deployment would.

`torch.onnx.export` takes seconds per model, too slow for a latency dataset
of hundreds. So each distinct part of a subnet (the stem, a block of one
mixer and bit width, the head) is exported once, and a subnet's
graph is those parts' graphs chained, each holding that subnet's weights:
a part's graph holds no width but its head count (its reshapes to heads), so
one graph serves every embedding and MLP width. Every build is checked against
the subnet it was built from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from predictors.runtimes.base import Program, Runtime, register
from predictors.runtimes.onnx_chaining import chain
from predictors.runtimes.onnx_lowering import int8_kernel_saturates, int8_weight_type, onnx_lowered
from supernet.parts import part_keys, probe_part
from supernet.subnet import graph_settings

GRAPH_FORMAT = 6  # raise when the export forms or the part graphs change: cached graphs are then not reused


class StemWithMask(nn.Module):
    """The stem of a padded text model as one part: token vectors and the padding mask, which every
    later part takes as its second input."""

    def __init__(self, stem: nn.Module):
        super().__init__()
        self.stem = stem

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.stem(x), self.stem.padding_mask(x)


def _structure(part: nn.Module, example: Tensor, first: bool, masked: bool) -> tuple:
    """What a part's graph depends on: its modules' kinds and the settings each declares
    (`supernet.subnet.graph_settings`) and the input's shape, not its widths (they come from the
    weights; the model's input keeps its own)."""
    shape = tuple(example.shape[1:] if first else example.shape[1:-1])
    return (shape, str(example.dtype), masked, int8_weight_type()) + tuple(  # the int8 layers' input types
        (name, type(m).__name__, graph_settings(m)) for name, m in part.named_modules())


class PartGraphs:
    """ONNX graphs of subnet parts, exported once per structure: kept in memory, and on disk (in
    `cache_dir()`, keyed by the structure and the exporter's versions) so that every process of a
    run (Ray workers, the CLI) need not export them again. A graph holds no weights (they are the
    subnet's, put in at each build); reading one executes nothing, and every build is checked."""

    def __init__(self):
        self._graphs: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def graph(self, lowered: nn.Module, example: tuple[Tensor, ...], structure: tuple, export=None):
        """`export(lowered, example)` makes the graph (default: a part that maps a hidden state to the next)."""
        with self._lock:
            if structure not in self._graphs:
                self._graphs[structure] = (self._from_disk(structure)
                                           or self._export(lowered, example, structure, export or _export_graph))
            return self._graphs[structure]

    @staticmethod
    def _path(structure: tuple) -> Path:
        versions = (GRAPH_FORMAT, torch.__version__, importlib.metadata.version("onnx"),
                    importlib.metadata.version("onnxscript"))
        key = hashlib.sha256(repr((versions, structure)).encode()).hexdigest()[:32]
        return cache_dir() / "onnx-parts" / f"{key}.onnx"

    def _from_disk(self, structure: tuple):
        import onnx

        try:
            return onnx.load_from_string(self._path(structure).read_bytes())
        except Exception:  # noqa: BLE001 - absent, unreadable or damaged: export it again
            return None

    def _export(self, lowered: nn.Module, example: tuple[Tensor, ...], structure: tuple, export):
        graph = export(lowered, example)
        path = self._path(structure)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as handle:
                handle.write(graph.SerializeToString())
            os.replace(handle.name, path)  # whole or absent, whoever else writes it at the same time
        except OSError:
            pass  # no cache: the next process exports again
        return graph


def cache_dir() -> Path:
    """Where elastiq keeps what it can rebuild: ELASTIQ_CACHE_DIR, else the user's cache directory."""
    if os.environ.get("ELASTIQ_CACHE_DIR"):
        return Path(os.environ["ELASTIQ_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "elastiq"


def _export_graph(lowered: nn.Module, example: tuple[Tensor, ...]):
    """`lowered`'s graph for inputs shaped as `example` (the hidden state, then the mask where the model
    has one) with any batch size."""

    batch = torch.export.Dim("batch", min=1)
    pairs = tuple(torch.cat([t[:1], t[:1]]) for t in example)  # batch 1 would be specialized away
    names = ["x", "mask"][: len(pairs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on torchvision and on tracing
        program = torch.onnx.export(lowered, pairs, dynamo=True, optimize=False, verbose=False,
                                    input_names=names, dynamic_shapes=tuple({0: batch} for _ in pairs))
    return without_weights(program.model_proto, lowered)


def without_weights(graph, lowered: nn.Module):
    """`graph` with `lowered`'s weights emptied: they are put in at each build."""
    from onnx import numpy_helper

    weights = set(lowered.state_dict())
    for i, tensor in enumerate(graph.graph.initializer):
        if tensor.name in weights:
            empty = numpy_helper.from_array(np.zeros(0, numpy_helper.to_array(tensor).dtype), tensor.name)
            graph.graph.initializer[i].CopyFrom(empty)
    return graph


class OrtProgram(Program):
    def __init__(self, session):
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, inputs: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: inputs.numpy()})[0])

    def runner(self, inputs: Tensor):
        feed = {self.input: inputs.numpy()}
        return lambda: self.session.run(None, feed)


@register
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    artifact = "model.onnx"
    package = "onnxruntime"
    module = "onnxruntime"
    devices = ("cpu",)
    supported_bits = (32, 8, 4, 2)
    provider = "CPUExecutionProvider"

    _parts = PartGraphs()

    def fingerprint(self, device: str, threads: int) -> dict:
        return {**super().fingerprint(device, threads), "execution_provider": self.provider,
                "intra_op_threads": threads, "inter_op_threads": 1, "graph_optimization": "all",
                "int8_weights": int8_weight_type()}

    def measured_on(self, device: str) -> str:
        # the uint8 weights run another kernel: their measurements are not mixed with the int8 ones'
        # and the graph format: a figure taken on an older form of the graphs is not one of these
        return (f"{super().measured_on(device)}-{self.provider}" + ("-u8u8" if int8_kernel_saturates() else "")
                + f"-g{GRAPH_FORMAT}")

    def build(self, subnet: nn.Module, example: Tensor, device: str = "cpu") -> bytes:
        mask = subnet.stem.padding_mask(example[:1])
        masked = mask is not None
        stem, *layers = subnet.parts()
        parts = [StemWithMask(stem) if masked else stem, *layers]
        graphs, weights = [], []
        inputs = (example[:1],)
        with torch.no_grad():
            for i, part in enumerate(parts):
                lowered = onnx_lowered(part)
                graphs.append(self._parts.graph(lowered, inputs, _structure(part, inputs[0], i == 0, masked)))
                weights.append({name: tensor.detach().numpy() for name, tensor in lowered.state_dict().items()})
                out = part.eval()(*inputs)
                inputs = out if isinstance(out, tuple) else (out, inputs[1]) if masked else (out,)
        return chain(graphs, weights).SerializeToString()

    def load(self, artifact: bytes, device: str, threads: int, **settings) -> OrtProgram:
        """`settings`: of `session_options` (benchmarks try them; a target's program takes the defaults)."""
        import onnxruntime

        return OrtProgram(onnxruntime.InferenceSession(artifact, session_options(threads, **settings),
                                                       providers=[self.provider]))


def session_options(threads: int, spinning: bool = True, arena: bool = True):
    """A session's options as a target runs it: `threads` intra-op threads, sequential, every graph
    optimization; `spinning`: idle threads spin between ops (ONNX Runtime's default); `arena`: the CPU
    memory arena (likewise)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its notes on unused initializers are not ours to fix
    options.enable_cpu_mem_arena = arena
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class _GraphBytes:
    """The bytes of an artifact that are not weight values: its graph (nodes, names, constants) and
    the headers of its initializers. They depend on each part's structure, hardly on its widths (a
    graph exported at other widths or head counts differed by up to about 600 bytes), so each part
    structure of a space is built once, small (the smallest widths, a vocabulary of 8), and its single-part
    model's size less its weights' bytes is kept. A model's is the sum over its parts, less the
    model skeleton that each single-part model repeats."""

    def __init__(self):
        self._sizes: dict[tuple, tuple[int, int]] = {}  # part key -> (bytes beyond the weights, names prefixed)
        self._probes: dict[tuple, object] = {}
        self._skeleton: dict[tuple, int] = {}
        self._lock = threading.RLock()

    def __call__(self, space, task, arch) -> int:
        with self._lock:
            scope = (space.hash, task)
            keys = part_keys(self._probe(space, task), arch)
            total = 0
            for i, key in enumerate(keys):
                size, names = self._size(space, task, scope, key)
                total += size + (len(str(i)) - 1) * names  # "p10/" is a byte longer than "p0/"
            return total - (len(keys) - 1) * self._skeleton[scope]

    def _probe(self, space, task):
        """A supernet of `space` at its smallest widths, with a vocabulary of 8: every part structure of
        the space, at a fraction of its weights."""
        from supernet.model import Supernet

        scope = (space.hash, task)
        if scope not in self._probes:
            width = min(space.embed_dims)
            narrow = dataclasses.replace(space, embed_dims=(width,), layers=tuple(
                dataclasses.replace(c, num_heads=(min(c.num_heads),), mlp_dim=(min(c.mlp_dims(width)),),
                                    mlp_ratio=None) for c in space.layers))
            small = dataclasses.replace(task, input_dim=min(task.input_dim, 8))
            self._probes[scope] = Supernet(narrow, small, seed=0).eval()
        return self._probes[scope]

    def _size(self, space, task, scope, key) -> tuple[int, int]:
        if (scope, key) in self._sizes:
            return self._sizes[(scope, key)]
        probe = self._probe(space, task)
        width = min(space.embed_dims)
        x = _probe_input(probe.task)
        stem = probe.stem.get_active_subnet(width)
        mask = stem.padding_mask(x)
        masked = mask is not None
        hidden = (torch.zeros(1, x.shape[1] + (1 if task.style.cls_token else 0), width),) + ((mask,) if masked else ())
        with torch.no_grad():
            if key[0] == "stem":
                part, inputs = (StemWithMask(stem) if masked else stem), (x,)
            else:
                part, inputs = probe_part(probe, space, key, width, hidden)
            lowered = onnx_lowered(part)
            graph = OnnxRuntime._parts.graph(lowered, inputs, _structure(part, inputs[0], key[0] == "stem", masked))
            weights = {name: tensor.detach().numpy() for name, tensor in lowered.state_dict().items()}
        model = chain([graph], [weights])
        content = sum(_field_bytes(m.ByteSize()) for m in [*model.graph.node, *model.graph.initializer])
        size = model.ByteSize() - sum(array.nbytes for array in weights.values())
        names = sum(1 for n in model.graph.node for name in [n.name, *n.input, *n.output] if name.startswith("p0/"))
        names += sum(1 for t in model.graph.initializer if t.name.startswith("p0/"))
        if key[0] == "stem":
            self._skeleton[scope] = model.ByteSize() - content
        self._sizes[(scope, key)] = (size, names)
        return size, names


def _probe_input(task) -> Tensor:
    """One input of `task`'s shape (its values do not change a graph): real tokens, no padding."""
    if task.input_kind == "features":
        return torch.zeros(1, task.seq_len, task.input_dim)
    pad = task.style.pad_token_id
    ids = torch.full((1, task.seq_len), 1 if pad is None else (pad + 1) % task.input_dim, dtype=torch.long)
    return torch.stack([ids, torch.zeros_like(ids)], dim=-1) if task.input_kind == "text" else ids


def _field_bytes(size: int) -> int:
    """A length-delimited protobuf field of `size` bytes: its tag, its length, its bytes."""
    length = 1
    while size >= 1 << (7 * length):
        length += 1
    return 1 + length + size


graph_bytes = _GraphBytes()
