"""Physics of the RACE model: symmetries, conservative forces and stress, smoothness, SPD covariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from e3nn import o3
from e3nn.util.test import assert_equivariant

from potentials import keys as K
from potentials import testing
from potentials.data import collate
from potentials.model import build_model, preset
from potentials.nn import PolynomialEnvelope, sym_matrix_basis
from structures.common import InputError

ELEMENTS = ("H", "C", "N", "O", "Cu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = preset(
        "tiny",
        elements=ELEMENTS,
        dtype="float64",
        avg_num_neighbors=8.0,
        e0s=(-1.0, -2.0, -3.0, -4.0, -5.0),
        scale=0.7,
        shift=0.1,
    )
    m = build_model(cfg).eval()
    with torch.no_grad():  # make the variance heads clearly anisotropic and input-dependent
        for p in m.model.forces_cov_head.parameters():
            p.mul_(6.0)
    return m


def _cu_slab():
    slab = fcc111("Cu", (2, 2, 2), vacuum=4.0)
    slab += Atoms("CO", positions=[slab.positions[-1] + (0, 0, 1.9), slab.positions[-1] + (0, 0, 3.05)])
    slab.rattle(0.05, seed=1)
    return slab


def _bulk():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.symbols[1] = "N"
    atoms.rattle(0.1, seed=2)
    return atoms


def _molecule():
    atoms = molecule("CH3CONH2")
    atoms.rattle(0.05, seed=3)
    return atoms


CASES = {"molecule": _molecule, "slab": _cu_slab, "bulk": _bulk}


@pytest.mark.parametrize("case", list(CASES))
def test_equivariance_rotation_reflection_translation(model, case):
    errors = testing.assert_equivariant_outputs(
        model, CASES[case](), ELEMENTS, model.config.cutoff, atol=1e-9
    )
    assert set(errors) >= {"energy", "forces", "energy_var", "forces_cov"}


def test_equivariance_with_e3nn(model):
    atoms = _molecule()
    batch = collate([atoms], ELEMENTS, model.config.cutoff, dtype=torch.float64, with_labels=False)
    basis = sym_matrix_basis(torch.float64)

    def func(pos):
        out = model({**batch, K.POSITIONS: pos})
        cov_irreps = torch.einsum("kij,nij->nk", basis, out[K.FORCES_COV])  # 0e + 2e per atom
        return out[K.ENERGY].reshape(1, 1), out[K.FORCES], out[K.ENERGY_VAR].reshape(1, 1), cov_irreps

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn draws its random rotations in the default dtype
    try:
        errors = assert_equivariant(
            func,
            args_in=[batch[K.POSITIONS]],
            irreps_in=["cartesian_points"],
            irreps_out=[o3.Irreps("0e"), o3.Irreps("1o"), o3.Irreps("0e"), o3.Irreps("0e + 2e")],
            tolerance=1e-9,
        )
    finally:
        torch.set_default_dtype(previous)
    assert max(float(v.max()) for v in errors.values()) < 1e-9


def test_covariance_is_spd_and_input_dependent(model):
    out = model(collate([_cu_slab(), _molecule()], ELEMENTS, model.config.cutoff, dtype=torch.float64))
    cov = out[K.FORCES_COV].detach()
    assert torch.allclose(cov, cov.transpose(1, 2))
    eig = torch.linalg.eigvalsh(cov)
    assert float(eig.min()) > 0
    assert float((eig.max(1).values / eig.min(1).values).max()) > 1.01  # anisotropic, not a scaled identity
    assert float(cov.std(0).max()) > 1e-6  # differs between atoms
    assert out[K.ENERGY_VAR].shape == (2,) and bool((out[K.ENERGY_VAR] > 0).all())
    var_sum = torch.zeros(2, dtype=torch.float64).index_add(
        0, out[K.BATCH], out[K.ATOMIC_ENERGY_LOGVAR].exp()
    )
    assert torch.allclose(out[K.ENERGY_VAR], var_sum)


@pytest.mark.parametrize("case", list(CASES))
def test_permutation_invariance(model, case):
    testing.assert_permutation_invariant(model, CASES[case](), ELEMENTS, model.config.cutoff)


@pytest.mark.parametrize("case", list(CASES))
def test_forces_match_finite_differences(model, case):
    testing.assert_forces_match_fd(model, CASES[case](), ELEMENTS, model.config.cutoff, atol=1e-7)


def test_stress_matches_finite_differences(model):
    atoms = _bulk()
    testing.assert_stress_matches_fd(model, atoms, ELEMENTS, model.config.cutoff, atol=1e-8)
    out = model(collate([atoms], ELEMENTS, model.config.cutoff, dtype=torch.float64), compute_stress=True)
    assert float(out[K.STRESS].abs().max()) > 1e-4  # a non-trivial stress was compared
    assert torch.allclose(out[K.STRESS], out[K.STRESS].transpose(1, 2))


def test_batched_equals_one_at_a_time(model):
    testing.assert_batch_consistent(model, [_molecule(), _cu_slab(), _bulk()], ELEMENTS, model.config.cutoff)


def test_smooth_energy_when_crossing_cutoff(model):
    testing.assert_smooth_at_cutoff(model, ("C", "O"), ELEMENTS, model.config.cutoff)
    testing.assert_smooth_at_cutoff(model, ("Cu", "Cu"), ELEMENTS, model.config.cutoff)


def test_envelope_is_c2_at_cutoff():
    """u, u', u'' vanish at rc like delta^3, delta^2, delta (so u is C^2 there) and are 0 beyond."""
    env = PolynomialEnvelope(5.0, p=6)
    r = torch.tensor([5.0 - 0.05, 5.0 - 0.005, 5.0, 5.2], dtype=torch.float64, requires_grad=True)
    u = env(r)
    (du,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), r)
    u, du = u.detach(), du.detach()
    assert float(u[0] / u[1]) == pytest.approx(1000, rel=0.05)
    assert float(du[0] / du[1]) == pytest.approx(100, rel=0.05)
    assert float(d2u[0] / d2u[1]) == pytest.approx(10, rel=0.1)
    assert u[2:].tolist() == [0.0, 0.0] and du[3] == 0.0
    assert float(env(torch.tensor([0.0], dtype=torch.float64))) == 1.0


