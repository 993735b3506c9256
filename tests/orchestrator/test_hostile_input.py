"""Hostile input, case by case: one clear line on stderr, exit status 2, and the
database byte-identical afterwards (nothing written, nothing lost)."""

import hashlib
import json
import shutil

import pytest
import yaml

from orchestrator.cli import main
from tests.conftest import CONFIGS
from tests.orchestrator.conftest import write_config


@pytest.fixture(scope="module")
def arena(trained, tmp_path_factory):
    """A copy of the trained supernet and of a database holding one finished study."""
    base = tmp_path_factory.mktemp("hostile")
    for name in ("tiny.pt", "tiny.pt.json"):
        shutil.copy(trained / name, base / name)
    shutil.copy(trained / "study.db", base / "study.db")
    good = write_config(base, "good.yaml", study="hostile", search={"evaluations": 4})
    assert main(["search", "-c", str(good), "--no-progress"]) == 0
    return base


def _file(base, name, text):
    path = base / name
    path.write_text(text)
    return path


def _laughs() -> str:
    """A YAML document of 7 lines whose aliases expand to 10 million values."""
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]" for p, n in zip("abcdef", "bcdefg", strict=True)]
    return "\n".join(lines) + "\n"


def _file_bytes(base, name, data):
    path = base / name
    path.write_bytes(data)
    return path


def _space(base, name, **changes):
    """A small valid space with `changes` applied (layer keys go into `layer`; None removes a key)."""
    layer = {"num_heads": [1], "mlp_dim": [16], "attention": ["softmax"], "bits": [32]}
    space = {"name": "x", "head_dim": 8, "embed_dim": [16], "depth": [1], "layer": layer}
    for key, value in changes.items():
        target = layer if key in layer or key == "mlp_ratio" else space
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return str(_file(base, name, yaml.safe_dump(space)))


def _config(base, name, **changes):
    changes["search"] = {"evaluations": 4, **changes.get("search", {})}
    return write_config(base, name, **{"study": "hostile", **changes})


def _raw_config(base, name, mutate):
    data = yaml.safe_load((base / "good.yaml").read_text())
    mutate(data)
    return _file(base, name, yaml.safe_dump(data))


