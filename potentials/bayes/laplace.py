"""Post-hoc Laplace approximation with a generalised Gauss-Newton Hessian that includes the forces.

Written here rather than with laplace-torch: laplace-torch cannot differentiate the network's outputs
with respect to its inputs (forces = -dE/dx are outputs of our likelihood) and it pulls in a CUDA build
of torch.

Likelihood: energies E_g ~ N(E_g(theta), s_E^2) and force components F_nc ~ N(F_nc(theta), s_F^2), prior
theta ~ N(0, delta^-1 I). With Jacobians J_E (G, P) and J_F (3N, P) of the outputs w.r.t. the weights,
    Lambda = J_E^T J_E / s_E^2 + J_F^T J_F / s_F^2 + delta I      (GGN posterior precision)
Variants: "diag" keeps diag(Lambda) over every weight that moves the energy (the paper's variant);
"last_layer" keeps the full Lambda of the final energy readout (a Linear layer, node scalars -> atomic
energy), where E is linear in the weights so the linearised predictive is exact.
delta, s_E, s_F maximise the Laplace evidence
    log p(D) ~ log p(D | theta*) - delta |theta*|^2 / 2 + P log(delta) / 2 - log det(Lambda) / 2.
Predictive (linearised): f(theta* + d) ~ f(theta*) + J d, d ~ N(0, Lambda^-1); the epistemic variance is
diag(J Sigma J^T): exact for "last_layer", a K-sample estimate from Jacobian-vector products for "diag".
Aleatoric variances come from the model's heads at theta*.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from potentials import checkpoint
from potentials import keys as K
from potentials.bayes.base import (
    RecalibrationPair,
    WeightSamplePosterior,
    batches_of,
    model_and_config,
    parameter_names,
    posterior_parts,
    recalibrate,
    samples_prediction,
)
from potentials.model import ModelConfig
from potentials.posterior import Prediction
from structures.common import InputError

VARIANTS = ("diag", "last_layer")
GGN_MODES = ("exact", "mc")
PREDICTIVES = ("linearised", "sampled")
LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class LaplaceConfig:
    """Laplace settings. Precisions are per weight (1 / weight^2 units); noise in eV and eV/Å."""

    variant: str = "diag"  # "diag" (all weights, diagonal) | "last_layer" (final readout, full covariance)
    ggn: str = (
        "exact"  # "exact" (one Jacobian row per output) | "mc" (Rademacher probes, unbiased; diag only)
    )
    mc_probes: int = 8  # probes per batch and output block for ggn="mc"
    prior_precision: float = 1.0  # delta (initial value when fitted)
    fit_marglik: bool = True  # fit delta, s_E and s_F by maximising the evidence
    marglik_steps: int = 300
    marglik_lr: float = 0.05
    n_samples: int = 30  # default number of posterior samples at test time
    predictive: str = "linearised"  # "linearised" | "sampled" (evaluate the network at sampled weights)
    max_structures: int = 0  # structures used for the Hessian (0 = all training structures)
    batch_size: int = 8

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise InputError(f"unknown Laplace variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        if self.ggn not in GGN_MODES:
            raise InputError(f"unknown GGN mode {self.ggn!r}; choose from {', '.join(GGN_MODES)}")
        if self.predictive not in PREDICTIVES:
            raise InputError(f"unknown predictive {self.predictive!r}; choose from {', '.join(PREDICTIVES)}")
        if self.prior_precision <= 0 or self.n_samples < 1 or self.mc_probes < 1:
            raise InputError("prior_precision must be positive, n_samples and mc_probes >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, LaplaceConfig] = {
    "paper": LaplaceConfig(),
    "cpu": LaplaceConfig(ggn="mc", mc_probes=8, max_structures=200, n_samples=20),
    "tiny": LaplaceConfig(ggn="mc", mc_probes=2, max_structures=8, n_samples=5, marglik_steps=100),
}


# ---- Jacobians ----------------------------------------------------------------------------------
def _params(model: torch.nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise InputError(f"model has no parameter(s) {', '.join(missing)}")
    return [params[n] for n in names]


def _flat_grads(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
            for g, p in zip(grads, params)
        ]
    )


def _with_grad_positions(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**batch, K.POSITIONS: batch[K.POSITIONS].detach().requires_grad_(True)}


def output_jacobians(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], names: Sequence[str], mode: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Jacobians of energies and forces w.r.t. the named weights: J_E (G, P), J_F (3N, P) float64, and the
    model outputs at the current weights.

    mode "rows": one backward pass per output through the force graph (cost ~ G + 3N passes);
    "columns": dF/dtheta_p = -d/dx (dE_total/dtheta_p), one pass per weight (cost ~ G + P passes);
    "auto" picks the cheaper.
    """
    params = _params(model, names)
    n_params = sum(p.numel() for p in params)
    n_atoms = batch[K.POSITIONS].shape[0]
    if mode == "auto":
        mode = "columns" if n_params < 3 * n_atoms else "rows"
    with torch.enable_grad():
        if mode == "rows":
            out = model(batch, compute_forces=True, create_graph=True)
            ys = [out[K.ENERGY], out[K.FORCES].reshape(-1)]
            blocks = []
            for y in ys:
                rows = [
                    _flat_grads(
                        torch.autograd.grad(y[i], params, retain_graph=True, allow_unused=True), params
                    )
                    for i in range(y.numel())
                ]
                blocks.append(torch.stack(rows) if rows else torch.zeros(0, n_params, dtype=torch.float64))
            return blocks[0], blocks[1], out
        if mode != "columns":
            raise ValueError(f"unknown Jacobian mode {mode!r}")
        b = _with_grad_positions(batch)
        out = model(b, compute_forces=False)
        energy = out[K.ENERGY]
        j_e = torch.stack(
            [
                _flat_grads(
                    torch.autograd.grad(energy[g], params, retain_graph=True, allow_unused=True), params
                )
                for g in range(energy.numel())
            ]
        )
        g_total = _flat_grads(
            torch.autograd.grad(energy.sum(), params, create_graph=True, allow_unused=True), params
        )
        cols = []
        for p in range(n_params):
            if g_total[p].requires_grad:
                (dx,) = torch.autograd.grad(g_total[p], b[K.POSITIONS], retain_graph=True, allow_unused=True)
            else:
                dx = None
            cols.append(
                torch.zeros(3 * n_atoms, dtype=torch.float64) if dx is None else -dx.reshape(-1).double()
            )
        j_f = torch.stack(cols, dim=1)
        forces = -torch.autograd.grad(energy.sum(), b[K.POSITIONS], retain_graph=False)[0]
        out = {**out, K.FORCES: forces.detach()}
    return j_e, j_f, out


