"""Laplace: the force-aware GGN against explicit Jacobians on a 2-parameter toy, Jacobian modes and
Jacobian-vector products on a tiny RACE model, the evidence, and the posterior's predictive."""

from __future__ import annotations

import math

import pytest
import torch

from potentials import keys as K
from potentials.bayes import load_posterior
from potentials.bayes.laplace import (
    GGNStats,
    LaplaceConfig,
    accumulate_ggn,
    fit_hyperparameters,
    jacobian_vector_products,
    laplace_from_model,
    laplace_names,
    log_marginal_likelihood,
    output_jacobians,
)
from potentials.data import atoms_to_graph, collate, collate_graphs
from potentials.model import build_model, preset
from potentials.testing import emt_clusters
from potentials.train import prepare_config
from structures.common import InputError

torch.set_num_threads(1)


class Toy(torch.nn.Module):
    """E_g = a sum_i r_i^2 + b sum_i r_i^4 over the atoms of graph g; forces by autograd."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(-0.2, dtype=torch.float64))

    def forward(self, batch, compute_forces=True, compute_stress=False, create_graph=False):
        pos = batch[K.POSITIONS]
        with torch.enable_grad():
            if compute_forces and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            r2 = (pos**2).sum(1)
            e_atom = self.a * r2 + self.b * r2**2
            n_graphs = int(batch[K.NUM_ATOMS].numel())
            energy = torch.zeros(n_graphs, dtype=torch.float64).index_add(0, batch[K.BATCH], e_atom)
            out = {**batch, K.ENERGY: energy}
            if compute_forces:
                out[K.FORCES] = -torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)[0]
        return out


def _toy_batch(seed=0, sizes=(3, 2)):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return {
        K.POSITIONS: pos,
        K.BATCH: torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        K.NUM_ATOMS: torch.tensor(sizes),
        K.ENERGY: torch.randn(len(sizes), generator=gen, dtype=torch.float64),
        K.FORCES: torch.randn(n, 3, generator=gen, dtype=torch.float64),
    }


def _toy_jacobians(batch):
    """Explicit J_E (G, 2) and J_F (3N, 2) of the toy."""
    pos = batch[K.POSITIONS]
    r2 = (pos**2).sum(1)
    n_graphs = int(batch[K.NUM_ATOMS].numel())
    j_e = torch.zeros(n_graphs, 2, dtype=torch.float64)
    j_e[:, 0].index_add_(0, batch[K.BATCH], r2)
    j_e[:, 1].index_add_(0, batch[K.BATCH], r2**2)
    j_f = torch.stack([(-2.0 * pos).reshape(-1), (-4.0 * r2[:, None] * pos).reshape(-1)], dim=1)
    return j_e, j_f


def test_ggn_matches_explicit_jacobians_on_toy():
    model, batches = Toy(), [_toy_batch(0), _toy_batch(1, (4,))]
    a_e = sum(j_e.T @ j_e for j_e, _ in map(_toy_jacobians, batches))
    a_f = sum(j_f.T @ j_f for _, j_f in map(_toy_jacobians, batches))
    for mode in ("rows", "columns"):
        full = accumulate_ggn(model, batches, ["a", "b"], full=True, jacobian_mode=mode)
        assert torch.allclose(full.a_energy, a_e, rtol=1e-12)
        assert torch.allclose(full.a_forces, a_f, rtol=1e-12)
        diag = accumulate_ggn(model, batches, ["a", "b"], full=False, jacobian_mode=mode)
        assert torch.allclose(diag.a_energy, torch.diagonal(a_e), rtol=1e-12)
        assert torch.allclose(diag.a_forces, torch.diagonal(a_f), rtol=1e-12)
    # residual statistics at theta*
    sse_f = sum(float(((model(b)[K.FORCES] - b[K.FORCES]) ** 2).sum()) for b in batches)
    assert full.sse_forces == pytest.approx(sse_f)
    assert (full.n_energy, full.n_forces) == (3, 27)
    assert full.theta_sq == pytest.approx(0.7**2 + 0.2**2)


def test_ggn_leaves_out_energies_with_energy_weight_zero():
    """Replay frames (energy_weight 0) add their force Jacobians and residuals, not their energies'."""
    model, batch = Toy(), _toy_batch(0)
    masked = {**batch, K.ENERGY_WEIGHT: torch.tensor([0.0, 1.0], dtype=torch.float64)}
    j_e, j_f = _toy_jacobians(batch)
    for mode in ("rows", "columns"):
        stats = accumulate_ggn(model, [masked], ["a", "b"], full=True, jacobian_mode=mode)
        assert torch.allclose(stats.a_energy, j_e[1:].T @ j_e[1:], rtol=1e-12)
        assert torch.allclose(stats.a_forces, j_f.T @ j_f, rtol=1e-12)
    e_res = float(model(batch)[K.ENERGY][1] - batch[K.ENERGY][1])
    assert (stats.n_energy, stats.n_forces) == (1, 15)
    assert stats.sse_energy == pytest.approx(e_res**2)
    mc = accumulate_ggn(model, [masked], ["a", "b"], mode="mc", probes=50)
    assert torch.allclose(mc.a_energy, torch.diagonal(j_e[1:].T @ j_e[1:]), rtol=1e-12)  # one output: exact