def test_energy_bookkeeping(model):
    atoms = _molecule()
    out = model(collate([atoms], ELEMENTS, model.config.cutoff, dtype=torch.float64))
    assert out[K.ENERGY].dtype == torch.float64
    assert torch.allclose(out[K.ENERGY], out[K.ATOMIC_ENERGY].sum().reshape(1))
    # the last readout is a Linear layer on node_scalars: a last-layer Laplace can find both
    assert isinstance(model.readout_last, torch.nn.Linear)
    assert out[K.NODE_SCALARS].shape == (len(atoms), model.readout_last.in_features)
    # locality: two molecules farther apart than the cutoff have the sum of their energies
    a, b = molecule("H2O"), molecule("CH4")
    b.positions += (model.config.cutoff + 3.0, 0, 0)
    energies = model(collate([a, b, a + b], ELEMENTS, model.config.cutoff, dtype=torch.float64))[
        K.ENERGY
    ].detach()
    assert float(energies[2]) == pytest.approx(float(energies[0] + energies[1]), abs=1e-10)


def test_presets_build_and_validate():
    for name in ("tiny", "small"):  # "large" builds in seconds: its settings are checked below
        cfg = preset(name, elements=("C", "N", "Fe"))
        m = build_model(cfg)
        assert sum(p.numel() for p in m.parameters()) > 1000
    assert preset("large").parity == "both" and preset("large").num_layers == 5
    with pytest.raises(InputError, match="unknown model preset"):
        preset("huge")
    with pytest.raises(InputError, match="no elements"):
        build_model(preset("tiny"))


def test_both_parities_model_is_e3_invariant():
    """parity='both' (odd scalars, pseudo-vectors): still a mirror image has the same energy."""
    cfg = preset("tiny", elements=ELEMENTS, dtype="float64", parity="both", avg_num_neighbors=6.0)
    torch.manual_seed(1)
    m = build_model(cfg).eval()
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=4)
    testing.assert_equivariant_outputs(m, atoms, ELEMENTS, cfg.cutoff, atol=1e-9, reflect=True)
    mirror = atoms.copy()
    mirror.positions[:, 0] *= -1
    a = m(collate([atoms], ELEMENTS, cfg.cutoff, dtype=torch.float64))[K.ENERGY].detach()
    b = m(collate([mirror], ELEMENTS, cfg.cutoff, dtype=torch.float64))[K.ENERGY].detach()
    assert float((a - b).abs()) < 1e-10
    assert np.isfinite(float(a))


def test_all_pairs_graph_gives_the_cutoff_graph_results(model):
    """Edges beyond the cutoff have a zero envelope: static all-pairs graphs (CUDA-graph training) change
    nothing but the edge count."""
    from potentials.data import all_pairs_graph, atoms_to_graph, collate_graphs

    mols = [molecule("C6H6"), molecule("CH3CONH2")]
    for m in mols:
        m.rattle(0.05, seed=4)
    graphs = [atoms_to_graph(m, ELEMENTS, model.config.cutoff, with_labels=False) for m in mols]
    full = [all_pairs_graph(g) for g in graphs]
    n_atoms = [len(m) for m in mols]
    assert [g[K.EDGE_INDEX].shape[1] for g in full] == [n * (n - 1) for n in n_atoms]
    assert full[0][K.EDGE_INDEX].shape[1] > graphs[0][K.EDGE_INDEX].shape[1]  # benzene has pairs beyond 4 Å
    a = model(collate_graphs(graphs, dtype=torch.float64))
    b = model(collate_graphs(full, dtype=torch.float64))
    for key in (K.ENERGY, K.FORCES, K.ENERGY_VAR, K.FORCES_COV):
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)
    with pytest.raises(InputError, match="open structures"):
        all_pairs_graph(atoms_to_graph(_bulk(), ELEMENTS, model.config.cutoff, with_labels=False))


def test_expm_sym3_matches_matrix_exp_and_rotates():
    """The branch-free exponential of the covariance head (CUDA-graph safe) equals matrix_exp in float64
    over the head's bounded range and beyond, and keeps exp(R S R^T) = R exp(S) R^T."""
    from potentials.nn.heads import expm_sym3

    basis = sym_matrix_basis(torch.float64)
    g = torch.Generator().manual_seed(0)
    for norm in (0.0, 1.0, 4.0, 8.0):
        c = torch.randn(200, 6, generator=g, dtype=torch.float64)
        c[:, 1:] *= norm / c[:, 1:].norm(dim=1, keepdim=True)
        c[:, 0] = 6.0 * torch.tanh(c[:, 0])
        s = torch.einsum("nk,kij->nij", c, basis)
        ref = torch.linalg.matrix_exp(s)
        torch.testing.assert_close(expm_sym3(s), ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    rot = o3.rand_matrix(dtype=torch.float64)
    torch.testing.assert_close(expm_sym3(rot @ s @ rot.T), rot @ expm_sym3(s) @ rot.T, rtol=1e-12, atol=1e-10)
