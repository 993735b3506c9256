"""Output directories written whole or not at all: everything goes to a temporary
sibling first and is moved into place at the end, so a failure leaves nothing
half-written and a reader never sees a partial export or report."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from search_space import InputError


class OutputError(InputError):
    """An output directory that cannot be written, or that holds something else."""


def check_output_dir(out: Path, marker: str, replace: bool) -> None:
    """Refuse early (before any work) what `staged` would refuse at the end."""
    parent = out.resolve().parent
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory")
    if not parent.is_dir():
        raise OutputError(f"output {out}: parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output {out}: cannot write in {parent}")
    if out.exists() and any(out.iterdir()) and not (replace and (out / marker).is_file()):
        what = "an earlier one; pass --overwrite to replace it" if (out / marker).is_file() else \
            "other files; choose another directory"
        raise OutputError(f"output {out} is not empty: it holds {what}")


@contextmanager
def staged(out: Path, marker: str, replace: bool) -> Iterator[Path]:
    """A temporary directory beside `out`, moved to `out` when the block succeeds."""
    check_output_dir(out, marker, replace)
    parent = out.resolve().parent
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:
        raise OutputError(f"output {out}: cannot write in {parent} ({exc.strerror})") from None
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the result private to its writer
    try:
        yield staging
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.replace(out, old / "previous")
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