def jacobian_vector_products(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    names: Sequence[str],
    deltas: torch.Tensor,
    forces: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """J_E d_k (K, G) and J_F d_k (K, N, 3) for weight deviations ``deltas`` (K, P), float64, plus the outputs.

    Uses the double-vjp trick: with g(u) = J^T u (a vjp built with create_graph), J d = d(g(u) . d)/du.
    Each product costs about one extra backward pass; forward-mode AD is not available through the
    force graph (SiLU's backward has no forward derivative in torch).
    """
    params = _params(model, names)
    with torch.enable_grad():
        out = model(batch, compute_forces=forces, create_graph=forces)
        parts = [out[K.ENERGY].to(torch.float64)]
        if forces:
            parts.append(out[K.FORCES].reshape(-1).to(torch.float64))
        y = torch.cat(parts)
        u = torch.zeros_like(y, requires_grad=True)
        grads = torch.autograd.grad(y, params, grad_outputs=u, create_graph=True, allow_unused=True)
        g = _flat_grads(grads, params)
        jv = []
        for k in range(deltas.shape[0]):
            s = (g * deltas[k].to(torch.float64)).sum()
            if s.requires_grad:
                (row,) = torch.autograd.grad(s, u, retain_graph=True, allow_unused=True)
            else:
                row = None
            jv.append(torch.zeros_like(y) if row is None else row.detach())
        jv = torch.stack(jv)
    n_graphs = out[K.ENERGY].shape[0]
    j_e = jv[:, :n_graphs]
    j_f = jv[:, n_graphs:].reshape(deltas.shape[0], -1, 3) if forces else None
    return j_e, j_f, {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor)}


