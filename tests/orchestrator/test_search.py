"""The search driver end to end on the tiny space with the local executor."""

import json

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.cli import main
from orchestrator.config import load_study_config
from orchestrator.delivery.status import study_status
from orchestrator.search.driver import SearchDriver
from tests.orchestrator.conftest import write_config


@pytest.mark.parametrize("strategy", ["evolutionary", "random", "nsga2", "tpe"])
def test_search_reaches_the_budget(trained, strategy, capsys):
    path = write_config(trained, f"{strategy}.yaml", study=f"s-{strategy}", search={"strategy": strategy})
    assert main(["search", "-c", str(path), "--no-progress"]) == 0
    assert "12 of 12 evaluations" in capsys.readouterr().out
    status = study_status(f"sqlite:///{trained / 'study.db'}", f"s-{strategy}")
    assert status["evaluations"] == 12 and status["trials"]["running"] == 0
    assert status["pareto_size"] >= 1 and status["hypervolume"] > 0
    study = optuna.load_study(study_name=f"s-{strategy}", storage=f"sqlite:///{trained / 'study.db'}")
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        metrics = trial.user_attrs["metrics"]
        assert trial.values == [metrics["accuracy"], metrics["latency_ms"]]
        assert trial.user_attrs["feasible"] == (metrics["params"] <= 20000)
        assert set(trial.params) >= {"embed_dim", "depth"}


