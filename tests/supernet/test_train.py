import json

import numpy as np
import pytest
import torch

from search_space import Arch, SearchSpace
from supernet.checkpoint import CheckpointError, load_checkpoint, record_path
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import (
    TrainingDiverged,
    TrainSettings,
    distill_weight,
    evaluate,
    load_supernet,
    lr_phases,
    lr_schedule,
    sandwich_loss,
    train_supernet,
)

SETTINGS = TrainSettings(steps=12, batch_size=32, lr=3e-3, warmup_steps=2, sandwich_random=1, checkpoint_every=4)


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", 0)


def fresh(space, task, seed=0):
    return Supernet(space, task.spec, seed=seed)


def state_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_training_learns_and_writes_a_checkpoint(tiny_space, digits, tmp_path):
    model = fresh(tiny_space, digits)
    before = evaluate(model, tiny_space.largest(), digits)
    settings = TrainSettings(**{**vars(SETTINGS), "steps": 150, "batch_size": 64, "lr": 1e-2, "warmup_steps": 10})
    result = train_supernet(model, digits, settings, seed=0, checkpoint=tmp_path / "sn.pt", progress=False)
    assert result.step == 150 and result.skipped_steps == 0
    assert evaluate(model, tiny_space.largest(), digits) > max(before + 0.15, 0.3)
    record = json.loads(record_path(tmp_path / "sn.pt").read_text())
    assert record["steps"] == 150 and record["space_hash"] == tiny_space.hash and record["task"] == "digits"
    loaded = load_supernet(tmp_path / "sn.pt", tiny_space, digits)
    assert state_equal(loaded, model)


def test_interrupted_training_resumes_exactly(tiny_space, digits, tmp_path, monkeypatch):
    straight = fresh(tiny_space, digits)
    train_supernet(straight, digits, SETTINGS, seed=5, checkpoint=tmp_path / "a.pt", progress=False)

    import supernet.training.train as train_module

    saves = []

    def save_then_die_on_the_second(*args, **kwargs):
        saves.append(train_module.save_checkpoint.__wrapped__(*args, **kwargs))
        if len(saves) == 2:
            raise SystemExit("killed after the checkpoint of step 8")
        return saves[-1]

    save_then_die_on_the_second.__wrapped__ = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die_on_the_second)
    with pytest.raises(SystemExit):
        train_supernet(fresh(tiny_space, digits), digits, SETTINGS, seed=5, checkpoint=tmp_path / "b.pt",
                       progress=False)
    monkeypatch.undo()
    assert saves[-1]["steps"] == 8
    # a new process would start from a fresh model: only the checkpoint carries the state
    resumed = fresh(tiny_space, digits, seed=99)
    result = train_supernet(resumed, digits, SETTINGS, seed=5, checkpoint=tmp_path / "b.pt", progress=False)
    assert result.trained_now == 4 and result.step == 12
    assert state_equal(resumed, straight)


def test_finished_training_does_nothing(tiny_space, digits, tmp_path):
    model = fresh(tiny_space, digits)
    train_supernet(model, digits, SETTINGS, seed=0, checkpoint=tmp_path / "c.pt", progress=False)
    sha = json.loads(record_path(tmp_path / "c.pt").read_text())["sha256"]
    again = train_supernet(fresh(tiny_space, digits), digits, SETTINGS, seed=0, checkpoint=tmp_path / "c.pt",
                           progress=False)
    assert again.trained_now == 0 and again.record["sha256"] == sha


def test_nan_loss_aborts_and_keeps_the_last_good_checkpoint(tiny_space, digits, tmp_path):
    path = tmp_path / "d.pt"
    model = fresh(tiny_space, digits)
    train_supernet(model, digits, TrainSettings(**{**vars(SETTINGS), "steps": 4}), seed=0, checkpoint=path,
                   progress=False)
    good = path.read_bytes()
    bad = TrainSettings(**{**vars(SETTINGS), "lr": float("inf"), "steps": 40})
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train_supernet(fresh(tiny_space, digits), digits, bad, seed=0, checkpoint=path, progress=False)
    assert path.read_bytes() == good
    load_checkpoint(path, tiny_space, "digits")  # still valid


def test_nan_inputs_skip_steps_then_abort(tiny_space, digits, tmp_path, caplog):
    poisoned = load_task("digits", 0)
    x, y = poisoned.splits["train"]
    poisoned.splits["train"] = (torch.full_like(x, float("nan")), y)
    settings = TrainSettings(**{**vars(SETTINGS), "checkpoint_every": 10})
    with pytest.raises(TrainingDiverged, match="5 steps in a row"):
        train_supernet(fresh(tiny_space, digits), poisoned, settings, seed=0, checkpoint=tmp_path / "e.pt",
                       progress=False)
    assert "step skipped" in caplog.text
    assert not (tmp_path / "e.pt").exists()


