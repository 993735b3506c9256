import hashlib

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.cli import main
from orchestrator.storage.schema import LatencyRow, connect, masked
from tests.conftest import CONFIGS


def write_config(tmp_path, filename="study.yaml", **changes):
    config = {"study": "tiny", "storage": f"sqlite:///{tmp_path / 'study.db'}",
              "space": str(CONFIGS / "spaces" / "tiny.yaml"), "task": {"name": "digits"},
              "supernet": {"checkpoint": str(tmp_path / "none.pt")},
              "target": {"name": "cpu-b1", "threads": 1, "batch_size": 1},
              "measure": {"archs": 4, "passes": 5}}
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(config))
    return path


def count_rows(tmp_path) -> int:
    engine = connect(f"sqlite:///{tmp_path / 'study.db'}", create=False)
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(LatencyRow))


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flagged_rows(tmp_path) -> int:
    engine = connect(f"sqlite:///{tmp_path / 'study.db'}", create=False)
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(LatencyRow).where(LatencyRow.flagged.is_(True)))


def test_measure_stores_and_continues(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["measure", "-c", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 archs measured now (0 flagged before), 4 in the dataset" in out and count_rows(tmp_path) == 4
    assert "its fastest call" in out and "latency predictor for cpu-b1: not fitted (" in out and "10 needed" in out
    flagged = flagged_rows(tmp_path)  # a busy machine flags some: those, and only those, are measured again
    assert main(["measure", "-c", str(path), "--no-progress"]) == 0
    assert f"{flagged} archs measured now ({flagged} flagged before), 4 in the dataset" in capsys.readouterr().out
    flagged = flagged_rows(tmp_path)
    assert main(["measure", "-c", str(path), "--no-progress", "-n", "6"]) == 0
    assert f"{2 + flagged} archs measured now ({flagged} flagged before), 6 in the dataset" in \
        capsys.readouterr().out
    assert count_rows(tmp_path) == 6


def test_the_gap_between_halves_that_flags_a_measurement_is_the_configs(tmp_path, capsys):
    tight = write_config(tmp_path, "tight.yaml", measure={"max_gap": 1e-9})
    assert main(["measure", "-c", str(tight), "--no-progress"]) == 0
    engine = connect(f"sqlite:///{tmp_path / 'study.db'}", create=False)
    with Session(engine) as session:
        rows = session.scalars(select(LatencyRow)).all()
        assert [r.flagged for r in rows] == [r.gap > 1e-9 for r in rows] and any(r.flagged for r in rows)
        assert all(r.attempts == 3 for r in rows if r.flagged)  # repeated before it was flagged
    engine.dispose()
    capsys.readouterr()
    tolerant = write_config(tmp_path, "tolerant.yaml", measure={"max_gap": 10})
    assert main(["measure", "-c", str(tolerant), "--no-progress"]) == 0  # the flagged ones again, kept now
    assert flagged_rows(tmp_path) == 0 and count_rows(tmp_path) == 4
    assert main(["measure", "-c", str(tolerant), "--no-progress"]) == 0
    assert "0 archs measured now (0 flagged before), 4 in the dataset" in capsys.readouterr().out.splitlines()[-2]


def test_settings_of_the_median_protocol_are_refused_with_what_replaced_them(tmp_path, capsys):
    old = write_config(tmp_path, "old.yaml", measure={"max_pass_cv": 0.25})
    assert main(["measure", "-c", str(old), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "max_pass_cv is no longer a setting" in err and "max_gap" in err and err.count("\n") == 1, err
    assert not (tmp_path / "study.db").exists()


def test_measure_refuses_to_mix_settings_or_machines(tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path)
    assert main(["measure", "-c", str(path), "--no-progress", "-n", "1"]) == 0
    before = digest(tmp_path / "study.db")
    other = write_config(tmp_path, "other.yaml", target={"batch_size": 32})
    capsys.readouterr()
    assert main(["measure", "-c", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "target 'cpu-b1' is stored with other settings" in err and err.count("\n") == 1

    import orchestrator.storage.latency as latency

    monkeypatch.setattr(latency, "fingerprint", lambda target: {"cpu": "Another CPU", "cores": 64})
    assert main(["measure", "-c", str(path), "--no-progress"]) == 2
    assert "measured on another machine (cpu: " in capsys.readouterr().err
    assert digest(tmp_path / "study.db") == before


def test_bad_storage_urls_exit_2_and_create_nothing(tmp_path, capsys):
    for url, message in [("nosuchdb://x", "not a usable database URL"),
                         (f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", "cannot connect"),
                         ("postgresql+psycopg://elastiq:s3cret@127.0.0.1:1/db", "cannot connect")]:
        path = write_config(tmp_path, storage=url)
        assert main(["measure", "-c", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and "s3cret" not in err and err.count("\n") == 1
    assert not (tmp_path / "missing-dir").exists()


def test_password_is_masked():
    assert masked("postgresql+psycopg://user:hunter2@host/db") == "postgresql+psycopg://user:***@host/db"
    assert "hunter2" not in masked("postgresql://u:hunter2@h:5432/d?sslmode=require")
