"""Active learning: acquisition functions on hand-made posteriors, batch selection, oracles, the loop, resume."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.cluster import Octahedron
from hypothesis import given, settings
from hypothesis import strategies as st

from potentials import active as A
from potentials.posterior import Prediction
from potentials.testing import emt_labelled
from structures.common import InputError


# ---- hand-made posteriors ----------------------------------------------------------------------------------
def _prediction(e_samples, e_var, f_samples, f_var) -> Prediction:
    """Prediction from per-sample energies (K, G), per-sample energy variances, forces (K, N, 3), force var (N, 3)."""
    e = torch.as_tensor(np.asarray(e_samples, dtype=np.float64))
    f = torch.as_tensor(np.asarray(f_samples, dtype=np.float64))
    ev = torch.as_tensor(np.broadcast_to(np.asarray(e_var, dtype=np.float64), e.shape).copy())
    fv = torch.as_tensor(np.broadcast_to(np.asarray(f_var, dtype=np.float64), f.shape[1:]).copy())
    return Prediction(
        energy=e.mean(0),
        forces=f.mean(0),
        energy_var_aleatoric=ev.mean(0),
        energy_var_epistemic=e.var(0, unbiased=False),
        forces_var_aleatoric=fv,
        forces_var_epistemic=f.var(0, unbiased=False),
        energy_samples=e,
        forces_samples=f,
        energy_var_samples=ev,
    )


def _mc_entropy(mu: np.ndarray, var: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """Monte Carlo entropy of an equally weighted Gaussian mixture and its standard error."""
    k = rng.integers(0, len(mu), n)
    x = mu[k] + np.sqrt(var[k]) * rng.standard_normal(n)
    lp = -0.5 * (x[None] - mu[:, None]) ** 2 / var[:, None] - 0.5 * np.log(2 * np.pi * var[:, None])
    m = lp.max(0)
    lmix = m + np.log(np.exp(lp - m).mean(0))
    return float(-lmix.mean()), float(lmix.std() / np.sqrt(n))


@pytest.mark.parametrize("method", ["quadrature", "moment"])
def test_bald_is_zero_when_all_samples_agree(method):
    rng = np.random.default_rng(0)
    mu = np.repeat(rng.normal(size=(1, 7)), 5, axis=0)  # K = 5 identical samples
    var = rng.uniform(0.01, 2.0, size=(1, 7))
    assert np.abs(A.bald_gaussian(mu, var, method)).max() < 1e-10
    # a single-sample (point) posterior: identical to the above
    assert np.abs(A.bald_gaussian(mu[:1], var, method)).max() < 1e-12
    cfg = A.AcquisitionConfig(entropy=method)
    pred = _prediction(np.full((4, 3), -7.5), 0.01, np.ones((4, 6, 3)), 0.04)
    assert np.abs(A.bald_energy(pred, cfg)).max() < 1e-10
    assert np.abs(A.bald_forces(pred, np.array([0, 0, 1, 1, 2, 2]), cfg)).max() < 1e-10
    assert np.abs(A.energy_uncertainty(pred, np.array([2, 2, 2]))).max() == 0.0


@pytest.mark.parametrize("method", ["quadrature", "moment"])
def test_bald_grows_with_disagreement_and_shrinks_with_noise(method):
    base = np.array([-1.0, -0.3, 0.2, 1.1])[:, None]  # K = 4 sample offsets
    spreads = np.array([0.0, 0.05, 0.2, 0.5, 1.0, 3.0])
    bald = A.bald_gaussian(base * spreads[None], 0.25, method)
    assert bald[0] < 1e-12 and np.all(np.diff(bald) > 0)
    noise = np.array([4.0, 1.0, 0.25, 0.01])
    bald_noise = A.bald_gaussian(np.repeat(base, 4, axis=1), noise[None], method)
    assert np.all(np.diff(bald_noise) > 0)  # same disagreement, less aleatoric noise -> more information
    # well separated samples with tiny noise: BALD -> log K (the label identifies the sample)
    far = A.bald_gaussian(base * 100.0, 1e-4, "quadrature")
    assert far[0] == pytest.approx(np.log(4), abs=1e-6)


def test_mixture_entropy_matches_monte_carlo():
    rng = np.random.default_rng(1)
    cases = [
        (np.array([0.0, 0.1]), np.array([1.0, 1.0])),
        (np.array([0.0, 5.0, -3.0]), np.array([1.0, 0.5, 2.0])),
        (np.array([0.0, 0.01]), np.array([1e-4, 1e-2])),  # narrow component inside a broad one
        (np.array([0.0, 0.3, 1.0]), np.array([1e-6, 1.0, 1e-3])),
        (rng.normal(size=8), rng.uniform(0.01, 1.0, 8)),
        (rng.normal(size=6) * 0.1, np.full(6, 0.04)),
    ]
    for mu, var in cases:
        h = float(A.mixture_entropy(mu, var))
        h_mc, se = _mc_entropy(mu, var, 400_000, rng)
        assert abs(h - h_mc) < 4 * se + 2e-3, (mu, var, h, h_mc, se)
        # the moment-matched Gaussian is an upper bound; the quadrature is not above it
        assert float(A.mixture_entropy(mu, var, "moment")) >= h - 1e-9
    # vectorised over trailing axes: same numbers as one mixture at a time
    mus = np.stack([np.resize(c[0], 8) for c in cases], axis=1)
    vs = np.stack([np.resize(c[1], 8) for c in cases], axis=1)
    together = A.mixture_entropy(mus, vs)
    apart = [float(A.mixture_entropy(mus[:, j], vs[:, j])) for j in range(len(cases))]
    np.testing.assert_allclose(together, apart, rtol=0, atol=1e-12)


def test_closed_form_equals_moment_bald_for_shared_variance():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(6, 20)) * rng.uniform(0.01, 2.0, size=20)
    var = rng.uniform(0.05, 1.0, size=20)
    np.testing.assert_allclose(
        A.bald_gaussian(mu, var[None], "moment"), A.bald_gaussian_closed_form(mu.var(0), var), rtol=1e-10
    )


def test_force_bald_reduction_and_strategy_dispatch():
    rng = np.random.default_rng(3)
    f = np.repeat(rng.normal(size=(1, 5, 3)), 3, axis=0)  # K = 3 samples, N = 5 atoms
    f[:, 4, 0] += np.array([-0.5, 0.0, 0.5])  # samples disagree on one component of atom 4 only
    batch_index = np.array([0, 0, 1, 1, 1])  # structure 0: atoms 0-1; structure 1: atoms 2-4
    e = np.array([[-10.0, -20.0], [-10.0, -20.3], [-10.0, -19.7]])
    pred = _prediction(e, 0.01, f, 0.01)
    mean = A.bald_forces(pred, batch_index, A.AcquisitionConfig(force_reduce="mean"))
    total = A.bald_forces(pred, batch_index, A.AcquisitionConfig(force_reduce="sum"))
    single = A.bald_gaussian(np.array([-0.5, 0.0, 0.5]), 0.01)
    assert mean[0] < 1e-10 and total[0] < 1e-10
    assert total[1] == pytest.approx(float(single), rel=1e-9)
    assert mean[1] == pytest.approx(float(single) / 3, rel=1e-9)
    n_atoms = np.array([2, 3])
    be = A.acquisition_scores("bald-e", pred, n_atoms, batch_index)
    bf = A.acquisition_scores("bald-f", pred, n_atoms, batch_index)
    np.testing.assert_allclose(A.acquisition_scores("bald", pred, n_atoms, batch_index), be + bf)
    assert be[0] < 1e-10 < be[1]
    energy = A.acquisition_scores("energy", pred, n_atoms, batch_index)
    np.testing.assert_allclose(energy, [0.0, np.sqrt(e[:, 1].var()) / 3])
    r1 = A.acquisition_scores("random", pred, n_atoms, batch_index, rng=np.random.default_rng(5))
    r2 = A.acquisition_scores("random", pred, n_atoms, batch_index, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(r1, r2)
    # without per-sample forces BALD-F uses the Gaussian closed form
    pred.forces_samples = None
    approx = A.bald_forces(pred, batch_index, A.AcquisitionConfig(force_reduce="sum"))
    assert approx[1] == pytest.approx(0.5 * np.log1p(np.var([-0.5, 0.0, 0.5]) / 0.01), rel=1e-9)
    with pytest.raises(InputError, match="unknown acquisition strategy 'bold'"):
        A.acquisition_scores("bold", pred, n_atoms, batch_index)


# ---- batch selection -----------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(-5, 5) | st.just(1.0), min_size=1, max_size=40),
    k=st.integers(0, 45),
    data=st.data(),
)
def test_select_batch_never_returns_duplicates_or_labelled(scores, k, data):
    n = len(scores)
    labelled = data.draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True))
    desc = np.array([[float(s), 1.0] for s in scores])  # equal scores -> identical descriptors (near-copies)
    for tol in (0.0, 0.5):
        chosen = A.select_batch(scores, k, exclude=labelled, descriptors=desc, tol=tol, guard=labelled)
        assert len(chosen) == len(set(chosen))
        assert not set(chosen) & set(labelled)
        assert len(chosen) == min(k, n - len(labelled))  # fill=True tops up with skipped candidates
    no_fill = A.select_batch(scores, k, exclude=labelled, descriptors=desc, tol=1e-9, fill=False)
    kept = desc[no_fill]
    assert len({tuple(r) for r in kept}) == len(no_fill)  # no two identical descriptors without filling


def _cluster(symbol: str, seed: int, amp: float = 0.08, size: int = 2):
    a = Octahedron(symbol, size)
    a.center(vacuum=4.0)
    a.rattle(amp, seed=seed)
    return a


def test_diversity_guard_rejects_near_copies():
    base = [_cluster(s, i) for i, s in enumerate(["Cu", "Ni", "Au", "Cu", "Ni", "Au"])]
    copy = base[0].copy()
    copy.rattle(0.002, seed=99)  # a near-copy of the best structure
    pool = base + [copy]
    desc = A.fingerprints(pool)
    scores = np.array([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 9.0])  # the copy is the second-best by score
    assert A.relative_distance(desc[0], desc[6:7])[0] < 0.05 < A.relative_distance(desc[0], desc[1:6]).min()
    assert A.select_batch(scores, 3) == [0, 6, 5]  # without the guard the copy is picked
    assert A.select_batch(scores, 3, descriptors=desc, tol=0.05) == [0, 5, 4]
    # the copy fills the batch last when nothing else is left
    assert A.select_batch(scores, 7, descriptors=desc, tol=0.05)[-1] == 6
    assert 6 not in A.select_batch(scores, 7, descriptors=desc, tol=0.05, fill=False)
    # a near-copy of a labelled structure is skipped too
    assert A.select_batch(scores, 2, exclude=[0], descriptors=desc, tol=0.05, guard=[0]) == [5, 4]
    # fingerprints are invariant to rotation and atom order
    rot = base[1].copy()
    rot.rotate(37, "z")
    rot = rot[np.random.default_rng(0).permutation(len(rot))]
    np.testing.assert_allclose(A.distance_fingerprint(rot), desc[1], atol=1e-10)


# ---- oracles ------------------------------------------------------------------------------------------------
class CountingEMT(EMT):
    calls = 0

    def calculate(self, *args, **kwargs):
        CountingEMT.calls += 1
        super().calculate(*args, **kwargs)


def test_calculator_oracle_caches_labels_with_provenance(tmp_path):
    frames = [_cluster(s, i) for i, s in enumerate(["Cu", "Ni", "Au"])]
    CountingEMT.calls = 0
    oracle = A.CalculatorOracle(
        lambda atoms: CountingEMT(), "emt", {"flavour": "test"}, tmp_path / "labels.db"
    )
    first = oracle(frames)
    n_calls = CountingEMT.calls
    assert n_calls >= 3 and oracle.computed == 3
    for atoms, ref in zip(first, frames):
        ref = ref.copy()
        ref.calc = EMT()
        assert atoms.info["energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(atoms.arrays["forces"], ref.get_forces(), atol=1e-10)
        assert atoms.info["label_source"] == "emt"
        assert json.loads(atoms.info["label_settings"]) == {"flavour": "test"}
        assert atoms.info["label_time"] and atoms.info["label_wall_s"] >= 0
    again = A.CalculatorOracle(
        lambda atoms: CountingEMT(), "emt", {"flavour": "test"}, tmp_path / "labels.db"
    )
    second = again(frames[::-1])
    assert CountingEMT.calls == n_calls and again.computed == 0  # all from the on-disk cache
    assert [a.info["energy"] for a in second] == [a.info["energy"] for a in first[::-1]]
    other = A.CalculatorOracle(
        lambda atoms: CountingEMT(), "emt", {"flavour": "other"}, tmp_path / "labels.db"
    )
    other(frames[:1])
    assert other.computed == 1  # different settings -> a different label


def test_pool_oracle_hides_labels_until_queried():
    frames = [_cluster(s, i) for i, s in enumerate(["Cu", "Ni"])]
    for a in frames:
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
    oracle = A.PoolOracle(frames, source="pool:test")
    hidden = [A.strip_labels(a) for a in frames]
    assert all("energy" not in a.info and "forces" not in a.arrays for a in hidden)
    out = oracle(hidden[::-1])
    assert [a.info["energy"] for a in out] == [a.info["energy"] for a in frames[::-1]]
    assert out[0].info["label_source"] == "pool:test"
    with pytest.raises(InputError, match="not in the labelled pool"):
        oracle([_cluster("Au", 7)])
    with pytest.raises(InputError, match="no energy/forces labels"):
        A.PoolOracle([_cluster("Au", 7)])


# ---- the loop -----------------------------------------------------------------------------------------------
def _emt_pool(n: int, seed0: int = 0) -> list:
    symbols = ["Cu", "Ni", "Au"]
    return [_cluster(symbols[i % 3], seed0 + i, amp=0.04 + 0.02 * (i % 4)) for i in range(n)]


FITTER = A.BayesFitter(
    method="ensemble",
    model_preset="tiny",
    train_preset="tiny",
    method_preset="tiny",
    elements=("Au", "Cu", "Ni"),
    train_overrides=(("epochs", 3),),
    method_overrides=(("members", 2),),
)
CONFIG = A.ALConfig(strategy="bald", init=6, batch=3, rounds=2, seed=4)


class KillingOracle:
    """Wraps an oracle and raises KeyboardInterrupt (a simulated kill) on call number ``kill_at``."""

    def __init__(self, inner, kill_at: int):
        self.inner, self.kill_at, self.calls, self.name = inner, kill_at, 0, inner.name

    def __call__(self, atoms_list):
        self.calls += 1
        if self.calls == self.kill_at:
            raise KeyboardInterrupt
        return self.inner(atoms_list)


def _comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in rec.items() if not k.startswith("time_")} for rec in history]


@pytest.mark.slow
def test_oracle_loop_runs_two_rounds_and_resumes_after_a_kill(tmp_path):
    torch.set_num_threads(1)
    pool, test = _emt_pool(24), emt_labelled(_emt_pool(4, seed0=100))
    oracle = A.CalculatorOracle(lambda atoms: EMT(), "emt", {}, tmp_path / "full" / "labels.db")
    learner = A.ActiveLearner(pool, oracle, FITTER, CONFIG, tmp_path / "full", test=test)
    history = learner.run()
    labelled = learner.labelled
    assert [r["n_labels"] for r in history] == [6, 9, 12]
    assert len(labelled) == len(set(labelled)) == 12 and all(0 <= i < 24 for i in labelled)
    assert oracle.computed == 12  # every label computed exactly once
    for rec in history:
        assert np.isfinite(rec["test"]["forces_mae"]) and np.isfinite(rec["test"]["forces_nll"])
        assert 0 <= rec["test"]["forces_coverage_95"] <= 1
    frames = learner.labelled_atoms()
    assert [a.info["pool_index"] for a in frames] == labelled
    assert all(a.info["label_source"] == "emt" and "energy" in a.info for a in frames)
    assert (
        A.ActiveLearner(pool, oracle, FITTER, CONFIG, tmp_path / "full", test=test).run() == history
    )  # done

    # the same run, killed while labelling round 2's batch, then resumed by a fresh learner
    inner = A.CalculatorOracle(lambda atoms: EMT(), "emt", {}, tmp_path / "killed" / "labels.db")
    killer = KillingOracle(inner, kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        A.ActiveLearner(pool, killer, FITTER, CONFIG, tmp_path / "killed", test=test).run()
    state = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert state["round"] == 2 and len(state["labelled"]) == 9 and not state["done"]
    resumed = A.ActiveLearner(pool, inner, FITTER, CONFIG, tmp_path / "killed", test=test)
    assert _comparable(resumed.run()) == _comparable(history)
    assert resumed.labelled == labelled
    with pytest.raises(InputError, match="different config"):
        A.ActiveLearner(pool, inner, FITTER, replace(CONFIG, batch=2), tmp_path / "killed", test=test)


@pytest.mark.slow
def test_pool_based_cli_hides_labels_and_writes_history(tmp_path, capsys):
    from ase.io import write

    from cli import main

    torch.set_num_threads(1)
    pool = emt_labelled(_emt_pool(14))
    write(tmp_path / "pool.extxyz", pool)
    write(tmp_path / "test.extxyz", emt_labelled(_emt_pool(3, seed0=50)))
    args = [
        "learn",
        "--pool",
        str(tmp_path / "pool.extxyz"),
        "--test",
        str(tmp_path / "test.extxyz"),
        "--out",
        str(tmp_path / "al"),
        "--init",
        "5",
        "--batch",
        "2",
        "--rounds",
        "1",
        "--strategy",
        "energy",
        "--method",
        "point",
        "--model-preset",
        "tiny",
        "--train-preset",
        "tiny",
        "--epochs",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    csv = (tmp_path / "al" / "history.csv").read_text().splitlines()
    assert csv[0].startswith("round,n_labels") and len(csv) == 3
    state = json.loads((tmp_path / "al" / "state.json").read_text())
    assert state["done"] and len(set(state["labelled"])) == 7
    assert main(args) == 0  # resuming a finished run does nothing and succeeds
    with pytest.raises(SystemExit) as exc:
        main(args + ["--strategy", "bold"])
    assert exc.value.code == 2
    bad = [
        "learn",
        "--pool",
        str(tmp_path / "pool.extxyz"),
        "--out",
        str(tmp_path / "x"),
        "--init",
        "10",
        "--batch",
        "5",
        "--rounds",
        "2",
    ]
    assert main(bad) == 2
    assert "init + rounds x batch = 20 labels but the pool has only 14" in capsys.readouterr().err


class SpreadPosterior:
    """Hand-made posterior: K = 4 samples whose disagreement grows with each structure's radius of gyration."""

    method, elements, cutoff, dtype = "fake", ("Au", "Cu", "Ni"), 4.0, torch.float64

    def predict(self, batch, n_samples=None, forces=True) -> Prediction:
        from potentials import keys as K

        pos, idx, n = batch[K.POSITIONS], batch[K.BATCH], batch[K.NUM_ATOMS]
        g = n.shape[0]
        centre = torch.zeros(g, 3, dtype=pos.dtype).index_add(0, idx, pos) / n[:, None]
        r2 = ((pos - centre[idx]) ** 2).sum(1)
        rg = torch.zeros(g, dtype=pos.dtype).index_add(0, idx, r2) / n
        offsets = torch.tensor([-1.5, -0.5, 0.5, 1.5], dtype=pos.dtype)
        e = -3.0 * n + offsets[:, None] * rg[None]
        f = offsets[:, None, None] * (pos - centre[idx])[None] * rg[idx][None, :, None]
        return _prediction(e.numpy(), 0.01, f.numpy(), 0.01)


