"""What the benchmark scripts share: where results go, writing them, one line for bad input, a timing loop."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def write_json(path: str | Path, data: Any, indent: int = 2, newline: bool = False, **dumps) -> Path:
    """`data` as JSON at `path` (its folder made first), as every script keeps its figures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, **dumps) + ("\n" if newline else ""))
    return path


def refuse(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2, nothing written."""
    print(f"elastiq: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def timed(programs: dict, x: torch.Tensor, rounds: int, rng: np.random.Generator, calls: int = 5) -> dict:
    """The median milliseconds of each program on `x`: `rounds` rounds in a seeded shuffled order, each
    sample the mean of `calls` calls after a warm one (so that the machine's drift falls on all alike)."""
    runners = {name: program.runner(x) for name, program in programs.items()}
    times = {name: [] for name in programs}
    order = list(programs)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            runners[name]()  # warm
            start = time.perf_counter()
            for _ in range(calls):
                runners[name]()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: float(np.median(values)) for name, values in times.items()}


def refused(message: str) -> int:
    """Bad input from a `main` that returns its exit status: one line on stderr, then 2."""
    print(f"elastiq: error: {message}", file=sys.stderr)
    return 2


def print_and_write(path: str | Path, data: Any, indent: int = 2) -> Path:
    """A script's summary: printed as JSON, and written to `path`."""
    print(json.dumps(data, indent=indent))
    return write_json(path, data, indent=indent)


def add_study_options(parser, storage_help: str) -> None:
    """The options of a benchmark that searches a study of the digits config: its config, supernet and database."""
    parser.add_argument("--config", default=str(ROOT / "configs/digits.yaml"))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--storage", required=True, help=storage_help)


def timing_arguments(description: str, rounds: int, out: str, argv: list[str] | None):
    """The arguments of a script that times programs in interleaved rounds: `--rounds` (refused below 1, as
    `refused` says) and `--out`; None where they are refused."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", default=out)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        refused(f"--rounds {args.rounds}: give at least 1")
        return None
    return args
