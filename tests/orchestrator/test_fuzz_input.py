"""Property-based fuzz of every loader of free-form input: spaces, study configs and `--set`.

Random YAML documents, random types and sizes at every key of a valid space and
config, random text and random bytes: each input must end in exit status 0, or
in exactly one `elastiq: error:` line on stderr with exit status 2, with nothing
written. Hypothesis is derandomized (a fixed seed), so CI sees the same inputs
on every run; together the tests below draw well over 1,000 of them.
"""

from __future__ import annotations

import copy
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main

EXAMPLES = 250
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

SPACE = {"name": "fuzz", "head_dim": 8, "local_window": 2, "embed_dim": [16, 32], "depth": [1, 2],
         "layer": {"num_heads": [1, 2], "mlp_ratio": [1, 2],
                   "attention": ["softmax", "linear", "local", "fourier", "conv3"], "bits": [32, 8]},
         "per_layer": [{"layers": [1], "num_heads": [2], "width": [16, 32]}]}
CONFIG = {"study": "fuzz", "storage": "sqlite:///fuzz.db", "seed": 0, "task": {"name": "digits", "options": {}},
          "space": {**copy.deepcopy(SPACE), "layer": {**SPACE["layer"], "attention": ["softmax", "linear", "local"]},
                    "per_layer": [{"layers": [1], "num_heads": [2]}]},
          "supernet": {"steps": 10, "batch_size": 8, "lr": 0.01, "checkpoint": "fuzz.pt"},
          "target": {"name": "cpu-b1", "threads": 1, "batch_size": 1, "seq_len": 16},
          "measure": {"archs": 16, "passes": 3}, "objectives": {"accuracy": "maximize", "latency_ms": "minimize"},
          "constraints": ["params <= 20000", "latency_ms <= 1"],
          "search": {"strategy": "evolutionary", "evaluations": 8, "batch_size": 4, "seed": 1},
          "ray": {"address": None, "workers": 2, "retries": 1}}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["softmax", "linear", "local", "fourier", "conv3", "conv4", "conv99", "width",
                                     "digits", "maximize", "<=", "1e999", "-0",
                                     "latency_ms <= 1", "params >= -1", "./x.yaml", ":", "a:b", "os:system"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.one_of(st.text(max_size=8), scalars), inner, max_size=4)),
    max_leaves=10)


def _paths(node, prefix=()):
    """Every key path of a nested mapping (lists indexed), the root excluded."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield (*prefix, index)
            yield from _paths(child, (*prefix, index))


@st.composite
def mutated(draw, base):
    """`base` with a few random edits: a value replaced by any type, a key removed, an unknown key added."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(document))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.one_of(st.text(max_size=8), scalars))] = draw(values)
    return document


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative path in a config resolves here, and anything written would show
    return tmp_path


OUTCOMES: dict[str, dict[int, int]] = {}  # test -> exit status -> count: what the fuzz reached


def _outcome_is_clean(capsys, status, sandbox, listing, inputs) -> None:
    name = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
    OUTCOMES.setdefault(name, {}).setdefault(status, 0)
    OUTCOMES[name][status] += 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    if status == 0:
        assert sorted(p.name for p in sandbox.iterdir()) == listing, inputs
        return
    assert status == 2, (status, captured.err[-500:], inputs)
    assert len(errors) == 1 and errors[0].startswith("elastiq: error: "), (captured.err[-800:], inputs)
    assert sorted(p.name for p in sandbox.iterdir()) == listing, inputs  # nothing written


