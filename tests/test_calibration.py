"""Calibration metrics against hand-computed values, recalibration on synthetic data with a known truth,
and OOD scores / AUROC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from potentials import calibration as C
from potentials.posterior import Prediction
from structures.common import InputError


def test_mae_rmse_nll_by_hand():
    y, mu = np.array([1.0, 2.0, 3.0]), np.ones(3)
    assert C.mae(y, mu) == pytest.approx(1.0)
    assert C.rmse(y, mu) == pytest.approx(math.sqrt(5.0 / 3.0))
    nll = C.gaussian_nll([0.0, 1.0], [0.0, 0.0], [1.0, 2.0])
    expected = 0.5 * (0.5 * math.log(2 * math.pi) + 0.5 * (0.25 + math.log(2 * math.pi * 4.0)))
    assert nll == pytest.approx(expected)


def test_coverage_by_hand():
    y = np.array([0.5, 1.5, 2.5, -0.1])
    mu, sigma = np.zeros(4), np.ones(4)
    assert C.coverage(y, mu, sigma, 0.6826894921370859) == pytest.approx(0.5)  # |z| <= 1: 0.5, 0.1
    assert C.coverage(y, mu, sigma, 0.95) == pytest.approx(0.75)  # |z| <= 1.96
    assert C.coverage(2 * y, mu, 2 * sigma, 0.95) == pytest.approx(0.75)  # scale invariant


def test_miscalibration_area_extremes_and_gaussian():
    zeros = np.zeros(50)
    # every error is zero: observed coverage 1 at every level, area = int_0^1 (1 - p) dp = 0.5
    assert C.miscalibration_area(zeros, zeros, np.ones(50)) == pytest.approx(0.5)
    # errors far outside every interval: observed coverage 0 until p = 1
    assert C.miscalibration_area(np.full(50, 1e6), zeros, np.ones(50)) == pytest.approx(0.5, abs=5e-3)
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 2.0, 20000)
    y = rng.normal(0.0, sigma)
    assert C.miscalibration_area(y, np.zeros_like(y), sigma) < 0.01
    assert C.miscalibration_area(y, np.zeros_like(y), 3 * sigma) > 0.15


def test_ence_sharpness_spearman_by_hand():
    err, sigma = np.ones(4), np.array([1.0, 1.0, 2.0, 2.0])
    # bin 1: RMV 1, RMSE 1 -> 0; bin 2: RMV 2, RMSE 1 -> 0.5; mean 0.25
    assert C.ence(err, np.zeros(4), sigma, n_bins=2) == pytest.approx(0.25)
    assert C.sharpness([1.0, 3.0]) == pytest.approx(math.sqrt(5.0))
    assert C.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert C.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    b[:10] = b[10:20]  # ties
    assert C.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)


def test_bad_inputs_raise():
    with pytest.raises(InputError):
        C.gaussian_nll([1.0], [1.0], [0.0])
    with pytest.raises(InputError):
        C.metrics([1.0, 2.0], [1.0], [1.0, 1.0])
    with pytest.raises(InputError):
        C.fit_recalibration([1.0], [1.0], [1.0], kind="magic")


def _synthetic(n, rng, true_factor=2.0, heavy=False):
    sigma = rng.uniform(0.1, 1.0, n)
    noise = rng.standard_t(3, n) / math.sqrt(3.0) if heavy else rng.normal(size=n)
    return true_factor * sigma * noise, np.zeros(n), sigma


def test_scale_recalibration_recovers_known_factor():
    rng = np.random.default_rng(2)
    y_val, mu_val, s_val = _synthetic(5000, rng)
    rec = C.fit_recalibration(y_val, mu_val, s_val, "scale")
    assert rec.scale == pytest.approx(2.0, rel=0.05)  # the truth: errors are 2x the predicted sigma
    y, mu, s = _synthetic(5000, rng)
    before, after = C.metrics(y, mu, s), C.metrics(y, mu, s, rec)
    assert after["miscal_area"] < 0.02 < before["miscal_area"]
    assert after["nll"] < before["nll"]
    assert abs(after["coverage_95"] - 0.95) < 0.02
    assert after["sharpness"] == pytest.approx(rec.scale * before["sharpness"])
    # the recalibrated metrics are the metrics of the rescaled sigma
    assert C.metrics(y, mu, rec.scale * s)["nll"] == pytest.approx(after["nll"])


def test_isotonic_recalibration_reduces_area_for_heavy_tails():
    rng = np.random.default_rng(3)
    y_val, mu_val, s_val = _synthetic(5000, rng, 0.5, heavy=True)
    iso = C.fit_recalibration(y_val, mu_val, s_val, "isotonic")
    y, mu, s = _synthetic(5000, rng, 0.5, heavy=True)
    raw = C.miscalibration_area(y, mu, s)
    scaled = C.recalibrated_miscalibration_area(y, mu, s, C.fit_scale(y_val, mu_val, s_val))
    iso_area = C.recalibrated_miscalibration_area(y, mu, s, iso)
    assert iso_area < scaled < raw
    assert iso_area < 0.02
    factors = iso.factor(np.linspace(0.01, 0.99, 50))
    assert np.all(np.diff(factors) >= 0)  # wider intervals for higher levels
    again = C.Recalibration.from_dict(iso.to_dict())
    assert np.allclose(again.factor([0.5, 0.9]), iso.factor([0.5, 0.9]))


def test_ood_auc_by_hand():
    res = C.ood_auc([0.1, 0.2, 0.3], [0.25, 0.4])
    assert res["auroc"] == pytest.approx(5.0 / 6.0)  # 5 of 6 (in, out) pairs ranked right
    assert res["auprc"] == pytest.approx(0.5 * 1.0 + 0.5 * 2.0 / 3.0)


def test_ood_scores_from_prediction():
    # two structures: atoms 0-1 and 2; per-atom force sigma = sqrt(mean_c var)
    f_epi = torch.tensor([[1.0, 1.0, 1.0], [4.0, 4.0, 4.0], [9.0, 9.0, 9.0]])
    pred = Prediction(
        energy=torch.zeros(2),
        forces=torch.zeros(3, 3),
        energy_var_aleatoric=torch.tensor([1.0, 1.0]),
        energy_var_epistemic=torch.tensor([4.0, 9.0]),
        forces_var_aleatoric=torch.ones(3, 3),
        forces_var_epistemic=f_epi,
        energy_samples=torch.zeros(1, 2),
    )
    n, batch = torch.tensor([2, 1]), torch.tensor([0, 0, 1])
    assert np.allclose(C.ood_scores(pred, n, batch, "forces"), [(1.0 + 2.0) / 2, 3.0])
    assert np.allclose(C.ood_scores(pred, n, batch, "energy"), [2.0 / 2, 3.0 / 1])
    assert np.allclose(
        C.ood_scores(pred, n, batch, "energy", epistemic=False), [math.sqrt(5) / 2, math.sqrt(10)]
    )
    with pytest.raises(InputError):
        C.ood_scores(pred, n, batch, "stress")