def test_monte_carlo_ggn_is_unbiased():
    model, batches = Toy(), [_toy_batch(0), _toy_batch(1, (4,))]
    exact = accumulate_ggn(model, batches, ["a", "b"])
    mc = accumulate_ggn(
        model, batches, ["a", "b"], mode="mc", probes=400, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(mc.a_forces, exact.a_forces, rtol=0.3)
    assert torch.allclose(mc.a_energy, exact.a_energy, rtol=0.3)
    with pytest.raises(InputError):
        accumulate_ggn(model, batches, ["a", "b"], full=True, mode="mc")


def test_evidence_by_hand_and_its_maximum():
    stats = GGNStats(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 3.0]), 4.0, 2, 9.0, 6, 5.0)
    lp, le, lf = (torch.tensor(math.log(v), dtype=torch.float64) for v in (0.5, 1.5, 2.0))
    expected = (
        -0.5 * (2 * (math.log(2 * math.pi) + math.log(1.5)) + 4.0 / 1.5)
        - 0.5 * (6 * (math.log(2 * math.pi) + math.log(2.0)) + 9.0 / 2.0)
        - 0.5 * 0.5 * 5.0
        + 0.5 * 2 * math.log(0.5)
        - 0.5 * (math.log(2.0 / 1.5 + 0.5) + math.log(3.0 / 2.0 + 0.5))
    )
    assert float(log_marginal_likelihood(stats, lp, le, lf)) == pytest.approx(expected)
    # well-determined weights (curvature >> delta) only in the force block: the evidence peaks at
    # s_E^2 = sse_E / n_E, s_F^2 = sse_F / (n_F - P) and delta = P / |theta|^2 (MacKay's fixed point)
    sharp = GGNStats(torch.zeros(2), torch.full((2,), 1e8), 4.0, 2, 9.0, 6, 5.0)
    hyper = fit_hyperparameters(sharp, prior_precision=1.0, steps=3000, lr=0.05)
    assert hyper["var_energy"] == pytest.approx(2.0, rel=1e-3)
    assert hyper["var_forces"] == pytest.approx(9.0 / 4.0, rel=1e-3)
    assert hyper["prior_precision"] == pytest.approx(2.0 / 5.0, rel=1e-3)


# ---- a tiny RACE model on EMT-labelled clusters --------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    frames = emt_clusters(12)
    torch.manual_seed(0)
    config = prepare_config(preset("tiny", dtype="float64"), frames)
    model = build_model(config).eval()
    graphs = [atoms_to_graph(a, config.elements, config.cutoff) for a in frames]
    return model, config, frames, graphs


