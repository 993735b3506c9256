"""gpu-check's `environment` (the GPU, torch, CUDA, the packages) and `gpu_tests` (the tests marked gpu, a pytest per
file)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from typing import Any

from bench.gpu.common import (
    PACKAGES,
    ROOT,
    Context,
    require,
)


def environment(ctx: Context) -> dict[str, Any]:
    import torch

    from supernet.device import available_memory

    figures: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                               "torch_cuda": torch.version.cuda, "cpu_cores": os.cpu_count(),
                               "memory_available_gib": round((available_memory() or 0) / 2**30, 1)}
    for name in PACKAGES:
        try:
            figures[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            figures[name] = None
    if ctx.device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        figures.update(gpu=properties.name, compute_capability=f"{properties.major}.{properties.minor}",
                       gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                       bf16=torch.cuda.is_bf16_supported(), gpus=torch.cuda.device_count())
    return figures

def gpu_tests(ctx: Context) -> dict[str, Any]:
    """pytest -m "gpu and not slow" on the test files that hold gpu tests and need no Ray (which the GPU
    machine lacks), each file in its own pytest: a test that crashes the interpreter takes only its
    file's later tests with it."""
    files, need_ray = [], []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        if "pytest.mark.gpu" not in text:
            continue
        needs_ray = re.search(r"^\s*(import ray|from ray)\b|\blocal_ray\b", text, re.MULTILINE)
        (need_ray if needs_ray else files).append(str(path.relative_to(ROOT)))
    require(bool(files), "no test file holds gpu tests")
    started = time.perf_counter()
    outcomes: dict[str, str] = {}
    problems, log = [], []
    for i, file in enumerate(files):
        junit = ctx.scratch / f"gpu-tests-{i}.xml"
        command = [sys.executable, "-m", "pytest", "-v", "-m", "gpu and not slow", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", file]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        output = done.stdout + done.stderr
        log.append(f"$ {' '.join(command[1:])}\n{output}\n(exit status {done.returncode})\n")
        if junit.exists():
            for case in ElementTree.parse(junit).getroot().iter("testcase"):
                name = f"{file}::{case.get('name')}"
                failed = case.find("failure") is not None or case.find("error") is not None
                outcomes[name] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
        else:  # the interpreter died: what -v printed says which tests ended, and which one was running
            ended, running = verbose_outcomes(output)
            outcomes.update(ended)
            if running:
                outcomes[running] = f"crashed the interpreter (exit status {done.returncode})"
            problems.append(f"{file}: pytest exited {done.returncode} without a report"
                            + (f" while running {running}" if running else ""))
        if done.returncode not in (0, 5):  # 5: every test deselected
            problems.append(f"{file}: pytest exited {done.returncode}")
    (ctx.out / "gpu_tests.log").write_text("\n".join(log))
    counts = {state: sum(o == state for o in outcomes.values()) for state in ("passed", "failed", "skipped")}
    figures = {"files": files, "left_out_needing_ray": need_ray, **counts,
               "not_passed": {name: o for name, o in outcomes.items() if o != "passed" and o != "skipped"},
               "seconds": round(time.perf_counter() - started, 1)}
    require(not problems and counts["failed"] == 0, "; ".join(problems) or f"{counts['failed']} gpu tests failed")
    if not ctx.rehearsal:  # on a GPU every one of them must have run
        require(counts["skipped"] == 0 and counts["passed"] > 0, f"{counts['skipped']} gpu tests skipped on a GPU")
    return figures

def verbose_outcomes(output: str) -> tuple[dict[str, str], str | None]:
    """From what `pytest -v` printed: each test that ended and how, and the test it was running when
    it stopped printing (None if every test it started ended)."""
    ended, running = {}, None
    for line in output.splitlines():
        match = re.match(r"(\S+::\S+)(?: (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS))?", line)
        if not match:
            continue
        name, result = match.groups()
        if result is None:
            running = name
        else:
            ended[name] = "failed" if result in ("FAILED", "ERROR") else result.lower()
            running = None if running == name else running
    return ended, running