# ---- the generalised Gauss-Newton ---------------------------------------------------------------
@dataclass
class GGNStats:
    """Sufficient statistics of the Laplace evidence, float64.

    a_energy / a_forces: J^T J of each output block, (P,) diagonal or (P, P) full; sse_*: sums of squared
    residuals at theta* (eV^2, (eV/Å)^2) over n_* outputs; theta_sq = |theta*|^2.
    """

    a_energy: torch.Tensor
    a_forces: torch.Tensor
    sse_energy: float
    n_energy: int
    sse_forces: float
    n_forces: int
    theta_sq: float

    @property
    def full(self) -> bool:
        return self.a_energy.ndim == 2

    @property
    def num_params(self) -> int:
        return self.a_energy.shape[0]


def accumulate_ggn(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    names: Sequence[str],
    full: bool = False,
    mode: str = "exact",
    probes: int = 8,
    generator: torch.Generator | None = None,
    jacobian_mode: str = "auto",
) -> GGNStats:
    """GGN blocks J_E^T J_E and J_F^T J_F summed over ``batches`` (labels needed for the residuals).

    mode "exact" builds the Jacobians (:func:`output_jacobians`); "mc" (diagonal only) estimates
    diag(J^T J) by mean_s (J^T v_s)^2 with Rademacher v_s, which is unbiased since E[v v^T] = I.
    """
    if mode == "mc" and full:
        raise InputError("the Monte-Carlo GGN estimate is diagonal only; use ggn='exact' for a full block")
    params = _params(model, names)
    n_params = sum(p.numel() for p in params)
    shape = (n_params, n_params) if full else (n_params,)
    a_e = torch.zeros(shape, dtype=torch.float64)
    a_f = torch.zeros(shape, dtype=torch.float64)
    sse_e = sse_f = 0.0
    n_e = n_f = 0
    gen = generator or torch.Generator().manual_seed(0)
    for batch in batches:
        # energies on another code's reference (energy_weight 0, replay frames) inform the forces only
        ew = batch.get(K.ENERGY_WEIGHT)
        counts = (ew > 0) if ew is not None else torch.ones(batch[K.ENERGY].shape[0], dtype=torch.bool)
        if mode == "exact":
            j_e, j_f, out = output_jacobians(model, batch, names, jacobian_mode)
            j_e = j_e[counts]
            if full:
                a_e += j_e.T @ j_e
                a_f += j_f.T @ j_f
            else:
                a_e += (j_e**2).sum(0)
                a_f += (j_f**2).sum(0)
        elif mode == "mc":
            with torch.enable_grad():
                out = model(batch, compute_forces=True, create_graph=True)
                energy = out[K.ENERGY] * counts.to(out[K.ENERGY].dtype)
                for y, acc in ((energy, a_e), (out[K.FORCES].reshape(-1), a_f)):
                    for _ in range(probes):
                        v = (torch.randint(0, 2, y.shape, generator=gen) * 2 - 1).to(y.dtype)
                        g = torch.autograd.grad(
                            y, params, grad_outputs=v, retain_graph=True, allow_unused=True
                        )
                        acc += _flat_grads(g, params) ** 2 / probes
        else:
            raise InputError(f"unknown GGN mode {mode!r}; choose from {', '.join(GGN_MODES)}")
        sse_e += float(((out[K.ENERGY].detach() - batch[K.ENERGY])[counts] ** 2).sum())
        sse_f += float(((out[K.FORCES].detach().double() - batch[K.FORCES].double()) ** 2).sum())
        n_e += int(counts.sum())
        n_f += int(batch[K.FORCES].numel())
    theta = torch.cat([p.detach().reshape(-1).double() for p in params])
    return GGNStats(a_e, a_f, sse_e, n_e, sse_f, n_f, float((theta**2).sum()))


def posterior_precision(
    stats: GGNStats, prior_precision: float, var_energy: float, var_forces: float
) -> torch.Tensor:
    """Lambda = A_E / s_E^2 + A_F / s_F^2 + delta I, (P,) or (P, P)."""
    lam = stats.a_energy / var_energy + stats.a_forces / var_forces
    if stats.full:
        return lam + prior_precision * torch.eye(stats.num_params, dtype=torch.float64)
    return lam + prior_precision