def test_jacobian_modes_and_jvp_agree_on_race(tiny):
    model, config, frames, graphs = tiny
    batch = collate_graphs(graphs[:2], dtype=torch.float64)
    names = laplace_names(model, "last_layer") + ["model.readouts.0.weight", "model.embedding.weight"]
    j_e_r, j_f_r, _ = output_jacobians(model, batch, names, "rows")
    j_e_c, j_f_c, out = output_jacobians(model, batch, names, "columns")
    assert torch.allclose(j_e_r, j_e_c, atol=1e-10) and torch.allclose(j_f_r, j_f_c, atol=1e-10)
    assert j_f_r.abs().max() > 0
    deltas = torch.randn(3, j_e_r.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dev_e, dev_f, _ = jacobian_vector_products(model, batch, names, deltas)
    assert torch.allclose(dev_e, deltas @ j_e_r.T, atol=1e-10)
    assert torch.allclose(dev_f.reshape(3, -1), deltas @ j_f_r.T, atol=1e-10)
    # finite differences of the forces along one weight direction (the linearisation is first order)
    params = dict(model.named_parameters())
    d = deltas[0] * 1e-6
    with torch.no_grad():
        offset = 0
        for n in names:
            params[n].add_(d[offset : offset + params[n].numel()].view(params[n].shape))
            offset += params[n].numel()
    f_plus = model(batch)[K.FORCES].detach()
    with torch.no_grad():
        offset = 0
        for n in names:
            params[n].sub_(d[offset : offset + params[n].numel()].view(params[n].shape))
            offset += params[n].numel()
    assert torch.allclose((f_plus - out[K.FORCES]).reshape(-1) / 1e-6, j_f_r @ deltas[0], atol=1e-4)


def _fd_forces_check(posterior, atoms, k=0, h=1e-4):
    """Compare forces_samples[k] with -dE_k/dx by central differences on two coordinates."""
    batch = collate([atoms], posterior.elements, posterior.cutoff, dtype=torch.float64)
    forces = posterior.predict(batch).forces_samples[k]
    for atom, comp in ((0, 0), (3, 2)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, comp] += sign * h
            b = collate([moved], posterior.elements, posterior.cutoff, dtype=torch.float64)
            energies.append(float(posterior.predict(b).energy_samples[k, 0]))
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(float(forces[atom, comp]), abs=1e-6)


@pytest.mark.parametrize("variant", ["last_layer", "diag"])
def test_laplace_posterior_predictive(tiny, tmp_path, variant):
    model, config, frames, graphs = tiny
    cfg = LaplaceConfig(variant=variant, ggn="exact", n_samples=6, marglik_steps=100)
    post = laplace_from_model(model, config, graphs[:8], cfg)
    assert post.hyper["prior_precision"] > 0 and post.hyper["var_forces"] > 0
    batch = collate(frames[8:11], config.elements, config.cutoff, dtype=torch.float64)
    pred = post.predict(batch)
    g, n = 3, batch[K.POSITIONS].shape[0]
    assert pred.energy.shape == (g,) and pred.forces.shape == (n, 3)
    assert pred.energy_samples.shape == (6, g) and pred.forces_samples.shape == (6, n, 3)
    assert torch.all(pred.energy_var_epistemic > 0) and torch.all(pred.forces_var_epistemic > 0)
    assert torch.all(pred.energy_var > 0) and torch.all(pred.forces_var > 0)
    assert not torch.allclose(pred.energy_samples[0], pred.energy_samples[1])
    # exact linearised variance: J Sigma J^T from explicit Jacobians
    j_e, j_f, _ = output_jacobians(post.model, batch, post.names, "rows")
    var_e, var_f = post.epistemic_variances(j_e, j_f)
    if variant == "last_layer":
        assert torch.allclose(pred.energy_var_epistemic, var_e, rtol=1e-8)
        assert torch.allclose(pred.forces_var_epistemic.reshape(-1), var_f, rtol=1e-8)
        # the samples are Gaussian with that covariance: check with many samples
        many = post.predict(batch, n_samples=2000)
        assert torch.allclose(many.energy_samples.var(0), var_e, rtol=0.15)
    else:  # K-sample estimate from Jacobian-vector products: unbiased, check with many samples
        many = post.predict(batch, n_samples=800)
        assert torch.allclose(many.energy_var_epistemic, var_e, rtol=0.25)
    _fd_forces_check(post, frames[9])
    # round trip
    path = tmp_path / "laplace.pt"
    post.save(path)
    again = load_posterior(path)
    assert again.method == "laplace" and again.variant == variant
    p2 = again.predict(batch)
    assert torch.equal(p2.energy_samples, pred.energy_samples)
    assert torch.equal(p2.forces_var, pred.forces_var)
    assert again.recal.dg == 1.0
    # the ΔGH* σ factor (screen bench heldout --calibrate-out) survives a save/load and changes no prediction
    from screening.bench_heldout import write_dg_calibrated

    assert write_dg_calibrated(str(path), str(tmp_path / "cal.pt"), 2.0) == 2.0
    cal = load_posterior(tmp_path / "cal.pt")
    assert cal.recal.dg == 2.0 and torch.equal(cal.predict(batch).forces_var, pred.forces_var)
    assert write_dg_calibrated(str(tmp_path / "cal.pt"), str(tmp_path / "cal2.pt"), 1.5) == 3.0


def test_laplace_rejects_bad_settings():
    with pytest.raises(InputError):
        LaplaceConfig(variant="kfac")
    with pytest.raises(InputError):
        LaplaceConfig(ggn="magic")
