"""The whole chain on a tiny pretrained BERT and the user's files: space from the model, evaluate,
train-supernet (teacher fine-tuned, then frozen), measure, search, export with labels and tokenizer;
and the user-data tasks' bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from orchestrator.cli import main
from orchestrator.delivery.export import verify_export
from supernet.tasks import TaskError, load_task
from tests.supernet.pretrained_models import WORDS, save_text_model, save_vit_model


def _sentences(rng, count):
    """Texts labelled by whether they hold "good" or "bad" more often: learnable from the words."""
    rows = []
    for _ in range(count):
        words = list(rng.choice([w for w in WORDS if w not in ("good", "bad")], size=rng.integers(3, 9)))
        label = "pos" if rng.random() < 0.5 else "neg"
        words.insert(int(rng.integers(len(words) + 1)), "good" if label == "pos" else "bad")
        rows.append({"sentence": " ".join(words), "sentiment": label})
    return rows


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("text-study")
    rng = np.random.default_rng(0)
    save_text_model(base / "model", "bert", with_head=False)
    import pandas as pd

    pd.DataFrame(_sentences(rng, 240)).to_csv(base / "train.csv", index=False)
    with open(base / "val.jsonl", "w") as f:
        for row in _sentences(rng, 60):
            f.write(json.dumps(row) + "\n")
    pd.DataFrame(_sentences(rng, 60)).to_parquet(base / "test.parquet")
    return base


def _config(base, name="text.yaml", **changes):
    config = {"study": "text", "storage": f"sqlite:///{base / 'study.db'}", "seed": 0,
              "space": "space.yaml",
              "task": {"name": "text", "options": {"train": "train.csv", "validation": "val.jsonl",
                                                   "test": "test.parquet", "text": "sentence", "label": "sentiment",
                                                   "seq_len": 16}},
              "supernet": {"pretrained": "model", "steps": 24, "batch_size": 16, "warmup_steps": 2, "lr": 2e-3,
                           "sandwich_random": 1, "teacher": "pretrained", "teacher_steps": 8,
                           "calibration_samples": 32, "checkpoint": str(base / "text.pt")},
              "target": {"name": "cpu-text"}, "measure": {"archs": 12, "passes": 3, "max_gap": 10},
              "search": {"strategy": "random", "evaluations": 6, "batch_size": 3, "executor": "local"},
              # 24 steps on random sentences: the chain, not the accuracy
              "export": {"accuracy_floor": "none", "front_tolerance": 0.0}}
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    (base / name).write_text(yaml.safe_dump(config))
    return base / name


def test_the_whole_chain_on_a_pretrained_encoder(user_files, tmp_path, capsys):
    base = user_files
    assert main(["space", "from-model", str(base / "model"), "-o", str(base / "space.yaml")]) == 0
    space = yaml.safe_load((base / "space.yaml").read_text())
    assert space["embed_dim"] == [32] and space["head_dim"] == 8 and max(space["layer"]["num_heads"]) == 4
    # every depth down to one layer; the kernel the model learned, unless more are asked for
    assert space["depth"] == [1, 2] and space["layer"]["mixer"] == ["softmax"]
    assert space["depth_heads"] is True  # a shallow subnet reads its last layer with a head of its own
    assert main(["space", "from-model", str(base / "model"), "-o", str(base / "space.yaml")]) == 2  # not overwritten
    assert main(["space", "from-model", str(base / "model"), "-o", str(base / "all.yaml"),
                 "--attention", "softmax,local,linear"]) == 0
    assert yaml.safe_load((base / "all.yaml").read_text())["layer"]["mixer"] == ["softmax", "local", "linear"]
    assert main(["space", "from-model", str(base / "model"), "-o", str(base / "staged.yaml"), "--reduce", "1:1,2"]) == 0
    assert yaml.safe_load((base / "staged.yaml").read_text())["per_layer"] == [{"layers": [1], "reduce": [1, 2]}]
    capsys.readouterr()
    assert main(["space", "from-model", str(base / "model"), "-o", str(base / "bad.yaml"), "--reduce", "2:2"]) == 2
    assert "beyond the depth" in capsys.readouterr().err and not (base / "bad.yaml").exists()
    for bad in ("linear,softmax", "softmax,flash", ""):
        assert main(["space", "from-model", str(base / "model"), "-o", str(base / "bad.yaml"), "--attention", bad]) == 2
        err = capsys.readouterr().err
        assert "--mixers" in err and err.count("\n") == 1 and not (base / "bad.yaml").exists()
    config = _config(base)
    capsys.readouterr()
    assert main(["evaluate", "-c", str(config), "--arch", "largest"]) == 0
    assert "not trained" in capsys.readouterr().out  # straight from the pretrained model
    assert main(["train-supernet", "-c", str(config), "--no-progress"]) == 0
    record = json.loads((base / "text.pt.json").read_text())
    assert record["labels"] == ["neg", "pos"] and record["task_spec"]["style"]["norm_first"] is False
    capsys.readouterr()
    assert main(["evaluate", "-c", str(config), "--arch", "largest", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "checkpoint" in out
    assert 0.0 <= float(out.split()[2]) <= 1.0 and record["steps"] == 24
    assert main(["measure", "-c", str(config), "--no-progress"]) == 0
    assert main(["search", "-c", str(config), "--no-progress"]) == 0
    url = f"sqlite:///{base / 'study.db'}"
    out_dir = tmp_path / "models"
    assert main(["export", "--storage", url, "--study", "text", "--out", str(out_dir)]) == 0
    manifest = verify_export(out_dir)
    folder = out_dir / manifest["models"][0]["dir"]
    arch = json.loads((folder / "arch.json").read_text())
    assert arch["labels"] == ["neg", "pos"] and arch["input_shape"] == [16, 2]
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    # the shipped tokenizer and artifact classify a new text, in a fresh process, with nothing of elastiq
    code = ("import json, numpy, onnxruntime; from transformers import AutoTokenizer; "
            "t = AutoTokenizer.from_pretrained('.'); labels = json.load(open('arch.json'))['labels']; "
            "e = t(['the big cat was good', 'a slow dog was bad'], padding='max_length', max_length=16, "
            "return_token_type_ids=True); x = numpy.stack([e['input_ids'], e['token_type_ids']], -1); "
            "s = onnxruntime.InferenceSession('model.onnx'); "
            "print(*[labels[i] for i in s.run(None, {'input': x})[0].argmax(-1)])")
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True)
    assert len(run.stdout.split()) == 2 and set(run.stdout.split()) <= {"neg", "pos"}
    # what a user ships without elastiq, beside the export: trained first (no export needed), then compared
    from bench.examples import baselines

    common = ["--config", str(config), "--run", str(tmp_path), "--depths", "1", "--steps", "2",
              "--cache", str(tmp_path / "baselines")]
    assert baselines.main([*common, "--train-only", "--run", str(tmp_path / "no-export")]) == 0
    assert len(list((tmp_path / "baselines").glob("*.int8.onnx"))) == 3  # 1 layer, 1 layer distilled, 2 layers
    assert baselines.main([*common, "--rounds", "1", "--repeats", "2", "--out", str(tmp_path / "b.json")]) == 0
    verdict = json.loads((tmp_path / "b.json").read_text())["verdict"]
    assert verdict["baselines"] == 7 and len(verdict["rows"]) == 7 and 0 <= verdict["matched"] <= 7
    assert "trained in" not in capsys.readouterr().out.split("baselines of")[-1]  # the second run trained nothing
    # a resumed training with another pretrained model's layout is refused
    other = save_text_model(tmp_path / "other", "roberta", with_head=False)
    assert main(["train-supernet", "-c", str(config), "--set", f"supernet.pretrained={other}",
                 "--no-progress"]) == 2


def _bad(base, capsys, **changes):
    config = _config(base, "bad.yaml", **changes)
    capsys.readouterr()
    code = main(["train-supernet", "-c", str(config), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("elastiq: error: ") and err.count("\n") == 1, err
    assert not (base / "bad.pt").exists()
    return err


def test_bad_user_data_is_refused_with_one_line(user_files, tmp_path, capsys):
    base = user_files
    if not (base / "space.yaml").exists():
        main(["space", "from-model", str(base / "model"), "-o", str(base / "space.yaml")])
    checkpoint = {"checkpoint": str(base / "bad.pt")}
    assert "no column(s) ['review', 'label']" in _bad(base, capsys, supernet=checkpoint,
                                             task={"name": "text", "options": {"train": "train.csv", "text": "review",
                                                                                  "seq_len": 16}})
    (base / "odd.csv").write_text("sentence,sentiment\nthe cat,pos\nthe dog,neutral\n")
    assert "label(s) ['neutral']" in _bad(base, capsys, supernet=checkpoint, task={"name": "text", "options": {
        "train": "train.csv", "validation": "odd.csv", "text": "sentence", "label": "sentiment", "seq_len": 16}})
    assert "exceeds the 40 positions" in _bad(base, capsys, supernet=checkpoint, task={"name": "text", "options": {
        "train": "train.csv", "text": "sentence", "label": "sentiment", "seq_len": 64}})
    assert "no such file" in _bad(base, capsys, supernet=checkpoint, task={"name": "text", "options": {
        "train": "missing.csv", "text": "sentence", "label": "sentiment", "seq_len": 16}})
    assert "needs task text, image-folder or causal-lm" in _bad(base, capsys, supernet=checkpoint, task={"name": "digits"})
    assert "no such directory" in _bad(base, capsys, supernet={**checkpoint, "pretrained": "nowhere"})
    (base / "bad.csv").write_bytes(b"\xff\xfe\x00garbage\n\x00\x00")
    assert "error" in _bad(base, capsys, supernet=checkpoint, task={"name": "text", "options": {
        "train": "bad.csv", "text": "sentence", "label": "sentiment", "seq_len": 16}})


def test_one_file_is_split_with_a_seed(user_files):
    options = {"train": str(user_files / "train.csv"), "text": "sentence", "label": "sentiment", "seq_len": 16,
               "model": str(user_files / "model")}
    first, again = load_task("text", 3, options), load_task("text", 3, options)
    sizes = {split: len(first.split(split)[1]) for split in ("train", "val", "test")}
    assert sizes == {"train": 192, "val": 24, "test": 24}
    assert all(first.split(s)[0].equal(again.split(s)[0]) for s in sizes)
    larger = load_task("text", 3, {**options, "held_out": 0.2})
    assert {split: len(larger.split(split)[1]) for split in sizes} == {"train": 144, "val": 48, "test": 48}
    with pytest.raises(TaskError, match="held_out must be a fraction"):
        load_task("text", 3, {**options, "held_out": 0.5})


def test_an_empty_label_is_refused_naming_the_file_and_row(user_files):
    """An empty label cell would be a class of its own, named None (and 1 would become 1.0 beside it)."""
    options = {"text": "sentence", "label": "sentiment", "seq_len": 16, "model": str(user_files / "model")}
    cases = {"empty-label.csv": ("sentence,sentiment\nthe cat,1\nthe dog,\nthe bird,2\n", "row 2 (line 3"),
             "blank-label.csv": ("sentence,sentiment\nthe cat,pos\nthe dog,pos\nthe bird,  \n", "row 3 (line 4"),
             "null-label.jsonl": ('{"sentence": "a", "sentiment": "pos"}\n{"sentence": "b", "sentiment": null}\n',
                                  "record 2"),
             "empty-text.csv": ("sentence,sentiment\nthe cat,pos\n,neg\n", "not text at row 2")}
    for name, (content, where) in cases.items():
        (user_files / name).write_text(content)
        with pytest.raises(TaskError) as refused:
            load_task("text", 0, {**options, "train": str(user_files / name)})
        message = str(refused.value)
        assert name in message and where in message and "\n" not in message, message


def _images(folder, classes, count, rng):
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = (rng.random((20, 20, 3)) * 255).astype("uint8")
            pixels[..., classes.index(name)] = 255  # each class tinted by one channel
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_image_folder_task_prepares_patches_for_the_vit(tmp_path):
    rng = np.random.default_rng(0)
    model = save_vit_model(tmp_path / "vit")
    _images(tmp_path / "train", ["red", "green", "blue"], 6, rng)
    task = load_task("image-folder", 0, {"train": str(tmp_path / "train"), "model": str(model)})
    x, y = task.split("train")
    assert x.shape[1:] == (16, 48) and task.labels == ["blue", "green", "red"]
    assert task.spec.style.cls_token and task.spec.input_dim == 48
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(TaskError, match="no images"):
        load_task("image-folder", 0, {"train": str(tmp_path / "empty"), "model": str(model)})
    with pytest.raises(TaskError, match="not an image model"):
        load_task("image-folder", 0, {"train": str(tmp_path / "train"),
                                      "model": str(save_text_model(tmp_path / "bert"))})