def log_marginal_likelihood(
    stats: GGNStats, log_prior: torch.Tensor, log_var_e: torch.Tensor, log_var_f: torch.Tensor
) -> torch.Tensor:
    """Laplace-GGN evidence (nats) as a differentiable function of log delta, log s_E^2, log s_F^2."""
    delta, ve, vf = log_prior.exp(), log_var_e.exp(), log_var_f.exp()
    lik = -0.5 * (stats.n_energy * (LOG_2PI + log_var_e) + stats.sse_energy / ve)
    lik = lik - 0.5 * (stats.n_forces * (LOG_2PI + log_var_f) + stats.sse_forces / vf)
    lam = stats.a_energy / ve + stats.a_forces / vf
    if stats.full:
        lam = lam + delta * torch.eye(stats.num_params, dtype=torch.float64)
        logdet = torch.linalg.slogdet(lam)[1]
    else:
        logdet = torch.log(lam + delta).sum()
    return lik - 0.5 * delta * stats.theta_sq + 0.5 * stats.num_params * log_prior - 0.5 * logdet


def fit_hyperparameters(
    stats: GGNStats, prior_precision: float = 1.0, steps: int = 300, lr: float = 0.05
) -> dict[str, float]:
    """Maximise the evidence over (delta, s_E^2, s_F^2) with Adam on their logs, starting at the given
    delta and the residual mean squares. Returns prior_precision, var_energy, var_forces, log_marglik."""
    log_p = torch.tensor(math.log(prior_precision), dtype=torch.float64, requires_grad=True)
    log_e = torch.tensor(
        math.log(max(stats.sse_energy / max(stats.n_energy, 1), 1e-12)),
        dtype=torch.float64,
        requires_grad=True,
    )
    log_f = torch.tensor(
        math.log(max(stats.sse_forces / max(stats.n_forces, 1), 1e-12)),
        dtype=torch.float64,
        requires_grad=True,
    )
    opt = torch.optim.Adam([log_p, log_e, log_f], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = -log_marginal_likelihood(stats, log_p, log_e, log_f)
        loss.backward()
        opt.step()
    log_p, log_e, log_f = log_p.detach(), log_e.detach(), log_f.detach()
    value = float(log_marginal_likelihood(stats, log_p, log_e, log_f))
    return {
        "prior_precision": float(log_p.exp()),
        "var_energy": float(log_e.exp()),
        "var_forces": float(log_f.exp()),
        "log_marglik": value,
    }


# ---- the posterior ------------------------------------------------------------------------------
def laplace_names(model: torch.nn.Module, variant: str) -> list[str]:
    """Weights the Laplace posterior covers: the final readout ("last_layer") or every weight that moves
    the energy ("diag"; the aleatoric heads stay at their MAP values)."""
    if variant == "diag":
        return parameter_names(model, heads=False)
    readout = getattr(model, "readout_last", None)
    if readout is None:
        raise InputError("last-layer Laplace needs a model with a 'readout_last' Linear layer")
    ids = {id(p) for p in readout.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


class LaplacePosterior(WeightSamplePosterior):
    """Posterior protocol for the Laplace approximation N(theta*, Lambda^-1) over ``names``."""

    method = "laplace"

    def __init__(
        self,
        model,
        config: ModelConfig,
        names: Sequence[str],
        precision: torch.Tensor,
        variant: str = "diag",
        predictive: str = "linearised",
        n_samples: int = 30,
        seed: int = 0,
        recal: RecalibrationPair | None = None,
        hyper: dict[str, float] | None = None,
        network_of: str | None = None,
    ):
        super().__init__(model, config, names, n_samples, seed, recal)
        #: relaxation hash of the model whose unchanged weights this posterior was fitted on (a Laplace fit
        #: without training), so a screen reuses that model's relaxations (checkpoint.relaxation_hash)
        self.network_of = network_of
        if variant not in VARIANTS or predictive not in PREDICTIVES:
            raise InputError(f"Laplace variant {variant!r} / predictive {predictive!r} not allowed")
        self.variant, self.predictive = variant, predictive
        self.precision = precision.double().cpu()
        self.hyper = dict(hyper or {})
        if self.precision.ndim == 2:
            self._chol = torch.linalg.cholesky(self.precision)
            eye = torch.eye(self.precision.shape[0], dtype=torch.float64)
            self.covariance = torch.cholesky_solve(eye, self._chol)
        else:
            if not torch.all(self.precision > 0):
                raise InputError("Laplace precision must be positive")
            self.covariance = 1.0 / self.precision

    def draw(self, k: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(k, self.precision.shape[0], generator=generator, dtype=torch.float64)
        if self.precision.ndim == 2:  # d = L^-T z has covariance (L L^T)^-1
            return torch.linalg.solve_triangular(self._chol.T, z.T, upper=True).T
        return z * self.covariance.sqrt()

    def epistemic_variances(self, j_e: torch.Tensor, j_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """diag(J Sigma J^T) for exact Jacobians: energies (G,), force components (3N,)."""
        cov = self.covariance.to(j_e.device)
        if cov.ndim == 2:
            return ((j_e @ cov) * j_e).sum(1), ((j_f @ cov) * j_f).sum(1)
        return (j_e**2 * cov).sum(1), (j_f**2 * cov).sum(1)

    def predict(
        self, batch: dict[str, torch.Tensor], n_samples: int | None = None, forces: bool = True
    ) -> Prediction:
        if self.predictive == "sampled":
            return super().predict(batch, n_samples, forces)
        deltas = self.sample_deltas(n_samples)
        small = sum(p.numel() for p in _params(self.model, self.names)) < 3 * batch[K.POSITIONS].shape[0]
        if self.covariance.ndim == 2 or small:  # exact Jacobians are cheap: exact variance
            j_e, j_f, out = output_jacobians(self.model, batch, self.names, "columns" if small else "auto")
            var_e, var_f = self.epistemic_variances(j_e, j_f)
            d = deltas.double()
            dev_e, dev_f = d @ j_e.T, (d @ j_f.T).reshape(d.shape[0], -1, 3)
            var_f = var_f.reshape(-1, 3)
        else:  # K Jacobian-vector products: linearised samples, variance estimated from them
            dev_e, dev_f, out = jacobian_vector_products(self.model, batch, self.names, deltas, forces)
            var_e = (dev_e**2).mean(0)
            var_f = (dev_f**2).mean(0) if forces else None
        base = samples_prediction([evaluate_heads(out, forces)], forces)
        energy = out[K.ENERGY].detach()
        base.energy_samples = energy.unsqueeze(0) + dev_e.to(energy.dtype)
        base.energy_var_epistemic = var_e.to(base.energy_var_aleatoric.dtype)
        base.energy_var_samples = base.energy_var_samples.expand(deltas.shape[0], -1).clone()
        if forces:
            f = out[K.FORCES].detach()
            base.forces_samples = f.unsqueeze(0) + dev_f.to(f.dtype)
            base.forces_var_epistemic = var_f.to(f.dtype)
        return recalibrate(base, self.recal)

    def payload_extra(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "variant": self.variant,
            "predictive": self.predictive,
            "hyper": dict(self.hyper),
        } | ({"network_of": self.network_of} if self.network_of else {})


def evaluate_heads(out: dict[str, torch.Tensor], forces: bool) -> dict[str, torch.Tensor]:
    """The outputs :func:`samples_prediction` needs, detached (forces zero when not computed)."""
    keep = {
        k: v.detach()
        for k, v in out.items()
        if k in (K.POSITIONS, K.ENERGY, K.FORCES, K.ENERGY_VAR, K.FORCES_COV, K.STRESS)
    }
    if forces and K.FORCES not in keep:
        raise ValueError("forces requested but not computed")
    return keep


def from_checkpoint(payload: dict[str, Any]) -> LaplacePosterior:
    """Loader used by :func:`potentials.bayes.load_posterior` for method "laplace"."""
    extra, model, config = posterior_parts(payload, "Laplace", ("names", "precision", "variant"))
    return LaplacePosterior(
        model,
        config,
        extra["names"],
        extra["precision"],
        str(extra["variant"]),
        str(extra.get("predictive", "linearised")),
        int(extra.get("n_samples", 30)),
        int(extra.get("seed", 0)),
        RecalibrationPair.from_payload(payload),
        extra.get("hyper"),
        extra.get("network_of"),
    )


def laplace_from_model(
    model: torch.nn.Module,
    config: ModelConfig,
    graphs: Sequence[dict],
    cfg: LaplaceConfig,
    seed: int = 0,
) -> LaplacePosterior:
    """Fit the Laplace posterior of a trained model on labelled ``graphs`` (atoms_to_graph dicts)."""
    model = model.eval()
    names = laplace_names(model, cfg.variant)
    if cfg.max_structures and len(graphs) > cfg.max_structures:
        pick = np.sort(np.random.default_rng(seed).choice(len(graphs), cfg.max_structures, replace=False))
        graphs = [graphs[i] for i in pick]
    dtype = next(model.parameters()).dtype
    full = cfg.variant == "last_layer"
    stats = accumulate_ggn(
        model,
        batches_of(list(graphs), cfg.batch_size, dtype),
        names,
        full=full,
        mode="exact" if full else cfg.ggn,
        probes=cfg.mc_probes,
        generator=torch.Generator().manual_seed(seed),
    )
    if cfg.fit_marglik:
        hyper = fit_hyperparameters(stats, cfg.prior_precision, cfg.marglik_steps, cfg.marglik_lr)
    else:
        ve, vf = stats.sse_energy / max(stats.n_energy, 1), stats.sse_forces / max(stats.n_forces, 1)
        hyper = {"prior_precision": cfg.prior_precision, "var_energy": ve, "var_forces": vf}
        hyper["log_marglik"] = float(
            log_marginal_likelihood(
                stats,
                torch.tensor(math.log(cfg.prior_precision)),
                torch.tensor(math.log(ve)),
                torch.tensor(math.log(vf)),
            )
        )
    hyper["n_structures"] = float(len(graphs))
    precision = posterior_precision(stats, hyper["prior_precision"], hyper["var_energy"], hyper["var_forces"])
    return LaplacePosterior(
        model, config, names, precision, cfg.variant, cfg.predictive, cfg.n_samples, seed, hyper=hyper
    )


def fit_laplace(
    train_atoms: Sequence,
    valid_atoms: Sequence | None,
    model_config: ModelConfig,
    train_config,
    cfg: LaplaceConfig,
    out_dir: str | os.PathLike,
    e0s: dict[str, float] | None = None,
    progress: bool = False,
    seed: int = 0,
    init_from: str | os.PathLike | None = None,
    device=None,
    train: bool = True,
    replay_e0s_from: str | os.PathLike | None = None,
) -> LaplacePosterior:
    """Train a point model (resumable, ``out_dir/map``, on ``device``; fine-tuned from ``init_from`` when
    given) and fit its Laplace posterior on the training set (on the CPU). ``train=False``: no training, the
    posterior of the ``init_from`` model itself (it records that model's relaxation hash, so a screen reuses
    its relaxations). ``replay_e0s_from``: the checkpoint whose E0s the replayed energies were shifted from
    (the model a fine-tuning started from; default ``init_from`` when training, none without: a refit of a
    fine-tuned model names the model it was fine-tuned from)."""
    from potentials.data import atoms_to_graph, split_isolated
    from potentials.train import shift_replay_energies
    from potentials.train import train as train_point

    if not train:
        if init_from is None:
            raise InputError("a Laplace fit without training needs a point model (init_from)")
        best = init_from
    else:
        best = train_point(
            train_atoms,
            valid_atoms,
            model_config,
            train_config,
            Path(out_dir) / "map",
            progress=progress,
            e0s=e0s,
            method="point",
            init_from=init_from,
            device=device,
        )
    payload = checkpoint.load(best)
    model, config = model_and_config(payload)
    structures, _ = split_isolated(list(train_atoms))
    graphs = [atoms_to_graph(a, config.elements, config.cutoff) for a in structures]
    # replayed energies (K.SHIFTED_ENERGY_WEIGHT) enter the likelihood as training saw them: moved by the
    # E0 re-fit of the fine-tuning, which is the trained model's E0s minus those of the model it started from
    origin = replay_e0s_from if replay_e0s_from is not None else (init_from if train else None)
    start = checkpoint.load(origin)["config"].get("e0s") if origin is not None else None
    shift_replay_energies(graphs, start or config.e0s, config.e0s)
    post = laplace_from_model(model, config, graphs, cfg, seed)
    post.dft_hosts = frozenset(
        checkpoint.dft_hosts(payload)
    )  # the point model's record (its init_from's too)
    if not train:
        post.network_of = checkpoint.relaxation_hash(payload)
    return post


__all__ = [
    "GGNStats",
    "LaplaceConfig",
    "LaplacePosterior",
    "accumulate_ggn",
    "fit_hyperparameters",
    "fit_laplace",
    "jacobian_vector_products",
    "laplace_from_model",
    "log_marginal_likelihood",
    "output_jacobians",
    "posterior_precision",
]
