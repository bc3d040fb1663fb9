"""Active learning: acquisition functions, diverse batch selection, oracles with a label cache, and the loop.

Acquisition (one score per structure, larger = more worth labelling):

* ``random``: uniform scores from a seeded generator.
* ``energy``: epistemic energy standard deviation per atom, sqrt(Var_k[E_k]) / N_atoms (eV/atom).
* ``bald-e`` / ``bald-f`` / ``bald-ef``: BALD, the mutual information (nats) between a label and the model
  parameters. Each posterior sample k predicts a Gaussian N(mu_k, s_k^2); the predictive is their equally
  weighted mixture, so BALD = H[mixture] - mean_k H[N(mu_k, s_k^2)]. The 1-D mixture entropy has no closed
  form: it is computed by Gauss-Hermite quadrature of -E_k[log p(x)] under each component (``quadrature``,
  the default, accurate to quadrature error) or bounded from above by the entropy of the moment-matched
  Gaussian (``moment``: 0.5 log(2 pi e (mean_k s_k^2 + Var_k mu_k)), a cheaper upper bound).
  BALD-E uses the total energy; BALD-F sums the per-component force BALD over x, y, z and *averages over
  the atoms* of a structure (size-intensive; ``force_reduce`` = "sum" / "max" are also available);
  BALD-EF = BALD-E + BALD-F (exact if energy and forces were conditionally independent given the
  parameters, an upper bound otherwise). ``bald`` is an alias of ``bald-ef``.
  Members share the force aleatoric variance (the Prediction holds its mean over samples); the energy uses
  each sample's own variance when ``energy_var_samples`` is present. Without per-sample forces, BALD-F falls
  back to the Gaussian closed form 0.5 log(1 + s_epi^2 / s_alea^2).

Batch selection (:func:`select_batch`) is greedy by score and skips labelled indices, duplicates and
*near-copies*: candidates whose distance fingerprint (a Gaussian-smeared histogram of interatomic
distances per atom, or any descriptor the caller gives, e.g. mean node scalars) lies within a relative
distance ``tol`` of an already selected (or labelled) structure.

Oracles turn unlabelled Atoms into labelled Atoms (``info['energy']`` eV, ``arrays['forces']`` eV/Å) with
provenance (``label_source``, ``label_settings`` JSON, ``label_time``, ``label_wall_s``):
:class:`CalculatorOracle` wraps any ASE calculator with a SQLite label cache keyed by a structure hash and
a settings hash, so nothing is computed twice; :class:`PoolOracle` reveals labels kept hidden from the loop.

:class:`ActiveLearner` runs round 0 (random initial set) then ``rounds`` acquisition rounds; after every
round its state is written atomically, so a killed run resumes where it stopped and, with the per-round
seeds derived from ``seed``, gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from structures.common import InputError, atomic_write_text

LOG_2PI_E = math.log(2.0 * math.pi * math.e)
STRATEGIES = ("random", "energy", "bald-e", "bald-f", "bald-ef")
ALIASES = {"bald": "bald-ef"}
ENTROPY_METHODS = ("quadrature", "moment")
FORCE_REDUCE = ("mean", "sum", "max")


def canonical_strategy(name: str) -> str:
    """Strategy name with aliases resolved; InputError for unknown names."""
    name = ALIASES.get(name, name)
    if name not in STRATEGIES:
        allowed = ", ".join(list(STRATEGIES) + list(ALIASES))
        raise InputError(f"unknown acquisition strategy {name!r}; choose from {allowed}")
    return name


# =============================================================================================================
# Gaussian and mixture entropies, BALD
# =============================================================================================================
def gaussian_entropy(variance: np.ndarray | float) -> np.ndarray:
    """Differential entropy (nats) of N(., variance): 0.5 log(2 pi e variance)."""
    return 0.5 * (LOG_2PI_E + np.log(np.asarray(variance, dtype=np.float64)))


def _logsumexp0(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=0)
    return m + np.log(np.exp(a - m).sum(axis=0))


def _log_mixture(x: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """log p(x) of equally weighted mixtures: x (P, M) points, m / v (K, M) components -> (P, M)."""
    d = x[None] - m[:, None, :]
    logp = -0.5 * d * d / v[:, None, :] - 0.5 * np.log(2.0 * math.pi * v)[:, None, :]
    return _logsumexp0(logp) - math.log(m.shape[0])


def _entropy_hermite(m: np.ndarray, v: np.ndarray, n_nodes: int) -> np.ndarray:
    """-(1/K) sum_k E_{N_k}[log p] with Gauss-Hermite nodes of each component; m, v (K, M) -> (M,)."""
    k, n = m.shape
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)  # weight exp(-t^2/2), sum = sqrt(2 pi)
    weights = weights / math.sqrt(2.0 * math.pi)
    x = (m[:, None, :] + np.sqrt(v)[:, None, :] * nodes[None, :, None]).reshape(k * n_nodes, n)
    logmix = _log_mixture(x, m, v).reshape(k, n_nodes, n)
    return -(weights[None, :, None] * logmix).sum(1).mean(0)


def _entropy_grid(m: np.ndarray, v: np.ndarray, points: int = 241, span: float = 10.0) -> np.ndarray:
    """-int p log p by the trapezoid rule on the union of per-component grids mu_k +- span sigma_k."""
    t = np.linspace(-span, span, points)
    x = np.sort((m[:, None, :] + np.sqrt(v)[:, None, :] * t[None, :, None]).reshape(-1, m.shape[1]), axis=0)
    logmix = _log_mixture(x, m, v)
    f = -np.exp(logmix) * logmix
    return (0.5 * (f[1:] + f[:-1]) * np.diff(x, axis=0)).sum(0)


def mixture_entropy(
    means: np.ndarray,
    variances: np.ndarray | float,
    method: str = "quadrature",
    n_nodes: int = 32,
    chunk: int = 2_000_000,
) -> np.ndarray:
    """Entropy (nats) of equally weighted 1-D Gaussian mixtures, one mixture per trailing index.

    means (K, ...) and variances (broadcastable to means) give K components along axis 0; returns shape
    means.shape[1:]. ``quadrature``: H = -(1/K) sum_k E_{N_k}[log p(x)] by ``n_nodes``-point Gauss-Hermite
    rules when the component widths differ by at most 2x (exact for K = 1 or identical components); mixtures
    with more disparate widths (a narrow component inside a broad one) use the trapezoid rule on the union
    of per-component grids (mu_k +- 10 sigma_k, 241 points each), accurate to ~1e-4 nats. ``moment``: the
    entropy of the Gaussian with the mixture's mean and variance, an upper bound on H.
    """
    if method not in ENTROPY_METHODS:
        raise InputError(
            f"unknown mixture entropy method {method!r}; choose from {', '.join(ENTROPY_METHODS)}"
        )
    mu = np.asarray(means, dtype=np.float64)
    if mu.ndim == 0 or mu.shape[0] == 0:
        raise ValueError("means needs a leading axis of K >= 1 components")
    var = np.broadcast_to(np.asarray(variances, dtype=np.float64), mu.shape)
    if np.any(~(var > 0)):
        raise ValueError("component variances must be positive")
    out_shape = mu.shape[1:]
    if method == "moment":
        return gaussian_entropy(var.mean(0) + mu.var(0))
    k = mu.shape[0]
    mu2, var2 = mu.reshape(k, -1), var.reshape(k, -1)
    out = np.empty(mu2.shape[1])
    wide = var2.max(0) > 4.0 * var2.min(0)  # sigma ratio > 2
    for mask, rule, per_col in (
        (~wide, lambda m, v: _entropy_hermite(m, v, n_nodes), k * k * n_nodes),
        (wide, _entropy_grid, k * k * 241),
    ):
        cols = np.flatnonzero(mask)
        step = max(1, chunk // per_col)
        for s in range(0, cols.size, step):
            c = cols[s : s + step]
            out[c] = rule(mu2[:, c], var2[:, c])
    return out.reshape(out_shape)


def bald_gaussian(
    means: np.ndarray, variances: np.ndarray | float, method: str = "quadrature", n_nodes: int = 32
) -> np.ndarray:
    """BALD (nats) for Gaussian predictives: H[mixture] - mean_k H[N(mu_k, s_k^2)], clipped at 0.

    means (K, ...) posterior-sample means, variances broadcastable (aleatoric variance of each sample).
    """
    mu = np.asarray(means, dtype=np.float64)
    var = np.broadcast_to(np.asarray(variances, dtype=np.float64), mu.shape)
    mi = mixture_entropy(mu, var, method=method, n_nodes=n_nodes) - gaussian_entropy(var).mean(0)
    return np.maximum(mi, 0.0)


def bald_gaussian_closed_form(var_epistemic: np.ndarray, var_aleatoric: np.ndarray) -> np.ndarray:
    """0.5 log(1 + s_epi^2 / s_alea^2): BALD when the sample means are themselves Gaussian (nats)."""
    return 0.5 * np.log1p(np.asarray(var_epistemic, np.float64) / np.asarray(var_aleatoric, np.float64))


# =============================================================================================================
# acquisition scores from a posterior predictive
# =============================================================================================================
@dataclass(frozen=True)
class AcquisitionConfig:
    """How scores are computed and batches chosen.

    entropy: "quadrature" | "moment" (see module doc); n_nodes: Gauss-Hermite points; force_reduce: how
    per-atom force BALD (summed over x, y, z) becomes one number per structure; var_floor_energy (eV^2) and
    var_floor_forces ((eV/Å)^2) floor the aleatoric variances (a model whose heads predict ~0 variance would
    otherwise give unbounded BALD); diversity_tol: relative fingerprint distance below which a candidate is a
    near-copy (0 disables the guard); guard_labelled: also reject near-copies of labelled structures;
    fingerprint_rmax (Å), fingerprint_bins, fingerprint_width (Å): the distance-histogram descriptor.
    """

    entropy: str = "quadrature"
    n_nodes: int = 32
    force_reduce: str = "mean"
    var_floor_energy: float = 1e-8
    var_floor_forces: float = 1e-8
    diversity_tol: float = 0.05
    guard_labelled: bool = True
    fingerprint_rmax: float = 6.0
    fingerprint_bins: int = 60
    fingerprint_width: float = 0.1

    def validate(self) -> AcquisitionConfig:
        if self.entropy not in ENTROPY_METHODS:
            raise InputError(
                f"unknown entropy method {self.entropy!r}; choose from {', '.join(ENTROPY_METHODS)}"
            )
        if self.force_reduce not in FORCE_REDUCE:
            raise InputError(
                f"unknown force reduction {self.force_reduce!r}; choose from {', '.join(FORCE_REDUCE)}"
            )
        if self.diversity_tol < 0:
            raise InputError(f"diversity tolerance {self.diversity_tol} must be >= 0")
        return self


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)


def energy_uncertainty(pred, num_atoms: np.ndarray) -> np.ndarray:
    """(G,) epistemic energy standard deviation per atom (eV/atom)."""
    return np.sqrt(np.maximum(_np(pred.energy_var_epistemic), 0.0)) / np.asarray(num_atoms, dtype=np.float64)


def bald_energy(pred, cfg: AcquisitionConfig = AcquisitionConfig()) -> np.ndarray:
    """(G,) BALD on total energies (nats), from ``energy_samples`` (K, G) and per-sample variances."""
    mu = _np(pred.energy_samples)
    var = (
        _np(pred.energy_var_samples)
        if pred.energy_var_samples is not None
        else _np(pred.energy_var_aleatoric)
    )
    var = np.maximum(np.broadcast_to(var, mu.shape), cfg.var_floor_energy)
    return bald_gaussian(mu, var, cfg.entropy, cfg.n_nodes)


def _reduce_atoms(per_atom: np.ndarray, batch_index: np.ndarray, num_graphs: int, how: str) -> np.ndarray:
    out = np.zeros(num_graphs)
    if how == "max":
        out.fill(-np.inf)
        np.maximum.at(out, batch_index, per_atom)
        return out
    np.add.at(out, batch_index, per_atom)
    if how == "mean":
        out /= np.maximum(np.bincount(batch_index, minlength=num_graphs), 1)
    return out


def bald_forces(pred, batch_index: np.ndarray, cfg: AcquisitionConfig = AcquisitionConfig()) -> np.ndarray:
    """(G,) BALD on forces (nats): per atom the sum over x, y, z, then ``cfg.force_reduce`` over atoms."""
    batch_index = np.asarray(batch_index, dtype=np.int64)
    num_graphs = len(pred.energy)
    var_a = np.maximum(_np(pred.forces_var_aleatoric), cfg.var_floor_forces)  # (N, 3)
    if pred.forces_samples is not None:
        per_comp = bald_gaussian(_np(pred.forces_samples), var_a[None], cfg.entropy, cfg.n_nodes)
    else:
        per_comp = bald_gaussian_closed_form(_np(pred.forces_var_epistemic), var_a)
    return _reduce_atoms(per_comp.sum(-1), batch_index, int(num_graphs), cfg.force_reduce)


def acquisition_scores(
    strategy: str,
    pred,
    num_atoms: np.ndarray,
    batch_index: np.ndarray,
    cfg: AcquisitionConfig = AcquisitionConfig(),
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(G,) scores of ``strategy`` for a Prediction over G structures (``num_atoms`` (G,), ``batch_index`` (N,))."""
    strategy = canonical_strategy(strategy)
    g = int(np.asarray(num_atoms).shape[0])
    if strategy == "random":
        return (rng or np.random.default_rng()).random(g)
    if strategy == "energy":
        return energy_uncertainty(pred, num_atoms)
    if strategy == "bald-e":
        return bald_energy(pred, cfg)
    if strategy == "bald-f":
        return bald_forces(pred, batch_index, cfg)
    return bald_energy(pred, cfg) + bald_forces(pred, batch_index, cfg)


