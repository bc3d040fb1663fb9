"""Batched FIRE: equals ASE's FIRE, batch == alone, queue refill, failures stopped and flagged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.constraints import FixAtoms
from ase.optimize import FIRE

from potentials import keys as K
from screening.relax import RelaxConfig, RelaxProgress, relax_many
from screening.testing import MorseEnsemble, PosteriorCalculator
from structures.host import build_host
from structures.sites import add_h, h_sites

torch.set_num_threads(1)
ELEMENTS = ("H", "C", "N", "Fe", "Co")


@pytest.fixture(scope="module")
def post():
    return MorseEnsemble(ELEMENTS)


def _rattled(seed: int = 0, metal: str = "Fe", motif: str = "3Nb", scale: float = 0.05):
    atoms = build_host(metal, motif, supercell="4x4")
    atoms.positions += np.random.default_rng(seed).normal(0.0, scale, atoms.positions.shape)
    return atoms


def _states(n: int):
    host = build_host("Co", "2Na", supercell="4x4")
    return ([host] + [add_h(host, s) for s in h_sites(host)])[:n]


def _ase_fire(atoms, post, fmax=0.05, steps=150):
    a = atoms.copy()
    a.calc = PosteriorCalculator(post)
    opt = FIRE(a, logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    return a, opt.nsteps, converged


def test_single_structure_matches_ase_fire(post):
    atoms = _rattled(1)
    ref, nsteps, converged = _ase_fire(atoms, post)
    (res,) = list(relax_many([atoms], post.mean_forward, fmax=0.05, max_steps=150))
    assert abs(res.energy - ref.get_potential_energy()) < 1e-3  # the spec: within 1 meV
    assert abs(res.energy - ref.get_potential_energy()) < 1e-8  # in fact step for step
    assert np.abs(res.atoms.positions - ref.positions).max() < 1e-6
    assert res.n_steps == nsteps
    assert res.converged == converged
    assert res.fmax == pytest.approx(np.linalg.norm(ref.get_forces(), axis=1).max(), abs=1e-8)


def test_fixed_atoms_match_ase_and_do_not_move(post):
    atoms = _rattled(2)
    fixed = [0, 5, 10, 20]
    atoms.set_constraint(FixAtoms(indices=fixed))
    ref, nsteps, _ = _ase_fire(atoms, post, steps=60)
    (res,) = list(relax_many([atoms], post.mean_forward, fmax=0.05, max_steps=60))
    assert np.abs(res.atoms.positions[fixed] - atoms.positions[fixed]).max() == 0.0
    assert np.abs(res.atoms.positions - ref.positions).max() < 1e-6
    assert res.n_steps == nsteps


def test_batch_equals_each_alone_and_queue_refills(post):
    structures = _states(5)
    progress: list[RelaxProgress] = []
    batched = sorted(
        relax_many(structures, post.mean_forward, batch_size=2, max_steps=80, callback=progress.append),
        key=lambda r: r.index,
    )
    assert [r.index for r in batched] == list(range(5))
    # the batch is always as full as the queue allows: min(batch_size, structures not yet finished)
    assert all(p.n_active == min(2, 5 - p.n_finished) for p in progress)
    assert progress[-1].n_finished == 4
    alone_steps = 0
    for atoms, r in zip(structures, batched):
        (one,) = list(relax_many([atoms], post.mean_forward, max_steps=80))
        alone_steps += one.n_steps + 1
        assert r.energy == pytest.approx(one.energy, abs=1e-9)
        assert r.n_steps == one.n_steps and r.status == one.status
        assert np.abs(r.atoms.positions - one.atoms.positions).max() < 1e-8
        assert r.atoms.info["name"] == atoms.info["name"]
    # every structure-evaluation counted once: batching does not add work
    assert progress[-1].n_evaluations == alone_steps


def test_neighbour_list_skin_does_not_change_results(post):
    atoms = _rattled(3, scale=0.15)
    a = list(relax_many([atoms], post.mean_forward, max_steps=60, config=RelaxConfig(skin=0.01)))[0]
    b = list(relax_many([atoms], post.mean_forward, max_steps=60, config=RelaxConfig(skin=2.0)))[0]
    assert a.energy == pytest.approx(b.energy, abs=1e-9)
    assert np.abs(a.atoms.positions - b.atoms.positions).max() < 1e-8


def test_positions_outside_the_cell_give_the_same_relaxation(post):
    atoms = _rattled(4)
    moved = atoms.copy()
    moved.positions[:7] += atoms.cell[0] - 2 * atoms.cell[1]
    a = list(relax_many([atoms], post.mean_forward, max_steps=30))[0]
    b = list(relax_many([moved], post.mean_forward, max_steps=30))[0]
    assert a.energy == pytest.approx(b.energy, abs=1e-9)


def _poisoned(post, bad_symbol: str, mode: str):
    """mean_forward that returns NaN (mode="nan") or huge forces (mode="huge") for graphs holding bad_symbol."""

    def force_fn(batch):
        out = post.mean_forward(batch)
        z_bad = {"Co": 27, "Fe": 26}[bad_symbol]
        g_bad = torch.zeros(batch[K.NUM_ATOMS].shape[0], dtype=torch.bool)
        g_bad[batch[K.BATCH][batch[K.ATOMIC_NUMBERS] == z_bad]] = True
        atom_bad = g_bad[batch[K.BATCH]]
        e, f = out[K.ENERGY].clone(), out[K.FORCES].clone()
        if mode == "nan":
            e[g_bad] = float("nan")
        else:
            f[atom_bad] = 1e4
        return {K.ENERGY: e, K.FORCES: f}

    return force_fn


@pytest.mark.parametrize("mode,status", [("nan", "nonfinite"), ("huge", "exploded")])
def test_bad_structures_are_stopped_and_flagged_not_crashed(post, mode, status):
    good, bad = _rattled(5, "Fe"), _rattled(6, "Co")
    res = {
        r.atoms.info["metal"]: r
        for r in relax_many(
            [good, bad],
            _poisoned(post, "Co", mode),
            max_steps=40,
            elements=ELEMENTS,
            cutoff=post.cutoff,
            dtype=torch.float64,
        )
    }
    assert res["Co"].status == status and not res["Co"].converged
    (alone,) = list(relax_many([good], post.mean_forward, max_steps=40))
    assert res["Fe"].energy == pytest.approx(alone.energy, abs=1e-9)


def test_oscillation_is_stopped(post):
    def wobble(batch):  # forces that never settle: flip sign every call, energy constant
        wobble.calls += 1
        out = post.mean_forward(batch)
        return {K.ENERGY: torch.zeros_like(out[K.ENERGY]), K.FORCES: out[K.FORCES] * 0 + (-1) ** wobble.calls}

    wobble.calls = 0
    (res,) = list(
        relax_many(
            [_rattled(7)],
            wobble,
            max_steps=500,
            config=RelaxConfig(patience=20),
            elements=ELEMENTS,
            cutoff=post.cutoff,
            dtype=torch.float64,
        )
    )
    assert res.status == "oscillating" and res.n_steps == 20


def test_unknown_element_is_a_clear_input_error(post):
    from structures.common import InputError

    atoms = build_host("Pt", "3Nb", supercell="4x4")
    with pytest.raises(InputError, match="Pt"):
        list(relax_many([atoms], post.mean_forward))


def test_real_tiny_model_matches_ase_fire():
    from potentials.bayes.point import PointPosterior
    from potentials.model import build_model, preset

    torch.manual_seed(0)
    cfg = preset("tiny", elements=ELEMENTS, dtype="float64")
    tiny = PointPosterior(build_model(cfg), cfg)
    atoms = _rattled(8)
    ref, nsteps, _ = _ase_fire(atoms, tiny, steps=15)
    (res,) = list(relax_many([atoms], tiny.mean_forward, max_steps=15))
    assert res.n_steps == nsteps
    assert abs(res.energy - ref.get_potential_energy()) < 1e-3
    assert np.abs(res.atoms.positions - ref.positions).max() < 1e-6
