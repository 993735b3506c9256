"""The database, and the only room that speaks SQL (`tests/test_import_direction.py` holds it to that).

elastiq's tables (`schema`, with the upgrades of older schemas) behind small functions that take an engine
and return typed records: a target's latency measurements (`latency`), the evaluation cache
(`evaluation_cache`), a search's batches (`batches`), hypervolume and export history (`history`), stored
predictors (`predictor_store`), supernet checkpoints (`supernets`), the fine-tuning stage's candidates and
rungs (`finetuning`). Beside them: Optuna studies (`study`), the lease that keeps one driver per study
(`lease`), and the one module that uses Optuna's private API (`optuna_private`).
"""