class SpreadFitter:
    def __init__(self):
        self.sizes: list[tuple[int, int]] = []

    def fit(self, train, valid, seed, workdir, previous):
        self.sizes.append((len(train), len(valid)))
        return SpreadPosterior()


def test_schedule_initial_set_and_bald_picks_the_most_uncertain(tmp_path):
    sizes = [2, 3, 4]  # octahedra of 6, 19 and 44 atoms: radius of gyration grows with size
    pool = [_cluster("Cu", i, size=sizes[i % 3]) for i in range(12)]
    initial = emt_labelled(_emt_pool(5, seed0=200))
    cfg = A.ALConfig(strategy="bald-f", init=0, schedule=(2, 5), seed=1, valid_fraction=0.2)
    assert [cfg.acquisitions_in(r) for r in (1, 2)] == [2, 3] and cfg.n_rounds == 2
    fitter = SpreadFitter()
    oracle = A.CalculatorOracle(lambda atoms: EMT(), "emt", {}, None)
    learner = A.ActiveLearner(pool, oracle, fitter, cfg, tmp_path / "al", initial=initial)
    history = learner.run()
    assert [r["n_labels"] for r in history] == [5, 7, 10] and [r["n_acquired"] for r in history] == [0, 2, 5]
    assert fitter.sizes == [(4, 1), (6, 1), (9, 1)]  # one of the 5 initial structures validates
    big = {i for i in range(12) if i % 3 == 2}  # the 44-atom clusters disagree most
    assert set(learner.labelled[:2]) <= big and len(set(learner.labelled) & big) == 4
    with pytest.raises(InputError, match="strictly increasing"):
        A.ActiveLearner(
            pool, oracle, fitter, replace(cfg, schedule=(3, 3)), tmp_path / "bad", initial=initial
        )
    with pytest.raises(InputError, match="init \\+ schedule\\[-1\\] = 13 labels but the pool has only 12"):
        A.ActiveLearner(pool, oracle, fitter, replace(cfg, schedule=(13,)), tmp_path / "bad", initial=initial)