# =============================================================================================================
# descriptors and diverse batch selection
# =============================================================================================================
def distance_fingerprint(atoms, r_max: float = 6.0, n_bins: int = 60, width: float = 0.1) -> np.ndarray:
    """(n_bins,) Gaussian-smeared histogram of interatomic distances below ``r_max`` Å, per atom.

    Invariant to rotations, translations and atom order; periodic images use the minimum-image convention.
    """
    n = len(atoms)
    grid = np.linspace(0.0, r_max, n_bins)
    if n < 2:
        return np.zeros(n_bins)
    d = atoms.get_all_distances(mic=bool(np.any(atoms.pbc)))
    d = d[np.triu_indices(n, 1)]
    d = d[d < r_max + 3 * width]
    hist = np.exp(-0.5 * ((grid[None, :] - d[:, None]) / width) ** 2).sum(0)
    return hist / n


def fingerprints(atoms_list: Sequence, cfg: AcquisitionConfig = AcquisitionConfig()) -> np.ndarray:
    """(G, B) distance fingerprints of a list of structures."""
    return (
        np.stack(
            [
                distance_fingerprint(a, cfg.fingerprint_rmax, cfg.fingerprint_bins, cfg.fingerprint_width)
                for a in atoms_list
            ]
        )
        if len(atoms_list)
        else np.zeros((0, cfg.fingerprint_bins))
    )


