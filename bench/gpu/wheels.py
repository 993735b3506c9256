"""`make gpu-wheels`: the wheels `make gpu-check` needs on a GPU machine that has no package index.

A GPU machine of the kind this project is lent (Python 3.12, torch with CUDA, transformers,
tokenizers, safetensors, onnx, onnxruntime, onnxscript, numpy, scikit-learn, pytest, click, PyYAML,
tqdm, ...) lacks what the check imports beyond those: pydantic (the study config of the CLI path)
and what pydantic needs. This downloads them, for CPython 3.12 on manylinux x86-64, at the versions
installed here (the ones the test suite runs), one wheel per distribution, into an ignored folder,
and prints their total size, which must stay under what a run can carry (64 MiB). Ray (about 70 MB
alone), Optuna, SQLAlchemy and datasets are left out: the check runs no search, no database and no
user files.

    python bench/gpu/wheels.py --out .gpu-wheels
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# what the check imports that such a GPU machine lacks; typing-extensions is there, but of a version
# nobody has read, and pydantic needs a recent one
CARRIED = ("pydantic", "typing-extensions")
# what such a machine has (its image's package list, as read on one): a requirement on these is met there
ON_THE_GPU_MACHINE = {canonicalize_name(name) for name in (
    "torch", "numpy", "scipy", "scikit-learn", "transformers", "tokenizers", "safetensors", "huggingface-hub",
    "onnx", "onnxruntime", "onnxscript", "onnx-ir", "pytest", "pytest-timeout", "pytest-xdist", "hypothesis",
    "click", "pyyaml", "tqdm", "matplotlib", "packaging", "filelock", "fsspec", "jinja2", "networkx", "sympy",
    "regex", "requests", "protobuf", "ml-dtypes", "pandas", "pyarrow", "pillow", "psutil", "typing-extensions")}
LIMIT_BYTES = 64 * 2**20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
TARGET_ENVIRONMENT = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
                      "implementation_name": "cpython", "platform_python_implementation": "CPython",
                      "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                      "os_name": "posix"}


class WheelsError(Exception):
    """What makes the wheels unusable: one line, exit status 2."""


def needed(names: tuple[str, ...]) -> dict[str, str]:
    """The carried distributions and every requirement of theirs that the GPU machine lacks (on Python
    3.12, no extras), each at the version installed here: name -> version."""
    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise WheelsError(f"{name} is not installed here (run `make install` first)") from None
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({**TARGET_ENVIRONMENT, "extra": ""}):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency not in ON_THE_GPU_MACHINE or dependency in map(canonicalize_name, names):
                todo.append(dependency)
    return found


def download(name: str, version: str, folder: Path) -> Path:
    """The one wheel of `name==version` for CPython 3.12 on manylinux x86-64."""
    with tempfile.TemporaryDirectory() as scratch:
        platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", scratch,
                   f"{name}=={version}"]
        if subprocess.run(command).returncode != 0:
            raise WheelsError(f"no wheel of {name}=={version} for CPython 3.12 on manylinux "
                     f"x86-64 could be downloaded")
        (wheel,) = Path(scratch).glob("*.whl")
        target = folder / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target


def requirements_met(wheels: list[Path]) -> list[str]:
    """Requirements of the downloaded wheels (as their own metadata states them) that neither another
    wheel nor the GPU machine meets."""
    carried = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheels}
    missing = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
            lines = archive.read(metadata).decode().splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker is not None and not requirement.marker.evaluate({**TARGET_ENVIRONMENT, "extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name not in carried and name not in ON_THE_GPU_MACHINE:
                missing.append(f"{wheel.name} needs {requirement}")
    return missing


def main() -> int:
    try:
        return fetch()
    except WheelsError as exc:
        print(f"elastiq: error: gpu-wheels: {exc}", file=sys.stderr)
        return 2


def fetch() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".gpu-wheels"))
    args = parser.parse_args()
    versions = needed(CARRIED)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.whl"):  # one version of each: two would stop the install there
        stale.unlink()
    wheels = [download(name, version, args.out) for name, version in sorted(versions.items())]
    names = [canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheels]
    if len(set(names)) != len(names):
        raise WheelsError(f"a distribution was downloaded twice: {sorted(names)}")
    missing = requirements_met(wheels)
    if missing:
        raise WheelsError(f"a requirement is met neither by the wheels nor by the GPU machine: "
                 f"{missing[0]}")
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:8.2f} MiB  in {len(wheels)} wheels, in {args.out}/ (limit {LIMIT_BYTES / 2**20:.0f} MiB)")
    if total > LIMIT_BYTES:
        raise WheelsError(f"{total / 2**20:.1f} MiB is over the {LIMIT_BYTES / 2**20:.0f} MiB a run carries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