def _cases(base):
    url = f"sqlite:///{base / 'study.db'}"
    space = str(CONFIGS / "spaces" / "tiny.yaml")
    truncated_ckpt = base / "truncated.pt"
    truncated_ckpt.write_bytes((base / "tiny.pt").read_bytes()[:1000])
    shutil.copy(base / "tiny.pt.json", base / "truncated.pt.json")
    record = json.loads((base / "tiny.pt.json").read_text())
    (base / "norecord.pt").write_bytes((base / "tiny.pt").read_bytes())
    shutil.copy(base / "tiny.pt", base / "garbled.pt")
    (base / "garbled.pt.json").write_text("{not json")
    shutil.copy(base / "tiny.pt", base / "otherspace.pt")
    (base / "otherspace.pt.json").write_text(json.dumps({**record, "space_hash": "0" * 64, "file": "otherspace.pt"}))
    truncated_db = base / "truncated.db"
    truncated_db.write_bytes((base / "study.db").read_bytes()[:4096])
    a_file = _file(base, "a-file", "x")
    busy = base / "busy"
    busy.mkdir(exist_ok=True)
    (busy / "keep.txt").write_text("keep")
    search = ["search", "--no-progress", "-c"]
    return [
        # spaces
        (["space", "check", str(_file(base, "s1.yaml", "name: [unclosed\n"))], "malformed YAML"),
        (["space", "check", _space(base, "s2.yaml", width=3)], "width"),
        (["space", "check", _space(base, "s3.yaml", embed_dim=["abc"])], "embed_dim"),
        (["space", "check", _space(base, "s4.yaml", attention=["flash"])], "flash"),
        (["space", "check", _space(base, "s4b.yaml", attention=["softmax", "conv4"])], "conv4 has an even kernel size"),
        (["space", "check", _space(base, "s4c.yaml", depth=[1, 2], per_layer=[{"layers": [1], "width": [8, 64]}])],
         "64 is outside the embedding's range [1, 16]"),
        (["space", "check", _space(base, "s4d.yaml", depth=[1, 2], per_layer=[{"layers": [0], "reduce": [1, 2]}])],
         "layer 0 reads the stem's tokens"),
        (["space", "check", _space(base, "s4e.yaml", depth=[1, 2], per_layer=[{"layers": [4], "reduce": [2]}])],
         "a stage boundary before layer 4 is beyond the depth"),
        (["space", "from-model", str(base), "-o", str(base / "fm.yaml"), "--reduce", "two"], "--reduce 'two'"),
        (["space", "check", _space(base, "s5.yaml", bits=[3])], "bits"),
        (["space", "check", str(base / "absent.yaml")], "absent.yaml"),
        (["space", "check", str(_file(base, "s6.yaml", ""))], "s6.yaml"),
        (["space", "sample", space, "-n", "0"], "-n"),
        (["space", "check", _space(base, "s7.yaml", embed_dim=[[16, 32]])], "not a number or a name"),
        (["space", "check", _space(base, "s8.yaml", num_heads=[{"a": 1}])], "num_heads"),
        (["space", "check", str(_file_bytes(base, "s9.yaml", "name: caf\xe9\n".encode("latin-1")))], "not UTF-8"),
        (["space", "check", _space(base, "s10.yaml", depth=[1, 2, 12_000_000])], "space.depth"),
        (["space", "check", _space(base, "s11.yaml", mlp_ratio=[1e300], mlp_dim=None)], "mlp_ratio"),
        (["space", "check", str(_file(base, "s12.yaml", _laughs()))], "expands to more than"),
        # study configs
        (["config", "show", "-c", str(_raw_config(base, "c1.yaml", lambda d: d.update(colour="red")))], "colour"),
        (["config", "show", "-c", str(_raw_config(base, "c2.yaml", lambda d: d.update(seed="x")))], "seed"),
        (["config", "show", "-c", str(base / "good.yaml"), "--set", "search.evaluations"], "KEY=VALUE"),
        (["config", "show", "-c", str(base / "good.yaml"), "--set", "search.evaluations=[1"], "not valid YAML"),
        (["config", "show", "-c", str(base / "good.yaml"), "--set", "search.evaluations=-3"], "evaluations"),
        (["config", "show", "-c", str(_raw_config(base, "c3.yaml", lambda d: d.update(constraints=["latency_ms << 3"])))],
         "constraint"),
        (["config", "show", "-c", str(_raw_config(base, "c4.yaml", lambda d: d.update(objectives={"speed": "maximize"})))],
         "speed"),
        (["config", "show", "-c", str(_raw_config(base, "c5.yaml", lambda d: d.update(objectives={"accuracy": "up"})))],
         "objectives.accuracy"),
        (["config", "show", "-c", str(_raw_config(base, "c6.yaml", lambda d: d.update(space="nowhere.yaml")))],
         "nowhere.yaml"),
        (["config", "show", "-c", str(_file(base, "c7.yaml", "- a\n- list\n"))], "c7.yaml"),
        (["config", "show", "-c", str(_file_bytes(base, "c8.yaml", b"study: \xff\xfe\n"))], "not UTF-8"),
        (["config", "show", "-c", str(_raw_config(base, "c9.yaml", lambda d: d.update(seed=2**40)))], "seed"),
        (["config", "show", "-c", str(_raw_config(base, "c10.yaml", lambda d: d.update(seed=-1)))], "seed"),
        (["config", "show", "-c", str(_raw_config(base, "c11.yaml", lambda d: d.update(study="x" * 300)))], "study"),
        (["config", "show", "-c", str(_raw_config(base, "c12.yaml", lambda d: d["target"].update(threads=10**30)))],
         "target.threads"),
        (["config", "show", "-c", str(_raw_config(base, "c13.yaml", lambda d: d.update(constraints=["params <= 1e999"])))],
         "finite"),
        (["train-supernet", "--no-progress", "-c", str(_config(base, "c14.yaml", supernet={
            "checkpoint": str(base / "c14.pt"), "distill_weight": -0.5}))], "supernet.distill_weight"),
        (["train-supernet", "--no-progress", "-c", str(_config(base, "c15.yaml", supernet={
            "checkpoint": str(base / "c15.pt"), "steps": 30, "distill_start": 31}))], "beyond the budget"),
        (["train-supernet", "--no-progress", "-c", str(_config(base, "c16.yaml", supernet={
            "checkpoint": str(base / "c16.pt"), "random_weight": -0.5}))], "supernet.random_weight"),
        # checkpoints
        (search + [str(_config(base, "k1.yaml", supernet={"checkpoint": str(base / "missing.pt")}))], "missing.pt"),
        (search + [str(_config(base, "k2.yaml", supernet={"checkpoint": str(truncated_ckpt)}))], "sha256"),
        (search + [str(_config(base, "k3.yaml", supernet={"checkpoint": str(base / "norecord.pt")}))], "norecord.pt"),
        (search + [str(_config(base, "k4.yaml", supernet={"checkpoint": str(base / "garbled.pt")}))], "garbled.pt"),
        (search + [str(_config(base, "k5.yaml", supernet={"checkpoint": str(base / "otherspace.pt")}))], "space"),
        # tasks and targets
        (search + [str(_config(base, "t1.yaml", task={"name": "imagenet"}))], "imagenet"),
        (search + [str(_config(base, "t2.yaml", task={"name": "digits", "options": {"patch": 3}}))], "patch"),
        (search + [str(_config(base, "t3.yaml", task={"name": "nosuchmodule:make"}))], "nosuchmodule"),
        (search + [str(_config(base, "t6.yaml", task={"name": "os:getcwd"}))], "seed"),
        (search + [str(_config(base, "t7.yaml", task={"name": "tests.orchestrator.faults:digits_dying_once",
                                                      "options": {"marker": 3}}))], "failed with options"),
        (search + [str(_config(base, "t8.yaml", task={"name": "listops", "options": {"train_size": "x"}}))],
         "train_size"),
        (search + [str(_config(base, "t9.yaml", task={"name": "mnist1d", "options": {"num_samples": 10**12}}))],
         "num_samples"),
        (["train-supernet", "--no-progress", "-c", str(_config(base, "m1.yaml", study="huge", space=_space(
            base, "huge.yaml", embed_dim=[16, 32], mlp_dim=[16, 3_200_000_000]), supernet={
            "checkpoint": str(base / "huge.pt")}))], "GiB of memory"),
        (["measure", "--no-progress", "-c", str(_config(base, "m2.yaml", study="huge", target={"name": "huge"},
                                                        space=_space(base, "huge.yaml", embed_dim=[16, 32],
                                                                     mlp_dim=[16, 3_200_000_000]),
                                                        supernet={"checkpoint": str(base / "huge.pt")}))],
         "GiB of memory"),
        (["train-supernet", "--no-progress", "-c", str(_config(base, "m3.yaml", study="kernel", space=_space(
            base, "kernel.yaml", attention=["softmax", "conv33"]), supernet={"checkpoint": str(base / "kernel.pt")}))],
         "conv33 has a kernel of 33 tokens, longer than the task's sequence of 16"),
        (["measure", "--no-progress", "-c", str(_config(base, "m4.yaml", study="kernel", target={"name": "kernel"},
                                                        space=_space(base, "kernel.yaml", attention=["conv33"]),
                                                        supernet={"checkpoint": str(base / "kernel.pt")}))],
         "longer than the task's sequence"),
        (["train-supernet", "--no-progress", "-c", str(_config(base, "r1.yaml", study="grid", space=_space(
            base, "grid.yaml", depth=[1, 2], per_layer=[{"layers": [1], "reduce": [1, 3]}]), supernet={
            "checkpoint": str(base / "grid.pt")}))], "a reduction by 3x3 does not divide the 4x4 patch grid"),
        (["measure", "--no-progress", "-c", str(_config(base, "r2.yaml", study="grid", target={"name": "grid"},
                                                        space=_space(base, "grid8.yaml", depth=[1, 2], per_layer=[
                                                            {"layers": [1], "reduce": [8]}]),
                                                        supernet={"checkpoint": str(base / "grid.pt")}))],
         "it would leave fewer than one token"),
        (["train-supernet", "--no-progress", "-c", str(_config(base, "r3.yaml", study="seq", task={
            "name": "mnist1d", "options": {"num_samples": 50}}, space=_space(base, "seq.yaml", depth=[1, 2], per_layer=[
                {"layers": [1], "reduce": [1, 16]}]), supernet={"checkpoint": str(base / "seq.pt")}))],
         "a reduction by 16 of a sequence of 10 tokens would leave fewer than one token"),
        (["measure", "--no-progress", "-c", str(_config(base, "t4.yaml", target={"name": "long", "seq_len": 999}))],
         "seq_len"),
        (search + [str(_config(base, "t5.yaml", target={"name": "cpu-b1", "device": "tpu"}))], "target.device"),
        # storage
        (search + [str(_config(base, "d1.yaml", storage="notaurl"))], "storage"),
        (["status", "--storage", "mysql+nodriver://user:secretpw@host/db", "--study", "x"], "storage"),
        (["status", "--storage", f"sqlite:///{truncated_db}", "--study", "hostile"], "storage"),
        (["status", "--storage", f"sqlite:///{base}", "--study", "hostile"], "storage"),
        (search + [str(_config(base, "d2.yaml", search={"strategy": "random", "evaluations": 4}))], "search.strategy"),
        (["resume", "--storage", url, "--study", "nope"], "no study named 'nope'"),
        (["status", "--storage", url, "--study", "nope"], "no study named 'nope'"),
        # export and report
        (["export", "--storage", url, "--study", "hostile", "--out", str(base / "x1"), "--trial", "777"],
         "no completed trial 777"),
        (["export", "--storage", url, "--study", "nope", "--out", str(base / "x2")], "no study named 'nope'"),
        (["export", "--storage", url, "--study", "hostile", "--out", str(a_file / "sub")], "does not exist"),
        (["export", "--storage", url, "--study", "hostile", "--out", str(busy)], "not empty"),
        (["export", "--storage", url, "--study", "hostile", "--out", str(base / "x3"), "--trial", "0",
          "--max-latency-ms", "1"], "not both"),
        (["report", "--storage", url, "--study", "nope", "--out", str(base / "x4")], "no study named 'nope'"),
    ]


