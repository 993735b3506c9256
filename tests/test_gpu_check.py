"""`make gpu-check` (bench/gpu/check.py) runs only where a GPU is lent, rarely: these keep it working
between such runs. Without a GPU it refuses in one line; its sections rehearse on the CPU; a section
that crashes or hangs its process costs that section, not the run."""

import importlib.util
import json
import sys

import pytest
import torch

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_without_a_gpu_it_says_so_in_one_line(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("elastiq: error: gpu-check: no CUDA GPU is visible")
    assert not (tmp_path / "out").exists()  # nothing written


def test_unknown_sections_are_refused_in_one_line(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--rehearse", "--only", "aoti_tpu", "--out", str(tmp_path)]) == 2
    assert gpu_check.main(["--rehearse", "--isolate", "nothing", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("elastiq: error: gpu-check: unknown section") for line in err)
    assert not list(tmp_path.iterdir())


def test_wheels_for_another_python_are_refused_before_anything_is_installed(gpu_check, tmp_path, capsys):
    (tmp_path / "pydantic_core-2.0-cp39-cp39-manylinux_2_17_x86_64.whl").write_bytes(b"")
    (tmp_path / "annotated_types-0.8.0-py3-none-any.whl").write_bytes(b"")
    assert gpu_check.probe(tmp_path) == 2
    assert "is built for cp39" in capsys.readouterr().err
    (tmp_path / "pydantic_core-2.0-cp39-cp39-manylinux_2_17_x86_64.whl").unlink()
    assert gpu_check.probe(tmp_path) == 0


@pytest.mark.slow
def test_the_sections_rehearse_on_the_cpu(gpu_check, tmp_path):
    """Every section but the pytest run and the AOTInductor compiles (tens of seconds each here; the
    runtime has its own tests), one of them in a child process as the AOTInductor sections run."""
    out = tmp_path / "out"
    status = gpu_check.main(["--rehearse", "--skip", "gpu_tests,aoti_digits,aoti_bert", "--isolate", "evaluation_job",
                             "--out", str(out)])
    report = json.loads((out / "gpu_check.json").read_text())
    assert status == 0 and report["ok"], {n: s.get("error") for n, s in report["sections"].items()}
    sections = report["sections"]
    assert set(sections) == {"environment", "digits_supernet", "cli_train_supernet", "evaluation_job",
                             "bert_base_supernet", "finetune_trainer"}
    assert sections["evaluation_job"]["isolated"]  # its checkpoint came from the parent's section, on disk
    digits, bert = sections["digits_supernet"]["figures"], sections["bert_base_supernet"]["figures"]
    assert digits["samples_per_s"] > 0 and digits["largest_max_logit_difference"] <= 1e-3
    assert bert["largest_vs_hugging_face_max_logit_difference"] <= 1e-3
    assert "on cpu" in sections["cli_train_supernet"]["figures"]["train_supernet"][0]


def test_a_child_that_crashes_or_hangs_costs_its_section_only(gpu_check, tmp_path):
    crash = [sys.executable, "-c", "import faulthandler, os, signal; faulthandler.enable(); os.kill(os.getpid(), "
                                   "signal.SIGSEGV)"]
    entry = gpu_check.run_child(crash, tmp_path / "none.json", limit=600)
    assert not entry["ok"] and "signal 11 (SIGSEGV)" in entry["error"] and "Fatal Python error" in entry["traceback"]
    hang = [sys.executable, "-c", "import threading; print('started', flush=True); threading.Event().wait()"]
    entry = gpu_check.run_child(hang, tmp_path / "none.json", limit=1)
    assert not entry["ok"] and "no result after 1 s" in entry["error"] and "started" in entry["traceback"]
    done = tmp_path / "done.json"
    write = [sys.executable, "-c", f"open({str(done)!r}, 'w').write('{{\"ok\": true, \"figures\": {{}}}}')"]
    assert gpu_check.run_child(write, done, limit=600) == {"ok": True, "figures": {}}


def test_a_crashed_pytest_run_says_which_test_was_running(gpu_check):
    output = ("tests/a.py::test_x[cuda] PASSED [ 16%]\ntests/a.py::test_y SKIPPED (no GPU) [ 20%]\n"
              "tests/a.py::test_z FAILED [ 30%]\ntests/a.py::test_w \nFatal Python error: Segmentation fault\n")
    ended, running = gpu_check.verbose_outcomes(output)
    assert ended == {"tests/a.py::test_x[cuda]": "passed", "tests/a.py::test_y": "skipped",
                     "tests/a.py::test_z": "failed"}
    assert running == "tests/a.py::test_w"
    assert gpu_check.verbose_outcomes("tests/a.py::test_x PASSED [100%]\n") == ({"tests/a.py::test_x": "passed"}, None)


def test_gpu_wheels_refuses_what_it_cannot_carry_in_one_line(tmp_path, monkeypatch, capsys):
    """A distribution not installed here, and a wheel whose requirement neither another wheel nor the
    GPU machine meets: one line, exit status 2 (no download is tried)."""
    import zipfile

    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "bench" / "gpu" / "wheels.py")
    wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheels)
    with pytest.raises(wheels.WheelsError, match="no-such-distribution is not installed here"):
        wheels.needed(("no-such-distribution",))
    wheel = tmp_path / "lonely-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("lonely-1.0.dist-info/METADATA", "Name: lonely\nRequires-Dist: ray>=2\n"
                         "Requires-Dist: numpy\nRequires-Dist: optuna; extra == 'search'\n")
    assert wheels.requirements_met([wheel]) == ["lonely-1.0-py3-none-any.whl needs ray>=2"]
    monkeypatch.setattr(wheels, "CARRIED", ("no-such-distribution",))
    monkeypatch.setattr(sys, "argv", ["gpu_wheels.py", "--out", str(tmp_path / "out")])
    assert wheels.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["elastiq: error: gpu-wheels: no-such-distribution is not installed here (run `make install` first)"]
    assert not (tmp_path / "out").exists()  # nothing written
