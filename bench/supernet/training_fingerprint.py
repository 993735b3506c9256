"""Fingerprints of what training computes: a sha256 of the weights after each of elastiq's ways to train.

A refactor that keeps behaviour must keep these exactly. Run it on this checkout and on an older one with
the same environment, and compare the two outputs:

    .venv/bin/python bench/supernet/training_fingerprint.py > new.json
    git worktree add ../elastiq-old COMMIT
    PYTHONPATH=../elastiq-old .venv/bin/python bench/supernet/training_fingerprint.py > old.json
    diff old.json new.json

Covered, on the tiny space and the digits task, one thread: the supernet's sandwich training straight and
continued from a checkpoint (with in-place distillation from step 5), a subnet trained alone, a subnet
fine-tuned from the largest arch straight and continued from a state taken halfway, and the search's
`static_model` with a few fine-tuning steps.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "configs" / "spaces" / "tiny.yaml"


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprints(steps: int) -> dict[str, str]:
    from orchestrator.execution.evaluation import static_model
    from search_space import SearchSpace
    from supernet.model import Supernet
    from supernet.tasks import load_task
    from supernet.training.finetune import Finetuner, FinetuneSettings
    from supernet.training.train import TrainSettings, train_standalone, train_supernet

    torch.set_num_threads(1)
    space, task = SearchSpace.from_yaml(SPACE), load_task("digits", 0)
    settings = TrainSettings(steps=steps, batch_size=32, lr=2e-3, warmup_steps=5, checkpoint_every=10, distill=True,
                             distill_start=5)
    out = {}
    with tempfile.TemporaryDirectory(prefix="elastiq-fingerprint-") as scratch:
        checkpoint = Path(scratch) / "supernet.pt"
        first_half = TrainSettings(**{**vars(settings), "steps": steps // 2})
        train_supernet(Supernet(space, task.spec, seed=0), task, first_half, seed=0, checkpoint=checkpoint,
                       progress=False)
        continued = Supernet(space, task.spec, seed=0)
        train_supernet(continued, task, settings, seed=0, checkpoint=checkpoint, progress=False)
        out["supernet_continued"] = weights_sha256(continued)
    supernet = Supernet(space, task.spec, seed=0)
    train_supernet(supernet, task, settings, seed=0, progress=False)
    out["supernet"] = weights_sha256(supernet)
    alone = supernet.extract(space.smallest())
    train_standalone(alone, task, TrainSettings(steps=steps, batch_size=32, lr=1e-3, warmup_steps=4), seed=1)
    out["standalone"] = weights_sha256(alone)
    teacher = supernet.extract(space.largest()).eval()
    tuned = Finetuner(supernet.extract(space.smallest()), task, FinetuneSettings(steps=steps, batch_size=32), seed=2,
                      teacher=teacher)
    tuned.train(steps // 2)
    halfway = copy.deepcopy(tuned.state())  # the tensors of a state are the live ones: copied, as a save would
    tuned.train(steps)
    out["finetune"] = weights_sha256(tuned.model)
    again = Finetuner(supernet.extract(space.smallest()), task, FinetuneSettings(steps=steps, batch_size=32), seed=2,
                      teacher=teacher)
    again.restore(halfway)
    again.train(steps)
    out["finetune_continued"] = weights_sha256(again.model)
    out["search_static_model"] = weights_sha256(static_model(supernet, space.smallest(), task, steps // 2, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps of each training (even, at least 2)")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.steps % 2:
        print(f"training_fingerprint: error: --steps must be an even number of at least 2, got {args.steps}",
              file=sys.stderr)
        return 2
    print(json.dumps(fingerprints(args.steps), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