def test_search_continues_and_never_evaluates_twice(trained, capsys):
    path = write_config(trained, "cont.yaml", study="cont")
    assert main(["search", "-c", str(path), "--no-progress"]) == 0
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=16"]) == 0
    assert "16 of 16 evaluations" in capsys.readouterr().out.splitlines()[-1]
    # the raised budget is stored: status and a resume from the database see 16, not the first 12
    assert study_status(f"sqlite:///{trained / 'study.db'}", "cont")["budget"] == 16
    import hashlib

    db = trained / "study.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=16"]) == 0
    assert "(already complete)" in capsys.readouterr().out  # a rerun recomputes and writes nothing
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    study = optuna.load_study(study_name="cont", storage=f"sqlite:///{trained / 'study.db'}")
    keys = [t.user_attrs["arch_key"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(keys) == 16 and len(set(keys)) == 16


def test_resume_after_a_crash_reruns_interrupted_trials_once(trained, monkeypatch):
    url = f"sqlite:///{trained / 'study.db'}"
    path = write_config(trained, "crash.yaml", study="crash")
    config = load_study_config(path)
    import orchestrator.search.driver as search_module

    original = search_module.SearchDriver._evaluate_and_record
    calls = {"n": 0}

    def crash_on_second_batch(self, engine, study, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the driver dies with the batch's trials RUNNING
        return original(self, engine, study, *args)

    with pytest.MonkeyPatch.context() as crash, pytest.raises(KeyboardInterrupt):
        crash.setattr(search_module.SearchDriver, "_evaluate_and_record", crash_on_second_batch)
        SearchDriver(config, progress=False).run()
    study = optuna.load_study(study_name="crash", storage=url)
    running = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len(running) == 4
    lost = {json.dumps(t.params, sort_keys=True) for t in running}

    assert main(["resume", "--storage", url, "--study", "crash", "--no-progress"]) == 0
    study = optuna.load_study(study_name="crash", storage=url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs.get("interrupted") for t in trials if t.state == TrialState.FAIL)
    reran = [t for t in complete if json.dumps(t.params, sort_keys=True) in lost]
    assert len(reran) == 4  # each interrupted arch ran again exactly once
    assert len({t.user_attrs["arch_key"] for t in complete}) == 12

    # the same seed without a crash gives the same evaluations
    clean = write_config(trained, "clean.yaml", study="clean")
    SearchDriver(load_study_config(clean), progress=False).run()
    clean_study = optuna.load_study(study_name="clean", storage=url)
    def front(s):
        return sorted((t.user_attrs["arch_key"], tuple(t.values)) for t in s.get_trials(states=(TrialState.COMPLETE,)))
    assert front(clean_study) == front(study)


def test_bad_search_inputs_exit_2_and_leave_the_database_unchanged(trained, capsys):
    import hashlib

    db = trained / "study.db"
    path = write_config(trained, "good.yaml", study="guarded")
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=4"]) == 0
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    cases = [
        (write_config(trained, "b1.yaml", study="guarded", search={"strategy": "tpe"}), "search.strategy is 'tpe' here"),
        (write_config(trained, "b2.yaml", study="guarded", objectives={"accuracy": "maximize", "params": "minimize"}),
         "objectives"),
        (write_config(trained, "b3.yaml", study="other", target={"name": "unmeasured"}), "no latency measurements"),
        (write_config(trained, "b4.yaml", study="other", supernet={"checkpoint": str(trained / "missing.pt")}),
         "run `elastiq train-supernet"),
    ]
    for config_path, message in cases:
        capsys.readouterr()
        assert main(["search", "-c", str(config_path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    for args, message in [(["resume", "--storage", f"sqlite:///{db}", "--study", "nope"], "no study named 'nope'"),
                          (["status", "--storage", f"sqlite:///{trained / 'absent.db'}", "--study", "x"], "no study"),
                          (["status", "--storage", "mysql+nodriver://u:pw@h/db", "--study", "x"], "storage")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "pw@" not in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (trained / "absent.db").exists()


def test_status_json(trained, capsys):
    path = write_config(trained, "st.yaml", study="st")
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=4"]) == 0
    capsys.readouterr()
    assert main(["status", "--storage", f"sqlite:///{trained / 'study.db'}", "--study", "st", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["evaluations"] == 4 and status["budget"] == 4 and "accuracy" in status["best"]
    latency = status["latency"]  # the target's dataset, and the predictor the search fitted on it
    assert latency["target"] == "cpu-b1" and latency["measurements"] >= 16 and latency["flagged"] == 0
    assert latency["measurements_by_source"]["measure"] >= 16
    assert latency["predictor"]["measurements"] == latency["measurements"] and latency["predictor"]["cv_mape_pct"] > 0
    assert main(["status", "--storage", f"sqlite:///{trained / 'study.db'}", "--study", "st"]) == 0
    out = capsys.readouterr().out
    assert "evaluations 4 of 4 (100%)" in out and "latency on cpu-b1:" in out and "cross-validated error" in out


@pytest.mark.slow
def test_ray_executor_gives_the_local_executor_results(trained, local_ray):
    url = f"sqlite:///{trained / 'study.db'}"
    for executor in ("local", "ray"):
        path = write_config(trained, f"{executor}-eq.yaml", study=f"eq-{executor}",
                            search={"executor": executor, "evaluations": 8, "strategy": "random"},
                            ray={"workers": 2})
        SearchDriver(load_study_config(path), progress=False).run()

    def results(name):
        study = optuna.load_study(study_name=name, storage=url)
        return sorted((t.user_attrs["arch_key"], tuple(t.values)) for t in study.get_trials(states=(TrialState.COMPLETE,)))

    assert len(results("eq-ray")) == 8
    assert results("eq-ray") == results("eq-local")


@pytest.mark.slow
def test_a_ray_worker_killed_mid_trial_is_retried_and_the_study_completes(trained, local_ray, tmp_path):
    import os

    marker = tmp_path / "worker-died"
    path = write_config(trained, "dying.yaml", study="dying",
                        task={"name": "tests.orchestrator.faults:digits_dying_once",
                              "options": {"marker": str(marker), "driver_pid": os.getpid()}},
                        search={"executor": "ray", "evaluations": 8, "strategy": "random", "finetune_steps": 1},
                        ray={"workers": 2})
    summary = SearchDriver(load_study_config(path), progress=False).run()
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died
    assert "8 of 8 evaluations" in summary
    study = optuna.load_study(study_name="dying", storage=f"sqlite:///{trained / 'study.db'}")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 8
    assert not study.get_trials(states=(TrialState.FAIL,))


@pytest.mark.slow
def test_workers_that_always_die_stop_the_search_with_one_line_and_a_resumable_study(trained, local_ray, capsys):
    import os

    path = write_config(trained, "doomed.yaml", study="doomed",
                        task={"name": "tests.orchestrator.faults:digits_dying_always",
                              "options": {"driver_pid": os.getpid()}},
                        search={"executor": "ray", "evaluations": 4, "strategy": "random", "seed": 99},
                        ray={"workers": 1, "retries": 0})
    assert main(["search", "-c", str(path), "--no-progress"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "died" in errors[0] and "run again on resume" in errors[0], errors
    study = optuna.load_study(study_name="doomed", storage=f"sqlite:///{trained / 'study.db'}")
    assert not study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 4  # the batch, for resume to run again


def test_a_search_refuses_a_seed_that_is_not_its_supernets_and_search_seed_varies_the_search(trained, capsys):
    url = f"sqlite:///{trained / 'study.db'}"
    db = trained / "study.db"
    import hashlib

    path = write_config(trained, "reseeded.yaml", study="reseeded", seed=4, search={"evaluations": 4})
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert main(["search", "-c", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "trained with seed 3" in err and "data split" in err and len(err.strip().splitlines()) == 1
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    firsts = []
    for search_seed in (0, 1):
        path = write_config(trained, f"search-seed-{search_seed}.yaml", study=f"search-seed-{search_seed}",
                            search={"evaluations": 4, "strategy": "random", "seed": search_seed})
        assert main(["search", "-c", str(path), "--no-progress"]) == 0
        study = optuna.load_study(study_name=f"search-seed-{search_seed}", storage=url)
        firsts.append(sorted(t.user_attrs["arch_key"] for t in study.get_trials(states=(TrialState.COMPLETE,))))
    assert firsts[0] != firsts[1]


def test_a_study_stored_before_a_config_key_existed_still_continues(trained, capsys):
    from orchestrator.storage.study import CONFIG_ATTR

    url = f"sqlite:///{trained / 'study.db'}"
    path = write_config(trained, "older.yaml", study="older", search={"evaluations": 4, "strategy": "random"})
    assert main(["search", "-c", str(path), "--no-progress"]) == 0
    study = optuna.load_study(study_name="older", storage=url)
    stored = json.loads(study.user_attrs[CONFIG_ATTR])
    del stored["search"]["seed"], stored["ray"]["retries"]  # as written by an earlier elastiq
    study.set_user_attr(CONFIG_ATTR, json.dumps(stored))
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=8"]) == 0
    assert "8 of 8 evaluations" in capsys.readouterr().out
    assert main(["resume", "--storage", url, "--study", "older", "--no-progress"]) == 0


class _RunsCode:
    """Unpickling this creates the file it names: proof that a load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_stored_latency_predictor_is_data_and_a_crafted_row_runs_no_code(trained, tmp_path, capsys):
    import hashlib
    import pickle

    from sqlalchemy import delete, func, select
    from sqlalchemy.orm import Session

    from orchestrator.storage.schema import PredictorRow, connect
    from predictors.persist import STATE_VERSION

    url = f"sqlite:///{trained / 'study.db'}"
    path = write_config(trained, "stored-predictor.yaml", study="stored-predictor",
                        search={"evaluations": 4, "strategy": "random"})
    assert main(["search", "-c", str(path), "--no-progress"]) == 0
    engine = connect(url)
    mine = PredictorRow.study == "stored-predictor"
    with Session(engine) as session:
        row = session.scalar(select(PredictorRow).where(mine))
        assert row.version == STATE_VERSION and json.loads(row.artifact)["chosen"] == row.chosen
        n_train = row.n_train
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=6"]) == 0
    with Session(engine) as session:  # the stored predictor was used again, not fitted anew
        assert session.scalar(select(func.count()).select_from(PredictorRow).where(mine)) == 1

    marker = tmp_path / "code-ran"
    crafted = pickle.dumps(_RunsCode(marker))
    with Session(engine) as session, session.begin():  # the newest row, with a matching sha256
        session.add(PredictorRow(study="stored-predictor", kind="latency", target="cpu-b1", version=STATE_VERSION,
                                 n_train=n_train, chosen="ridge", cv_scores="{}",
                                 sha256=hashlib.sha256(crafted).hexdigest(), artifact=crafted))
    before = hashlib.sha256((trained / "study.db").read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=8"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a predictor's JSON state" in err, err
    assert not marker.exists()
    assert hashlib.sha256((trained / "study.db").read_bytes()).hexdigest() == before

    with Session(engine) as session, session.begin():  # a pickle of the old format (version 1) is never read
        session.execute(delete(PredictorRow).where(mine, PredictorRow.sha256 == hashlib.sha256(crafted).hexdigest()))
        session.add(PredictorRow(study="stored-predictor", kind="latency", target="cpu-b1", version=1,
                                 n_train=n_train, chosen="ridge", cv_scores="{}",
                                 sha256=hashlib.sha256(crafted).hexdigest(), artifact=crafted))
    engine.dispose()
    assert main(["search", "-c", str(path), "--no-progress", "--set", "search.evaluations=8"]) == 0
    assert not marker.exists()


def test_a_crash_while_a_batch_is_opened_proposes_it_again_and_ends_as_an_uninterrupted_run(trained, monkeypatch):
    import orchestrator.search.strategies.random_search as strategies

    url = f"sqlite:///{trained / 'study.db'}"
    config = load_study_config(write_config(trained, "opening.yaml", study="opening", search={"seed": 31}))
    original, calls = strategies.ask_fixed, {"n": 0}

    def die_on_the_seventh(*args):
        calls["n"] += 1
        if calls["n"] == 7:  # the third trial of the second batch: two of its trials are open
            raise KeyboardInterrupt
        return original(*args)

    with pytest.MonkeyPatch.context() as crash, pytest.raises(KeyboardInterrupt):
        crash.setattr(strategies, "ask_fixed", die_on_the_seventh)
        SearchDriver(config, progress=False).run()
    study = optuna.load_study(study_name="opening", storage=url)
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 2
    assert main(["resume", "--storage", url, "--study", "opening", "--no-progress"]) == 0
    clean = load_study_config(write_config(trained, "opening-clean.yaml", study="opening-clean", search={"seed": 31}))
    SearchDriver(clean, progress=False).run()

    def results(name):
        trials = optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.COMPLETE,))
        return sorted((t.user_attrs["arch_key"], tuple(t.values)) for t in trials)

    assert len(results("opening")) == 12 and results("opening") == results("opening-clean")
    failed = optuna.load_study(study_name="opening", storage=url).get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2 and all(t.user_attrs["interrupted"] for t in failed)  # the half-open batch