def test_checkpoint_refusals(tiny_space, digits_space, digits, tmp_path):
    path = tmp_path / "f.pt"
    train_supernet(fresh(tiny_space, digits), digits, TrainSettings(**{**vars(SETTINGS), "steps": 2}), seed=0,
                   checkpoint=path, progress=False)
    with pytest.raises(CheckpointError, match="not on space 'digits'"):
        load_checkpoint(path, digits_space)
    with pytest.raises(CheckpointError, match="not 'mnist1d'"):
        load_checkpoint(path, tiny_space, "mnist1d")
    with pytest.raises(CheckpointError, match="trained with seed 0, not 1"):
        train_supernet(fresh(tiny_space, digits), digits, SETTINGS, seed=1, checkpoint=path, progress=False)

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="does not match its record"):
        load_checkpoint(path, tiny_space)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(CheckpointError, match="does not match its record"):
        load_checkpoint(path, tiny_space)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="does not match its record"):
        load_checkpoint(path, tiny_space, expected_sha256="0" * 64)
    record_path(path).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable record"):
        load_checkpoint(path, tiny_space)
    record_path(path).unlink()
    with pytest.raises(CheckpointError, match="record .* is missing"):
        load_checkpoint(path, tiny_space)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt", tiny_space)


def test_a_pickle_with_a_matching_record_is_still_not_executed(tiny_space, tmp_path):
    import pickle

    from supernet.checkpoint import sha256_file

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    record_path(path).write_text(json.dumps({"format": 1, "sha256": sha256_file(path), "space_hash": tiny_space.hash,
                                             "task": "digits"}))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(path, tiny_space, "digits")


def test_evaluate_static_and_inherited_agree(tiny_space, digits):
    model = fresh(tiny_space, digits)
    arch = tiny_space.largest()
    assert evaluate(model.extract(arch), None, digits, "test") == evaluate(model, arch, digits, "test")
    model.train()
    evaluate(model, arch, digits)
    assert model.training  # mode restored


def test_a_save_killed_at_any_step_leaves_a_loadable_checkpoint(tiny_space, tmp_path, monkeypatch):
    """A save puts three files in place (the pending record, the checkpoint, the record): killed
    before any of them, the checkpoint on disk still loads, as the old or as the new one."""
    import os

    import supernet.checkpoint as checkpoint
    from supernet.checkpoint import pending_record_path, save_checkpoint

    path = tmp_path / "c.pt"
    old = save_checkpoint(path, {"step": 1}, {"space_hash": tiny_space.hash, "task": "digits"})
    replace = os.replace
    for killed_before in (1, 2, 3):
        calls = {"n": 0}

        def replace_or_die(*args, killed_before=killed_before, calls=calls):
            calls["n"] += 1
            if calls["n"] == killed_before:
                raise SystemExit("killed")
            return replace(*args)

        monkeypatch.setattr(checkpoint.os, "replace", replace_or_die)
        with pytest.raises(SystemExit):
            save_checkpoint(path, {"step": 2}, {"space_hash": tiny_space.hash, "task": "digits"})
        monkeypatch.setattr(checkpoint.os, "replace", replace)
        state, record = load_checkpoint(path, tiny_space, "digits")
        expected = 2 if killed_before == 3 else 1  # the new file was in place only before the third
        assert state["step"] == expected and (record["sha256"] == old["sha256"]) == (expected == 1)
        save_checkpoint(path, {"step": 1}, {"space_hash": tiny_space.hash, "task": "digits"})  # back to the old one
        assert not pending_record_path(path).exists()


def test_students_learn_from_the_labels_until_distillation_starts(tiny_space, digits):
    def trained(**changes):
        model = fresh(tiny_space, digits)
        train_supernet(model, digits, TrainSettings(**{**vars(SETTINGS), "steps": 4, **changes}), seed=0,
                       progress=False)
        return model

    on_labels = trained()
    assert TrainSettings().distill is False  # the default: distillation through random students hurt
    assert state_equal(trained(distill=True, distill_start=4), on_labels)  # the budget ends before it starts
    assert state_equal(trained(distill=True, distill_weight=0.0), on_labels)
    distilled = trained(distill=True)
    assert not state_equal(distilled, on_labels)
    assert not state_equal(trained(distill=True, distill_start=2), distilled)  # two steps on the labels, two distilled
    mixed = trained(distill=True, distill_weight=0.5)
    assert not state_equal(mixed, distilled) and not state_equal(mixed, on_labels)


def test_the_distillation_weight_by_step():
    settings = TrainSettings(steps=10, distill=True, distill_start=3, distill_weight=0.7)
    assert [distill_weight(settings, step) for step in range(5)] == [0.0, 0.0, 0.0, 0.7, 0.7]
    assert distill_weight(TrainSettings(distill=False, distill_weight=0.7), 5) == 0.0


