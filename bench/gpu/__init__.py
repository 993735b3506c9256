"""`make gpu-check`'s sections, a module per concept (`bench/gpu/check.py` runs them)."""
