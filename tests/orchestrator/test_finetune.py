"""`elastiq finetune` end to end on the tiny study: Ray Tune trials, every rung recorded, a crash
resumed with nothing trained twice, the schedulers' stops, and what status, report and export show."""

import json
import shutil

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.cli import main
from orchestrator.delivery.status import study_status
from orchestrator.finetune import stage as stage_module
from orchestrator.finetune.candidates import FinetuneError
from orchestrator.finetune.stage import FinetuneStage
from orchestrator.finetune.trainable import checkpoint_path
from orchestrator.storage.finetuning import RUN_ATTR, load_run
from orchestrator.storage.schema import FinetuneCandidateRow, FinetuneRungRow, connect
from orchestrator.storage.study import require_study
from predictors.curve_pfn.weights import SHIPPED, WEIGHTS
from tests.orchestrator.conftest import restart_local_ray, write_config

SMALL = {"steps": 24, "rungs": 4, "max_candidates": 4, "margin": 0.2, "batch_size": 32}


def _searched(trained, name: str, finetune=None, **changes):
    config = write_config(trained, f"{name}.yaml", study=name,
                          search={"evaluations": 12, "executor": "local", "strategy": "random"},
                          finetune={**SMALL, "directory": str(trained / f"{name}-weights"), **(finetune or {})},
                          **changes)
    assert main(["search", "-c", str(config), "--no-progress"]) == 0
    return f"sqlite:///{trained / 'study.db'}"


def _run(url: str, name: str):
    study = require_study(url, name)
    engine = connect(url, create=False)
    try:
        return load_run(engine, name, study.user_attrs[RUN_ATTR]["run_key"])
    finally:
        engine.dispose()


def _finals(url: str, name: str) -> dict[str, tuple[int, float]]:
    return {key: (c.last.steps, c.last.accuracy) for key, c in _run(url, name).items() if c.rungs}


def test_a_crashed_finetune_continues_to_what_an_uninterrupted_one_gives_and_trains_nothing_twice(
        trained, local_ray, capsys):
    url = _searched(trained, "ft-crash")
    assert main(["finetune", "--storage", url, "--study", "ft-crash", "--scheduler", "full"]) == 0
    uninterrupted = _finals(url, "ft-crash")
    assert all(steps == SMALL["steps"] for steps, _ in uninterrupted.values()) and len(uninterrupted) >= 2

    # the same run in a second study, its driver killed after the third recorded rung
    url = _searched(trained, "ft-crash2")
    original, calls = stage_module.record_rung, {"n": 0}

    def die_on_the_fourth(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args)

    with pytest.MonkeyPatch.context() as crash:
        crash.setattr(stage_module, "record_rung", die_on_the_fourth)
        assert main(["finetune", "--storage", url, "--study", "ft-crash2", "--scheduler", "full"]) != 0
    # the driver's death ends its trials too (a trial only told to stop would end its rung and write its
    # file after the count below): the session's Ray is restarted, as a dead driver's would be gone
    restart_local_ray()
    study = require_study(url, "ft-crash2")
    key = study.user_attrs[RUN_ATTR]["run_key"]
    engine = connect(url, create=False)
    with Session(engine) as session:
        recorded_before = session.scalar(select(func.count()).select_from(FinetuneRungRow).where(
            FinetuneRungRow.study == "ft-crash2"))
    engine.dispose()
    assert recorded_before == 3
    # what the trials had trained when the driver died, recorded or not: their checkpoint files
    directory = trained / "ft-crash2-weights"
    trained_before = 0
    for arch_key in _run(url, "ft-crash2"):
        path = checkpoint_path(str(directory), key, arch_key)
        if path.exists():
            trained_before += torch.load(path, weights_only=True)["step"]
    capsys.readouterr()
    assert main(["finetune", "--storage", url, "--study", "ft-crash2", "--scheduler", "full"]) == 0
    summary, bar = capsys.readouterr()
    # the bar goes on from the rungs recorded before the crash to the whole budget
    budget = SMALL["rungs"] * len(_run(url, "ft-crash2"))
    assert f"{budget}/{budget}" in bar and "finished" in bar and "best margin" in bar, bar[-400:]
    trained_now = int(summary.split(" this run;")[0].rsplit(" ", 1)[-1])
    resumed = _finals(url, "ft-crash2")
    assert trained_before + trained_now == sum(steps for steps, _ in resumed.values())  # nothing trained twice
    assert resumed == uninterrupted  # same archs, same steps, same accuracies
    engine = connect(url, create=False)
    with Session(engine) as session:
        rows = session.scalar(select(func.count()).select_from(FinetuneRungRow).where(
            FinetuneRungRow.study == "ft-crash2"))
        ended = set(session.scalars(select(FinetuneCandidateRow.ended).where(FinetuneCandidateRow.study == "ft-crash2")))
    engine.dispose()
    assert rows == SMALL["rungs"] * len(resumed) and ended == {"finished"}
    assert main(["finetune", "--storage", url, "--study", "ft-crash2", "--scheduler", "full"]) == 0
    assert "(already complete)" in capsys.readouterr().out