def test_a_pretrained_teacher_is_frozen_at_the_end_of_a_learning_rate_cycle_of_its_own():
    factor = lr_schedule(TrainSettings(steps=30, warmup_steps=2, teacher="pretrained", teacher_steps=10))
    assert [factor(0), factor(1)] == [0.5, 1.0] and factor(9) < 0.05  # warm-up, then decayed by the copy
    assert [factor(10), factor(11)] == [0.5, 1.0] and factor(29) < 0.05  # the sandwich's own cycle
    single = lr_schedule(TrainSettings(steps=30, warmup_steps=2))  # no teacher of its own: one cycle
    assert [single(0), single(1)] == [0.5, 1.0] and 0.7 < single(10) < 0.9 and single(29) < 0.05
    assert lr_phases(TrainSettings(steps=30, teacher="pretrained", teacher_steps=30)) == [(0, 30)]


def test_the_random_students_count_random_weight_together(tiny_space, digits):
    model = fresh(tiny_space, digits)
    x, y = digits.split("train")
    x, y = x[:32], y[:32]
    largest, smallest = tiny_space.largest(), tiny_space.smallest()
    randoms = [tiny_space.sample(np.random.default_rng(seed)) for seed in range(3)]

    @torch.no_grad()
    def loss(students, **changes):
        settings = TrainSettings(**{**vars(SETTINGS), "distill": False, **changes})
        return float(sandwich_loss(model, x, y, largest, students, settings, step=0)[0])

    @torch.no_grad()
    def label_loss(arch):
        return float(torch.nn.functional.cross_entropy(model(x, arch), y))

    sandwich = label_loss(largest) + label_loss(smallest)
    assert loss([smallest], random_weight=5.0) == pytest.approx(sandwich, rel=1e-5)  # no random students
    assert loss([smallest, *randoms], random_weight=0.0) == pytest.approx(sandwich, rel=1e-5)
    mean_random = sum(label_loss(arch) for arch in randoms) / len(randoms)
    for weight in (0.5, 1.0, 3.0):
        assert loss([smallest, *randoms], random_weight=weight) == pytest.approx(sandwich + weight * mean_random,
                                                                                rel=1e-5)


def test_with_a_head_per_depth_the_largest_pass_teaches_every_depth(tiny_space, digits):
    """The largest arch's first k layers are depth k's widest arch: its exits are students counting
    `exit_weight` together, each read by its depth's own head."""
    space = SearchSpace.from_dict({**tiny_space.to_dict(), "depth_heads": True})
    model = fresh(space, digits)
    assert list(model.exits) == ["1"] and fresh(tiny_space, digits).exits.keys() == set()
    x, y = (t[:32] for t in digits.split("train"))
    largest, smallest = space.largest(), space.smallest()
    shallow = Arch(largest.embed_dim, largest.layers[:1])
    with torch.no_grad():
        model.exits["1"].classifier.weight.add_(0.3)  # its own head: depth 1 changes, depth 2 does not
        assert [depth for depth, _ in model.exit_logits(x, largest)] == [1, 2]
        (_, first), (_, last) = model.exit_logits(x, largest)
        assert torch.allclose(first, model(x, shallow), atol=1e-6) and torch.allclose(last, model(x, largest))
        assert torch.allclose(model.extract(shallow).eval()(x), model.eval()(x, shallow), atol=1e-5)

    def loss(exit_weight):
        settings = TrainSettings(**{**vars(SETTINGS), "exit_weight": exit_weight})
        with torch.no_grad():
            return float(sandwich_loss(model, x, y, largest, [smallest], settings, step=0)[0])

    ce = lambda arch: float(torch.nn.functional.cross_entropy(model(x, arch), y))  # noqa: E731
    with torch.no_grad():
        assert loss(0.0) == pytest.approx(ce(largest) + ce(smallest), rel=1e-5)
        assert loss(2.0) == pytest.approx(ce(largest) + ce(smallest) + 2.0 * ce(shallow), rel=1e-5)
    model.zero_grad()
    sandwich_loss(model, x, y, largest, [largest], TrainSettings(**vars(SETTINGS)), step=0)[0].backward()
    assert model.exits["1"].classifier.weight.grad.abs().sum() > 0  # trained with no depth-1 student sampled


def test_a_fine_tuning_state_saved_before_the_shared_loop_still_restores(tiny_space, digits):
    import copy

    from supernet.training.finetune import Finetuner, FinetuneSettings

    supernet, settings = fresh(tiny_space, digits), FinetuneSettings(steps=8, batch_size=16)
    straight = Finetuner(supernet.extract(tiny_space.smallest()), digits, settings, seed=1)
    straight.train(4)
    state = copy.deepcopy(straight.state())
    old = {"model": state["model"], "optimizer": state["optimizer"], "schedule": state["scheduler"],
           "batches": state["batch_rng"], "step": state["step"], "skipped": state["skipped_steps"]}  # the old keys
    continued = Finetuner(supernet.extract(tiny_space.smallest()), digits, settings, seed=1)
    continued.restore(old)
    straight.train(4)
    continued.train(4)
    assert continued.step == 8 and state_equal(straight.model, continued.model)
