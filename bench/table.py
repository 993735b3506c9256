"""The README's benchmark table, written from `bench/results/*.json`.

Each row comes from one result file and names the command that wrote it; a
result that is not there yet is left out. Run by `make bench` after the scripts.

    .venv/bin/python bench/table.py [--readme README.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.readme_table import ROWS

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def render() -> str:
    lines = ["| what | elastiq | beside it, same run | bar | command |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for rows in ROWS for row in rows()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args()
    readme = Path(args.readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render()}\n{END}{tail}")
    print(render())


if __name__ == "__main__":
    main()
