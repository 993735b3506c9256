"""Studies in SQL, search strategies, execution, resume, export and the CLI.

One subpackage per concept, and imports point one way only, down this list
(`tests/test_import_direction.py` holds the same order):

    cli → delivery → finetune → search → execution → storage → config, errors

- `cli.py`: the command line, the product's surface.
- `delivery/`: what a study gives its user: `export/` (models to ship: selection, building, manifest, reading
  back), `report`, `status`, output folders.
- `finetune/`: the fine-tuning stage (`finetune`): the front's candidates as Ray Tune trials, the schedulers
  that stop them early, the fine-tuned results.
- `search/`: the driver loop (`search`, `resume`), its latency predictor, the strategies, objectives, Pareto
  fronts.
- `execution/`: where work runs: executors (local, Ray), the job board, evaluating an arch, measuring latency
  (and storing it: `measure_and_store`, for measure, search and export alike), training the supernet.
- `storage/`: the database, and the only room that speaks SQL: elastiq's tables behind small functions with
  typed records, Optuna studies, the study lease, Optuna's private API.
- `config.py`, `errors.py`: the study config (each section builds its runtime object) and the failures of a
  run, used by every room.
"""
