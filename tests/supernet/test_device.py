"""Devices: what `auto`, `cpu` and `cuda` resolve to, mixed precision, and CUDA runs (marked gpu:
they run where a GPU is visible, and are skipped elsewhere)."""

import json

import numpy as np
import pytest
import torch

from orchestrator.execution.evaluation import EvalJob, evaluate_arch
from supernet.checkpoint import read_record
from supernet.device import DeviceError, MixedPrecision, resolve_device, to_cpu
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.multi_arch import forward_parts
from supernet.training.train import TrainSettings, evaluate, load_supernet, train_standalone, train_supernet

SETTINGS = TrainSettings(steps=20, batch_size=32, warmup_steps=2, sandwich_random=1, lr=0.01, checkpoint_every=10)


def test_devices_resolve_and_cuda_is_refused_where_there_is_none():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="choose from"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
            resolve_device("cuda")


def test_mixed_precision_is_nothing_on_the_cpu():
    precision = MixedPrecision(torch.device("cpu"))
    assert precision.dtype is None and not precision.scales_loss and precision.describe() == "float32"
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_state_moves_to_the_cpu_nested():
    state = {"a": torch.ones(2), "b": [torch.zeros(1), 3], "c": {"d": torch.ones(1)}}
    moved = to_cpu(state)
    assert moved["b"][1] == 3 and moved["c"]["d"].device.type == "cpu"


@pytest.mark.gpu
def test_mixed_precision_on_cuda_picks_bf16_where_supported():
    precision = MixedPrecision(torch.device("cuda"))
    assert precision.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert precision.scales_loss == (precision.dtype == torch.float16)


@pytest.mark.gpu
def test_a_supernet_trained_on_cuda_resumes_on_the_cpu(tmp_path, tiny_space):
    task = load_task("digits", 0)
    model = Supernet(tiny_space, task.spec, seed=0)
    half = TrainSettings(**{**vars(SETTINGS), "steps": 10})
    train_supernet(model, task, half, seed=0, checkpoint=tmp_path / "sn.pt", progress=False, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    resumed = Supernet(tiny_space, task.spec, seed=0)
    result = train_supernet(resumed, task, SETTINGS, seed=0, checkpoint=tmp_path / "sn.pt", progress=False)
    assert result.step == 20 and result.trained_now == 10 and read_record(tmp_path / "sn.pt")["steps"] == 20
    cpu = load_supernet(tmp_path / "sn.pt", tiny_space, task)
    arch = tiny_space.largest()
    on_cuda = load_supernet(tmp_path / "sn.pt", tiny_space, task).to("cuda")
    assert abs(evaluate(cpu, arch, task) - evaluate(on_cuda, arch, task)) <= 0.01  # float32 on both


@pytest.mark.gpu
def test_one_pass_of_several_archs_on_cuda(tiny_space):
    task = load_task("digits", 0)
    model = Supernet(tiny_space, task.spec, seed=1).to("cuda")
    x = task.split("train")[0][:24].to("cuda")
    archs = [tiny_space.sample(np.random.default_rng(seed)) for seed in range(3)]
    expected = torch.cat([model(x[8 * i:8 * i + 8], a) for i, a in enumerate(archs)])
    assert torch.allclose(forward_parts(model, x, archs), expected, atol=1e-4)


@pytest.mark.gpu
def test_a_static_model_fine_tunes_on_cuda(tiny_space):
    task = load_task("digits", 0)
    model = Supernet(tiny_space, task.spec, seed=1).extract(tiny_space.smallest())
    train_standalone(model, task, SETTINGS, seed=0, device="cuda")
    assert 0.0 <= evaluate(model, None, task) <= 1.0


@pytest.mark.gpu
def test_an_evaluation_job_on_auto_uses_the_gpu_and_agrees_with_the_cpu(tmp_path, tiny_space):
    task = load_task("digits", 0)
    model = Supernet(tiny_space, task.spec, seed=0)
    train_supernet(model, task, SETTINGS, seed=0, checkpoint=tmp_path / "sn.pt", progress=False, device="cuda")
    record = read_record(tmp_path / "sn.pt")
    job = dict(arch=tiny_space.largest().to_json(), checkpoint=str(tmp_path / "sn.pt"),
               checkpoint_sha256=record["sha256"], space=json.dumps(tiny_space.to_dict(), sort_keys=True),
               task="digits", task_options="{}", seed=0)
    on_gpu = evaluate_arch(EvalJob(**job, device="auto"))["accuracy"]
    on_cpu = evaluate_arch(EvalJob(**job, device="cpu"))["accuracy"]
    assert abs(on_gpu - on_cpu) <= 0.01
