"""Calibration metrics, recalibration and out-of-distribution scores for Gaussian predictions.

Every metric takes targets ``y``, predictive means ``mu`` and predictive standard deviations ``sigma``
(same shape, any units; flattened), as numpy arrays or torch tensors. Force components are treated as
independent samples (one per atom and Cartesian component).

Definitions (z = (y - mu) / sigma, Phi the standard normal CDF):

- NLL: mean 0.5 (z^2 + log(2 pi sigma^2)).
- coverage(p): fraction of |z| <= Phi^-1((1 + p) / 2), the observed coverage of central p intervals.
- miscalibration area: integral over p in [0, 1] of |coverage(p) - p| (0 = calibrated, 0.5 = worst).
- ENCE: sort by sigma, split into equal-count bins, mean_b |RMV_b - RMSE_b| / RMV_b with
  RMV_b = sqrt(mean sigma^2) and RMSE_b = sqrt(mean (y - mu)^2) in bin b.
- sharpness: sqrt(mean sigma^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from structures.common import InputError

LEVELS = np.linspace(0.0, 1.0, 201)  # nominal central-interval levels for curves and areas
RECAL_KINDS = ("none", "scale", "isotonic")


def _np(x: Any) -> np.ndarray:
    """Flat float64 numpy copy of an array or tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _prepare(y: Any, mu: Any, sigma: Any) -> tuple[np.ndarray, np.ndarray]:
    """(errors y - mu, sigma) as flat float64 arrays; InputError for mismatched shapes or sigma <= 0."""
    y, mu, sigma = _np(y), _np(mu), _np(sigma)
    if not (y.shape == mu.shape == sigma.shape):
        raise InputError(f"calibration inputs differ in size: y {y.size}, mu {mu.size}, sigma {sigma.size}")
    if y.size == 0:
        raise InputError("calibration metrics need at least one value")
    if not np.all(sigma > 0):
        raise InputError("predictive standard deviations must be positive")
    return y - mu, sigma


