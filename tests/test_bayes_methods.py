"""Deep ensemble, SWAG and IVON (and the point adapter) on a tiny RACE model and EMT-labelled clusters:
shapes, positive variances, distinct samples, sample forces = -dE/dx, recalibration, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from potentials import keys as K
from potentials.bayes import load_posterior
from potentials.bayes.base import RecalibrationPair, evaluate
from potentials.bayes.fit import fit_posterior, method_config, predict_dataset
from potentials.bayes.ivon import ivon_variance
from potentials.bayes.swag import SWAGMoments, swag_draw
from potentials.calibration import Recalibration
from potentials.data import collate
from potentials.model import preset
from potentials.testing import emt_clusters
from structures.common import InputError

torch.set_num_threads(1)
METHODS = ("point", "ensemble", "swag", "ivon")
DEFAULT_K = {"point": 1, "ensemble": 3, "swag": 5, "ivon": 5}


@pytest.fixture(scope="module")
def data():
    frames = emt_clusters(22)
    return frames[:14], frames[14:18], frames[18:]


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    train, valid, _ = data
    root = tmp_path_factory.mktemp("bayes")
    out = {}
    for method in METHODS:
        out[method] = fit_posterior(
            method, train, valid, preset("tiny", dtype="float64"), "tiny", root / method
        )
    return out


def _batch(post, frames):
    return collate(frames, post.elements, post.cutoff, dtype=torch.float64)


@pytest.mark.parametrize("method", METHODS)
def test_shapes_variances_and_samples(fitted, data, method):
    post, _ = fitted[method]
    batch = _batch(post, data[2])
    pred = post.predict(batch)
    g, n, k = 4, batch[K.POSITIONS].shape[0], DEFAULT_K[method]
    assert pred.energy.shape == (g,) and pred.forces.shape == (n, 3)
    assert pred.energy_samples.shape == (k, g) and pred.forces_samples.shape == (k, n, 3)
    assert pred.energy_var_aleatoric.shape == (g,) and pred.forces_var_epistemic.shape == (n, 3)
    assert torch.all(pred.energy_var > 0) and torch.all(pred.forces_var > 0)
    assert torch.all(torch.isfinite(pred.energy_var)) and torch.all(torch.isfinite(pred.forces_var))
    if method != "point":
        assert torch.all(pred.energy_var_epistemic > 0) and torch.all(pred.forces_var_epistemic > 0)
        assert not torch.allclose(pred.energy_samples[0], pred.energy_samples[1])
        # the epistemic variance is the spread of the samples times the recalibration factor
        spread = pred.energy_samples.var(0, unbiased=False) * post.recal.energy.scale**2
        assert torch.allclose(spread, pred.energy_var_epistemic, rtol=1e-6)
    mean = post.mean_forward(batch)
    assert mean["energy"].shape == (g,) and mean["forces"].shape == (n, 3)


@pytest.mark.parametrize("method", ["ensemble", "swag", "ivon"])
def test_sample_forces_are_minus_energy_gradient(fitted, data, method):
    post, _ = fitted[method]
    atoms = data[2][0]
    k, h = 1, 1e-4
    forces = post.predict(_batch(post, [atoms])).forces_samples[k]
    for atom, comp in ((0, 0), (2, 1), (4, 2)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, comp] += sign * h
            energies.append(float(post.predict(_batch(post, [moved])).energy_samples[k, 0]))
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(float(forces[atom, comp]), abs=1e-6)


def test_mean_forward_forces_are_gradient_and_differentiable(fitted, data):
    post, _ = fitted["ensemble"]
    batch = _batch(post, data[2][:1])
    batch[K.POSITIONS] = batch[K.POSITIONS].clone().requires_grad_(True)
    out = post.mean_forward(batch)
    (grad,) = torch.autograd.grad(out["energy"].sum(), batch[K.POSITIONS])
    assert torch.allclose(out["forces"], -grad, atol=1e-10)
    assert out["forces"].requires_grad  # second derivatives are available (e.g. Hessians)


def test_ensemble_is_the_mixture_of_its_members(fitted, data):
    post, _ = fitted["ensemble"]
    post.recal, saved = RecalibrationPair(), post.recal
    batch = _batch(post, data[2])
    pred = post.predict(batch)
    outs = [evaluate(m, batch) for m in post.members]
    energies = torch.stack([o[K.ENERGY] for o in outs])
    heads = torch.stack([o[K.ENERGY_VAR] for o in outs])
    assert torch.allclose(pred.energy, energies.mean(0))
    assert torch.allclose(pred.energy_var_epistemic, energies.var(0, unbiased=False))
    assert torch.allclose(pred.energy_var_aleatoric, heads.mean(0).double())
    assert torch.allclose(post.mean_forward(batch)["energy"], pred.energy)
    assert len({round(float(e[0]), 10) for e in energies.detach()}) == len(post.members)  # independent seeds
    post.recal = saved


def test_recalibration_scales_every_variance(fitted, data):
    post, _ = fitted["swag"]
    batch = _batch(post, data[2])
    saved = post.recal
    post.recal = RecalibrationPair()
    raw = post.predict(batch)
    post.recal = RecalibrationPair(Recalibration("scale", 2.0), Recalibration("scale", 3.0))
    cal = post.predict(batch)
    post.recal = saved
    assert torch.allclose(cal.energy, raw.energy)
    assert torch.allclose(cal.energy_var, 4.0 * raw.energy_var)
    assert torch.allclose(cal.forces_var, 9.0 * raw.forces_var)
    assert torch.equal(cal.energy_samples, raw.energy_samples)  # samples stay physical draws
    assert torch.allclose(raw.energy_samples.var(0, unbiased=False), raw.energy_var_epistemic, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_fitted_recalibration_and_round_trip(fitted, data, method):
    post, path = fitted[method]
    # the stored factor is the closed-form NLL optimum on the validation set: mean z^2 = 1 afterwards
    p = predict_dataset(post, data[1])
    z2 = (p["forces_label"] - p["forces"]) ** 2 / p["forces_var"]
    assert float(np.mean(z2)) == pytest.approx(1.0, rel=1e-6)
    again = load_posterior(path)
    assert again.method == post.method
    batch = _batch(post, data[2])
    a, b = post.predict(batch), again.predict(batch)
    for field in (
        "energy",
        "forces",
        "energy_var_aleatoric",
        "energy_var_epistemic",
        "forces_var_aleatoric",
        "forces_var_epistemic",
        "energy_samples",
    ):
        assert torch.allclose(getattr(a, field), getattr(b, field), rtol=1e-12, atol=0), field


def test_swag_moments_and_sampling_covariance():
    rng = np.random.default_rng(0)
    thetas = rng.normal(size=(5, 4))
    moments = SWAGMoments(4, rank=3)
    for i, t in enumerate(thetas):
        moments.collect(torch.tensor(t), epoch=i)
    assert np.allclose(moments.mean.numpy(), thetas.mean(0))
    assert np.allclose(moments.diag_variance().numpy(), thetas.var(0))
    running = np.cumsum(thetas, 0) / np.arange(1, 6)[:, None]
    assert np.allclose(moments.deviations.numpy(), (thetas - running)[-3:])  # the last rank columns
    d = moments.deviations
    cov = 0.5 * torch.diag(moments.diag_variance()) + d.T @ d / (2 * (3 - 1))
    draws = swag_draw(moments.diag_variance(), d, 40000, torch.Generator().manual_seed(0))
    assert torch.allclose(torch.cov(draws.T), cov, atol=0.03)
    again = SWAGMoments.from_state(moments.state())
    assert torch.equal(again.deviations, moments.deviations) and again.epochs == moments.epochs


def test_ivon_posterior_is_the_optimiser_state(fitted):
    post, _ = fitted["ivon"]
    cfg = method_config("ivon", "tiny")
    assert torch.allclose(post.variance, 1.0 / (cfg.ess * (post.hess + cfg.weight_decay)))
    assert torch.all(post.hess != cfg.hess_init)  # the Hessian estimate moved during training
    draws = post.draw(4000, torch.Generator().manual_seed(0))
    std = draws.std(0)
    assert torch.allclose(std, ivon_variance(post.hess, cfg.ess, cfg.weight_decay).sqrt(), rtol=0.1)
    assert math.isclose(post.ess, cfg.ess)


def test_bad_method_and_preset():
    with pytest.raises(InputError):
        fit_posterior("dropout", [], None, preset("tiny"), "tiny", "unused")
    with pytest.raises(InputError):
        method_config("swag", "huge")
    with pytest.raises(InputError):
        method_config("swag", "tiny", rank=1)


def test_train_command_glue(data, tmp_path, capsys):
    import argparse

    from potentials.bayes.fit import run_from_train_args, train_config_for
    from potentials.cmd_train import add_method_arguments

    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    add_method_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "ivon"), "--method", "ivon", "--bayes-preset", "tiny"])
    train, valid, test = data
    assert (
        run_from_train_args(args, train, valid, preset("tiny", dtype="float64"), train_config_for("tiny"))
        == 0
    )
    assert "ivon posterior" in capsys.readouterr().out
    post = load_posterior(tmp_path / "ivon" / "posterior.pt")
    assert post.method == "ivon" and post.recal.forces.kind == "scale"
    with pytest.raises(SystemExit):
        parser.parse_args(["--method", "mcdropout"])


def test_ivon_warm_start(data, tmp_path):
    from potentials.bayes.fit import train_config_for
    from potentials.bayes.ivon import fit_ivon

    train, valid, _ = data
    cfg = method_config("ivon", "tiny", pretrain_fraction=0.5)
    post = fit_ivon(train, valid, preset("tiny", dtype="float64"), train_config_for("tiny"), cfg, tmp_path)
    assert (tmp_path / "pretrain" / "best.pt").exists() and (tmp_path / "ivon" / "last.pt").exists()
    assert torch.all(post.hess != cfg.hess_init) and torch.all(post.variance > 0)
