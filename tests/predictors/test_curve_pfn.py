"""The learning-curve PFN: its prior, its bar distribution, its shipped weights (checked before use), and
its predictions, calibrated on curves of its own prior."""

import json
import shutil

import numpy as np
import pytest
import torch

from predictors.curve_pfn.extrapolator import PFNExtrapolator
from predictors.curve_pfn.network import BarDistribution, CurvePFN, PFNShape
from predictors.curve_pfn.prior import sample_curves
from predictors.curve_pfn.weights import MANIFEST, SHIPPED, WEIGHTS, load_pfn, save_pfn
from search_space.errors import InputError


def test_the_prior_is_seeded_and_its_curves_rise_inside_the_unit_interval():
    a = sample_curves(np.random.default_rng(3), 64, 6)
    b = sample_curves(np.random.default_rng(3), 64, 6)
    assert np.array_equal(a.values, b.values)
    assert np.all((a.noiseless >= 0) & (a.noiseless <= 1))
    assert np.allclose(a.progress[0], np.arange(1, 7) / 6)
    assert not np.array_equal(a.values, sample_curves(np.random.default_rng(4), 64, 6).values)


def test_the_bar_distribution_is_a_density_with_ordered_quantiles():
    bars = BarDistribution(torch.tensor([0.0, 0.1, 0.5, 0.6, 1.0]))
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5]])
    grid = torch.linspace(0.0005, 0.9995, 1000, dtype=torch.float64)
    density = torch.exp(bars.log_density(logits.expand(len(grid), -1), grid))
    assert abs(float(density.mean()) - 1.0) < 1e-2  # integrates to one over [0, 1]
    quantiles = [float(bars.quantile(logits, q)) for q in (0.05, 0.5, 0.95)]
    assert quantiles == sorted(quantiles) and 0 <= quantiles[0] and quantiles[-1] <= 1
    with pytest.raises(ValueError, match="increasing"):
        BarDistribution(torch.tensor([0.0, 0.5, 0.5, 1.0]))


def test_the_shipped_pfn_is_calibrated_on_its_prior_and_sure_of_flat_curves():
    rng = np.random.default_rng(0)
    curves = sample_curves(rng, 150, 6)
    inside = []
    for seen in (2, 5):
        for values in curves.values:
            e = PFNExtrapolator(samples=200).fit(np.arange(1, seen + 1), values[:seen]).predict(6, rng)
            inside.append(e.lower <= values[-1] <= e.upper)
    assert 0.8 <= np.mean(inside) <= 0.97
    flat = PFNExtrapolator().fit(np.arange(1, 6), [0.90, 0.901, 0.899, 0.90, 0.901]).predict(6, rng)
    young = PFNExtrapolator().fit(np.arange(1, 3), [0.90, 0.901]).predict(6, rng)
    assert flat.lower <= 0.9 <= flat.upper and flat.upper - flat.lower < young.upper - young.lower


def test_a_curve_longer_than_its_training_is_thinned_and_a_bad_curve_refused():
    e = PFNExtrapolator().fit(np.arange(1, 200), np.linspace(0.5, 0.8, 199))
    assert len(e.x_) <= 31 and e.x_[-1] == 199 and e.x_[0] == 1
    assert 0.75 < e.predict(400, np.random.default_rng(0)).mean <= 1
    with pytest.raises(ValueError, match="finite"):
        PFNExtrapolator().fit([1, 2, 3], [0.5, float("nan"), 0.6])
    with pytest.raises(ValueError, match="before the curve's last point"):
        e.logits(100)


def test_saved_weights_read_back_exactly_and_tampered_ones_are_refused(tmp_path):
    model = CurvePFN(PFNShape(width=16, layers=1, heads=2, buckets=8))
    borders = torch.linspace(-0.1, 1.1, 9, dtype=torch.float64)
    save_pfn(tmp_path / "ok", model, borders, {"max_rungs": 8})
    loaded, bars, manifest = load_pfn(tmp_path / "ok")
    assert manifest["shape"]["width"] == 16 and torch.equal(bars.borders, borders)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))

    def broken(name, change):
        folder = tmp_path / name
        shutil.copytree(tmp_path / "ok", folder)
        change(folder)
        return folder

    weights_bytes = (tmp_path / "ok" / WEIGHTS).read_bytes()
    manifest_text = (tmp_path / "ok" / MANIFEST).read_text()
    cases = {
        "changed": (lambda f: (f / WEIGHTS).write_bytes(weights_bytes[:-1] + b"\x00"), "sha256"),
        "truncated": (lambda f: (f / WEIGHTS).write_bytes(weights_bytes[:100]), "sha256"),
        "missing": (lambda f: (f / WEIGHTS).unlink(), "cannot read its weights"),
        "no manifest": (lambda f: (f / MANIFEST).unlink(), "no readable manifest.json"),
        "garbled manifest": (lambda f: (f / MANIFEST).write_text(manifest_text[:40]), "no readable"),
        "escaping name": (lambda f: (f / MANIFEST).write_text(manifest_text.replace(
            '"weights": "weights.safetensors"', '"weights": "../ok/weights.safetensors"')), "outside its folder"),
        "no max_rungs": (lambda f: (f / MANIFEST).write_text(manifest_text.replace('"max_rungs": 8', '"max_rungs": "8"')),
                         "training.max_rungs"),
        "heads misfit": (lambda f: (f / MANIFEST).write_text(manifest_text.replace('"heads": 2', '"heads": 3')),
                         "a multiple of the heads"),
        "wrong shape": (lambda f: (f / MANIFEST).write_text(manifest_text.replace('"width": 16', '"width": 32')),
                        "do not fit its manifest's shape"),
    }
    for name, (change, message) in cases.items():
        with pytest.raises(InputError, match=message):
            load_pfn(broken(name.replace(" ", "-"), change))


def test_the_shipped_manifest_names_its_script_seed_and_hash():
    manifest = json.loads((SHIPPED / MANIFEST).read_text())
    assert manifest["training"]["script"] == "predictors/curve_pfn/train.py"
    assert manifest["training"]["seed"] == 0 and manifest["training"]["wall_s"] <= 30 * 60
    load_pfn()  # its sha256 matches
