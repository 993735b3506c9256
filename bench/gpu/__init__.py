"""`make gpu-check`'s sections, a module per concept (`bench/gpu_check.py` runs them)."""