def _write(sandbox, name, payload) -> str:
    path = sandbox / name
    path.write_bytes(payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass"))
    return str(path)


def _dump(document) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


@FUZZ
@given(document=mutated(SPACE))
def test_fuzzed_spaces(document, sandbox, capsys):
    path = _write(sandbox, "space.yaml", _dump(document))
    listing = sorted(p.name for p in sandbox.iterdir())
    for args in (["space", "check", path], ["space", "sample", path, "-n", "2", "--seed", "1"]):
        capsys.readouterr()
        _outcome_is_clean(capsys, main(args), sandbox, listing, (args, document))


@FUZZ
@given(document=mutated(CONFIG))
def test_fuzzed_study_configs(document, sandbox, capsys):
    path = _write(sandbox, "study.yaml", _dump(document))
    listing = sorted(p.name for p in sandbox.iterdir())
    capsys.readouterr()
    _outcome_is_clean(capsys, main(["config", "show", "-c", path]), sandbox, listing, document)


dotted_keys = st.one_of(st.sampled_from([".".join(map(str, p)) for p in _paths(CONFIG)]), st.text(max_size=16))
override_values = st.one_of(st.integers(-2, 30).map(str), st.sampled_from(["true", "null", "0.5", "[]", "{}"]),
                            values.map(lambda v: yaml.safe_dump(v).strip()), st.text(max_size=16))


# overrides a user would give: random keys and values are nearly all refused, and which random
# documents Hypothesis draws differs with what ran before it in the session, so these keep the valid
# outcome reached however the draw goes
sensible_overrides = st.tuples(st.sampled_from(["search.batch_size", "search.evaluations", "supernet.steps",
                                                "ray.workers", "measure.archs", "seed"]),
                               st.integers(1, 30).map(str), st.just(True))


@FUZZ
@given(pairs=st.lists(st.one_of(st.tuples(dotted_keys, override_values, st.sampled_from([True] * 9 + [False])),
                                sensible_overrides), min_size=1, max_size=2))
def test_fuzzed_overrides(pairs, sandbox, capsys):
    path = _write(sandbox, "study.yaml", _dump(CONFIG))
    listing = sorted(p.name for p in sandbox.iterdir())
    args = ["config", "show", "-c", path]
    for key, value, with_sign in pairs:
        args += ["--set", f"{key}={value}" if with_sign else key + value]
    capsys.readouterr()
    _outcome_is_clean(capsys, main(args), sandbox, listing, args)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), values.map(_dump),
                      st.text(alphabet="[]{}:,-?&*!|>'\"%@` \n\t#0123456789abc.", max_size=120)))
def test_random_yaml_text(text, sandbox, capsys):
    _both_loaders(text, sandbox, capsys)


@FUZZ
@given(payload=st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: _dump(SPACE).encode() + b)))
def test_random_bytes(payload, sandbox, capsys):
    _both_loaders(payload, sandbox, capsys)


def _both_loaders(payload, sandbox, capsys) -> None:
    """`payload` as a space and as a study config."""
    path = _write(sandbox, "doc.yaml", payload)
    listing = sorted(p.name for p in sandbox.iterdir())
    for args in (["space", "check", path], ["config", "show", "-c", path]):
        capsys.readouterr()
        _outcome_is_clean(capsys, main(args), sandbox, listing, (args, payload))


small_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 64), st.floats(allow_nan=True),
                          st.text(max_size=6))
small_values = st.recursive(small_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=6)
TASK_OPTIONS = {"digits": ("patch",), "listops": ("seq_len", "train_size", "val_size", "test_size", "max_depth")}


@FUZZ
@given(data=st.data())
def test_fuzzed_task_options(data):
    """Every shipped task (mnist1d aside: its generator takes seconds) with random options: a task, or an
    InputError naming the task. Sizes stay small here (large ones are refused or slow, not fuzzed)."""
    from search_space import InputError
    from supernet.tasks import load_task

    name = data.draw(st.sampled_from(sorted(TASK_OPTIONS)))
    known = st.sampled_from(TASK_OPTIONS[name])
    keys = data.draw(st.lists(st.one_of(known, known, known, st.text(max_size=5)), max_size=3))
    options = {key: data.draw(st.one_of(st.sampled_from([1, 2, 4, 8, 16, 32]), small_values)) for key in keys}
    outcome = OUTCOMES.setdefault("test_fuzzed_task_options", {})
    try:
        task = load_task(name, 0, options)
    except InputError as error:
        assert name in str(error)
        outcome[2] = outcome.get(2, 0) + 1
        return
    assert task.name == name
    outcome[0] = outcome.get(0, 0) + 1


def test_the_fuzz_drew_over_a_thousand_inputs_and_reached_both_outcomes():
    if len(OUTCOMES) < 6:
        pytest.skip("runs after the six fuzz tests of this module")
    assert sum(sum(counts.values()) for counts in OUTCOMES.values()) >= 1000, OUTCOMES
    for name in ("test_fuzzed_spaces", "test_fuzzed_study_configs", "test_fuzzed_overrides", "test_fuzzed_task_options"):
        assert OUTCOMES[name].get(0, 0) >= 10 and OUTCOMES[name].get(2, 0) >= 10, OUTCOMES  # valid and invalid