def z_of_level(p: Any) -> np.ndarray:
    """Half-width in standard deviations of the central interval holding probability ``p`` (0..1)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(over="ignore"):
        return ndtri(0.5 * (1.0 + p))


# ---- accuracy and likelihood -----------------------------------------------------------------
def mae(y: Any, mu: Any) -> float:
    return float(np.mean(np.abs(_np(y) - _np(mu))))


def rmse(y: Any, mu: Any) -> float:
    return float(np.sqrt(np.mean((_np(y) - _np(mu)) ** 2)))


def gaussian_nll(y: Any, mu: Any, sigma: Any) -> float:
    """Mean Gaussian negative log-likelihood (nats per value)."""
    err, sigma = _prepare(y, mu, sigma)
    return float(np.mean(0.5 * ((err / sigma) ** 2 + np.log(2.0 * math.pi * sigma**2))))


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two arrays (average ranks for ties); nan when one is constant."""
    ra, rb = rankdata(_np(a)), rankdata(_np(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def error_sigma_spearman(y: Any, mu: Any, sigma: Any) -> float:
    """Spearman correlation between |y - mu| and sigma (1 = uncertainty ranks errors perfectly)."""
    err, sigma = _prepare(y, mu, sigma)
    return spearman(np.abs(err), sigma)


def sharpness(sigma: Any) -> float:
    """Root mean predictive variance, sqrt(mean sigma^2), in the units of sigma."""
    return float(np.sqrt(np.mean(_np(sigma) ** 2)))


# ---- calibration curves ----------------------------------------------------------------------
def coverage(y: Any, mu: Any, sigma: Any, level: float | np.ndarray) -> np.ndarray | float:
    """Observed fraction of targets inside the central ``level`` interval(s) mu +- z(level) sigma."""
    err, sigma = _prepare(y, mu, sigma)
    return _coverage_of_z(np.abs(err / sigma), level)


def _coverage_of_z(abs_z: np.ndarray, level: float | np.ndarray, factor: Any = None) -> np.ndarray | float:
    """Fraction of |z| <= k(level), with k = z_of_level(level) or ``factor(level)`` when given."""
    levels = np.atleast_1d(np.asarray(level, dtype=np.float64))
    k = z_of_level(levels) if factor is None else np.asarray(factor(levels), dtype=np.float64)
    s = np.sort(abs_z)
    cov = np.searchsorted(s, k, side="right") / s.size
    return float(cov[0]) if np.ndim(level) == 0 else cov


def coverage_curve(y: Any, mu: Any, sigma: Any, levels: np.ndarray = LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """(expected levels, observed coverages) of central intervals; the reliability diagram's data."""
    return levels, np.asarray(coverage(y, mu, sigma, levels))


def _area(levels: np.ndarray, observed: np.ndarray) -> float:
    return float(np.trapezoid(np.abs(observed - levels), levels))


def miscalibration_area(y: Any, mu: Any, sigma: Any, levels: np.ndarray = LEVELS) -> float:
    """Area between the observed and the ideal coverage curve of central intervals (0..0.5)."""
    lv, obs = coverage_curve(y, mu, sigma, levels)
    return _area(lv, obs)


def ence(y: Any, mu: Any, sigma: Any, n_bins: int = 10) -> float:
    """Expected normalised calibration error over ``n_bins`` equal-count bins sorted by sigma."""
    err, sigma = _prepare(y, mu, sigma)
    order = np.argsort(sigma, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, sigma.size)) if b.size]
    values = []
    for b in bins:
        rmv = math.sqrt(float(np.mean(sigma[b] ** 2)))
        rmse_b = math.sqrt(float(np.mean(err[b] ** 2)))
        values.append(abs(rmv - rmse_b) / rmv)
    return float(np.mean(values))


# ---- recalibration ---------------------------------------------------------------------------
@dataclass
class Recalibration:
    """A map from raw to recalibrated predictive uncertainty, fitted on a validation split.

    kind "scale": sigma' = s sigma with s^2 = mean(z^2) (the NLL-optimal variance factor).
    kind "isotonic": the central ``level`` interval becomes mu +- k(level) sigma with
    k(level) = z_of_level(g(level)), g an isotonic map from observed to nominal coverage (knots
    ``levels`` -> ``nominal``); ``scale`` is then k(0.6827) so a single variance (1-sigma equivalent) exists.
    """

    kind: str = "none"
    scale: float = 1.0  # sigma factor (dimensionless)
    levels: list[float] = field(default_factory=list)  # isotonic knots: target coverage (0..1)
    nominal: list[float] = field(default_factory=list)  # nominal level that attains it on validation

    def __post_init__(self):
        if self.kind not in RECAL_KINDS:
            raise InputError(f"unknown recalibration {self.kind!r}; choose from {', '.join(RECAL_KINDS)}")

    def factor(self, level: Any) -> np.ndarray:
        """Half-width k(level) (in raw sigmas) of the recalibrated central interval."""
        level = np.asarray(level, dtype=np.float64)
        if self.kind == "isotonic" and self.levels:
            nominal = np.interp(level, self.levels, self.nominal)
            return z_of_level(np.clip(nominal, 0.0, 1.0 - 1e-9))
        return self.scale * z_of_level(level)

    def apply_sigma(self, sigma: Any) -> Any:
        """Recalibrated standard deviation(s) (1-sigma equivalent); works on arrays and tensors."""
        return sigma * self.scale

    def apply_variance(self, var: Any) -> Any:
        return var * self.scale**2

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scale": float(self.scale),
            "levels": list(map(float, self.levels)),
            "nominal": list(map(float, self.nominal)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Recalibration:
        if not data:
            return cls()
        return cls(
            kind=str(data.get("kind", "none")),
            scale=float(data.get("scale", 1.0)),
            levels=[float(v) for v in data.get("levels", [])],
            nominal=[float(v) for v in data.get("nominal", [])],
        )


def fit_scale(y: Any, mu: Any, sigma: Any) -> Recalibration:
    """Variance scaling minimising the validation NLL: s^2 = mean(z^2) (closed form)."""
    err, sigma = _prepare(y, mu, sigma)
    return Recalibration(kind="scale", scale=float(np.sqrt(np.mean((err / sigma) ** 2))))


def fit_isotonic(y: Any, mu: Any, sigma: Any, levels: np.ndarray = LEVELS) -> Recalibration:
    """Isotonic recalibration of the central-interval coverage curve (Kuleshov-style, on |z|)."""
    from sklearn.isotonic import IsotonicRegression

    err, sigma = _prepare(y, mu, sigma)
    abs_z = np.abs(err / sigma)
    observed = np.asarray(_coverage_of_z(abs_z, levels))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(observed, levels)
    knots = np.linspace(0.0, 1.0, 101)
    nominal = np.maximum.accumulate(np.clip(iso.predict(knots), 0.0, 1.0))
    rec = Recalibration(kind="isotonic", levels=knots.tolist(), nominal=nominal.tolist())
    rec.scale = float(rec.factor(0.6826894921370859))
    return rec


def fit_recalibration(y: Any, mu: Any, sigma: Any, kind: str = "scale") -> Recalibration:
    """Fit a :class:`Recalibration` of ``kind`` ("none" | "scale" | "isotonic") on validation data."""
    if kind == "none":
        return Recalibration()
    if kind == "scale":
        return fit_scale(y, mu, sigma)
    if kind == "isotonic":
        return fit_isotonic(y, mu, sigma)
    raise InputError(f"unknown recalibration {kind!r}; choose from {', '.join(RECAL_KINDS)}")


def recalibrated_coverage_curve(
    y: Any, mu: Any, sigma: Any, recal: Recalibration, levels: np.ndarray = LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage curve after ``recal`` (level-dependent for isotonic, a sigma scale otherwise)."""
    err, sigma = _prepare(y, mu, sigma)
    return levels, np.asarray(_coverage_of_z(np.abs(err / sigma), levels, factor=recal.factor))


def recalibrated_miscalibration_area(y: Any, mu: Any, sigma: Any, recal: Recalibration) -> float:
    lv, obs = recalibrated_coverage_curve(y, mu, sigma, recal)
    return _area(lv, obs)


# ---- summaries -------------------------------------------------------------------------------
def metrics(
    y: Any, mu: Any, sigma: Any, recal: Recalibration | None = None, n_bins: int = 10
) -> dict[str, float]:
    """Every metric of one quantity; with ``recal`` the calibration metrics use the recalibrated sigma.

    Keys: mae, rmse, nll, spearman, miscal_area, ence, coverage_68, coverage_95, sharpness.
    """
    err, sig = _prepare(y, mu, sigma)
    out = {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "spearman": spearman(np.abs(err), sig),
    }
    if recal is None or recal.kind == "none":
        s = sig
        out["miscal_area"] = _area(LEVELS, np.asarray(_coverage_of_z(np.abs(err / sig), LEVELS)))
        cov = _coverage_of_z(np.abs(err / sig), np.array([0.6826894921370859, 0.95]))
    else:
        s = recal.apply_sigma(sig)
        abs_z = np.abs(err / sig)
        out["miscal_area"] = _area(LEVELS, np.asarray(_coverage_of_z(abs_z, LEVELS, factor=recal.factor)))
        cov = _coverage_of_z(abs_z, np.array([0.6826894921370859, 0.95]), factor=recal.factor)
    out["nll"] = float(np.mean(0.5 * ((err / s) ** 2 + np.log(2.0 * math.pi * s**2))))
    out["ence"] = ence(err, np.zeros_like(err), s, n_bins)
    out["coverage_68"], out["coverage_95"] = float(cov[0]), float(cov[1])
    out["sharpness"] = sharpness(s)
    return out


# ---- out-of-distribution detection -------------------------------------------------------------
def ood_scores(
    pred: Any, num_atoms: Any, batch_index: Any, kind: str = "forces", epistemic: bool = True
) -> np.ndarray:
    """Per-structure OOD score from a :class:`~potentials.posterior.Prediction`.

    kind "forces": mean over atoms of the per-atom force sigma sqrt(mean_c var_Fc) (eV/Å);
    kind "energy": energy sigma per atom sqrt(var_E) / N (eV/atom). ``epistemic`` uses the spread over
    posterior samples only, else the total variance. ``num_atoms`` (G,), ``batch_index`` (N,).
    """
    n = _np(num_atoms)
    if kind == "energy":
        var = pred.energy_var_epistemic if epistemic else pred.energy_var
        return np.sqrt(np.clip(_np(var), 0.0, None)) / n
    if kind == "forces":
        var = pred.forces_var_epistemic if epistemic else pred.forces_var
        var = var.detach().cpu().numpy() if hasattr(var, "detach") else np.asarray(var)
        per_atom = np.sqrt(np.clip(var.reshape(-1, 3).mean(-1), 0.0, None))
        idx = _np(batch_index).astype(np.int64)
        return np.bincount(idx, weights=per_atom, minlength=n.size) / n
    raise InputError(f"unknown OOD score {kind!r}; choose 'forces' or 'energy'")


def ood_auc(scores_in: Any, scores_out: Any) -> dict[str, float]:
    """AUROC and AUPRC (out-of-distribution = positive class) of scores, higher = more OOD."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s_in, s_out = _np(scores_in), _np(scores_out)
    if s_in.size == 0 or s_out.size == 0:
        raise InputError("OOD detection needs in- and out-of-distribution scores")
    labels = np.concatenate([np.zeros(s_in.size), np.ones(s_out.size)])
    scores = np.concatenate([s_in, s_out])
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
    }
