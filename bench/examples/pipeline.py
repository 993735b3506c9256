"""The recommended pipeline for a pretrained model, stage by stage, each stage timed.

    elastiq train-supernet -c CONFIG     # the teacher's fine-tuning, then the sandwich with distillation
    elastiq measure -c CONFIG            # latency on the target, for the predictor
    elastiq search -c CONFIG             # the front on inherited weights
    elastiq finetune --storage URL --study NAME   # the front's candidates trained on, distilled
    elastiq export --storage URL --study NAME --out OUT/models
    elastiq report --storage URL --study NAME --out OUT/report

Every stage continues from what an earlier run wrote, so running again after a crash (or after all
of it) only does what is left. The wall time of each stage run now is added to OUT/pipeline.json
(seconds by stage, summed over runs), which bench/examples/baselines.py sets beside the baselines' training
time.

    python bench/examples/pipeline.py --config configs/examples/minilm-manpages.yaml --out runs/minilm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def stages(config_path: str, out: Path) -> list[tuple[str, list[str]]]:
    from orchestrator.config import load_study_config

    config = load_study_config(config_path)
    where = ["--storage", config.storage, "--study", config.study]
    return [("train-supernet", ["train-supernet", "-c", config_path]),
            ("measure", ["measure", "-c", config_path]),
            ("search", ["search", "-c", config_path]),
            ("finetune", ["finetune", *where]),
            ("export", ["export", *where, "--out", str(out / "models")]),
            ("report", ["report", *where, "--out", str(out / "report")])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="folder of the models, the report and pipeline.json")
    args = parser.parse_args()
    out = Path(args.out)
    from search_space import InputError

    try:
        planned = stages(args.config, out)
    except InputError as exc:
        print(f"elastiq: error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "pipeline.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"config": args.config, "seconds": {}}
    elastiq = str(Path(sys.executable).parent / "elastiq")
    for name, command in planned:
        started = time.perf_counter()
        code = subprocess.call([elastiq, *command])
        seconds = time.perf_counter() - started
        record["seconds"][name] = record["seconds"].get(name, 0.0) + seconds
        record_path.write_text(json.dumps(record, indent=2))
        if code != 0:
            print(f"elastiq: error: {name} exited with status {code}; run again to continue", file=sys.stderr)
            return code
        print(f"{name}: {seconds:.0f} s", flush=True)
    print(f"pipeline: {sum(record['seconds'].values()):.0f} s in all ({record_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
