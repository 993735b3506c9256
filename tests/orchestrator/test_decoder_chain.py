"""A decoder LM through the CLI as far as it goes today: `space from-model` writes an LM space, `train-supernet`
imports it (blocks in importance order) and distils from it on the user's plain text, `evaluate` reports
perplexity, `measure` times one generated token at the target's context, `search` trades perplexity against
it; fine-tuning and export refuse the study in one line; and the bad input on the way."""

import json

import yaml

from orchestrator.cli import main
from tests.supernet.pretrained_models import save_decoder_model


def test_a_decoder_lm_from_the_model_folder_to_its_perplexity(tmp_path, capsys):
    save_decoder_model(tmp_path / "model", "llama", layers=3)
    (tmp_path / "corpus.txt").write_text("\n".join(f"{i} the cat sat on the mat; the dog ran" for i in range(60)))
    model, space = str(tmp_path / "model"), str(tmp_path / "space.yaml")
    capsys.readouterr()  # what saving the model printed
    for bad, message in ((["--mixers", "softmax"], "give causal (the model's own) first"),
                         (["--mixers", "sliding,causal"], "give causal (the model's own) first"),
                         (["--reduce", "1:1,2"], "a decoder LM's tokens are not merged"),
                         (["--mixers", "causal,linear"], "linear lets a token see later ones")):
        assert main(["space", "from-model", model, "-o", space, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["space", "from-model", model, "-o", space, "--mixers", "causal,sliding,none"]) == 0
    written = yaml.safe_load((tmp_path / "space.yaml").read_text())
    assert written["depth"] == [1, 2, 3] and written["layer"]["mixer"] == ["causal", "sliding", "none"]
    # narrowed to two block structures (each head count, mixer and bit width is a graph of its own to export)
    written["layer"].update(num_heads=[4], mixer=["causal", "none"], bits=[32])
    (tmp_path / "narrow.yaml").write_text(yaml.safe_dump(written))
    config = {"study": "lm", "storage": f"sqlite:///{tmp_path / 'study.db'}", "seed": 0, "space": "narrow.yaml",
              "task": {"name": "causal-lm", "options": {"train": "corpus.txt", "seq_len": 16}},
              "supernet": {"pretrained": "model", "steps": 6, "batch_size": 8, "warmup_steps": 1,
                           "sandwich_random": 1, "teacher": "pretrained", "teacher_steps": 2,
                           "calibration_samples": 8, "checkpoint": str(tmp_path / "lm.pt")},
              "target": {"name": "decode", "context": 48},
              "measure": {"archs": 10, "passes": 3, "max_gap": 10},
              "search": {"strategy": "random", "evaluations": 4, "batch_size": 2, "executor": "local"},
              "constraints": ["memory_mb <= 100"]}  # objectives: perplexity and latency_ms, the default
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["train-supernet", "-c", str(tmp_path / "lm.yaml"), "--no-progress"]) == 0
    assert "val perplexity: largest" in capsys.readouterr().out
    record = json.loads((tmp_path / "lm.pt.json").read_text())
    assert record["task_spec"]["style"]["causal"] is True and record["task_spec"]["style"]["heads_per_kv"] == 2
    assert main(["evaluate", "-c", str(tmp_path / "lm.yaml"), "--arch", "smallest", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test perplexity") and 1.0 < float(out.split()[2]) < 1000
    assert main(["measure", "-c", str(tmp_path / "lm.yaml"), "--no-progress"]) == 0
    assert main(["search", "-c", str(tmp_path / "lm.yaml"), "--no-progress"]) == 0
    url = f"sqlite:///{tmp_path / 'study.db'}"
    capsys.readouterr()
    assert main(["status", "--storage", url, "--study", "lm", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["objectives"] == {"perplexity": "minimize", "latency_ms": "minimize"}
    assert status["evaluations"] == 4 and 1.0 < status["best"]["perplexity"]["value"] < 1000
    for command in (["finetune"], ["export", "--out", str(tmp_path / "models")]):
        assert main([*command, "--storage", url, "--study", "lm"]) == 2
        err = capsys.readouterr().err
        assert "causal-lm study" in err and err.count("\n") == 1
    assert not (tmp_path / "models").exists()
    fresh = {**config, "storage": f"sqlite:///{tmp_path / 'fresh.db'}", "target": {"name": "far", "context": 65}}
    (tmp_path / "far.yaml").write_text(yaml.safe_dump(fresh))
    for command in ("measure", "search"):  # a context past the model's positions: nothing written
        assert main([command, "-c", str(tmp_path / "far.yaml"), "--no-progress"]) == 2
        assert "context of 65 tokens is past the 64 positions" in capsys.readouterr().err
    assert not (tmp_path / "fresh.db").exists()
    config["task"]["options"]["seq_len"] = 100  # past the model's 64 positions
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", "-c", str(tmp_path / "long.yaml"), "--arch", "largest"]) == 2
    assert "exceeds the 64 positions" in capsys.readouterr().err


def test_a_model_of_an_unsupported_family_is_refused_in_one_line(tmp_path, capsys):
    folder = save_decoder_model(tmp_path / "model", "llama")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    capsys.readouterr()
    assert main(["space", "from-model", str(folder), "-o", str(tmp_path / "space.yaml")]) == 2
    err = capsys.readouterr().err
    assert "model type 'mistral' is not supported" in err and "gpt2" in err and err.count("\n") == 1
    assert not (tmp_path / "space.yaml").exists()
