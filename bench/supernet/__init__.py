"""Benchmarks of the supernet: slicing overhead, quality against training alone, training recipes, gradient conflict,
distributed training, the training fingerprint, pretrained exactness."""
