"""ΔGH* with uncertainty from posterior samples.

    ΔGH* = E(host+H*) − E(host) − ½ E(H2) + (ΔZPE − TΔS)

with ΔZPE − TΔS = 0.24 eV by default (Nørskov et al., "Trends in the exchange current for hydrogen
evolution", J. Electrochem. Soc. 152, J23 (2005): ΔG_H* = ΔE_H* + 0.24 eV at 300 K and 1 bar H2).
Site: the H* state with the lowest predictive-mean energy (among states that neither desorbed, exploded nor
came out non-finite; all finite states when none qualify). The site is *fixed at the mean-lowest
site* for every posterior sample, so σ measures the energy uncertainty of that configuration;
``site_agreement`` reports the fraction of samples whose own lowest site is the same one.

Uncertainty: the host, every H* state and H2 are evaluated in ONE ``posterior.predict`` call so the
K samples are shared (same weights for all structures); ΔGH*_k is formed per sample, keeping the
correlation between E(host+H*) and E(host). Epistemic σ = std over k of ΔGH*_k (population std, as
``Prediction.energy_var_epistemic``). Aleatoric variance from the predicted (head) variances:
v(host+H*) + v(host) − 2ρ·sqrt(v(host+H*) v(host)) + ¼ v(H2), ρ = ``aleatoric_correlation``
(0 = independent, the conservative default). Total σ = sqrt(σ_epi² + σ_ale²). Energies in eV.

Non-finite posterior samples: a sample k whose energy is NaN/inf for the host, H2 or the chosen H* state
is dropped from the σ and the site agreement and counted (``DGResult.n_samples_dropped``); a structure's
mean that is non-finite only because some of its samples are is replaced by the mean of its finite
samples (:func:`predict_energies`). When every sample is non-finite the result is NaN (flag ``nonfinite``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from structures.common import InputError

NORSKOV_2005_CORRECTION = 0.24  # eV, ΔZPE − TΔS for H* (J. Electrochem. Soc. 152, J23 (2005))


@dataclass(frozen=True)
class DGConfig:
    """ΔGH* settings."""

    correction: float = NORSKOV_2005_CORRECTION  # eV, ΔZPE − TΔS
    n_samples: int | None = None  # posterior samples K (None: the method's default)
    aleatoric_correlation: float = 0.0  # ρ between the aleatoric errors of host+H* and host, in [0, 1]

    def validate(self) -> DGConfig:
        if not np.isfinite(self.correction):
            raise InputError(
                f"correction {self.correction} is not finite; give a number in eV (default 0.24)"
            )
        if self.n_samples is not None and self.n_samples < 1:
            raise InputError(f"samples {self.n_samples} not allowed; need K >= 1")
        if not 0.0 <= self.aleatoric_correlation <= 1.0:
            raise InputError(
                f"aleatoric correlation {self.aleatoric_correlation} not allowed; need 0 <= rho <= 1"
            )
        return self


PRESETS: dict[str, DGConfig] = {
    "norskov2005": DGConfig(),
    "no_correction": DGConfig(correction=0.0),
}


@dataclass
class EnergyStats:
    """Posterior energies of G structures evaluated together (eV, eV^2)."""

    mean: np.ndarray  # (G,)
    samples: np.ndarray  # (K, G)
    var_aleatoric: np.ndarray  # (G,)

    def take(self, index: Sequence[int] | np.ndarray) -> EnergyStats:
        idx = np.asarray(index, dtype=int)
        return EnergyStats(self.mean[idx], self.samples[:, idx], self.var_aleatoric[idx])


@dataclass
class DGResult:
    """ΔGH* of one host at its best site."""

    best_site: str
    best_index: int  # index into the states passed in
    dg: float  # eV, from predictive-mean energies
    dg_std: float  # eV, total
    dg_std_epistemic: float  # eV
    dg_std_aleatoric: float  # eV
    dg_samples: np.ndarray  # (K,) eV
    site_dg: dict[str, float]  # eV, mean ΔGH* of every state
    site_agreement: float  # fraction of samples whose lowest eligible site is best_site
    e_host: float  # eV
    e_host_h: float  # eV
    e_h2: float  # eV
    sample_mask: np.ndarray | None = None  # (K,) bool, samples used (finite for host, H2 and the site)

    @property
    def n_samples_dropped(self) -> int:
        """Posterior samples dropped because they gave a non-finite energy."""
        return 0 if self.sample_mask is None else int((~self.sample_mask).sum())


def finite_sample_mask(*columns: np.ndarray) -> np.ndarray:
    """(K,) bool: samples whose energy is finite in every given (K,) column."""
    mask = np.ones(np.asarray(columns[0]).shape[0], dtype=bool)
    for col in columns:
        mask &= np.isfinite(np.asarray(col, dtype=float))
    return mask


def predict_energies(
    posterior, atoms_list: Sequence[Atoms], n_samples: int | None = None, collate_fn=None, device=None
) -> EnergyStats:
    """Evaluate ``atoms_list`` in ONE ``posterior.predict`` call (shared samples), no forces."""
    if collate_fn is None:
        from .relax import default_collate

        collate_fn = default_collate()
    dtype = getattr(posterior, "dtype", None)
    dtype = dtype if isinstance(dtype, torch.dtype) else torch.get_default_dtype()
    batch = collate_fn(list(atoms_list), posterior.elements, posterior.cutoff, dtype=dtype)
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    pred = posterior.predict(batch, n_samples=n_samples, forces=False)
    mean = pred.energy.detach().double().cpu().numpy().reshape(-1).copy()
    samples = pred.energy_samples.detach().double().cpu().numpy().reshape(-1, mean.shape[0])
    var = pred.energy_var_aleatoric.detach().double().cpu().numpy().reshape(-1).copy()
    finite = np.isfinite(samples)
    fix = ~np.isfinite(mean) & finite.any(0)  # NaN only because some samples are: mean of the finite ones
    if fix.any():
        mean[fix] = np.where(finite[:, fix], samples[:, fix], 0.0).sum(0) / finite[:, fix].sum(0)
        if pred.energy_var_samples is not None:
            vs = pred.energy_var_samples.detach().double().cpu().numpy().reshape(samples.shape)
            ok = finite & np.isfinite(vs)
            var[fix] = np.where(ok[:, fix], vs[:, fix], 0.0).sum(0) / np.maximum(ok[:, fix].sum(0), 1)
    # The posterior's recalibration scales its variances but leaves the samples as raw draws (each one a
    # consistent potential); ΔGH* and E_f take their epistemic spread from the samples, so the calibrated
    # spread is the deviation from the mean times the energy sigma factor.
    s = energy_sigma_scale(posterior)
    if s != 1.0:
        samples = mean[None, :] + s * (samples - mean[None, :])
    return EnergyStats(mean=mean, samples=samples, var_aleatoric=var)


def dg_sigma_scale(posterior) -> float:
    """The posterior's ΔGH* σ factor (``recal.dg``; 1.0 when it has none)."""
    try:
        scale = float(getattr(getattr(posterior, "recal", None), "dg", 1.0))
    except (TypeError, ValueError):
        return 1.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def dg_anchor(posterior, host: str | None = None, classes: Sequence[str] | None = None):
    """The posterior's DFT anchoring of ΔGH* (``screen anchor``) for ``host``: (offset, σ added in
    quadrature), eV; the pair's offset when the anchoring has one for the host's metal pair
    (:func:`screening.anchoring.offset_for`), else the global one; (0, 0) when it has none. An anchoring
    with site classes and ``classes`` (one :func:`screening.anchoring.site_class` per H* state) gives one
    offset and one σ per state, shapes (S,): the σ that applies is the chosen site's class's (a host whose
    lowest site puts H on a metal carries the metal-site error of the anchoring, not the carbon one)."""
    recal = getattr(posterior, "recal", None)
    anchor = getattr(recal, "anchor", None)
    if isinstance(anchor, dict) and "offset" in anchor and "sigma_add" in anchor:
        from .anchoring import offset_for

        if "class_offsets" in anchor and classes is not None:
            per = [offset_for(anchor, host, c) for c in classes]
            offs = np.array([o for o, _ in per], dtype=float)
            sigma = np.abs(np.array([sg for _, sg in per], dtype=float))
            if np.all(np.isfinite(offs)) and np.all(np.isfinite(sigma)):
                return offs, sigma
            return 0.0, 0.0
        offset, sigma = offset_for(anchor, host)
        return (offset, abs(sigma)) if np.isfinite(offset) and np.isfinite(sigma) else (0.0, 0.0)
    out = []
    for name in ("dg_offset", "dg_sigma_add"):
        try:
            v = float(getattr(recal, name, 0.0))
        except (TypeError, ValueError):
            v = 0.0
        out.append(v if np.isfinite(v) else 0.0)
    return out[0], abs(out[1])


