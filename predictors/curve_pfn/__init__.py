"""LC-PFN in the project: a prior-data fitted network that extrapolates learning curves.

- `prior`: LC-PFN's prior over learning curves (Adriaensen et al., *Efficient
  Bayesian Learning Curve Extrapolation using Prior-Data Fitted Networks*),
  observed at the rungs of a budget of any length.
- `network`: the PFN, a transformer over (progress, value) pairs whose output is
  a bar (bucketized) distribution of a later value.
- `weights`: the shipped weights (safetensors) and their manifest, checked before use.
- `extrapolator`: `PFNExtrapolator`, the predictive distribution of a curve's final value.
- `train`: the script that trained the shipped weights (`python -m predictors.curve_pfn.train`).
"""