def relative_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a - b|| / max(||a||, ||b||) between one descriptor a (D,) and rows of b (M, D); 0 for two zeros."""
    b = np.atleast_2d(b)
    num = np.linalg.norm(b - a[None], axis=1)
    den = np.maximum(np.maximum(np.linalg.norm(a), np.linalg.norm(b, axis=1)), 1e-300)
    return num / den


def select_batch(
    scores: np.ndarray,
    k: int,
    exclude: Sequence[int] = (),
    descriptors: np.ndarray | None = None,
    tol: float = 0.05,
    guard: Sequence[int] = (),
    fill: bool = True,
) -> list[int]:
    """Indices of the ``k`` best-scoring structures, never one in ``exclude`` and never twice.

    With ``descriptors`` (G, D) and ``tol`` > 0, a candidate within relative distance ``tol`` of an already
    selected structure, or of one in ``guard`` (e.g. the labelled set), is skipped. When fewer than ``k``
    survive and ``fill`` is True, the skipped candidates fill the batch in score order. Ties are broken by
    index (stable), so the result is deterministic.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if k < 0:
        raise InputError(f"batch size {k} must be >= 0")
    excluded = set(int(i) for i in exclude)
    order = [
        int(i)
        for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
        if int(i) not in excluded
    ]
    if descriptors is None or tol <= 0:
        return order[:k]
    desc = np.asarray(descriptors, dtype=np.float64)
    chosen: list[int] = []
    skipped: list[int] = []
    guard_rows = sorted({int(i) for i in guard})
    ref = desc[guard_rows] if guard_rows else np.zeros((0, desc.shape[1]))
    for i in order:
        if len(chosen) == k:
            break
        if ref.shape[0] and relative_distance(desc[i], ref).min() < tol:
            skipped.append(i)
            continue
        chosen.append(i)
        ref = np.vstack([ref, desc[i][None]])
    if fill and len(chosen) < k:
        chosen += skipped[: k - len(chosen)]
    return chosen


