"""The storage tests against a real PostgreSQL server (`.ci/run` starts one and sets
ELASTIQ_TEST_POSTGRES; without it these tests are skipped)."""

import os
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text

from orchestrator.cli import main
from orchestrator.config import load_study_config
from orchestrator.delivery.status import study_status
from orchestrator.execution.executors import LocalExecutor
from orchestrator.search.driver import SearchDriver
from tests.orchestrator.conftest import write_config

URL = os.environ.get("ELASTIQ_TEST_POSTGRES")
needs_ci_postgres = pytest.mark.skipif(not URL, reason="ELASTIQ_TEST_POSTGRES is not set (.ci/run sets it)")


@pytest.fixture(scope="module")
def measured(trained):
    path = write_config(trained, "pg-measure.yaml", study="pg-base", storage=URL)
    assert main(["measure", "-c", str(path), "--no-progress"]) == 0
    return trained


def _name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@needs_ci_postgres
def test_search_crash_resume_status_and_export_on_postgres(measured, tmp_path, monkeypatch):
    import orchestrator.search.driver as search_module

    name = _name("pg-crash")
    path = write_config(measured, f"{name}.yaml", study=name, storage=URL)
    original = search_module.SearchDriver._evaluate_and_record
    calls = {"n": 0}

    def crash_on_second_batch(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    with pytest.MonkeyPatch.context() as crash, pytest.raises(KeyboardInterrupt):
        crash.setattr(search_module.SearchDriver, "_evaluate_and_record", crash_on_second_batch)
        SearchDriver(load_study_config(path), progress=False).run()
    assert main(["resume", "--storage", URL, "--study", name, "--no-progress"]) == 0
    study = optuna.load_study(study_name=name, storage=URL)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 12 and not study.get_trials(states=(TrialState.RUNNING,))
    assert len({t.user_attrs["arch_key"] for t in complete}) == 12
    status = study_status(URL, name)
    assert status["evaluations"] == 12 and status["pareto_size"] >= 1
    assert main(["export", "--storage", URL, "--study", name, "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "manifest.json").exists()


class _DropConnections(LocalExecutor):
    """Evaluates like the local executor, but first has the server drop every other connection."""

    dropped = 0

    def evaluate(self, jobs):
        if self.dropped < 2:
            engine = create_engine(URL)
            with engine.connect() as connection:
                count = connection.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
            engine.dispose()
            assert count >= 1  # the driver's pooled connections were there, and are gone
            self.dropped += 1
        return super().evaluate(jobs)


@needs_ci_postgres
def test_connection_loss_mid_search_is_retried(measured):
    name = _name("pg-drop")
    path = write_config(measured, f"{name}.yaml", study=name, storage=URL)
    executor = _DropConnections()
    summary = SearchDriver(load_study_config(path), progress=False, executor=executor).run()
    assert executor.dropped == 2 and "12 of 12 evaluations" in summary
    study = optuna.load_study(study_name=name, storage=URL)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 12


@needs_ci_postgres
def test_bad_postgres_url_is_one_line_with_the_password_masked(capsys):
    from sqlalchemy.engine import make_url

    bad = make_url(URL).set(password="hunter2").render_as_string(hide_password=False)
    assert main(["status", "--storage", bad, "--study", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot connect" in err and "hunter2" not in err


@pytest.fixture(scope="module")
def private_postgres():
    from tests.orchestrator.private_postgres import PrivatePostgres, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it)")
    server = PrivatePostgres()
    yield server
    server.close()


# the n-th write of a search on the tiny space: inside Optuna's creation of a trial (which Optuna
# retries), inside elastiq's evaluation cache, inside Optuna's writing of a trial's attributes
@pytest.mark.slow
@pytest.mark.parametrize("write", [30, 62, 66])
def test_postgres_restarted_mid_transaction_completes_or_stops_with_one_line_and_resumes(
        trained, private_postgres, tmp_path, write):
    """The search pauses inside a database transaction (its n-th write: a point of its progress);
    the server is stopped and started under it; the search completes, or ends with one line and
    `elastiq resume` completes it; either way the study equals an uninterrupted run's."""
    import subprocess

    from bench.search.torture import elastiq_command
    from tests.conftest import ROOT

    url = private_postgres.url
    study_name = f"pg-restart-{write}"
    config = write_config(trained, f"{study_name}.yaml", study=study_name, storage=url)
    assert main(["measure", "-c", str(config), "--no-progress"]) == 0  # (once: later calls find it measured)
    pause = tmp_path / "pause"
    pause.mkdir()
    search = subprocess.Popen(elastiq_command("search", "-c", str(config), "--no-progress",
                                              kill_at=("write", write, str(pause))),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (pause / "paused").exists():  # progress, not seconds
        assert search.poll() is None, search.communicate()
        time.sleep(0.05)
    private_postgres.restart()
    (pause / "go").write_text("")
    _, err = search.communicate()
    errors = [line for line in err.splitlines() if "error:" in line]
    if search.returncode != 0:
        assert search.returncode == 1 and len(errors) == 1 and "the database failed" in errors[0], err
        assert "Traceback" not in err
        assert main(["resume", "--storage", url, "--study", study_name, "--no-progress"]) == 0
    study = optuna.load_study(study_name=study_name, storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 12 and not study.get_trials(states=(TrialState.RUNNING,))
    assert len({t.user_attrs["arch_key"] for t in complete}) == 12
    clean = write_config(trained, "pg-clean.yaml", study="pg-clean", storage=url)
    assert main(["search", "-c", str(clean), "--no-progress"]) == 0  # (once: later calls find it complete)
    uninterrupted = optuna.load_study(study_name="pg-clean", storage=url).get_trials(states=(TrialState.COMPLETE,))
    assert sorted((t.user_attrs["arch_key"], tuple(t.values)) for t in complete) == \
        sorted((t.user_attrs["arch_key"], tuple(t.values)) for t in uninterrupted)


@needs_ci_postgres
def test_a_schema_4_database_is_upgraded_on_postgres():
    from tests.orchestrator.test_search_latency import check_schema_4_upgrade

    schema = _name("v4").replace("-", "_")  # a namespace of its own: the upgrade starts from an empty one
    admin = create_engine(URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        check_schema_4_upgrade(f"{URL}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
