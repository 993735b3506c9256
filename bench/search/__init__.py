"""Benchmarks of the search: accuracy predictors, strategies, orchestration overhead, resume at scale, crash torture, a
Ray cluster, and two searches compared (FlexiBERT's choices, stages, 4-bit layers)."""
