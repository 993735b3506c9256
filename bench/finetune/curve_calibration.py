"""Calibration of the learning-curve extrapolators on real fine-tuning curves: the PFN beside the parametric
families, by rungs seen.

The curves are every rung of full fine-tuning runs (`elastiq finetune --scheduler full`), read from their
studies' databases: each `--run STORAGE_URL STUDY` takes that study's current run (`STUDY@KEY`: the run
whose key starts with KEY, as `elastiq status` shows it). Every curve is cut after
1 .. R-1 of its R rungs and its final value predicted from the prefix, as the `lc` scheduler predicts it:
from the rungs alone, and from the rungs after the candidate's inherited accuracy (`+start`: the search's,
before its first fine-tuning step). Neither extrapolator was fitted to these curves: the PFN learned the
prior only, so every curve is held out. (One choice was made after seeing some of them: the prior's noise is
centred on a validation split's binomial spread, e^-5, after a network trained with LC-PFN's e^-4 put 100% of
the first 20 curves' finals inside its 90% interval.) Reported per variant and per rungs seen: the share of
finals inside the central 90% interval (goal 85-95%), the mean log-likelihood of the final, the median
interval width, and the inference time per curve (a fit and the interval); the headline figures are over
2 .. R-1 rungs seen, the predictions every variant makes.

The curves in bench/results/curve_calibration.json: MNIST-1D's, from the full run of 40 candidates that
`bench/finetune/finetune_stage.py ... --parts calibration` starts (34 had finished when it was stopped); the pretrained
example's, from a full run on a copy of `make example-minilm`'s database (10 of 12 had finished):

    .venv/bin/elastiq finetune --storage sqlite:///runs/bench/minilm-curves.db --study minilm-manpages \\
        --scheduler full --set rungs=6 --set max_candidates=12 --set margin=1.0

    .venv/bin/python bench/finetune/curve_calibration.py \\
        --run sqlite:///runs/bench/mnist1d.db mnist1d-finetune@f5a54538 \\
        --run sqlite:///runs/bench/minilm-curves.db minilm-manpages@2b4dfba8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import bench.finetune.curves as calibration
from bench.finetune.curves import current_run_curves, score

ROOT = Path(__file__).resolve().parents[2]

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, action="append", metavar=("STORAGE", "STUDY"), required=True)
    parser.add_argument("--pfn", default=None, help="a folder of PFN weights (default: the shipped ones)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/curve_calibration.json"))
    args = parser.parse_args()
    calibration.PFN_WEIGHTS[0] = args.pfn
    results = {"sets": {}, "runs": args.run}
    everything = []
    for storage, study in args.run:
        curves = current_run_curves(storage, study)
        everything += curves
        results["sets"][study] = {"curves": len(curves), "rungs": sorted({len(c["rungs"]) for c in curves}),
                                  **score(curves), "raw_curves": curves}
        print(study, json.dumps({k: v for k, v in results["sets"][study].items() if k != "raw_curves"}), flush=True)
    results["all"] = {"curves": len(everything), **score(everything)}
    print("all", json.dumps(results["all"]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
