"""The CLI's space and config commands, good and bad input."""

import json
import subprocess
import sys

import pytest

from orchestrator.cli import main
from search_space import Arch, SearchSpace
from tests.conftest import CONFIGS, ROOT

DIGITS = str(CONFIGS / "spaces" / "digits.yaml")


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_space_check_prints_cardinality(capsys):
    code, out, err = run(capsys, "space", "check", DIGITS)
    assert code == 0 and err == ""
    assert "cardinality 25,990,470" in out


def test_space_sample_prints_valid_json_lines(capsys):
    code, out, _ = run(capsys, "space", "sample", DIGITS, "-n", "5", "--seed", "0")
    space = SearchSpace.from_yaml(DIGITS)
    archs = [Arch.from_json(line) for line in out.splitlines()]
    assert code == 0 and len(archs) == 5 and all(space.contains(a) for a in archs)
    assert run(capsys, "space", "sample", DIGITS, "-n", "5", "--seed", "0")[1] == out


def test_config_show_resolves_defaults(capsys):
    code, out, _ = run(capsys, "config", "show", "-c", str(CONFIGS / "digits.yaml"), "--set", "search.evaluations=7")
    assert code == 0 and "evaluations: 7" in out and "embed_dim:" in out


BAD_SPACE_FILES = {
    "malformed.yaml": "embed_dim: [16\n",
    "unknown_key.yaml": "embed_dim: [16]\ndepth: [1]\nwidth: 3\nlayer: {num_heads: [1], mlp_dim: [8], attention: [softmax], bits: [32]}\n",
    "empty_choices.yaml": "embed_dim: []\ndepth: [1]\nlayer: {num_heads: [1], mlp_dim: [8], attention: [softmax], bits: [32]}\n",
    "negative.yaml": "embed_dim: [-16]\ndepth: [1]\nlayer: {num_heads: [1], mlp_dim: [8], attention: [softmax], bits: [32]}\n",
    "attention.yaml": "embed_dim: [16]\ndepth: [1]\nlayer: {num_heads: [1], mlp_dim: [8], attention: [performer], bits: [32]}\n",
    "bits.yaml": "embed_dim: [16]\ndepth: [1]\nlayer: {num_heads: [1], mlp_dim: [8], attention: [softmax], bits: [2]}\n",
    "scalar.yaml": "42\n",
    "empty.yaml": "",
}


@pytest.mark.parametrize("name", sorted(BAD_SPACE_FILES))
def test_bad_space_files_exit_2_with_one_line(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_text(BAD_SPACE_FILES[name])
    code, out, err = run(capsys, "space", "check", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("elastiq: error: ") and name in err


@pytest.mark.parametrize("args, message", [
    (["space", "check", "missing.yaml"], "cannot read"),
    (["space", "sample", DIGITS, "-n", "0"], "-n"),
    (["space", "sample", DIGITS, "--mode", "weird"], "--mode"),
    (["spaces"], "No such command"),
    (["config", "show", "-c", str(CONFIGS / "digits.yaml"), "--set", "novalue"], "KEY=VALUE"),
    (["config", "show", "-c", str(CONFIGS / "digits.yaml"), "--set", "ray.workers=0"], "ray.workers"),
    (["config", "show"], "Missing option"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_console_script_exit_status_and_stderr(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("embed_dim: [16\n")
    script = [sys.executable, "-m", "orchestrator.cli"]
    proc = subprocess.run(script + ["space", "check", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = subprocess.run(script + ["space", "sample", DIGITS, "-n", "2"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and [json.loads(line)["embed_dim"] for line in proc.stdout.splitlines()]


def test_space_sample_streams_and_a_reader_may_stop_at_any_line():
    """-n 10**15 would take years: its first line arrives at once, and closing the pipe ends it quietly."""
    command = [sys.executable, "-c", "import sys; from orchestrator.cli import main; sys.exit(main())",
               "space", "sample", DIGITS, "-n", str(10**15)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()  # blocks until the first arch is written: no clock involved
    assert SearchSpace.from_yaml(DIGITS).contains(Arch.from_json(first))
    process.stdout.close()  # the reader goes away, as `| head -1` does
    assert process.wait() == 0
    assert process.stderr.read() == b""


def test_bit_widths_a_runtime_or_a_block_cannot_take_are_refused_in_one_line(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("embed_dim: [48]\ndepth: [1]\nlayer: {num_heads: [2], mlp_dim: [64], attention: [softmax], "
                     "bits: [32, 4]}\n")
    code, out, err = run(capsys, "space", "check", str(space))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("elastiq: error:") and "embed_dim 48 is not a multiple of it" in err
    space.write_text("embed_dim: [64]\ndepth: [1]\nlayer: {num_heads: [2], mlp_dim: [64], attention: [softmax], "
                     "bits: [32, 8, 4]}\n")
    config = tmp_path / "study.yaml"
    config.write_text("study: s\nspace: space.yaml\ntarget: {runtime: aotinductor}\n")
    code, out, err = run(capsys, "config", "show", "-c", str(config))
    assert code == 2 and out == "" and err.count("\n") == 1 and "cannot run 4-bit layers" in err