# =============================================================================================================
# labels, oracles and the label cache
# =============================================================================================================
LABEL_SOURCE, LABEL_SETTINGS, LABEL_TIME, LABEL_WALL = (
    "label_source",
    "label_settings",
    "label_time",
    "label_wall_s",
)


from structures.common import structure_hash  # noqa: E402  (re-exported; one definition)


def strip_labels(atoms):
    """A copy of ``atoms`` without calculator, energy/forces/stress labels or label provenance."""
    out = atoms.copy()
    out.calc = None
    for key in (
        "energy",
        "free_energy",
        "stress",
        "virial",
        LABEL_SOURCE,
        LABEL_SETTINGS,
        LABEL_TIME,
        LABEL_WALL,
    ):
        out.info.pop(key, None)
    for key in ("forces",):
        if key in out.arrays:
            del out.arrays[key]
    return out


def _labelled_copy(atoms, energy: float, forces: np.ndarray, provenance: dict[str, Any]):
    out = strip_labels(atoms)
    out.info["energy"] = float(energy)
    out.arrays["forces"] = np.asarray(forces, dtype=np.float64).reshape(len(out), 3)
    out.info.update(provenance)
    return out


@runtime_checkable
class Oracle(Protocol):
    """Labels structures: ``oracle(atoms_list)`` returns copies with ``info['energy']`` (eV),
    ``arrays['forces']`` (eV/Å) and provenance keys (``label_source``, ``label_settings``, ``label_time``)."""

    name: str

    def __call__(self, atoms_list: Sequence) -> list: ...


class PoolOracle:
    """Reveals labels kept hidden from the learner (pool-based active learning). Looked up by structure hash."""

    def __init__(self, labelled: Sequence, source: str = "pool"):
        self.name = source
        self._labels: dict[str, tuple[float, np.ndarray]] = {}
        for n, atoms in enumerate(labelled):
            energy = atoms.info.get("energy")
            forces = atoms.arrays.get("forces")
            if energy is None or forces is None:
                calc = getattr(atoms, "calc", None)
                results = getattr(calc, "results", None) or {}
                energy = results.get("energy", energy)
                forces = results.get("forces", forces)
            if energy is None or forces is None:
                raise InputError(
                    f"pool structure {n} has no energy/forces labels; pool-based learning needs them "
                    f"(or give --oracle to compute labels)"
                )
            self._labels[structure_hash(atoms)] = (float(energy), np.asarray(forces, dtype=np.float64))
        self.calls = 0

    def __call__(self, atoms_list: Sequence) -> list:
        out = []
        for atoms in atoms_list:
            key = structure_hash(atoms)
            if key not in self._labels:
                raise InputError(
                    f"structure {atoms.get_chemical_formula()} (hash {key}) is not in the labelled pool"
                )
            energy, forces = self._labels[key]
            self.calls += 1
            out.append(
                _labelled_copy(
                    atoms,
                    energy,
                    forces,
                    {LABEL_SOURCE: self.name, LABEL_SETTINGS: "{}", LABEL_TIME: "", LABEL_WALL: 0.0},
                )
            )
        return out


class LabelCache:
    """SQLite (ASE db) store of labels keyed by ``<structure hash>-<settings hash>``; one transaction per label."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _db(self):
        from ase.db import connect

        # no ASE lock file: a kill inside a write would leave <path>.lock behind and ASE would wait for it forever
        return connect(str(self.path), use_lock_file=False)

    def get(self, key: str):
        """Labelled Atoms for ``key`` or None."""
        if not self.path.exists():
            return None
        rows = list(self._db().select(label_key=key, limit=1))
        if not rows:
            return None
        row = rows[0]
        atoms = row.toatoms()
        energy, forces = float(row.energy), np.asarray(row.forces, dtype=np.float64)
        prov = {
            LABEL_SOURCE: row.label_source,
            LABEL_SETTINGS: row.label_settings,
            LABEL_TIME: row.label_time,
            LABEL_WALL: float(row.label_wall_s),
        }
        return _labelled_copy(atoms, energy, forces, prov)

    def put(self, key: str, atoms) -> None:
        """Store labelled ``atoms`` (energy in info, forces in arrays, provenance keys in info)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean = strip_labels(atoms)
        clean.info = {}
        clean.calc = SinglePointCalculator(
            clean, energy=float(atoms.info["energy"]), forces=np.asarray(atoms.arrays["forces"])
        )
        kvp = {
            "label_key": key,
            LABEL_SOURCE: str(atoms.info[LABEL_SOURCE]),
            LABEL_SETTINGS: str(atoms.info[LABEL_SETTINGS]),
            LABEL_TIME: str(atoms.info[LABEL_TIME]),
            LABEL_WALL: float(atoms.info[LABEL_WALL]),
        }
        self._db().write(clean, key_value_pairs=kvp)

    def __len__(self) -> int:
        return self._db().count() if self.path.exists() else 0


