import pytest

from orchestrator.config import ConfigError, load_study_config, study_config_from_dict
from tests.conftest import CONFIGS


def test_default_study_config_loads():
    config = load_study_config(CONFIGS / "digits.yaml")
    assert config.study == "digits-cpu-b1" and config.target.batch_size == 1
    assert config.space.name == "digits"
    assert config.objectives == {"accuracy": "maximize", "latency_ms": "minimize"}
    assert str(config.constraints[0]) == "latency_ms <= 1"
    assert config.constraints[0].satisfied(0.5) and not config.constraints[0].satisfied(1.5)
    b32 = load_study_config(CONFIGS / "digits-b32.yaml")  # the same supernet and database, another target
    assert b32.target.batch_size == 32 and b32.supernet == config.supernet and b32.storage == config.storage


def test_mnist1d_config_fits_its_task():
    from supernet.tasks import load_task

    config = load_study_config(CONFIGS / "mnist1d.yaml")
    assert config.space.name == "mnist1d" and config.task.name == "mnist1d"
    small = load_task(config.task.name, config.seed, {**config.task.options, "num_samples": 200})
    assert small.spec.seq_len == 10 and small.spec.input_dim == 4  # 40 steps as 10 tokens of 4
    assert config.space.local_window < small.spec.seq_len - 1  # local attention stays local


def test_overrides_win_and_are_validated():
    config = load_study_config(CONFIGS / "digits.yaml", {"search.evaluations": 10, "storage": "sqlite:///x.db"})
    assert config.search.evaluations == 10 and config.storage == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="search.evaluations: Input should be greater than 0"):
        load_study_config(CONFIGS / "digits.yaml", {"search.evaluations": 0})


def test_inline_space():
    config = study_config_from_dict({"study": "s", "space": {"embed_dim": [16], "depth": [1], "layer": {
        "num_heads": [1], "mlp_dim": [16], "attention": ["softmax"], "bits": [32]}}})
    assert config.space.cardinality() == 1


GOOD = {"study": "s", "space": "spaces/tiny.yaml"}
TINY_4_BIT = {"head_dim": 16, "embed_dim": [32], "depth": [1], "layer": {
    "num_heads": [2], "mlp_dim": [32], "attention": ["softmax"], "bits": [32, 8, 4]}}


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "colour: unknown key"),
    ({"supernet": {"stepz": 1}}, "supernet.stepz: unknown key"),
    ({"supernet": {"steps": "many"}}, "supernet.steps: Input should be a valid integer"),
    ({"supernet": {"lr": -1}}, "supernet.lr: Input should be greater than 0"),
    ({"search": {"strategy": "grid"}}, "search.strategy: Input should be"),
    ({"objectives": {"speed": "minimize"}}, "unknown metric 'speed'"),
    ({"objectives": {"accuracy": "up"}}, "objectives.accuracy: Input should be 'maximize' or 'minimize'"),
    ({"objectives": {}}, "at least one objective"),
    ({"constraints": ["latency_ms < 5"]}, "is not of the form"),
    ({"constraints": ["flops <= 5"]}, "unknown metric 'flops'"),
    ({"constraints": "latency_ms <= 5"}, "expected a list"),
    ({"target": {"device": "tpu"}}, "target.device: Input should be 'cpu' or 'cuda'"),
    ({"target": {"threads": 0}}, "target.threads"),
    ({"space": "spaces/missing.yaml"}, "cannot read"),
    ({"space": 3}, "space: expected a path or an inline mapping"),
    ({"space": {"embed_dim": [16]}}, "missing key 'depth'"),
    ({"study": ""}, "study: String should have at least 1 character"),
    ({"supernet": {"distill_weight": -0.1}}, "supernet.distill_weight: Input should be greater than or equal to 0"),
    ({"supernet": {"distill_weight": 1.5}}, "supernet.distill_weight: Input should be less than or equal to 1"),
    ({"supernet": {"steps": 100, "distill_start": 101}}, "distill_start 101 is beyond the budget"),
    ({"supernet": {"random_weight": -1}}, "supernet.random_weight: Input should be greater than or equal to 0"),
    ({"supernet": {"random_weight": float("nan")}}, "supernet.random_weight: Input should be a finite number"),
    ({"target": {"runtime": "aotinductor"}, "space": {**TINY_4_BIT}}, "space.bits: 'aotinductor' cannot run 4-bit"),
    ({"objectives": {"perplexity": "minimize"}}, "task digits scores a model by accuracy, not perplexity"),
    ({"task": {"name": "causal-lm"}, "supernet": {"pretrained": "lm"}, "objectives": {"accuracy": "maximize"}},
     "task causal-lm scores a model by perplexity, not accuracy: give objectives: {perplexity: minimize"),
    ({"task": {"name": "causal-lm"}, "supernet": {"pretrained": "lm"}, "objectives": {"perplexity": "maximize"}},
     "perplexity is to minimize, not to maximize"),
    ({"target": {"context": 1}}, "target.context: Input should be greater than 1"),
])
def test_bad_configs_name_the_problem(change, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        study_config_from_dict({**GOOD, **change}, base_dir=CONFIGS)


def test_missing_space_and_study():
    with pytest.raises(ConfigError, match="study: Field required"):
        study_config_from_dict({"space": "spaces/tiny.yaml"}, base_dir=CONFIGS)
    with pytest.raises(ConfigError, match="space: Field required"):
        study_config_from_dict({"study": "s"}, base_dir=CONFIGS)


def test_malformed_and_non_mapping_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_study_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_study_config(bad)
    with pytest.raises(ConfigError, match="cannot override 'study.x'"):
        load_study_config(CONFIGS / "digits.yaml", {"study.x": 1})


def test_a_language_models_study_is_scored_by_perplexity_and_keeps_its_objectives_order(tmp_path):
    from orchestrator.storage.study import create_study, stored_config

    lm = study_config_from_dict({**GOOD, "task": {"name": "causal-lm"}, "supernet": {"pretrained": "lm"}},
                                base_dir=CONFIGS)
    assert lm.objectives == {"perplexity": "minimize", "latency_ms": "minimize"}  # the default for its task
    config = study_config_from_dict({**GOOD, "storage": f"sqlite:///{tmp_path / 's.db'}",
                                     "objectives": {"latency_ms": "minimize", "bytes": "minimize",
                                                    "accuracy": "maximize"}}, base_dir=CONFIGS)
    study = create_study(config, "0" * 64, [1.0, 1.0, 0.0])
    # the stored config's keys are sorted; its objectives are read in the order of the trials' values
    assert list(stored_config(study, config.storage).objectives) == ["latency_ms", "bytes", "accuracy"]
