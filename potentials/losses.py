"""Training losses: joint energy-force Gaussian NLL (NLL_JEF), energy-only NLL and MSE.

All take ``pred`` (model output dict) and ``batch`` (labels, keys.py) and return a scalar plus parts.
Normalisation: energy terms are averaged over structures, force terms over atoms, so the loss does
not grow with batch or system size. Per-structure ``weight`` scales both terms; ``energy_weight`` the
energy term alone (0: a frame trains forces only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from potentials import keys as K
from structures.common import InputError

LOG_2PI = math.log(2.0 * math.pi)
KINDS = ("nll_jef", "mse", "nll_e")


@dataclass(frozen=True)
class LossConfig:
    """Which loss and its weights. Energies eV, forces eV/Å, stress eV/Å^3."""

    kind: str = "nll_jef"  # "nll_jef" | "mse" | "nll_e"
    energy_weight: float = 1.0
    force_weight: float = 10.0
    stress_weight: float = 0.0
    beta: float = 0.0  # beta-NLL: weight each NLL term by stop_grad(variance)^beta (0 = plain NLL)
    mse_warmup_epochs: int = 0  # plain MSE for the first epochs, then ``kind``
    min_variance: float = 1e-10  # floor added to predicted variances (eV^2, (eV/Å)^2)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown loss {self.kind!r}; choose from {', '.join(KINDS)}")

    def to_dict(self) -> dict:
        return asdict(self)


def gaussian_nll(residual: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Elementwise 0.5 (r^2 / var + log var + log 2 pi)."""
    return 0.5 * (residual**2 / variance + variance.log() + LOG_2PI)


def gaussian_nll_3d(residual: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Per-atom 0.5 (r^T Sigma^-1 r + log det Sigma + 3 log 2 pi) via Cholesky; r (N, 3), Sigma (N, 3, 3).

    Computed in float64 whatever the model dtype: a float32 Cholesky of a (mathematically SPD) covariance
    with a large eigenvalue spread can fail. A covariance that is still not numerically SPD gets a jitter
    of 1e-9 x its mean diagonal.
    """
    r = residual.double()
    c = cov.double()
    c = 0.5 * (c + c.transpose(-1, -2))
    chol, info = torch.linalg.cholesky_ex(c)
    if _capturing(c):  # no host sync inside a CUDA graph: the jitter goes where the factorisation failed
        chol, _ = torch.linalg.cholesky_ex(c + _jitter(c) * (info > 0)[:, None, None])
    elif bool((info > 0).any()):
        chol = torch.linalg.cholesky(c + _jitter(c))
    z = torch.linalg.solve_triangular(chol, r.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return (0.5 * ((z**2).sum(-1) + logdet + 3.0 * LOG_2PI)).to(residual.dtype)


def _jitter(c: torch.Tensor) -> torch.Tensor:
    """1e-9 x the mean diagonal of each 3x3 matrix of ``c`` (N, 3, 3), as a multiple of the identity."""
    eps = 1e-9 * c.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1e-12)
    return eps[:, None, None] * torch.eye(3, dtype=c.dtype, device=c.device)


def _capturing(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _structure_weights(batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    w = batch.get(K.WEIGHT)
    return torch.ones_like(like) if w is None else w.to(like.dtype)


def _mean_over_atoms(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    w = _structure_weights(batch, batch[K.ENERGY])[batch[K.BATCH]].to(values.dtype)
    return (w * values).sum() / w.sum()


def _mean_over_structures(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    w = _structure_weights(batch, values)
    return (w * values).sum() / w.sum()


def _mean_energy_term(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weighted mean over the structures whose energy counts (``weight`` x ``energy_weight``); 0 (with a
    gradient path) when no structure of the batch has an energy weight, e.g. a batch of replay frames."""
    w = _structure_weights(batch, values)
    ew = batch.get(K.ENERGY_WEIGHT)
    if ew is not None:
        w = w * ew.to(values.dtype)
    total = w.sum()
    # branch-free (a captured CUDA graph cannot read ``total``): with no energy weight the sum is 0 too
    return (w * values).sum() / torch.where(total > 0, total, torch.ones_like(total))


def _beta_weight(variance: torch.Tensor, beta: float) -> torch.Tensor:
    return variance.detach() ** beta if beta else torch.ones_like(variance)


def _stress_mse(pred, batch, cfg: LossConfig) -> torch.Tensor | None:
    if cfg.stress_weight <= 0 or K.STRESS not in batch or K.STRESS not in pred:
        return None
    diff = (pred[K.STRESS] - batch[K.STRESS]).pow(2).mean(dim=(1, 2))
    return _mean_over_structures(diff, batch)


def active_kind(cfg: LossConfig, epoch: int | None) -> str:
    """The loss used at ``epoch``: 'mse' during the warm-up, else ``cfg.kind``."""
    return "mse" if epoch is not None and epoch < cfg.mse_warmup_epochs else cfg.kind


def compute_loss(
    pred: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cfg: LossConfig,
    epoch: int | None = None,
    floats: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of ``pred`` against the labels in ``batch``; MSE while ``epoch < cfg.mse_warmup_epochs``.

    - mse:     w_E mean_g ((E - Ê)/N)^2 + w_F mean_i |F - F̂|^2 / 3 [+ w_S mean |σ - σ̂|^2]
    - nll_e:   w_E mean_g NLL(E; Ê, var_E) + w_F mean_i |F - F̂|^2 / 3
    - nll_jef: w_E mean_g NLL(E; Ê, var_E) + w_F mean_i NLL_3(F; F̂, Sigma_F)
    Returns (loss, parts as floats; as detached tensors with ``floats=False``, which reads nothing back
    from the device, as a captured CUDA graph needs). Energies are compared in float64, the loss is in the force dtype.
    """
    kind = active_kind(cfg, epoch)
    dtype = pred[K.FORCES].dtype
    n_atoms = batch[K.NUM_ATOMS].to(torch.float64)
    e_res = (pred[K.ENERGY] - batch[K.ENERGY]).to(dtype)
    f_res = pred[K.FORCES] - batch[K.FORCES]
    parts: dict[str, torch.Tensor] = {}
    if kind == "mse":
        parts["energy"] = _mean_energy_term((e_res / n_atoms.to(dtype)) ** 2, batch)
    else:
        var_e = pred[K.ENERGY_VAR] + cfg.min_variance
        parts["energy"] = _mean_energy_term(gaussian_nll(e_res, var_e) * _beta_weight(var_e, cfg.beta), batch)
    if kind == "nll_jef":
        eye = torch.eye(3, dtype=dtype, device=f_res.device)
        cov = pred[K.FORCES_COV] + cfg.min_variance * eye
        weight = _beta_weight(torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1), cfg.beta)
        parts["forces"] = _mean_over_atoms(gaussian_nll_3d(f_res, cov) * weight, batch)
    else:
        parts["forces"] = _mean_over_atoms((f_res**2).mean(-1), batch)
    loss = cfg.energy_weight * parts["energy"] + cfg.force_weight * parts["forces"]
    stress = _stress_mse(pred, batch, cfg)
    if stress is not None:
        parts["stress"] = stress
        loss = loss + cfg.stress_weight * stress
    return loss, {k: float(v.detach()) if floats else v.detach() for k, v in parts.items()}
