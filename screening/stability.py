"""Host stability: formation energy of the metal pair in the N-doped pocket against bulk metal.

    E_f = E(host) − E(pocket) − μ_M1 − μ_M2,   μ_M = E(bulk M) / n_atoms(bulk M)

``pocket`` is the host with both metals removed (the metal-free N-doped divacancy pocket), relaxed
with the same potential; the bulk metal is ASE's ground-state lattice (``ase.build.bulk``; Mn, whose
α-Mn ground state has 58 atoms, uses a bcc cell, see :data:`BULK_FALLBACK`) with its volume relaxed by
an isotropic scan (cell shape and atom positions fixed by symmetry). References are cached in the
store. σ(E_f) comes from the same shared posterior samples as ΔGH* (see :mod:`screening.dgh`).
E_f > ``max_formation_energy`` means the pair would rather aggregate into bulk clusters. Energies in eV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from potentials import keys as K
from structures import keys as SK

from .dgh import EnergyStats

#: metals whose ASE reference state cannot be built by ``ase.build.bulk(symbol)`` -> (crystal, a in Å)
BULK_FALLBACK: dict[str, tuple[str, float]] = {"Mn": ("bcc", 2.86)}


@dataclass(frozen=True)
class StabilityConfig:
    """Formation-energy settings."""

    max_formation_energy: float = 0.0  # eV, E_f above this -> flag "aggregates"
    bulk_scales: tuple[float, ...] = (0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06)  # lattice scan; () = reference
    aleatoric_correlation: float = 0.0  # ρ between the aleatoric errors of host and pocket


PRESETS: dict[str, StabilityConfig] = {
    "default": StabilityConfig(),
    "reference_lattice": StabilityConfig(bulk_scales=()),
}


@dataclass
class FormationResult:
    e_form: float  # eV
    e_form_std: float  # eV, total
    e_form_std_epistemic: float  # eV
    e_form_std_aleatoric: float  # eV
    samples: np.ndarray  # (K',) eV, the finite samples (K' <= K)
    aggregates: bool
    sample_mask: np.ndarray | None = None  # (K,) bool, samples used (finite for host, pocket and bulks)


def bulk_reference(symbol: str) -> Atoms:
    """Bulk metal in its ASE reference lattice (info name ``bulk@<symbol>``)."""
    from ase.build import bulk

    if symbol in BULK_FALLBACK:
        crystal, a = BULK_FALLBACK[symbol]
        atoms = bulk(symbol, crystal, a=a)
    else:
        atoms = bulk(symbol)
    atoms.info.update({SK.NAME: f"bulk@{symbol}", "ref_kind": "bulk", SK.METAL: symbol})
    return atoms


def pocket_reference(host: Atoms) -> Atoms:
    """The host with both metals removed (info name ``pocket@<motif>/<supercell>``)."""
    idx = [int(i) for i in str(host.info[SK.POCKET_INDICES]).split(",")]
    metals = {idx[0], idx[1]}
    keep = [i for i in range(len(host)) if i not in metals]
    pocket = host[keep]
    pocket.set_initial_magnetic_moments(np.zeros(len(pocket)))
    motif, supercell = host.info[SK.MOTIF], host.info.get(SK.SUPERCELL, "2r7")
    pocket.info = {
        SK.NAME: pocket_name(motif, supercell),
        "ref_kind": "pocket",
        SK.MOTIF: motif,
        SK.SUPERCELL: supercell,
    }
    return pocket


def pocket_name(motif: str, supercell: str) -> str:
    return f"pocket@{motif}/{supercell}"


def scan_bulk(posterior, atoms: Atoms, scales: Sequence[float], collate_fn=None, device=None) -> Atoms:
    """Isotropically rescale the cell (and positions) to the lowest mean-model energy of a lattice scan.

    A parabola through the lowest scan point and its neighbours proposes a refined scale, kept when its
    energy is lower; when the minimum is at the edge of the scan the edge is used. Returns a new Atoms with ``info["lattice_scale"]``.
    """
    out = atoms.copy()
    if not scales:
        out.info["lattice_scale"] = 1.0
        return out
    if collate_fn is None:
        from .relax import default_collate

        collate_fn = default_collate()
    scales = np.asarray(sorted(scales), dtype=float)
    trial = []
    for s in scales:
        a = atoms.copy()
        a.set_cell(atoms.cell * s, scale_atoms=True)
        trial.append(a)
    dtype = getattr(posterior, "dtype", None)
    dtype = dtype if isinstance(dtype, torch.dtype) else torch.get_default_dtype()

    def energies(structs: list[Atoms]) -> np.ndarray:
        batch = collate_fn(structs, posterior.elements, posterior.cutoff, dtype=dtype)
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        return posterior.mean_forward(batch)[K.ENERGY].detach().double().cpu().numpy()

    e = energies(trial)
    if not np.isfinite(
        e
    ).any():  # a broken model: keep the reference lattice, NaN flows to the nonfinite flag
        out.info["lattice_scale"] = 1.0
        return out
    e = np.where(np.isfinite(e), e, np.inf)
    i = int(np.argmin(e))
    best = float(scales[i])
    if 0 < i < len(scales) - 1 and np.isfinite(e[i - 1 : i + 2]).all():
        c = np.polyfit(scales[i - 1 : i + 2], e[i - 1 : i + 2], 2)
        if c[0] > 0:
            guess = float(np.clip(-c[1] / (2 * c[0]), scales[i - 1], scales[i + 1]))
            refined = atoms.copy()
            refined.set_cell(atoms.cell * guess, scale_atoms=True)
            if energies([refined])[0] < e[i]:  # keep the parabola's minimum only when it is lower
                best = guess
    out.set_cell(atoms.cell * best, scale_atoms=True)
    out.info["lattice_scale"] = float(best)
    return out


def formation_from_stats(
    host: EnergyStats,
    pocket: EnergyStats,
    bulks: Sequence[tuple[EnergyStats, int]],
    config: StabilityConfig = StabilityConfig(),
) -> FormationResult:
    """E_f from shared-sample energies of host, pocket and one bulk per metal of the pair (M1, M2).

    ``bulks`` = [(stats of bulk M1, n atoms), (stats of bulk M2, n atoms)]; for a homonuclear pair pass
    the same bulk twice (its two μ are then fully correlated, as they should be).
    """
    mu_mean = sum(float(b.mean[0]) / n for b, n in bulks)
    mu_samples = sum(b.samples[:, 0] / n for b, n in bulks)
    e_form = float(host.mean[0]) - float(pocket.mean[0]) - mu_mean
    samples = host.samples[:, 0] - pocket.samples[:, 0] - mu_samples
    keep = np.isfinite(samples)  # a non-finite posterior sample is dropped (counted via sample_mask)
    samples = samples[keep]
    std_epi = float(np.std(samples)) if samples.size else float("nan")
    # aleatoric: identical bulks are perfectly correlated (σ_μ add linearly), distinct ones independent
    sig_mu: dict[int, float] = {}
    for b, n in bulks:
        key = id(b)
        sig_mu[key] = sig_mu.get(key, 0.0) + np.sqrt(max(float(b.var_aleatoric[0]), 0.0)) / n
    vh, vp = max(float(host.var_aleatoric[0]), 0.0), max(float(pocket.var_aleatoric[0]), 0.0)
    var_ale = (
        vh + vp - 2.0 * config.aleatoric_correlation * np.sqrt(vh * vp) + sum(s**2 for s in sig_mu.values())
    )
    std_ale = float(np.sqrt(max(var_ale, 0.0)))
    return FormationResult(
        e_form=e_form,
        e_form_std=float(np.sqrt(std_epi**2 + std_ale**2)),
        e_form_std_epistemic=std_epi,
        e_form_std_aleatoric=std_ale,
        samples=samples,
        aggregates=bool(np.isfinite(e_form) and e_form > config.max_formation_energy),
        sample_mask=keep,
    )