def energy_sigma_scale(posterior) -> float:
    """The energy sigma factor of the posterior's recalibration (1.0 when it has none)."""
    recal = getattr(posterior, "recal", None)
    scale = getattr(getattr(recal, "energy", None), "scale", 1.0)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        return 1.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def dg_from_stats(
    host: EnergyStats,
    states: EnergyStats,
    labels: Sequence[str],
    h2: EnergyStats,
    config: DGConfig = DGConfig(),
    eligible: Sequence[bool] | None = None,
    sigma_scale: float = 1.0,
    anchor: tuple[float | np.ndarray, float] = (0.0, 0.0),
) -> DGResult:
    """ΔGH* from host (1 structure), its S H* states and H2 (1 structure) evaluated with shared samples.

    ``sigma_scale`` (the posterior's ΔGH* factor, :func:`dg_sigma_scale`) multiplies both σ parts and the
    spread of the returned samples about the mean; the mean and the site choice do not change.
    ``anchor`` = (offset, σ_add) in eV (:func:`dg_anchor`): the offset (a scalar, or one per state, (S,),
    for site-class anchoring) shifts each site's ΔGH* and the samples before the lowest site is picked;
    σ_add (a scalar, or one per state: the chosen site's is used), the anchoring's own error, joins the
    epistemic σ in quadrature (more DFT labels reduce it), so ``dg_std_epistemic`` can exceed the std of
    ``dg_samples``."""
    s = len(labels)
    if s == 0 or states.mean.shape[0] != s:
        raise ValueError(f"need one energy per H* state, got {states.mean.shape[0]} for {s} labels")
    offset = np.asarray(anchor[0], dtype=float)
    if offset.ndim not in (0, 1) or (offset.ndim == 1 and offset.shape[0] != s):
        raise ValueError(
            f"anchor offset must be a scalar or one per H* state ({s}), got shape {offset.shape}"
        )
    sigma_all = np.asarray(anchor[1], dtype=float)
    if sigma_all.ndim not in (0, 1) or (sigma_all.ndim == 1 and sigma_all.shape[0] != s):
        raise ValueError(f"anchor σ must be a scalar or one per H* state ({s}), got shape {sigma_all.shape}")
    ok = np.isfinite(states.mean)
    if eligible is not None:
        ok_pref = ok & np.asarray(eligible, dtype=bool)
        ok = ok_pref if ok_pref.any() else ok
    e_host, e_h2 = float(host.mean[0]), float(h2.mean[0])
    site_dg = states.mean - e_host - 0.5 * e_h2 + config.correction + offset
    if not ok.any():  # no finite state: report NaN, the nonfinite flag follows
        nan = float("nan")
        k = host.samples.shape[0]
        return DGResult(
            labels[0],
            0,
            nan,
            nan,
            nan,
            nan,
            np.full(k, nan),
            dict(zip(labels, map(float, site_dg))),
            0.0,
            e_host,
            nan,
            e_h2,
        )
    masked = np.where(ok, site_dg, np.inf)
    best = int(np.argmin(masked))
    sigma_add = float(sigma_all[best] if sigma_all.ndim else sigma_all)
    samples_dg = (  # (K, S)
        states.samples - host.samples[:, :1] - 0.5 * h2.samples[:, :1] + config.correction + offset[None, ...]
    )
    keep = finite_sample_mask(host.samples[:, 0], h2.samples[:, 0], states.samples[:, best])
    samples_dg = samples_dg[keep]  # non-finite samples are dropped (and counted via sample_mask)
    dg_k = samples_dg[:, best]
    if sigma_scale != 1.0 and dg_k.size:
        dg_k = dg_k.mean() + sigma_scale * (dg_k - dg_k.mean())
    std_epi = float(np.hypot(np.std(dg_k), sigma_add)) if dg_k.size else float("nan")
    v_s, v_h = float(states.var_aleatoric[best]), float(host.var_aleatoric[0])
    rho = config.aleatoric_correlation
    var_ale = (
        v_s + v_h - 2.0 * rho * np.sqrt(max(v_s, 0.0) * max(v_h, 0.0)) + 0.25 * float(h2.var_aleatoric[0])
    )
    std_ale = sigma_scale * float(np.sqrt(max(var_ale, 0.0)))
    usable = ok[None, :] & np.isfinite(samples_dg)
    per_sample_best = np.argmin(np.where(usable, samples_dg, np.inf), axis=1)
    return DGResult(
        best_site=labels[best],
        best_index=best,
        dg=float(site_dg[best]),
        dg_std=float(np.sqrt(std_epi**2 + std_ale**2)),
        dg_std_epistemic=std_epi,
        dg_std_aleatoric=std_ale,
        dg_samples=dg_k,
        site_dg={lab: float(v) for lab, v in zip(labels, site_dg)},
        site_agreement=float(np.mean(per_sample_best == best)) if keep.any() else 0.0,
        e_host=e_host,
        e_host_h=float(states.mean[best]),
        e_h2=e_h2,
        sample_mask=keep,
    )


def h2_molecule(box: float = 15.0) -> Atoms:
    """H2 (ASE's geometry) centred in a periodic cubic box of ``box`` Å."""
    from ase.build import molecule

    h2 = molecule("H2")
    h2.set_cell([box, box, box])
    h2.center()
    h2.pbc = True
    h2.info.update({"name": "H2", "ref_kind": "h2"})
    return h2


__all__ = [
    "DGConfig",
    "DGResult",
    "EnergyStats",
    "dg_anchor",
    "dg_from_stats",
    "dg_sigma_scale",
    "finite_sample_mask",
    "h2_molecule",
    "predict_energies",
]
