"""Deep ensemble with mean-variance estimation: M independently initialised models trained with NLL_JEF.

The predictive is the equally weighted Gaussian mixture of the members: mean = member mean,
variance = mean of the members' head variances (aleatoric) + variance of the member means (epistemic).
Members are evaluated in a loop: vmapping stacked weights (torch.func.stack_module_state) does not work
here because the force wrapper calls torch.autograd.grad and the interaction layer sums messages with an
in-place index_add_, neither of which vmap supports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from potentials import checkpoint
from potentials import keys as K
from potentials.bayes.base import (
    RecalibrationPair,
    evaluate,
    mean_of_outputs,
    model_and_config,
    recalibrate,
    samples_prediction,
)
from potentials.losses import KINDS
from potentials.model import ModelConfig
from potentials.posterior import Prediction
from structures.common import InputError


@dataclass(frozen=True)
class EnsembleConfig:
    """Deep-ensemble settings: number of members, their training loss and the first seed."""

    members: int = 5
    loss: str = "nll_jef"  # "nll_jef" (joint energy-force NLL) | "nll_e" (conventional: energy NLL + force MSE) | "mse"
    base_seed: int = 0

    def __post_init__(self):
        if self.members < 1:
            raise InputError(f"ensemble needs at least 1 member, got {self.members}")
        if self.loss not in KINDS:
            raise InputError(f"unknown ensemble loss {self.loss!r}; choose from {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, EnsembleConfig] = {
    "paper": EnsembleConfig(members=10),
    "cpu": EnsembleConfig(members=5),
    "tiny": EnsembleConfig(members=3),
}


def aleatoric_heads(loss: str) -> tuple[bool, bool]:
    """Which heads a loss trains: (energy variance, force covariance)."""
    return loss in ("nll_jef", "nll_e"), loss == "nll_jef"


class EnsemblePosterior:
    """Posterior protocol over M member models (sample k = member k)."""

    method = "ensemble"

    def __init__(
        self,
        members: Sequence[torch.nn.Module],
        config: ModelConfig,
        recal: RecalibrationPair | None = None,
        loss: str = "nll_jef",
    ):
        if not members:
            raise InputError("an ensemble needs at least one member")
        self.members = [m.eval() for m in members]
        self.config = config
        self.elements = tuple(config.elements)
        self.cutoff = float(config.cutoff)
        self.recal = recal or RecalibrationPair()
        self.loss = loss
        self.aleatoric = aleatoric_heads(loss)

    @property
    def n_samples(self) -> int:
        return len(self.members)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.members[0].parameters()).dtype

    def mean_forward(
        self, batch: dict[str, torch.Tensor], compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Member-mean energy (G,) eV and forces (N, 3) eV/Å (= -d mean E / dx); differentiable w.r.t.
        positions when ``batch['pos'].requires_grad``."""
        create = bool(batch[K.POSITIONS].requires_grad)
        outs = [
            evaluate(m, batch, forces=True, stress=compute_stress, create_graph=create) for m in self.members
        ]
        mean = mean_of_outputs(outs, compute_stress)
        return mean if create else {k: v.detach() for k, v in mean.items()}

    def predict(
        self, batch: dict[str, torch.Tensor], n_samples: int | None = None, forces: bool = True
    ) -> Prediction:
        """Mixture predictive over the first ``n_samples`` members (all by default; at most M)."""
        k = len(self.members) if n_samples is None else max(1, min(int(n_samples), len(self.members)))
        outs = [evaluate(m, batch, forces=forces) for m in self.members[:k]]
        return recalibrate(samples_prediction(outs, forces, self.aleatoric), self.recal)

    def to(self, device: torch.device | str) -> EnsemblePosterior:
        for m in self.members:
            m.to(device)
        return self

    def save(self, path: str | os.PathLike) -> str:
        """One file: member 0 as the checkpoint's model, every member's state dict in ``extra``."""
        members = [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in self.members]
        extra = {
            "members": members,
            "loss": self.loss,
            "recalibration": self.recal.to_dict(),
            **checkpoint.provenance_extra(self),
        }
        return checkpoint.save(
            path,
            self.members[0],
            self.config,
            extra=extra,
            method=self.method,
            calibration=self.recal.calibration_dict(),
        )


def from_checkpoint(payload: dict[str, Any]) -> EnsemblePosterior:
    """Loader used by :func:`potentials.bayes.load_posterior` for method "ensemble"."""
    extra = payload.get("extra") or {}
    states = extra.get("members")
    if not states:
        raise InputError("ensemble checkpoint has no members")
    members, config = [], None
    for state in states:
        model, config = model_and_config(payload, state)
        members.append(model)
    return EnsemblePosterior(
        members, config, RecalibrationPair.from_payload(payload), str(extra.get("loss", "nll_jef"))
    )


def fit_ensemble(
    train_atoms: Sequence,
    valid_atoms: Sequence | None,
    model_config: ModelConfig,
    train_config,
    cfg: EnsembleConfig,
    out_dir: str | os.PathLike,
    e0s: dict[str, float] | None = None,
    progress: bool = False,
) -> EnsemblePosterior:
    """Train ``cfg.members`` models with seeds base_seed + m (resumable, one folder per member)."""
    from potentials.train import train

    loss = replace(train_config.loss, kind=cfg.loss)
    members, config = [], None
    for m in range(cfg.members):
        tc = replace(train_config, seed=cfg.base_seed + m, loss=loss)
        best = train(
            train_atoms,
            valid_atoms,
            model_config,
            tc,
            Path(out_dir) / f"member_{m}",
            progress=progress,
            e0s=e0s,
            method="point",
        )
        payload = checkpoint.load(best)
        model, member_config = model_and_config(payload)
        if config is not None and member_config != config:
            raise InputError(f"ensemble member {m} was built with another model configuration")
        config = member_config
        members.append(model)
    return EnsemblePosterior(members, config, loss=cfg.loss)
