"""The elastic transformer supernet: model, tasks, training, extraction, checkpoints."""
