"""Latency measured during a search: beside drift probes, on the dataset's scale, refused when the
probes disagree; flagged or refused measurements never train a predictor; the schema records how
each measurement was taken (and an older schema is upgraded to hold it)."""

import json

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from orchestrator.cli import main
from orchestrator.storage.schema import SCHEMA_VERSION, LatencyRow, SchemaInfo, connect
from predictors.measure import DriftCheck
from search_space import Arch, LayerArch
from tests.orchestrator.conftest import write_config


def _rows(url, source):
    engine = connect(url, create=False)
    with Session(engine) as session:
        rows = [(r.arch_key, r.latency_ms, r.raw_latency_ms, r.drift) for r in
                session.scalars(select(LatencyRow).where(LatencyRow.source == source))]
    engine.dispose()
    return rows


def test_a_search_measures_beside_probes_and_stores_on_the_datasets_scale(trained):
    url = f"sqlite:///{trained / 'study.db'}"
    path = write_config(trained, "measured-search.yaml", study="measured-search",
                        search={"evaluations": 8, "strategy": "random", "measure_latency": True, "seed": 21})
    assert main(["search", "-c", str(path), "--no-progress"]) == 0
    assert _rows(url, "measure"), "the dataset's rows are marked as measured alone"
    study = optuna.load_study(study_name="measured-search", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    measured = {key: (median, raw, drift) for key, median, raw, drift in _rows(url, "search")}
    for trial in complete:
        metrics, attrs = trial.user_attrs["metrics"], trial.user_attrs
        if "latency_refused" in attrs:  # this machine was too busy: the trial says so and keeps the prediction
            assert attrs["latency_source"] == "predicted" and attrs["arch_key"] not in measured
            continue
        assert attrs["latency_source"] == "measured" and metrics["latency_ms"] == metrics["latency_measured_ms"]
        if attrs["arch_key"] in measured and "latency_drift" in attrs:
            median, raw, drift = measured[attrs["arch_key"]]
            assert metrics["latency_measured_ms"] == median == pytest.approx(raw / drift)
            assert attrs["latency_drift"] == drift and attrs["latency_raw_ms"] == raw


def _refused(jobs, probes, protocol, seed):
    check = DriftCheck(drift=1.3, spread=0.4, noise_floor=0.05, attempts=3, accepted=False,
                       reason="refused: the probes disagree (test)")
    return {"measurements": [], "check": check.to_dict(), "node": "local"}


def test_a_refused_batch_keeps_its_predicted_latency_and_stores_nothing(trained, monkeypatch):
    url = f"sqlite:///{trained / 'study.db'}"
    monkeypatch.setattr("orchestrator.execution.executors.measure_beside", _refused)
    before = _rows(url, "search")
    path = write_config(trained, "refused-search.yaml", study="refused-search",
                        search={"evaluations": 4, "strategy": "random", "measure_latency": True, "seed": 77})
    assert main(["search", "-c", str(path), "--no-progress"]) == 0
    study = optuna.load_study(study_name="refused-search", storage=url)
    fresh = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "latency_refused" in t.user_attrs]
    assert fresh, "archs not measured before were measured, and refused"
    for trial in fresh:
        assert trial.user_attrs["latency_source"] == "predicted"
        assert trial.user_attrs["metrics"]["latency_ms"] == trial.user_attrs["metrics"]["latency_predicted_ms"]
    assert _rows(url, "search") == before


def test_flagged_measurements_do_not_train_the_latency_predictor(trained, monkeypatch):
    from orchestrator.config import load_study_config
    from orchestrator.search.latency_model import fit_latency_predictor
    from supernet.tasks import load_task

    url = f"sqlite:///{trained / 'study.db'}"
    config = load_study_config(write_config(trained, "flagged.yaml", study="flagged"))
    engine = connect(url)
    task = load_task("digits", config.seed)
    fitted = fit_latency_predictor(engine, config, task.spec, config.target.to_target())
    with Session(engine) as session, session.begin():
        row = session.scalars(select(LatencyRow).where(LatencyRow.flagged.is_(False))).first()
        row.flagged, row_id = True, row.id
    refit = fit_latency_predictor(engine, config, task.spec, config.target.to_target())
    assert refit.n_train_ == fitted.n_train_ - 1
    with Session(engine) as session, session.begin():
        session.get(LatencyRow, row_id).flagged = False
    engine.dispose()


