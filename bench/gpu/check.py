"""`make gpu-check`: elastiq's CUDA paths in one run on a GPU machine, with figures.

Each section runs on its own (a failure is recorded and the next one runs):

- `environment`: the GPU, torch, CUDA, the packages the check uses.
- `gpu_tests`: the tests marked `gpu` and not `slow`, from the files that do not need Ray (the slow
  one compiles an AOTInductor artifact for CUDA, which `aoti_digits` does).
- `digits_supernet`: the demo's supernet, in stages (`digits_stages.yaml`: tokens merged 2x2 at two
  boundaries), trained on the GPU under mixed precision (samples/s, peak memory, beside the same steps
  on this machine's CPU); its checkpoint, written from the GPU, loaded on the CPU with the same
  outputs, for an arch that merges tokens at both boundaries too.
- `cli_train_supernet`: `elastiq train-supernet` and `elastiq evaluate` with `supernet.device: cuda`.
- `evaluation_job`: a search worker's evaluation job on the GPU and on the CPU: the same accuracy.
- `bert_base_supernet`: a BERT-base-sized model (12 layers, 768 wide, random weights, built from a
  config) imported as a supernet (its largest arch checked against the Hugging Face model), trained
  on synthetic tokens as the pretrained recipe trains (the largest alone, then the sandwich taught by
  a frozen copy); checkpoint from the GPU loaded on the CPU with the same outputs.
- `finetune_trainer`: the fine-tuning stage's trainer on one of its subnets, distilled from the
  largest; its state loads on the CPU.
- `aoti_digits`, `aoti_bert`: AOTInductor artifacts compiled for the GPU (8-bit layers as cuBLAS int8
  products) from subnets on the CPU, checked against them, timed beside the eager subnet (its fake
  quantization, and all float32) at batch 1 and 32, with the accuracy of the artifact.

Figures go to OUT/gpu_check.json after every section, so a run cut short keeps what it measured.
Sections hand their models on as files (checkpoints in a scratch folder). The AOTInductor sections
run in a child process of their own, given `--isolated-limit` seconds (150: the whole check then
stays within 8 to 10 minutes): on the first GPU machine tried, compiling a one-layer model for CUDA
took 60 to 90 s and loading the package crashed or hung the process (torch 2.11), and that must cost
one section, not the run. Each test file of `gpu_tests` runs in its own pytest for the same reason, its
output in OUT/gpu_tests.log.
Exit status: 0 when every section passed, 1 when one failed, 2 without a GPU. `--rehearse` runs
every section on the CPU with tiny sizes: a check of this script where no GPU is.

    python bench/gpu/check.py --out runs/gpu-check            # on a GPU machine (make gpu-check)
    python bench/gpu/check.py --rehearse --out runs/gpu-rehearsal
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the GPU machine runs it from a copy of the tree, without installing elastiq
    sys.path.insert(0, str(ROOT))

from bench.gpu.aoti import aoti_bert, aoti_digits  # noqa: E402 - with the project on the path
from bench.gpu.bert import bert_base_supernet, finetune_trainer  # noqa: E402
from bench.gpu.common import FULL, REHEARSAL, Context  # noqa: E402
from bench.gpu.digits import cli_train_supernet, digits_supernet, evaluation_job  # noqa: E402
from bench.gpu.environment import environment, gpu_tests, verbose_outcomes  # noqa: E402, F401 - tests read it

SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    section.__name__: section for section in (
        environment, gpu_tests, digits_supernet, cli_train_supernet, evaluation_job, bert_base_supernet,
        finetune_trainer, aoti_digits, aoti_bert)}


# ---- the run -------------------------------------------------------------------------------

ISOLATED = ("aoti_digits", "aoti_bert")  # each in a child process of its own (see the module's docstring)


def run_child(command: list[str], result: Path, limit: float) -> dict[str, Any]:
    """A section's entry from a child process that writes it to `result`; a child that dies, or is still
    running after `limit` seconds, gives a failed entry holding the end of what it printed (Python's
    fault handler prints the stack of a crash, and of a hang before the limit)."""
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        output, status = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
                         for part in (expired.stdout, expired.stderr))
        status = None
    if status == 0 and result.exists():
        return json.loads(result.read_text())
    if status is None:
        error = f"no result after {limit:.0f} s: the child process was stopped"
    elif status < 0:
        error = f"the child process died of signal {-status} ({signal.Signals(-status).name})"
    else:
        error = f"the child process exited {status} without a result"
    return {"ok": False, "error": error, "traceback": output[-6000:]}


def run_section(ctx: Context, name: str) -> dict[str, Any]:
    try:
        return {"ok": True, "figures": SECTIONS[name](ctx)}
    except Exception as exc:  # noqa: BLE001 - recorded; the next section runs
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                "traceback": traceback.format_exc()[-6000:]}


def run(ctx: Context, names: list[str], isolated: set[str], limit: float) -> dict[str, Any]:
    report: dict[str, Any] = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "device": ctx.device, "rehearsal": ctx.rehearsal, "sections": {}}
    path = ctx.out / "gpu_check.json"
    for name in names:
        started = time.perf_counter()
        if name in isolated:
            result = ctx.scratch / f"section-{name}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--scratch",
                       str(ctx.scratch), "--out", str(ctx.out), "--isolated-limit", str(limit)]
            command += ["--rehearse"] if ctx.rehearsal else []
            entry = run_child(command, result, limit)
            entry["isolated"] = True
        else:
            entry = run_section(ctx, name)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        report["sections"][name] = entry
        report["ok"] = all(section["ok"] for section in report["sections"].values())
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        state = "ok    " if entry["ok"] else "FAILED"
        print(f"{state} {name:20s} {entry['seconds']:7.1f} s  {entry.get('error', '')[:300]}", flush=True)
    return report


def probe(wheels: Path) -> int:
    """Before anything is installed: the wheels' Python must be this one (they are built for one)."""
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for wheel in sorted(wheels.glob("*.whl")):
        built_for = re.findall(r"-(cp3\d+)-", wheel.name)
        if built_for and built_for[0] != here:
            print(f"elastiq: error: gpu-check: {wheel.name} is built for {built_for[0]}, this Python is {here}: run "
                  f"make gpu-wheels for this Python", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check")
    parser.add_argument("--rehearse", action="store_true", help="every section on the CPU, with tiny sizes")
    parser.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument("--isolate", default="", help="comma-separated sections to run in a child process too "
                                                      f"(always: {', '.join(ISOLATED)})")
    parser.add_argument("--isolated-limit", type=float, default=150.0,
                        help="seconds an isolated section may run before it is stopped and recorded as failed")
    parser.add_argument("--probe", type=Path, metavar="WHEELS", default=None,
                        help="only check that this Python sees a GPU and can install the wheels in WHEELS")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # a child process: this one section
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)  # ... with its parent's scratch folder
    args = parser.parse_args(argv)
    chosen = [s for s in (args.only.split(",") if args.only else SECTIONS) if s]
    unknown = [s for s in chosen + [s for s in args.skip.split(",") if s] if s not in SECTIONS]
    if unknown:
        print(f"elastiq: error: gpu-check: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})",
              file=sys.stderr)
        return 2
    names = [s for s in chosen if s not in args.skip.split(",")]
    isolated = set(ISOLATED) | {s for s in args.isolate.split(",") if s}
    if isolated - set(SECTIONS):
        print(f"elastiq: error: gpu-check: unknown section {sorted(isolated - set(SECTIONS))[0]!r} to isolate",
              file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print(f"elastiq: error: gpu-check: {sys.executable} cannot import torch", file=sys.stderr)
        return 2
    if not args.rehearse and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"elastiq: error: gpu-check: no CUDA GPU is visible (torch {torch.__version__}, {build}); run it on a "
              f"machine with one, or give --rehearse to run its sections on the CPU", file=sys.stderr)
        return 2
    if args.probe is not None:
        return probe(args.probe)
    args.out.mkdir(parents=True, exist_ok=True)
    device, sizes = ("cpu", REHEARSAL) if args.rehearse else ("cuda", FULL)
    if args.section:  # a child: its entry goes to the scratch folder, a crash's stack to stderr
        faulthandler.enable()
        faulthandler.dump_traceback_later(max(1.0, args.isolated_limit - 15), exit=True)
        entry = run_section(Context(device, sizes, args.scratch, args.out), args.section)
        (args.scratch / f"section-{args.section}.json").write_text(json.dumps(entry, default=str))
        return 0
    with tempfile.TemporaryDirectory(prefix="elastiq-gpu-check-") as scratch:
        ctx = Context(device, sizes, Path(scratch), args.out)
        report = run(ctx, names, isolated, args.isolated_limit)
    print(f"{'all sections passed' if report['ok'] else 'FAILED'}: figures in {args.out / 'gpu_check.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
