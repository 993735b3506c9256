import contextlib

import numpy as np
import pytest
import torch

from predictors.cost import arch_costs
from predictors.measure import Protocol, example_input, holding, measure_latency
from predictors.runtimes import runtime_named
from predictors.target import HardwareTarget, fingerprint
from search_space import Arch, InputError, LayerArch, SearchSpace
from supernet.mixers import MixerShape, mixer_of
from supernet.model import Supernet
from supernet.task_spec import TaskSpec
from tests.supernet.test_model import FEATURES, TOKENS, expected_params


def mixing_macs(name: str, tokens: int, inner: int, head_dim: int, window: int) -> int:
    return mixer_of(name).macs(name, MixerShape(tokens, inner, head_dim, 0, window))


@pytest.fixture(scope="module")
def digits_supernet(digits_space):
    return Supernet(digits_space, FEATURES, seed=0).eval()


def test_params_equal_the_extracted_model(digits_space, digits_supernet):
    rng = np.random.default_rng(0)
    for arch in [digits_space.largest(), digits_space.smallest()] + [digits_space.sample(rng) for _ in range(10)]:
        costs = arch_costs(digits_space, FEATURES, arch)
        assert costs.params == sum(p.numel() for p in digits_supernet.extract(arch).parameters())
        assert costs.params == expected_params(digits_space, FEATURES, arch)
    tokens_arch = digits_space.sample(rng)
    assert arch_costs(digits_space, TOKENS, tokens_arch).params == expected_params(digits_space, TOKENS, tokens_arch)


@pytest.mark.parametrize("quantize_embeddings", [True, False])
def test_bytes_are_the_shipped_artifacts_within_two_percent(quantize_embeddings):
    """The cost model's bytes against the ONNX Runtime artifact's size, over random archs of 32-, 8- and
    4-bit layers, with embedding tables int8 and fp32."""
    space = SearchSpace.from_dict({"name": "bytes", "head_dim": 16, "embed_dim": [32, 64], "depth": [1, 2, 3],
                                   "quantize_embeddings": quantize_embeddings, "layer": {
                                       "num_heads": [2, 4], "mlp_ratio": [1, 2], "attention": ["softmax", "linear"],
                                       "bits": [32, 8, 4]}})
    runtime = runtime_named("onnxruntime")
    for task in (TOKENS, FEATURES):
        supernet = Supernet(space, task, seed=0).eval()
        x = example_input(task, HardwareTarget())
        rng = np.random.default_rng(3)
        for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(3)]:
            shipped = len(runtime.build(supernet.extract(arch), x))
            assert abs(arch_costs(space, task, arch).bytes / shipped - 1) < 0.02, (arch, shipped)


def test_quantized_tables_and_4_bit_layers_shrink_the_artifact():
    layers = lambda bits: tuple(LayerArch(4, 128, "softmax", bits) for _ in range(2))  # noqa: E731
    sizes = {}
    for tables in (True, False):
        space = SearchSpace.from_dict({"head_dim": 16, "embed_dim": [64], "depth": [2], "quantize_embeddings": tables,
                                       "layer": {"num_heads": [4], "mlp_dim": [128], "attention": ["softmax"],
                                                 "bits": [32, 8, 4]}})
        big_vocabulary = TaskSpec("tokens", input_dim=4096, seq_len=24, num_classes=10)
        for bits in (32, 8, 4):
            sizes[tables, bits] = arch_costs(space, big_vocabulary, Arch(64, layers(bits))).weight_bytes
    assert sizes[True, 8] < 0.3 * sizes[False, 32]  # the table is most of it: int8 holds a quarter
    assert sizes[True, 4] < sizes[True, 8] < sizes[True, 32]
    assert sizes[False, 8] - sizes[True, 8] > 3 * 4096 * 64 * 0.9  # the table: 4 bytes a value, then 1


def test_int8_policy_shrinks_bytes_about_four_times(digits_space):
    def uniform(bits):
        return Arch(128, tuple(LayerArch(8, 512, "softmax", bits) for _ in range(4)))

    ratio = arch_costs(digits_space, FEATURES, uniform(8)).bytes / arch_costs(digits_space, FEATURES, uniform(32)).bytes
    assert 0.25 < ratio < 0.32


def test_macs_depend_on_attention_type_and_sequence_length(digits_space):
    for linear_in_tokens in ("linear", "local"):
        assert mixing_macs(linear_in_tokens, 512, 64, 16, 4) < mixing_macs("softmax", 512, 64, 16, 4) / 10
        assert mixing_macs(linear_in_tokens, 1024, 64, 16, 4) == 2 * mixing_macs(linear_in_tokens, 512, 64, 16, 4)
    assert mixing_macs("softmax", 1024, 64, 16, 4) == 4 * mixing_macs("softmax", 512, 64, 16, 4)
    assert mixing_macs("local", 16, 64, 16, 4) == mixing_macs("softmax", 16, 64, 16, 4)  # masked kernel
    arch = digits_space.largest()
    assert arch_costs(digits_space, FEATURES, arch, batch_size=4).macs == 4 * arch_costs(digits_space, FEATURES, arch).macs