class CalculatorOracle:
    """Any ASE calculator as an oracle, with provenance and a label cache (nothing is computed twice).

    ``make_calculator(atoms)`` returns a calculator for one structure (it may return a shared instance);
    ``name`` and ``settings`` (JSON-serialisable) identify the reference and enter the cache key.
    """

    def __init__(
        self,
        make_calculator: Callable[[Any], Any],
        name: str,
        settings: dict[str, Any] | None = None,
        cache: str | os.PathLike | None = None,
    ):
        self.make_calculator = make_calculator
        self.name = name
        self.settings = dict(settings or {})
        self.settings_json = json.dumps(self.settings, sort_keys=True, default=str)
        self._settings_hash = hashlib.sha1(f"{name}|{self.settings_json}".encode()).hexdigest()[:12]
        self.cache = LabelCache(cache) if cache is not None else None
        self._memory: dict[str, Any] = {}
        self.computed = 0

    def key(self, atoms) -> str:
        return f"{structure_hash(atoms)}-{self._settings_hash}"

    def label_one(self, atoms):
        key = self.key(atoms)
        hit = self._memory.get(key)
        if hit is None and self.cache is not None:
            hit = self.cache.get(key)
        if hit is not None:
            out = _labelled_copy(
                atoms,
                hit.info["energy"],
                hit.arrays["forces"],
                {k: hit.info[k] for k in (LABEL_SOURCE, LABEL_SETTINGS, LABEL_TIME, LABEL_WALL)},
            )
            self._memory[key] = out
            return out.copy()
        work = strip_labels(atoms)
        work.calc = self.make_calculator(work)
        t0 = time.perf_counter()
        energy = float(work.get_potential_energy())
        forces = np.asarray(work.get_forces(), dtype=np.float64)
        wall = time.perf_counter() - t0
        if not (math.isfinite(energy) and np.isfinite(forces).all()):
            raise RuntimeError(
                f"oracle {self.name} returned non-finite energy/forces for {atoms.get_chemical_formula()}"
            )
        out = _labelled_copy(
            atoms,
            energy,
            forces,
            {
                LABEL_SOURCE: self.name,
                LABEL_SETTINGS: self.settings_json,
                LABEL_TIME: time.strftime("%Y-%m-%dT%H:%M:%S"),
                LABEL_WALL: float(wall),
            },
        )
        self.computed += 1
        if self.cache is not None:
            self.cache.put(key, out)
        self._memory[key] = out
        return out.copy()

    def __call__(self, atoms_list: Sequence) -> list:
        return [self.label_one(a) for a in atoms_list]


def harvest(trajectories: Sequence[Sequence], stride: int = 1, include_last: bool = True) -> list:
    """Candidates from relaxation trajectories (any lists of Atoms): every ``stride``-th frame of each
    trajectory (plus its last frame), labels stripped, exact duplicates (same structure hash) dropped."""
    if stride < 1:
        raise InputError(f"stride {stride} must be >= 1")
    seen: set[str] = set()
    out = []
    for traj in trajectories:
        frames = list(traj)
        keep = list(range(0, len(frames), stride))
        if include_last and frames and keep[-1] != len(frames) - 1:
            keep.append(len(frames) - 1)
        for i in keep:
            key = structure_hash(frames[i])
            if key not in seen:
                seen.add(key)
                out.append(strip_labels(frames[i]))
    return out


# =============================================================================================================
# predictions on a list of structures, test metrics
# =============================================================================================================
def _batches(posterior, atoms_list: Sequence, batch_size: int):
    import torch

    from potentials.data import collate

    dtype = getattr(posterior, "dtype", None) or torch.get_default_dtype()
    for s in range(0, len(atoms_list), batch_size):
        chunk = atoms_list[s : s + batch_size]
        yield s, chunk, collate(chunk, posterior.elements, posterior.cutoff, dtype=dtype, with_labels=False)