@pytest.mark.parametrize("scheduler", ["asha", "lc"])
def test_schedulers_stop_candidates_and_the_delivery_shows_the_finetuned_front(trained, local_ray, tmp_path,
                                                                                scheduler, capsys):
    name = f"ft-{scheduler}"
    url = _searched(trained, name, finetune={"max_candidates": 6, "rungs": 6, "steps": 36})
    assert main(["finetune", "--storage", url, "--study", name, "--scheduler", scheduler]) == 0
    status = study_status(url, name)["finetune"]
    assert status["settings"]["scheduler"] == scheduler
    assert status["finished"] + status["stopped"] == status["candidates"] and status["unfinished"] == 0
    assert status["steps_trained"] <= status["steps_budget"]
    if scheduler == "asha":  # one in three goes on at each of ASHA's rungs: some stop
        assert status["stopped"] >= 1 and status["steps_trained"] < status["steps_budget"]
    assert status["front_size"] >= 1 and status["hypervolume"] >= status["inherited_hypervolume"]
    assert main(["status", "--storage", url, "--study", name]) == 0
    assert "fine-tuned (" in capsys.readouterr().out
    out = tmp_path / "models"
    assert main(["export", "--storage", url, "--study", name, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # export takes its front on measured latency (status on the search's): the fine-tuned weights it ships
    # are those of the run's candidates, each fine-tuned model checked against its recorded accuracy
    run = {c.trial: c for c in _run(url, name).values() if c.rungs}
    shipped = {m["trial"] for m in manifest["models"] if m["weights"] == "fine-tuned"}
    assert shipped and shipped <= set(run)
    assert manifest["finetuned_weights"] == {str(t): run[t].last.checkpoint_sha256 for t in shipped}
    for model in manifest["models"]:
        metrics = json.loads((out / model["dir"] / "metrics.json").read_text())
        if model["weights"] == "fine-tuned":
            assert metrics["accuracy_recorded"] == run[model["trial"]].last.accuracy
            assert metrics["finetuned"]["steps"] == run[model["trial"]].last.steps
    assert "with fine-tuned weights" in capsys.readouterr().out
    assert main(["report", "--storage", url, "--study", name, "--out", str(tmp_path / "report")]) == 0
    assert "Fine-tuned (" in (tmp_path / "report" / "summary.md").read_text()


def _nothing_written(url: str, name: str) -> bool:
    engine = connect(url, create=False)
    with Session(engine) as session:
        rows = session.scalar(select(func.count()).select_from(FinetuneCandidateRow).where(
            FinetuneCandidateRow.study == name))
    engine.dispose()
    return rows == 0 and RUN_ATTR not in require_study(url, name).user_attrs


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "finetune.steps"),
    (["--lr", "5"], "finetune.lr"),
    (["--lr", "-0.1"], "finetune.lr"),
    (["--set", "rungs=1"], "finetune.rungs"),
    (["--set", "rungs=500", "--steps", "100"], "finetune.rungs"),
    (["--set", "confidence=1.5"], "finetune.confidence"),
    (["--set", "curve_model=mcmc"], "finetune.curve_model"),
    (["--set", "bogus=1"], "finetune.bogus: unknown key"),
    (["--set", "ray.workers=0"], "ray.workers"),
    (["--set", "seed=3"], "finetune.seed: unknown key"),
    (["--set", "search.evaluations=3"], "overrides finetune.KEY and ray.KEY only"),
    (["--distill", "teacher"], "holds no pretrained teacher"),
    (["--study", "no-such-study"], "no study named"),
])
def test_bad_finetune_input_is_one_line_exit_2_and_nothing_written(trained, capsys, args, message):
    url = _searched(trained, "ft-bad")
    capsys.readouterr()
    study = ["--study", "ft-bad"] if "--study" not in args else []
    assert main(["finetune", "--storage", url, *study, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elastiq: error:") and message in err[0], err
    assert _nothing_written(url, "ft-bad")


def test_a_truncated_learning_curve_pfn_is_one_line_exit_2_and_nothing_written(trained, capsys, tmp_path):
    # every other damage (changed, missing, garbled manifest...) is refused the same way: test_curve_pfn.py
    url = _searched(trained, "ft-bad-pfn")
    folder = tmp_path / "pfn"
    shutil.copytree(SHIPPED, folder)
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:4096])
    capsys.readouterr()
    assert main(["finetune", "--storage", url, "--study", "ft-bad-pfn", "--scheduler", "lc",
                 "--set", f"curve_model_weights={folder}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elastiq: error: learning-curve PFN") and "sha256" in err[0], err
    assert _nothing_written(url, "ft-bad-pfn")


def test_a_study_without_a_feasible_front_is_refused(trained, capsys):
    url = _searched(trained, "ft-infeasible", constraints=["params <= 10"])
    capsys.readouterr()
    assert main(["finetune", "--storage", url, "--study", "ft-infeasible"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no feasible front" in err[0]
    assert _nothing_written(url, "ft-infeasible")


def test_a_teacher_that_does_not_fit_the_supernet_is_refused(trained):
    url = _searched(trained, "ft-teacher")
    stage = FinetuneStage(url, "ft-teacher", {"distill": "teacher"})
    from supernet.tasks import load_task

    task = load_task(stage.config.task.name, stage.config.seed)
    with pytest.raises(FinetuneError, match="does not match the supernet's largest arch"):
        stage._check_teacher({"teacher": {"stem.weight": torch.zeros(3, 3)}}, trained / "tiny.pt", task)
