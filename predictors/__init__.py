"""Hardware targets, latency measurement, cost model and learned predictors."""
