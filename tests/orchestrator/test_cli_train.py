import json

import yaml

from orchestrator.cli import main
from tests.conftest import CONFIGS


def write_config(tmp_path, **changes):
    config = {"study": "tiny", "space": str(CONFIGS / "spaces" / "tiny.yaml"), "task": {"name": "digits"},
              "supernet": {"steps": 6, "batch_size": 16, "warmup_steps": 1, "sandwich_random": 1,
                           "checkpoint": str(tmp_path / "tiny.pt"), "checkpoint_every": 3}}
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_supernet_then_continue(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["train-supernet", "-c", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "supernet: 6 steps (6 now, 0 skipped)" in out and "val accuracy: largest" in out
    assert main(["train-supernet", "-c", str(path), "--no-progress", "--steps", "9"]) == 0
    assert "supernet: 9 steps (3 now" in capsys.readouterr().out
    assert json.loads((tmp_path / "tiny.pt.json").read_text())["steps"] == 9


def test_train_supernet_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    path = write_config(tmp_path, task={"name": "imagenet"})
    assert main(["train-supernet", "-c", str(path), "--no-progress"]) == 2
    assert "unknown task 'imagenet'" in capsys.readouterr().err
    assert not (tmp_path / "tiny.pt").exists()

    path = write_config(tmp_path, supernet={"lr": 1e40})
    assert main(["train-supernet", "-c", str(path), "--no-progress"]) == 2
    assert "supernet.lr: Input should be less than or equal to 10" in capsys.readouterr().err

    path = write_config(tmp_path, supernet={"lr": 10, "weight_decay": 1.0, "checkpoint_every": 100, "steps": 30})
    assert main(["train-supernet", "-c", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    # the skipped steps are logged as they happen; the failure itself is one line, no traceback
    last = err.strip().splitlines()[-1]
    assert last.startswith("elastiq: error: training diverged") and "supernet.lr 10 too high?" in last
    assert "Traceback" not in err and "step skipped" in err and not (tmp_path / "tiny.pt").exists()


def test_checkpoint_of_another_space_is_refused(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["train-supernet", "-c", str(path), "--no-progress"]) == 0
    before = (tmp_path / "tiny.pt").read_bytes()
    other = write_config(tmp_path, space=str(CONFIGS / "spaces" / "digits.yaml"))
    capsys.readouterr()
    assert main(["train-supernet", "-c", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not on space 'digits'" in err and err.count("\n") == 1
    assert (tmp_path / "tiny.pt").read_bytes() == before
