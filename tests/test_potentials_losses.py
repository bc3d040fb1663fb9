"""Loss values and gradients against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from potentials import keys as K
from potentials.losses import LossConfig, active_kind, compute_loss, gaussian_nll_3d
from structures.common import InputError

LOG_2PI = math.log(2 * math.pi)


def _case():
    """Two structures (2 and 1 atoms) with hand-chosen predictions and labels."""
    sigma = np.array(
        [
            [[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]],
            [[1.0, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 0.7]],
            [[0.3, 0.1, 0.1], [0.1, 0.3, 0.1], [0.1, 0.1, 0.3]],
        ]
    )
    pred = {
        K.ENERGY: torch.tensor([-10.0, -4.0], dtype=torch.float64, requires_grad=True),
        K.ENERGY_VAR: torch.tensor([0.04, 0.25], dtype=torch.float64, requires_grad=True),
        K.FORCES: torch.tensor(
            [[0.1, -0.2, 0.3], [0.0, 0.5, -0.5], [1.0, 0.0, 0.2]], dtype=torch.float64, requires_grad=True
        ),
        K.FORCES_COV: torch.tensor(sigma, requires_grad=True),
    }
    batch = {
        K.ENERGY: torch.tensor([-10.3, -3.9], dtype=torch.float64),
        K.FORCES: torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.4, -0.4], [0.8, 0.1, 0.0]], dtype=torch.float64),
        K.NUM_ATOMS: torch.tensor([2, 1]),
        K.BATCH: torch.tensor([0, 0, 1]),
    }
    return pred, batch, sigma


def _hand_nll_jef(pred, batch, sigma, force_weight):
    e_res = (pred[K.ENERGY] - batch[K.ENERGY]).detach().numpy()
    var = pred[K.ENERGY_VAR].detach().numpy()
    nll_e = np.mean(0.5 * (e_res**2 / var + np.log(var) + LOG_2PI))
    f_res = (pred[K.FORCES] - batch[K.FORCES]).detach().numpy()
    nll_f = []
    grads_f, grads_cov = [], []
    for r, s in zip(f_res, sigma):
        inv = np.linalg.inv(s)
        nll_f.append(0.5 * (r @ inv @ r + np.log(np.linalg.det(s)) + 3 * LOG_2PI))
        grads_f.append(inv @ r)
        grads_cov.append(0.5 * (inv - inv @ np.outer(r, r) @ inv))
    n = len(f_res)
    value = nll_e + force_weight * np.mean(nll_f)
    grad_e = e_res / var / len(e_res)
    grad_var = 0.5 * (1 / var - e_res**2 / var**2) / len(e_res)
    return (
        value,
        grad_e,
        grad_var,
        force_weight * np.array(grads_f) / n,
        force_weight * np.array(grads_cov) / n,
    )


def test_nll_jef_value_and_gradient_match_hand_computation():
    pred, batch, sigma = _case()
    cfg = LossConfig(kind="nll_jef", energy_weight=1.0, force_weight=2.0, min_variance=0.0)
    loss, parts = compute_loss(pred, batch, cfg)
    loss.backward()
    value, g_e, g_var, g_f, g_cov = _hand_nll_jef(pred, batch, sigma, 2.0)
    assert float(loss.detach()) == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(pred[K.ENERGY].grad.numpy(), g_e, rtol=1e-10)
    np.testing.assert_allclose(pred[K.ENERGY_VAR].grad.numpy(), g_var, rtol=1e-10)
    np.testing.assert_allclose(pred[K.FORCES].grad.numpy(), g_f, rtol=1e-10, atol=1e-14)
    # the loss sees Sigma only through its lower triangle (Cholesky): compare the symmetrised gradient
    g = pred[K.FORCES_COV].grad.numpy()
    np.testing.assert_allclose(0.5 * (g + g.transpose(0, 2, 1)), g_cov, rtol=1e-8, atol=1e-12)
    assert set(parts) == {"energy", "forces"}


def test_gaussian_nll_3d_diagonal_equals_sum_of_1d():
    r = torch.tensor([[0.3, -0.1, 0.2]], dtype=torch.float64)
    var = torch.tensor([0.5, 2.0, 0.1], dtype=torch.float64)
    expected = (0.5 * (r[0] ** 2 / var + var.log() + LOG_2PI)).sum()
    assert float(gaussian_nll_3d(r, torch.diag(var)[None])[0]) == pytest.approx(float(expected), rel=1e-13)


def test_mse_and_nll_e_and_warmup():
    pred, batch, _ = _case()
    cfg = LossConfig(kind="mse", energy_weight=3.0, force_weight=0.5)
    loss, parts = compute_loss(pred, batch, cfg)
    e_res = np.array([0.3 / 2, -0.1 / 1])
    f_res = (pred[K.FORCES] - batch[K.FORCES]).detach().numpy()
    assert parts["energy"] == pytest.approx(np.mean(e_res**2))
    assert parts["forces"] == pytest.approx(np.mean(f_res**2))
    assert float(loss.detach()) == pytest.approx(3.0 * np.mean(e_res**2) + 0.5 * np.mean(f_res**2))

    nll_e = LossConfig(kind="nll_e", min_variance=0.0)
    _, parts = compute_loss(pred, batch, nll_e)
    var = np.array([0.04, 0.25])
    assert parts["energy"] == pytest.approx(
        np.mean(0.5 * (np.array([0.3, -0.1]) ** 2 / var + np.log(var) + LOG_2PI))
    )
    assert parts["forces"] == pytest.approx(np.mean(f_res**2))

    warm = LossConfig(kind="nll_jef", mse_warmup_epochs=5)
    assert (
        active_kind(warm, 4) == "mse"
        and active_kind(warm, 5) == "nll_jef"
        and active_kind(warm, None) == "nll_jef"
    )
    loss_warm, _ = compute_loss(pred, batch, warm, epoch=0)
    loss_mse, _ = compute_loss(pred, batch, LossConfig(kind="mse"))
    assert float(loss_warm.detach()) == pytest.approx(float(loss_mse.detach()))


def test_beta_nll_scales_gradients_not_values():
    pred, batch, _ = _case()
    plain = LossConfig(kind="nll_e", beta=0.0, force_weight=0.0, min_variance=0.0)
    beta = LossConfig(kind="nll_e", beta=0.5, force_weight=0.0, min_variance=0.0)
    loss_beta, _ = compute_loss(pred, batch, beta)
    loss_beta.backward()
    g_beta = pred[K.ENERGY].grad.clone()
    pred[K.ENERGY].grad = None
    loss_plain, _ = compute_loss(pred, batch, plain)
    loss_plain.backward()
    var = pred[K.ENERGY_VAR].detach()
    torch.testing.assert_close(g_beta, pred[K.ENERGY].grad * var**0.5)


def test_weights_and_unknown_kind():
    pred, batch, _ = _case()
    batch[K.WEIGHT] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    _, parts = compute_loss(pred, batch, LossConfig(kind="mse"))
    assert parts["energy"] == pytest.approx(0.15**2)  # the second structure has weight 0
    with pytest.raises(InputError, match="unknown loss"):
        LossConfig(kind="huber")


@pytest.mark.parametrize("kind", ["mse", "nll_e", "nll_jef"])
def test_energy_weight_zero_keeps_forces_and_drops_the_energy(kind):
    """A replay frame (energy_weight 0) trains forces only: its energy error moves neither the energy term
    nor its gradient, while its forces count like any other frame's."""
    pred, batch, _ = _case()
    _, ref = compute_loss(pred, batch, LossConfig(kind=kind))
    batch[K.ENERGY_WEIGHT] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss, parts = compute_loss(pred, batch, LossConfig(kind=kind))
    assert parts["forces"] == pytest.approx(ref["forces"])
    weighted = {**batch, K.WEIGHT: torch.tensor([1.0, 0.0], dtype=torch.float64)}
    del weighted[K.ENERGY_WEIGHT]
    e_first = compute_loss(pred, weighted, LossConfig(kind=kind))[1]["energy"]  # energy of frame 0 alone
    assert parts["energy"] == pytest.approx(e_first)
    loss.backward()
    assert pred[K.ENERGY].grad[1] == 0.0 and pred[K.ENERGY].grad[0] != 0.0
    # a batch of replay frames only: energy term 0, forces still train
    pred, batch, _ = _case()
    batch[K.ENERGY_WEIGHT] = torch.zeros(2, dtype=torch.float64)
    loss, parts = compute_loss(pred, batch, LossConfig(kind=kind))
    assert parts["energy"] == 0.0 and parts["forces"] == pytest.approx(ref["forces"])
    loss.backward()
    assert torch.isfinite(pred[K.FORCES].grad).all() and pred[K.FORCES].grad.abs().sum() > 0
