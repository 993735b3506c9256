"""`elastiq export`: the Pareto front of a study as models a user can ship.

    choose the trials (`selection`) -> build and verify each model (`building`) -> re-measure them side by
    side and write the manifest (`manifest`); `reading` reads an export back

Everything is written to a temporary directory and moved into place at the end; an export the database
does not record is not kept. An export whose manifest, trials and weights are unchanged is not redone.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from orchestrator.delivery.export.building import ExportedModel, export_one
from orchestrator.delivery.export.manifest import MANIFEST, remeasured, summary_line, weights_of, write_manifest
from orchestrator.delivery.export.reading import files_intact, previous_export, verify_export
from orchestrator.delivery.export.selection import (
    ExportError,
    Selection,
    accuracy_floor,
    choose,
    front,
    front_tolerance,
)
from orchestrator.delivery.outdir import check_output_dir, staged
from orchestrator.finetune.results import finetuned_run, with_finetuned
from orchestrator.search.objectives import Objectives
from orchestrator.storage.history import record_export
from orchestrator.storage.latency import drift_probes
from orchestrator.storage.schema import connect
from orchestrator.storage.study import SUPERNET_ATTR, evaluations, require_study, stored_config
from orchestrator.storage.supernets import supernet_checkpoint
from supernet.checkpoint import sha256_file
from supernet.tasks import load_task, quality_metric
from supernet.training.train import load_supernet

__all__ = ["MANIFEST", "ExportError", "ExportedModel", "Selection", "accuracy_floor", "export_study", "front",
           "front_tolerance", "verify_export"]
log = logging.getLogger("elastiq.export")


def export_study(storage: str, study_name: str, out: str | Path, selection: Selection = Selection(),
                 overwrite: bool = False) -> str:
    out = Path(out)
    check_output_dir(out, MANIFEST, replace=True)  # an earlier export may be up to date: decided below
    study = require_study(storage, study_name)
    config = stored_config(study, storage)
    if quality_metric(config.task.name) != "accuracy":
        raise ExportError(f"study {study_name!r}: a {config.task.name} study is not exported yet (a decoder's "
                          f"artifact with its KV cache is built and measured, not yet shipped in a folder)")
    objectives = Objectives.from_config(config.objectives, config.constraints)
    target = config.target.to_target()
    task = load_task(config.task.name, config.seed, config.task.options)
    supernet_sha = study.user_attrs[SUPERNET_ATTR]
    engine = connect(storage)  # upgrades an older elastiq schema, which has no exports table
    try:
        supernet = load_supernet(supernet_checkpoint(engine, config.supernet.checkpoint, supernet_sha), config.space,
                                 task, expected_sha256=supernet_sha)
        done = with_finetuned(evaluations(study), finetuned_run(study, engine), objectives)
        floor = None if selection.trials else accuracy_floor(config, task, done, selection.accuracy_floor)
        tolerance = front_tolerance(config, task, selection.front_tolerance)
        chosen = choose(done, selection, objectives, config, engine, supernet, task, target, floor, tolerance)
        keys = sorted(e.trial for e in chosen)
        previous = previous_export(out)
        if not overwrite and previous is not None and previous.get("study") == study_name and \
                previous.get("trials") == keys and previous.get("finetuned_weights", {}) == weights_of(chosen) and \
                previous.get("supernet_sha256") == supernet_sha and files_intact(out, previous):
            return f"{out}: export of trials {keys} is up to date (manifest verified); nothing to do"
        with staged(out, MANIFEST, replace=overwrite) as staging:  # refuses a non-empty --out first
            # the target's drift probes with their stored latency: measured again beside the exported models,
            # they tell how much faster or slower the machine runs now than its dataset says
            probes = drift_probes(engine, target) if objectives.needs_latency else []
            torch.set_num_threads(1)  # the search evaluated with one thread: same arithmetic, same predictions
            models, programs = [], []
            for e in chosen:
                folder = staging / f"trial-{e.trial:05d}-{e.arch.key[:8]}"
                folder.mkdir()
                model, program = export_one(folder, e, config, task, supernet, target)
                models.append(model)
                programs.append(program)
                log.info("exported trial %d (%s): test accuracy %.4f", e.trial, e.arch.key[:8], model.accuracy_test)
            models, drift = remeasured(models, programs, probes, config, task, supernet, target)
            manifest = write_manifest(staging, study_name, storage, config, target, supernet_sha, chosen, selection,
                                      models, drift, floor)
        try:
            record_export(engine, study_name, str(out.resolve()), keys, sha256_file(out / MANIFEST),
                          manifest["honesty"])
        except Exception:
            shutil.rmtree(out, ignore_errors=True)  # an export the database does not know of is not kept
            raise
    finally:
        engine.dispose()
    return summary_line(out, manifest)