def test_measurement_protocol_records_spread(digits_space, digits_supernet):
    target = HardwareTarget("test", threads=1)
    inputs = example_input(FEATURES, target)
    program = target.deploy(digits_supernet.extract(digits_space.smallest()), inputs)
    protocol = Protocol(warmup=3, passes=4, burst=5)
    result = measure_latency(program, inputs, target, protocol)
    assert result.latency_ms > 0 and result.iqr_ms >= 0 and result.cv >= 0 and result.gap >= 0
    assert result.n == 4 * 5 and result.passes == 4 and result.attempts >= 1  # the attempt kept
    assert result.fingerprint["torch"] == torch.__version__ and result.fingerprint == fingerprint(target)
    assert result.fingerprint["runtime"] == "onnxruntime" and result.fingerprint["intra_op_threads"] == 1
    assert torch.get_num_threads() >= 1


class Alternating(torch.nn.Module):
    """A model whose calls take `slow_ms` in the rounds `slow_rounds` picks and `fast_ms` in the others,
    on a simulated clock (one round: an untimed call and a burst)."""

    def __init__(self, clock, fast_ms, slow_ms, slow_rounds, burst):
        super().__init__()
        self.clock, self.fast_ms, self.slow_ms, self.slow_rounds, self.burst = clock, fast_ms, slow_ms, slow_rounds, burst
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        slow = self.slow_rounds((self.calls - 1) // (self.burst + 1))
        self.clock.now += (self.slow_ms if slow else self.fast_ms) / 1e3
        return x


@pytest.fixture
def simulated_clock(monkeypatch):
    import predictors.measure as measure

    class Clock:
        now = 0.0

        def perf_counter(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(measure, "time", clock)
    monkeypatch.setattr(measure, "holding", lambda target: contextlib.nullcontext())
    return clock


def test_a_latency_is_the_fast_state_and_a_slow_spell_does_not_move_it(simulated_clock):
    """Slow rounds (a slow state of the machine) in most of the rounds: the median would follow them, the
    fastest call does not; both halves saw the fast state, so nothing is flagged."""
    protocol = Protocol(warmup=0, passes=10, burst=3, attempts=1)
    model = Alternating(simulated_clock, 1.0, 1.5, lambda r: r % 5 not in (0, 1), protocol.burst)
    result = measure_latency(model, torch.zeros(1), HardwareTarget("simulated"), protocol)
    assert result.latency_ms == pytest.approx(1.0) and result.gap == pytest.approx(0.0) and not result.flagged
    assert result.cv > 0.1  # the calls' own spread is the machine's, recorded


def test_a_noisy_spell_is_dropped_by_measuring_afresh(simulated_clock):
    """The first attempt's odd rounds never reach the fast state; the second attempt's all do: the second is
    kept, its halves agree."""
    protocol = Protocol(warmup=0, passes=4, burst=2, attempts=3)
    model = Alternating(simulated_clock, 1.0, 1.5, lambda r: r < 4 and r % 2 == 1, protocol.burst)
    result = measure_latency(model, torch.zeros(1), HardwareTarget("simulated"), protocol)
    assert result.attempts == 2 and result.gap == 0.0 and not result.flagged and result.latency_ms == pytest.approx(1.0)
    assert result.cv == 0.0  # the calls of the attempt kept


def test_a_model_that_never_settles_is_repeated_then_flagged_with_its_reason(simulated_clock):
    """Only the even rounds reach the fast state: the halves disagree by 50%, in every attempt."""
    protocol = Protocol(warmup=0, passes=4, burst=2, attempts=2)
    model = Alternating(simulated_clock, 1.0, 1.5, lambda r: r % 2 == 1, protocol.burst)
    result = measure_latency(model, torch.zeros(1), HardwareTarget("simulated"), protocol)
    assert result.flagged and result.attempts == 2 and result.gap == pytest.approx(0.5)
    assert "differ by 50.0%" in result.flag_reason


def test_bad_targets():
    from orchestrator.config import TargetConfig

    with pytest.raises(InputError, match="device"):
        HardwareTarget(device="tpu")
    with pytest.raises(InputError, match="cannot run on device 'cuda'"):
        HardwareTarget(device="cuda", runtime="onnxruntime")
    # the settings' ranges are checked once, where a target is read: the config's target section
    with pytest.raises(ValueError, match="threads"):
        TargetConfig(threads=0)


def test_target_lock_is_exclusive(tmp_path):
    import fcntl

    target = HardwareTarget("lock")
    with holding(target, tmp_path):
        with open(tmp_path / "elastiq-target-cpu.lock", "w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "elastiq-target-cpu.lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


def test_example_input_shapes():
    spec = TaskSpec("tokens", 16, 128, 10)
    assert example_input(spec, HardwareTarget(batch_size=3, seq_len=64)).shape == (3, 64)
    assert example_input(FEATURES, HardwareTarget(batch_size=2)).shape == (2, 16, 4)


def test_measure_many_measures_each_model_once_per_pass(digits_space, digits_supernet):
    from predictors.measure import measure_many

    target = HardwareTarget("many")
    inputs = example_input(FEATURES, target)
    models = [target.deploy(digits_supernet.extract(a), inputs) for a in (digits_space.smallest(), digits_space.largest())]
    results = measure_many(models, inputs, target,
                           Protocol(warmup=2, passes=3), rng=np.random.default_rng(0))
    # 3 passes an attempt; a model whose halves disagree (a loaded machine) is measured afresh, the best attempt kept
    assert all(r.passes == 3 and r.n == 3 * 5 and r.attempts >= 1 for r in results)
    assert results[0].latency_ms < results[1].latency_ms  # the smallest arch is faster than the largest
