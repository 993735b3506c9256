"""The database: elastiq's tables (`schema`), Optuna studies (`study`), the lease that keeps one
driver per study (`lease`), and the one module that uses Optuna's private API (`optuna_private`)."""
