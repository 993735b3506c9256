"""Benchmarks of the fine-tuning stage: its schedulers, and the learning-curve extrapolators' calibration on real
curves."""