def test_hostile_inputs_exit_2_with_one_line_and_change_nothing(arena, capsys):
    db = arena / "study.db"
    cases = _cases(arena)
    assert len(cases) >= 30
    files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (db, arena / "truncated.db", arena / "tiny.pt")}
    listing = sorted(p.name for p in arena.iterdir())
    wrong = []
    for args, expected in cases:
        capsys.readouterr()
        status = main(args)
        out = capsys.readouterr()
        err = out.err.strip().splitlines()
        if status != 2 or len(err) != 1 or not err[0].startswith("elastiq: error:") or expected not in err[0] \
                or "secretpw" in out.err + out.out:
            wrong.append((args[:2], status, expected, out.err[-300:]))
    assert not wrong, "\n".join(map(str, wrong))
    for path, digest in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
    assert sorted(p.name for p in arena.iterdir()) == listing  # no output directory, no stray file
    assert [p.name for p in (arena / "busy").iterdir()] == ["keep.txt"]


def test_a_diverging_learning_rate_fails_cleanly_and_stays_resumable(arena, capsys):
    checkpoint = arena / "nan.pt"
    bad = write_config(arena, "nan.yaml", study="nan", supernet={
        "checkpoint": str(checkpoint), "lr": 10, "weight_decay": 1.0, "steps": 30, "checkpoint_every": 5})
    assert main(["train-supernet", "-c", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("elastiq: error: training diverged") and "Traceback" not in err
    if checkpoint.exists():  # a checkpoint written before the divergence is whole, finite and loads
        import torch

        from orchestrator.config import load_study_config
        from supernet.tasks import load_task
        from supernet.training.train import evaluate, load_supernet

        config = load_study_config(bad)
        task = load_task("digits", 3)
        model = load_supernet(checkpoint, config.space, task)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert 0.0 <= evaluate(model, config.space.largest(), task) <= 1.0
    capsys.readouterr()
    assert main(["train-supernet", "-c", str(bad), "--no-progress"]) == 2  # the same run fails the same way
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("elastiq: error: training diverged")


def test_a_refused_checkpoint_is_one_line_in_a_real_process(arena, tmp_path):
    """torch's own warnings about a refused file do not follow the error line (in a subprocess:
    pytest would capture the warnings, a user's terminal does not)."""
    import pickle
    import subprocess
    import sys

    from supernet.checkpoint import record_path, sha256_file
    from tests.conftest import ROOT

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "code-ran"), "w"))

    checkpoint = tmp_path / "evil.pt"
    checkpoint.write_bytes(pickle.dumps({"model": Evil()}, protocol=4))
    record = json.loads((arena / "tiny.pt.json").read_text())
    record_path(checkpoint).write_text(json.dumps({**record, "sha256": sha256_file(checkpoint), "file": "evil.pt"}))
    config = _config(tmp_path, "evil.yaml", supernet={"checkpoint": str(checkpoint)})
    run = subprocess.run([sys.executable, "-c", "import sys; from orchestrator.cli import main; sys.exit(main())",
                          "search", "--no-progress", "-c", str(config)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("elastiq: error: checkpoint") and "cannot be loaded" in run.stderr
    assert not (tmp_path / "code-ran").exists()