def score_pool(
    posterior,
    atoms_list: Sequence,
    strategy: str,
    cfg: AcquisitionConfig = AcquisitionConfig(),
    n_samples: int | None = None,
    batch_size: int = 32,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(G,) acquisition scores of ``strategy`` for ``atoms_list`` (no model calls for ``random``)."""
    strategy = canonical_strategy(strategy)
    if strategy == "random":
        return (rng or np.random.default_rng()).random(len(atoms_list))
    from potentials import keys as K

    need_forces = strategy in ("bald-f", "bald-ef")
    scores = np.empty(len(atoms_list))
    for s, chunk, batch in _batches(posterior, atoms_list, batch_size):
        pred = posterior.predict(batch, n_samples=n_samples, forces=need_forces)
        scores[s : s + len(chunk)] = acquisition_scores(
            strategy, pred, batch[K.NUM_ATOMS].numpy(), batch[K.BATCH].numpy(), cfg, rng
        )
    return scores


def evaluate(
    posterior, atoms_list: Sequence, n_samples: int | None = None, batch_size: int = 32
) -> dict[str, float]:
    """Test errors and calibration of a posterior on labelled structures.

    Returns energy_mae_per_atom (meV/atom), energy_rmse_per_atom, forces_mae / forces_rmse (eV/Å), forces_nll
    (nats per component, total predictive variance), energy_nll (nats per structure), force coverage of the
    68 % / 95 % intervals, force miscalibration area and ENCE (potentials.calibration), and the Spearman
    correlation between each structure's force RMSE and its mean predicted force sigma.
    """
    from potentials import calibration
    from potentials import keys as K
    from potentials.data import energy_label, forces_label

    e_err, e_var, n_at, f_err, f_var, s_rmse, s_sig = [], [], [], [], [], [], []
    for _, chunk, batch in _batches(posterior, atoms_list, batch_size):
        pred = posterior.predict(batch, n_samples=n_samples, forces=True)
        e_true = np.array([energy_label(a) for a in chunk], dtype=np.float64)
        f_true = np.concatenate([forces_label(a) for a in chunk])
        e_err.append(_np(pred.energy) - e_true)
        e_var.append(_np(pred.energy_var))
        n_at.append(batch[K.NUM_ATOMS].numpy())
        fe, fv = _np(pred.forces) - f_true, _np(pred.forces_var)
        f_err.append(fe)
        f_var.append(fv)
        idx = batch[K.BATCH].numpy()
        cnt = np.bincount(idx, minlength=len(chunk)) * 3
        s_rmse.append(np.sqrt(np.bincount(idx, (fe**2).sum(1), len(chunk)) / cnt))
        s_sig.append(np.bincount(idx, np.sqrt(fv).sum(1), len(chunk)) / cnt)
    e_err_a, e_var_a, n_at_a = np.concatenate(e_err), np.concatenate(e_var), np.concatenate(n_at)
    f_err_a, f_var_a = np.concatenate(f_err), np.concatenate(f_var)
    zeros_f, zeros_e = np.zeros_like(f_err_a), np.zeros_like(e_err_a)
    fm = calibration.metrics(f_err_a, zeros_f, np.sqrt(np.maximum(f_var_a, 1e-30)))
    em = calibration.metrics(e_err_a, zeros_e, np.sqrt(np.maximum(e_var_a, 1e-30)))
    return {
        "n_test": len(atoms_list),
        "energy_mae_per_atom": float(np.mean(np.abs(e_err_a) / n_at_a) * 1000.0),
        "energy_rmse_per_atom": float(np.sqrt(np.mean((e_err_a / n_at_a) ** 2)) * 1000.0),
        "forces_mae": fm["mae"],
        "forces_rmse": fm["rmse"],
        "forces_nll": fm["nll"],
        "energy_nll": em["nll"],
        "forces_coverage_68": fm["coverage_68"],
        "forces_coverage_95": fm["coverage_95"],
        "forces_miscal_area": fm["miscal_area"],
        "forces_ence": fm["ence"],
        "energy_miscal_area": em["miscal_area"],
        "forces_error_sigma_spearman": calibration.spearman(np.concatenate(s_rmse), np.concatenate(s_sig)),
    }


# =============================================================================================================
# fitting a posterior each round
# =============================================================================================================
@runtime_checkable
class Fitter(Protocol):
    """Trains a posterior on labelled structures; must be deterministic given ``seed``.

    ``workdir`` is this round's folder (write checkpoints there); ``previous`` is the previous round's
    folder (for warm starts) or None.
    """

    def fit(self, train: list, valid: list, seed: int, workdir: Path, previous: Path | None): ...


@dataclass(frozen=True)
class BayesFitter:
    """Fits ``method`` (ensemble | swag | ivon | laplace | point) with potentials.bayes.fit.fit_posterior.

    model_preset / train_preset name potentials.model and potentials.train presets (elements and
    normalisation are fitted from the data by the trainer); method_preset names the method's preset
    ("paper" | "cpu" | "tiny"); *_overrides replace single fields; recalibration ("scale" | "isotonic" |
    "none") is fitted on the validation set. The round seed becomes the training seed (ensemble members
    use seed, seed + 1, ...). Every round retrains from scratch (``previous`` is ignored).
    """

    method: str = "ensemble"
    model_preset: str = "tiny"
    train_preset: str = "tiny"
    method_preset: str = "tiny"
    elements: tuple[str, ...] = ()
    model_overrides: tuple[tuple[str, Any], ...] = ()
    train_overrides: tuple[tuple[str, Any], ...] = ()
    method_overrides: tuple[tuple[str, Any], ...] = ()
    recalibration: str = "scale"

    def fit(self, train: list, valid: list, seed: int, workdir: Path, previous: Path | None):
        import torch

        from potentials.bayes.fit import fit_posterior, method_config
        from potentials.model import preset
        from potentials.train import train_preset

        seed = int(seed) % (2**31 - 1024)
        elements = self.elements or tuple(
            sorted({s for a in train + valid for s in a.get_chemical_symbols()})
        )
        model_config = preset(self.model_preset, elements=tuple(elements), **dict(self.model_overrides))
        train_config = train_preset(self.train_preset, seed=seed, **dict(self.train_overrides))
        overrides = dict(self.method_overrides)
        if self.method == "ensemble":
            overrides.setdefault("base_seed", seed)
        config = method_config(self.method, self.method_preset, **overrides)
        torch.manual_seed(seed)
        posterior, _ = fit_posterior(
            self.method,
            train,
            valid,
            model_config,
            self.method_preset,
            workdir,
            train_config=train_config,
            config=config,
            recalibration=self.recalibration,
            seed=seed,
        )
        return posterior


# =============================================================================================================
# the loop
# =============================================================================================================
@dataclass(frozen=True)
class ALConfig:
    """One active-learning run.

    init: labels drawn at random from the pool in round 0; batch: labels acquired per round; rounds:
    acquisition rounds (init + rounds * batch labels at the end, rounds + 1 fits); schedule: cumulative
    acquired labels after each round (e.g. (10, 20, 50, 100, 200)), which replaces batch and rounds when
    given; valid_fraction: part of the round-0 set held out for validation (early stopping / recalibration;
    acquired labels all go to training); n_samples: posterior samples per prediction (None = method default);
    batch_size: structures per forward pass.
    """

    strategy: str = "bald-ef"
    init: int = 50
    batch: int = 25
    rounds: int = 10
    schedule: tuple[int, ...] = ()
    seed: int = 0
    valid_fraction: float = 0.1
    n_samples: int | None = None
    batch_size: int = 32
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)

    @property
    def n_rounds(self) -> int:
        return len(self.schedule) if self.schedule else self.rounds

    def acquisitions_in(self, r: int) -> int:
        """Labels acquired in round r >= 1."""
        if self.schedule:
            return int(self.schedule[r - 1]) - (int(self.schedule[r - 2]) if r >= 2 else 0)
        return self.batch

    def validate(self, pool_size: int, has_initial: bool = False) -> ALConfig:
        canonical_strategy(self.strategy)
        self.acquisition.validate()
        if self.init < (0 if has_initial else 1) or self.batch < 0 or self.rounds < 0:
            raise InputError(
                f"init ({self.init}) must be >= 1, batch ({self.batch}) and rounds ({self.rounds}) >= 0"
            )
        if self.schedule and (
            self.schedule[0] < 1 or any(b <= a for a, b in zip(self.schedule, self.schedule[1:]))
        ):
            raise InputError(f"schedule {list(self.schedule)} must be positive and strictly increasing")
        need = self.init + sum(self.acquisitions_in(r) for r in range(1, self.n_rounds + 1))
        if need > pool_size:
            what = "init + schedule[-1]" if self.schedule else "init + rounds x batch"
            raise InputError(f"{what} = {need} labels but the pool has only {pool_size} structures")
        if not 0 <= self.valid_fraction < 1:
            raise InputError(f"valid fraction {self.valid_fraction} must be in [0, 1)")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["strategy"] = canonical_strategy(self.strategy)
        d["schedule"] = list(self.schedule)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ALConfig:
        acq = AcquisitionConfig(**data.get("acquisition", {}))
        names = {f.name for f in fields(cls)} - {"acquisition"}
        clean = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**clean, acquisition=acq)


PRESETS: dict[str, ALConfig] = {
    "paper": ALConfig(init=500, schedule=(10, 20, 50, 100, 200), valid_fraction=0.1),
    "default": ALConfig(),
    "cpu": ALConfig(init=40, batch=10, rounds=4, valid_fraction=0.1, batch_size=16),
}


def _digest(atoms_list: Sequence) -> str:
    h = hashlib.sha1()
    for a in atoms_list:
        h.update(structure_hash(a).encode())
    return h.hexdigest()[:16]


def _round_seed(seed: int, round_: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, round_, stream]).generate_state(1)[0])


def _valid_count(fraction: float, n: int) -> int:
    if n < 2 or fraction <= 0:
        return 0
    return min(max(1, int(round(fraction * n))), n - 1)


def read_labelled(out_dir: str | os.PathLike) -> list:
    """The labelled structures of a run folder (``labelled.extxyz``), labels in info/arrays, with provenance."""
    path = Path(out_dir) / "labelled.extxyz"
    if not path.exists():
        return []
    from ase.io import read

    frames = read(path, index=":", format="extxyz", do_not_split_by_at_sign=True)
    frames = frames if isinstance(frames, list) else [frames]
    for atoms in frames:  # extxyz puts energy/forces on a SinglePointCalculator: back to info/arrays
        results = dict(getattr(atoms.calc, "results", None) or {})
        if "energy" in results:
            atoms.info["energy"] = float(results["energy"])
        if "forces" in results:
            atoms.arrays["forces"] = np.asarray(results["forces"], dtype=np.float64)
        atoms.calc = None
    return frames


class ActiveLearner:
    """Pool-based / oracle-driven active learning with atomic per-round state (resumable).

    pool: candidate structures (labels, if any, are stripped: the learner only sees geometry); oracle: labels
    queried structures; fitter: trains a posterior each round; test: labelled structures for metrics (or None);
    initial: labelled structures that start the training set besides the pool draws (e.g. a 300 K training
    set when acquiring from hotter MD); out_dir: state.json, labelled.extxyz, round_XXX/ folders. ``log``
    receives one line per round. With ``warm_start`` the fitter gets the previous round's folder.
    """

    def __init__(
        self,
        pool: Sequence,
        oracle: Oracle,
        fitter: Fitter,
        config: ALConfig,
        out_dir: str | os.PathLike,
        test: Sequence | None = None,
        initial: Sequence | None = None,
        log: Callable[[str], None] | None = None,
        warm_start: bool = False,
    ):
        self.pool = [strip_labels(a) for a in pool]
        if not self.pool:
            raise InputError("the pool is empty")
        self.initial = list(initial or [])
        self.oracle = oracle
        self.fitter = fitter
        self.config = config.validate(len(self.pool), has_initial=bool(self.initial))
        self.strategy = canonical_strategy(config.strategy)
        self.out = Path(out_dir)
        self.test = list(test) if test is not None else None
        self.log = log or (lambda msg: None)
        self.warm_start = warm_start
        self.state_path = self.out / "state.json"
        self.state = self._load_or_init()
        self._fingerprints: np.ndarray | None = None

    # ---- state ------------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "pool_digest": _digest(self.pool),
            "pool_size": len(self.pool),
            "initial_digest": _digest(self.initial),
            "initial_size": len(self.initial),
            "oracle": getattr(self.oracle, "name", type(self.oracle).__name__),
        }

    def _load_or_init(self) -> dict[str, Any]:
        ident = self._identity()
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{self.state_path} is not valid JSON ({exc.msg}); remove it to start again"
                ) from exc
            for key in ("config", "pool_digest", "initial_digest"):
                if state.get(key) != ident[key]:
                    raise InputError(
                        f"{self.out} holds a run with a different {key.replace('_', ' ')}; "
                        f"use a new --out folder or the same settings to resume"
                    )
            return state
        cfg = self.config
        rng = np.random.default_rng(_round_seed(cfg.seed, 0, 0))
        init = [int(i) for i in rng.choice(len(self.pool), size=cfg.init, replace=False)]
        n_valid = _valid_count(cfg.valid_fraction, cfg.init + len(self.initial))
        if self.initial:  # validation structures come from the given initial set
            valid_initial = sorted(int(i) for i in rng.permutation(len(self.initial))[:n_valid])
            valid: list[int] = []
        else:
            valid_initial, valid = [], sorted(init[:n_valid])
        return {
            "version": 1,
            **ident,
            "round": 0,
            "labelled": [],
            "valid": valid,
            "valid_initial": valid_initial,
            "pending": init,
            "rounds": [],
            "done": False,
        }

    def _save(self) -> None:
        atomic_write_text(self.state_path, json.dumps(self.state, indent=1) + "\n")

    @property
    def labelled(self) -> list[int]:
        """Pool indices labelled so far, in acquisition order."""
        return list(self.state["labelled"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.state["rounds"])

    def labelled_atoms(self) -> list:
        """Labelled pool structures in acquisition order (read from labelled.extxyz)."""
        return read_labelled(self.out)

    def _write_labelled(self, frames: list) -> None:
        import io

        from ase.io import write

        buf = io.StringIO()
        write(buf, frames, format="extxyz")
        atomic_write_text(self.out / "labelled.extxyz", buf.getvalue())

    def _descriptors(self) -> np.ndarray:
        if self._fingerprints is None:
            self._fingerprints = fingerprints(self.pool, self.config.acquisition)
        return self._fingerprints

    # ---- one round ----------------------------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """Label the pending structures, fit, evaluate, choose the next batch; save state. Returns the record."""
        st, cfg = self.state, self.config
        r = int(st["round"])
        t0 = time.perf_counter()
        pending = [int(i) for i in st["pending"]]
        frames = self.labelled_atoms()
        n_done = len(st["labelled"])
        if len(frames) > n_done and [a.info.get("pool_index") for a in frames[:n_done]] == st["labelled"]:
            frames = frames[:n_done]  # killed between writing labelled.extxyz and state.json: redo the round
        if len(frames) != n_done:
            raise InputError(
                f"{self.out / 'labelled.extxyz'} holds {len(frames)} structures, state.json "
                f"{len(st['labelled'])}; the run folder is inconsistent"
            )
        new = self.oracle([self.pool[i] for i in pending]) if pending else []
        for i, atoms in zip(pending, new):
            atoms.info["pool_index"] = i
            atoms.info["al_round"] = r
        frames = frames + list(new)
        labelled = [int(i) for i in st["labelled"]] + pending
        t_label = time.perf_counter() - t0
        valid_pool, valid_init = set(st["valid"]), set(st.get("valid_initial", []))
        train = [a for n, a in enumerate(self.initial) if n not in valid_init]
        valid = [a for n, a in enumerate(self.initial) if n in valid_init]
        train += [a for i, a in zip(labelled, frames) if i not in valid_pool]
        valid += [a for i, a in zip(labelled, frames) if i in valid_pool]
        workdir = self.out / f"round_{r:03d}"
        previous = self.out / f"round_{r - 1:03d}" if (self.warm_start and r > 0) else None
        if workdir.exists():  # an interrupted fit of this round: start it afresh (exact resume)
            shutil.rmtree(workdir)
        t1 = time.perf_counter()
        posterior = self.fitter.fit(train, valid, _round_seed(cfg.seed, r, 1), workdir, previous)
        t_fit = time.perf_counter() - t1
        record: dict[str, Any] = {
            "round": r,
            "n_labels": len(labelled) + len(self.initial),
            "n_acquired": len(labelled) - cfg.init,
            "n_train": len(train),
            "n_valid": len(valid),
            "acquired": pending,
        }
        if self.test:
            record["test"] = evaluate(posterior, self.test, cfg.n_samples, cfg.batch_size)
        nxt: list[int] = []
        t2 = time.perf_counter()
        if r < cfg.n_rounds and cfg.acquisitions_in(r + 1) > 0:
            nxt, stats = self._acquire(posterior, labelled, r, cfg.acquisitions_in(r + 1))
            record["next_scores"] = stats
        record.update(time_label_s=t_label, time_fit_s=t_fit, time_acquire_s=time.perf_counter() - t2)
        self._write_labelled(frames)
        st.update(round=r + 1, labelled=labelled, pending=nxt, done=r >= cfg.n_rounds)
        st["rounds"].append(record)
        self._save()
        self.log(self._summary(record))
        return record

    def _acquire(self, posterior, labelled: list[int], r: int, k: int) -> tuple[list[int], dict[str, float]]:
        cfg = self.config
        rng = np.random.default_rng(_round_seed(cfg.seed, r, 2))
        unlabelled = np.setdiff1d(np.arange(len(self.pool)), np.array(labelled, dtype=np.int64))
        cand = [self.pool[i] for i in unlabelled]
        scores_c = score_pool(
            posterior, cand, self.strategy, cfg.acquisition, cfg.n_samples, cfg.batch_size, rng
        )
        scores = np.full(len(self.pool), -np.inf)
        scores[unlabelled] = scores_c
        if self.strategy == "random" or cfg.acquisition.diversity_tol <= 0:
            chosen = select_batch(scores, k, exclude=labelled)
        else:
            chosen = select_batch(
                scores,
                k,
                exclude=labelled,
                descriptors=self._descriptors(),
                tol=cfg.acquisition.diversity_tol,
                guard=labelled if cfg.acquisition.guard_labelled else (),
            )
        stats = {
            "mean": float(np.mean(scores_c)),
            "max": float(np.max(scores_c)),
            "chosen_mean": float(np.mean(scores[chosen])) if chosen else float("nan"),
        }
        return chosen, stats

    def _summary(self, rec: dict[str, Any]) -> str:
        msg = f"round {rec['round']}: {rec['n_labels']} labels"
        if "test" in rec:
            t = rec["test"]
            msg += f", force MAE {t['forces_mae']:.4f} eV/Å, force NLL {t['forces_nll']:.3f}"
        return msg + f", fit {rec['time_fit_s']:.1f} s"

    def run(
        self, max_steps: int | None = None, progress: Callable[[int, int], None] | None = None
    ) -> list[dict]:
        """Run (or resume) until all rounds are done or ``max_steps`` rounds ran; returns the history."""
        steps = 0
        while not self.state["done"] and (max_steps is None or steps < max_steps):
            self.step()
            steps += 1
            if progress is not None:
                progress(int(self.state["round"]), self.config.n_rounds + 1)
        return self.history
