"""IVON: variational learning of a diagonal Gaussian over the weights with the authors' optimiser
(``ivon-opt``, Shen et al. 2024).

Training steps the optimiser inside ``optimizer.sampled_params(train=True)`` (done by
:func:`potentials.train.train` for any optimiser with that method). The posterior is
N(mean, diag(1 / (ess (hess + weight_decay)))), with mean = the weights and hess the optimiser's
Hessian estimate; both are stored, so the posterior is saved, loaded and sampled without the optimiser.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from potentials import checkpoint
from potentials.bayes.base import (
    RecalibrationPair,
    WeightSamplePosterior,
    model_and_config,
    parameter_names,
    posterior_parts,
    pretrain_point,
)
from potentials.model import ModelConfig
from structures.common import InputError


@dataclass(frozen=True)
class IVONConfig:
    """IVON hyperparameters (names as in ``ivon.IVON``) and the number of test-time samples."""

    lr: float = 0.01
    ess: float = 48000.0  # effective sample size (the data-set size scale of the likelihood)
    hess_init: float = 0.5
    beta1: float = 0.9
    beta2: float = 0.999995
    weight_decay: float = 1e-4  # also the prior precision per unit ess
    mc_samples: int = 1  # weight samples per training step
    clip_radius: float = math.inf
    n_samples: int = 16  # default number of test-time samples
    pretrain_fraction: float = (
        0.0  # first fraction of the epochs with AdamW (a warm start), 0 = IVON from scratch
    )

    def __post_init__(self):
        if self.ess <= 0 or self.hess_init <= 0 or self.lr <= 0:
            raise InputError("IVON ess, hess_init and lr must be positive")
        if not 0.0 <= self.pretrain_fraction < 1.0:
            raise InputError(f"IVON pretrain_fraction {self.pretrain_fraction} must lie in [0, 1)")
        if self.mc_samples < 1 or self.n_samples < 1:
            raise InputError("IVON mc_samples and n_samples must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, IVONConfig] = {
    "paper": IVONConfig(),
    # short CPU runs: Hessian averaging over ~1e3 steps (beta2 0.999), an AdamW warm start for half the epochs
    "cpu": IVONConfig(lr=0.002, beta2=0.999, n_samples=16, pretrain_fraction=0.5),
    "tiny": IVONConfig(ess=500.0, beta2=0.9999, n_samples=5),
}


def ivon_variance(hess: torch.Tensor, ess: float, weight_decay: float) -> torch.Tensor:
    """(P,) posterior variance 1 / (ess (hess + weight_decay)) of IVON's diagonal Gaussian."""
    return 1.0 / (ess * (hess.double() + weight_decay))