def test_harvest_keeps_strided_frames_without_duplicates():
    traj = [_cluster("Cu", 0, amp=0.01 * i) for i in range(7)]
    traj[3] = traj[1].copy()  # an exact duplicate
    got = A.harvest([traj, traj[:2]], stride=2)
    hashes = [A.structure_hash(a) for a in got]
    assert len(hashes) == len(set(hashes))
    assert hashes == [A.structure_hash(traj[i]) for i in (0, 2, 4, 6)] + [A.structure_hash(traj[1])]
    with pytest.raises(InputError, match="stride 0"):
        A.harvest([traj], stride=0)


@pytest.mark.slow
def test_oracle_cli_labels_relaxation_frames_once(tmp_path):
    from ase.io import Trajectory
    from ase.optimize import BFGS

    from cli import main

    torch.set_num_threads(1)
    paths = []
    for i, symbol in enumerate(["Cu", "Ni"]):
        atoms = _cluster(symbol, i, amp=0.15)
        atoms.calc = EMT()
        path = tmp_path / f"relax{i}.traj"
        with Trajectory(str(path), "w", atoms) as traj:
            opt = BFGS(atoms, logfile=None)
            opt.attach(traj.write)
            opt.run(fmax=0.05, steps=8)
        paths.append(str(path))
    args = [
        "learn",
        "--pool",
        *paths,
        "--oracle",
        "emt",
        "--stride",
        "2",
        "--out",
        str(tmp_path / "al"),
        "--init",
        "3",
        "--batch",
        "2",
        "--rounds",
        "1",
        "--strategy",
        "bald-f",
        "--method",
        "point",
        "--model-preset",
        "tiny",
        "--train-preset",
        "tiny",
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    cache = A.LabelCache(tmp_path / "al" / "labels.db")
    assert len(cache) == 5
    frames = A.read_labelled(tmp_path / "al")
    assert len(frames) == 5 and {a.info["label_source"] for a in frames} == {"emt"}
    assert all(json.loads(a.info["label_settings"]) for a in frames)
    with pytest.raises(SystemExit):
        main(args[:4] + ["--oracle"])
    assert main(args[:4] + ["--oracle", "nope", *args[6:]]) == 2
