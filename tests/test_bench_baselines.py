"""The Debian package task and the truncation baselines' bookkeeping (bench/), without training anything."""

import sys

import pytest

from bench.examples import baselines, debian_packages, minilm_example, pipeline
from bench.latency import quantized_layers
from bench.search import quantized_search
from tests.conftest import ROOT


def _stanza(name, section, description):
    return f"Package: {name}\nSection: {section}\nDescription: {description}\n Long text: {section}.\n"


def _lists(per_section=120):
    stanzas = []
    for section in ("libs", "contrib/net", "games"):
        for i in range(per_section):
            stanzas.append(_stanza(f"{section}-{i}", section, f"{section.split('/')[-1]} tool number {i}"))
    stanzas.append(_stanza("twin-a", "libs", "shared description"))
    stanzas.append(_stanza("twin-b", "games", "shared description"))  # two sections: dropped
    stanzas.append("Package: nodesc\nSection: libs\n")
    return "\n".join(stanzas)


def test_the_package_task_is_seeded_deduplicated_and_split(tmp_path):
    lists = tmp_path / "dumpavail.txt"
    lists.write_text(_lists())
    args = ["--lists", str(lists), "--test", "60", "--val", "30", "--per-class", "100", "--seed", "3"]
    assert debian_packages.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert debian_packages.main([*args, "--out", str(tmp_path / "b")]) == 0
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.csv").read_bytes() == (tmp_path / "b" / f"{split}.csv").read_bytes()
    rows = [line.rsplit(",", 1) for line in (tmp_path / "a" / "train.csv").read_text().splitlines()[1:]]
    assert len(rows) == 300 - 90 and {section for _, section in rows} == {"libs", "net", "games"}
    assert not any("shared description" in text for text, _ in rows)
    other = tmp_path / "c"
    assert debian_packages.main([*args[:-1], "4", "--out", str(other)]) == 0  # another seed, another draw
    assert (other / "test.csv").read_bytes() != (tmp_path / "a" / "test.csv").read_bytes()


@pytest.mark.parametrize("lists, extra, message", [
    ("", [], "no package with a description"),
    (None, ["--sections", "libs"], "a task needs two classes"),
    (None, ["--sections", "libs,kernel"], "not in the package lists"),
    (None, ["--min-per-class", "500"], "a task needs two classes"),
    (None, ["--test", "400"], "leave no training rows"),
    (None, ["--classes", "0"], "--classes must be at least 1"),
])
def test_bad_package_lists_are_refused_in_one_line(tmp_path, capsys, lists, extra, message):
    path = tmp_path / "dumpavail.txt"
    path.write_text(_lists() if lists is None else lists)
    out = tmp_path / "out"
    assert debian_packages.main(["--lists", str(path), "--out", str(out), "--val", "10", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("elastiq: error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["dumpavail.txt"]


def test_missing_lists_and_an_existing_folder_are_refused(tmp_path, capsys):
    assert debian_packages.main(["--lists", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "package lists" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    (tmp_path / "l.txt").write_text(_lists())
    assert debian_packages.main(["--lists", str(tmp_path / "l.txt"), "--out", str(tmp_path / "o"), "--val", "5",
                                 "--test", "5"]) == 2
    assert "already exists" in capsys.readouterr().err and list((tmp_path / "o").iterdir()) == []


def test_baseline_depths_outside_the_model_are_refused():
    assert baselines.parse_depths(None, 6) == [1, 2, 3, 4, 5, 6]
    assert baselines.parse_depths("3,1,3", 6) == [1, 3]
    for bad in ("0", "7", "1,9", "two", ","):
        with pytest.raises(baselines.BaselineError, match="--depths"):
            baselines.parse_depths(bad, 6)


def test_baselines_refuse_a_study_without_a_pretrained_model_or_an_export(tmp_path, capsys):
    config = ROOT / "configs" / "digits.yaml"
    assert baselines.main(["--config", str(config), "--run", str(tmp_path), "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "supernet.pretrained is not set" in err and err.count("\n") == 1
    with pytest.raises(baselines.BaselineError, match="no export"):
        baselines.exported_models(tmp_path)
    assert not (tmp_path / "b.json").exists()


def test_the_comparison_counts_matches_hypervolume_and_speedup():
    full = {"name": "full fp32", "accuracy": 0.80, "latency_ms": 10.0}
    base = [full, {"name": "1 layer", "accuracy": 0.75, "latency_ms": 2.0},
            {"name": "3 layers", "accuracy": 0.795, "latency_ms": 5.0}]
    ours = [{"name": "a", "accuracy": 0.745, "latency_ms": 1.0}, {"name": "b", "accuracy": 0.80, "latency_ms": 2.5}]
    verdict = baselines.compare(base[1:] + [full], ours, full)
    matched = {r["baseline"]: r["matched_by"] for r in verdict["rows"]}
    assert matched == {"1 layer": "a", "3 layers": "b", "full fp32": "b"}
    # baselines: 0.75 from 2 to 5 ms, 0.795 from 5 to 10, 0.80 from 10 to 15, over the unit 10 ms
    assert verdict["hypervolume_baselines"] == pytest.approx((0.75 * 3 + 0.795 * 5 + 0.80 * 5) / 10)
    assert verdict["hypervolume_elastiq"] == pytest.approx((0.745 * 1.5 + 0.80 * 12.5) / 10)
    assert verdict["fastest_baseline_at_full_accuracy"] == "3 layers"
    assert verdict["speedup_at_full_accuracy"] == pytest.approx(5.0 / 2.5)


def test_the_pipeline_refuses_a_bad_config_before_writing(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.yaml").write_text("study: [unclosed\n")
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["pipeline.py", "--config", str(tmp_path / "bad.yaml"), "--out", str(out)])
    assert pipeline.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("elastiq: error: ") and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("text", ["study: [unclosed\n", "study: x\n"])
def test_the_depth_table_refuses_a_bad_config_before_writing(tmp_path, capsys, text):
    (tmp_path / "bad.yaml").write_text(text)
    results = sorted((ROOT / "bench" / "results").iterdir())
    assert minilm_example.main(["depths", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("elastiq: error: ") and err.count("\n") == 1
    assert sorted((ROOT / "bench" / "results").iterdir()) == results


@pytest.mark.parametrize("bench, argv, message", [
    (quantized_layers, ["--rounds", "0"], "--rounds 0: give at least 1"),
    (quantized_search, ["--steps", "0"], "--steps 0: give at least 1"),
    (quantized_search, ["--evaluations", "-1"], "--evaluations -1: give at least 1"),
])
def test_the_quantization_benchmarks_refuse_bad_arguments_in_one_line(bench, argv, message, tmp_path, capsys):
    out = tmp_path / "out.json"
    extra = ["--dir", str(tmp_path / "runs")] if bench is quantized_search else []
    assert bench.main([*argv, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"elastiq: error: {message}\n" and not out.exists() and not (tmp_path / "runs").exists()


def test_the_search_benchmark_keeps_an_existing_folder(tmp_path, capsys):
    kept = tmp_path / "runs"
    kept.mkdir()
    (kept / "mine.txt").write_text("keep me")
    assert quantized_search.main(["--dir", str(kept), "--out", str(tmp_path / "out.json")]) == 2
    assert "exists" in capsys.readouterr().err and (kept / "mine.txt").read_text() == "keep me"