def test_an_older_schema_is_upgraded_on_connecting(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    connect(url).dispose()
    engine = connect(url)
    with engine.begin() as connection:  # as elastiq's schema 2 left it
        for column in ("source", "drift", "raw_latency_ms", "gap"):
            connection.execute(text(f"ALTER TABLE elastiq_latency DROP COLUMN {column}"))
        connection.execute(text("ALTER TABLE elastiq_latency RENAME COLUMN latency_ms TO median_ms"))
        connection.execute(text("ALTER TABLE elastiq_latency RENAME COLUMN measured_on TO backend"))
        connection.execute(text("UPDATE elastiq_schema SET version = 2"))
    engine.dispose()
    engine = connect(url, create=False)  # a reader, too, needs the columns
    with Session(engine) as session:
        assert session.scalar(select(SchemaInfo.version)) == SCHEMA_VERSION
        assert session.scalars(select(LatencyRow)).all() == []
    engine.dispose()


def test_a_schema_4_database_keeps_its_latency_rows_under_the_renamed_column(tmp_path):
    check_schema_4_upgrade(f"sqlite:///{tmp_path / 'v4.db'}")


def check_schema_4_upgrade(url: str) -> None:
    """A database of schema 4 (the measurement's identity in a column named backend) is upgraded on
    connecting, and its latency rows read back under the new name."""
    from orchestrator.storage.latency import stored_latencies
    from predictors.target import HardwareTarget, fingerprint

    target = HardwareTarget("cpu-v4")
    engine = connect(url)
    with engine.begin() as connection:  # as schema 4 left it
        connection.execute(text("ALTER TABLE elastiq_latency RENAME COLUMN measured_on TO backend"))
        connection.execute(text("ALTER TABLE elastiq_latency RENAME COLUMN latency_ms TO median_ms"))
        connection.execute(text("ALTER TABLE elastiq_latency RENAME COLUMN raw_latency_ms TO raw_median_ms"))
        connection.execute(text("ALTER TABLE elastiq_latency DROP COLUMN gap"))
        connection.execute(text("UPDATE elastiq_schema SET version = 4"))
        connection.execute(text("INSERT INTO elastiq_targets (name, settings, fingerprint, created_at) VALUES "
                                "(:name, :settings, :fingerprint, CURRENT_TIMESTAMP)"),
                           {"name": target.name, "settings": json.dumps(target.to_dict(), sort_keys=True),
                            "fingerprint": json.dumps(fingerprint(target), sort_keys=True)})
        connection.execute(text(
            "INSERT INTO elastiq_latency (target_id, arch_key, arch, backend, median_ms, iqr_ms, cv, n, attempts, "
            "flagged, passes, pass_cv, source, fingerprint, created_at) SELECT id, 'k', :arch, :on, 2.5, 0.1, "
            "0.01, 20, 1, false, 1, 0.0, 'measure', '{}', CURRENT_TIMESTAMP FROM elastiq_targets WHERE name = :name"),
            {"arch": Arch(16, (LayerArch(2, 32, "softmax", 32),)).to_json(), "on": target.measured_on,
             "name": target.name})
    engine.dispose()
    engine = connect(url, create=False)
    stored = stored_latencies(engine, target)
    assert list(stored) == ["k"] and stored["k"].measurement.latency_ms == 2.5 and stored["k"].source == "measure"
    with Session(engine) as session:
        assert session.scalar(select(SchemaInfo.version)) == SCHEMA_VERSION
    engine.dispose()


def test_a_dataset_with_too_few_unflagged_measurements_is_refused_with_one_line(trained, capsys):
    url = f"sqlite:///{trained / 'study.db'}"
    engine = connect(url)
    with Session(engine) as session, session.begin():
        rows = session.scalars(select(LatencyRow).where(LatencyRow.flagged.is_(False))).all()
        assert len(rows) >= 16, "the shared dataset flags nothing (see write_config)"
        flagged_now = [row.id for row in rows[9:]]  # 9 unflagged left
        for row in rows[9:]:
            row.flagged = True
    try:
        path = write_config(trained, "few-unflagged.yaml", study="few-unflagged", search={"evaluations": 4})
        capsys.readouterr()
        assert main(["search", "-c", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "has 9 unflagged latency measurements" in err, err
    finally:
        with Session(engine) as session, session.begin():
            for row_id in flagged_now:
                session.get(LatencyRow, row_id).flagged = False
        engine.dispose()
