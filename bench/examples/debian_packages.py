"""A real text classification task from this machine's Debian package lists: a package's one-line
description to its archive section (`libs`, `python`, `net`, `games`, ...).

`apt-cache dumpavail` prints every package the machine's lists know (about 63,000 on Debian 12),
each a stanza with its `Section:` and the first line of its `Description:`. The task keeps the
`--classes` largest sections (the component prefix dropped: `contrib/net` is `net`), each
description once (one that appears under two sections is dropped: its label would be a coin), and
at most `--per-class` descriptions a section, drawn with the seed. The rows are shuffled with the
seed and written as three CSV files (`text`, `section`): the test split first (`--test` rows), then
the validation split (`--val`), the rest for training. The same lists and arguments give the same
files byte for byte.

    python bench/examples/debian_packages.py --out runs/packages
    python bench/examples/debian_packages.py --out runs/packages --lists dumpavail.txt --sections libs,python,net

Bad input (no package lists, a section filter that leaves fewer than two classes, splits larger
than the data) is refused in one line, exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

SPLITS = ("test", "val", "train")


class PackagesError(Exception):
    """Input the task cannot be built from."""


def read_lists(source: str | None) -> str:
    """The package lists as `apt-cache dumpavail` prints them, from apt or from a saved file."""
    if source is not None:
        try:
            return Path(source).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise PackagesError(f"package lists {source}: {exc.strerror or exc}") from None
    if shutil.which("apt-cache") is None:
        raise PackagesError("no apt-cache on this machine: give saved lists with --lists (the output of "
                            "`apt-cache dumpavail` on a Debian machine)")
    done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise PackagesError(f"apt-cache dumpavail failed ({first}): run `apt-get update` first")
    return done.stdout


def descriptions(lists: str) -> list[tuple[str, str]]:
    """(description, section) of every stanza that has both, descriptions unique and unambiguous."""
    sections_of: dict[str, set[str]] = {}
    for stanza in lists.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # a continued field (the long description) or noise
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        text, section = fields.get("Description", ""), fields.get("Section", "").rsplit("/", 1)[-1]
        text = " ".join(text.split())
        if text and section:
            sections_of.setdefault(text, set()).add(section)
    return [(text, next(iter(found))) for text, found in sections_of.items() if len(found) == 1]


def build(lists: str, classes: int, per_class: int, test: int, val: int, seed: int,
          sections: list[str] | None = None, min_per_class: int = 100) -> dict[str, list[tuple[str, str]]]:
    rows = descriptions(lists)
    if not rows:
        raise PackagesError("the package lists hold no package with a description and a section (are they "
                            "`apt-cache dumpavail` output? run `apt-get update` first)")
    counts = Counter(section for _, section in rows)
    if sections is not None:
        unknown = [s for s in sections if s not in counts]
        if unknown:
            raise PackagesError(f"section(s) {unknown} are not in the package lists (largest: "
                                f"{[s for s, _ in counts.most_common(8)]})")
        counts = Counter({s: counts[s] for s in sections})
    kept = [s for s, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= min_per_class]
    kept = sorted(kept[:classes])
    if len(kept) < 2:
        raise PackagesError(f"only {len(kept)} section(s) have at least {min_per_class} packages"
                            f"{' among ' + ','.join(sections) if sections else ''}: a task needs two classes or more")
    rng = np.random.default_rng(seed)
    picked = []
    for section in kept:
        texts = sorted(text for text, s in rows if s == section)
        order = rng.permutation(len(texts))[:per_class]
        picked += [(texts[i], section) for i in sorted(order)]
    if test + val >= len(picked):
        raise PackagesError(f"--test {test} and --val {val} leave no training rows of the {len(picked)} drawn")
    picked = [picked[i] for i in rng.permutation(len(picked))]
    return {"test": picked[:test], "val": picked[test:test + val], "train": picked[test + val:]}


def write(splits: dict[str, list[tuple[str, str]]], out: Path) -> None:
    """The three files, made whole or not at all (an existing folder is refused)."""
    if out.exists():
        raise PackagesError(f"{out}: already exists; give another --out or remove it")
    if not out.parent.is_dir():
        raise PackagesError(f"{out.parent}: no such directory")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for split in SPLITS:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["text", "section"])
            writer.writerows(splits[split])
            (staging / f"{split}.csv").write_text(buffer.getvalue(), encoding="utf-8")
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write train.csv, val.csv and test.csv into (new)")
    parser.add_argument("--lists", default=None, help="saved `apt-cache dumpavail` output (default: run it)")
    parser.add_argument("--sections", default=None, help="comma-separated sections to draw from (default: all)")
    parser.add_argument("--classes", type=int, default=16, help="the largest this many sections")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--min-per-class", type=int, default=100, help="smaller sections are left out")
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--val", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        for name in ("classes", "per_class", "min_per_class", "test", "val"):
            if getattr(args, name) < 1:
                raise PackagesError(f"--{name.replace('_', '-')} must be at least 1")
        sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
        splits = build(read_lists(args.lists), args.classes, args.per_class, args.test, args.val, args.seed,
                       sections, args.min_per_class)
        write(splits, Path(args.out))
    except PackagesError as exc:
        print(f"elastiq: error: {exc}", file=sys.stderr)
        return 2
    counts = Counter(section for _, section in splits["train"])
    print(f"{args.out}: {', '.join(f'{s} {len(splits[s])}' for s in SPLITS)} rows, {len(counts)} sections "
          f"({', '.join(sorted(counts))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
