"""Benchmarks of latency: runtimes, the latency predictor (and HAT's, its baseline), measuring inside a search, export
honesty, quantized layers, token mixers."""