class IVONPosterior(WeightSamplePosterior):
    """Posterior protocol for IVON: mean_forward at the mean weights, predict by sampling."""

    method = "ivon"

    def __init__(
        self,
        model,
        config: ModelConfig,
        names: Sequence[str],
        hess: torch.Tensor,
        ess: float,
        weight_decay: float,
        n_samples: int = 16,
        seed: int = 0,
        recal: RecalibrationPair | None = None,
    ):
        super().__init__(model, config, names, n_samples, seed, recal)
        self.hess = hess.double().cpu()
        self.ess = float(ess)
        self.weight_decay = float(weight_decay)
        if not torch.all(self.hess + self.weight_decay > 0):
            raise InputError("IVON Hessian + weight decay must be positive")

    @property
    def variance(self) -> torch.Tensor:
        return ivon_variance(self.hess, self.ess, self.weight_decay)

    def draw(self, k: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(k, self.hess.numel(), generator=generator, dtype=torch.float64)
        return z * self.variance.sqrt()

    def payload_extra(self) -> dict[str, Any]:
        return {"hess": self.hess, "ess": self.ess, "weight_decay": self.weight_decay}


def from_checkpoint(payload: dict[str, Any]) -> IVONPosterior:
    """Loader used by :func:`potentials.bayes.load_posterior` for method "ivon"."""
    extra, model, config = posterior_parts(payload, "IVON", ("names", "hess", "ess", "weight_decay"))
    return IVONPosterior(
        model,
        config,
        extra["names"],
        extra["hess"],
        extra["ess"],
        extra["weight_decay"],
        int(extra.get("n_samples", 16)),
        int(extra.get("seed", 0)),
        RecalibrationPair.from_payload(payload),
    )


def _ivon_class():
    """``ivon.IVON`` that treats a missing gradient as zero (e.g. the variance heads during an MSE warm-up;
    the stock optimiser fails on ``p.grad is None``)."""
    import ivon

    class ZeroGradIVON(ivon.IVON):
        def _restore_param_average(self, train, param_avg, noise):
            if train:
                for group in self.param_groups:
                    for p in group["params"]:
                        if p is not None and p.requires_grad and p.grad is None:
                            p.grad = torch.zeros_like(p)
            return super()._restore_param_average(train, param_avg, noise)

    return ZeroGradIVON


def make_optimizer(model: torch.nn.Module, cfg: IVONConfig):
    """IVON over all parameters of ``model`` (one group, ``named_parameters`` order)."""
    return _ivon_class()(
        list(model.parameters()),
        lr=cfg.lr,
        ess=cfg.ess,
        hess_init=cfg.hess_init,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        weight_decay=cfg.weight_decay,
        mc_samples=cfg.mc_samples,
        clip_radius=cfg.clip_radius,
    )


def fit_ivon(
    train_atoms: Sequence,
    valid_atoms: Sequence | None,
    model_config: ModelConfig,
    train_config,
    cfg: IVONConfig,
    out_dir: str | os.PathLike,
    e0s: dict[str, float] | None = None,
    progress: bool = False,
    seed: int = 0,
) -> IVONPosterior:
    """Train with IVON (no EMA: the posterior mean is the optimiser's mean) and return the posterior of
    the final epoch (mean weights and Hessian from ``last.pt``, so a resumed run gives the same result).

    With ``cfg.pretrain_fraction`` > 0 the first epochs use the default optimiser (``out_dir/pretrain``)
    and IVON continues from that model without MSE warm-up.
    """
    from potentials.train import train

    out_dir = Path(out_dir)
    tc = replace(train_config, ema_decay=0.0, lr=cfg.lr, grad_clip=0.0)
    pre_epochs = int(round(cfg.pretrain_fraction * train_config.epochs))
    init_from = pretrain_point(
        train_atoms, valid_atoms, model_config, train_config, pre_epochs, out_dir, progress, e0s
    )
    if init_from is not None:
        tc = replace(
            tc,
            epochs=max(1, train_config.epochs - pre_epochs),
            seed=train_config.seed + 1,
            loss=replace(train_config.loss, mse_warmup_epochs=0),
        )
        out_dir = out_dir / "ivon"
    train(
        train_atoms,
        valid_atoms,
        model_config,
        tc,
        out_dir,
        progress=progress,
        e0s=e0s,
        init_from=init_from,
        optimizer_factory=lambda model: make_optimizer(model, cfg),
        method="point",
    )
    payload = checkpoint.load(out_dir / "last.pt")
    train_state = payload["extra"]["train_state"]
    model, config = model_and_config(payload, train_state["raw_state_dict"])
    groups = train_state["optimizer"]["param_groups"]
    if len(groups) != 1 or "hess" not in groups[0]:
        raise InputError(f"{out_dir / 'last.pt'} holds no IVON optimiser state")
    names = parameter_names(model)
    hess = groups[0]["hess"]
    if hess.numel() != sum(dict(model.named_parameters())[n].numel() for n in names):
        raise InputError("IVON Hessian size does not match the model's parameters")
    return IVONPosterior(model, config, names, hess, cfg.ess, cfg.weight_decay, cfg.n_samples, seed)
