"""SWAG: a Gaussian over the weights from the moments of the optimiser's trajectory (Maddox et al. 2019).

After a pretraining phase, training continues at a constant learning rate and every ``collect_every``
epochs the flattened weights theta_i are folded into running first and second moments (mean, sq_mean)
and the deviation theta_i - mean_i is appended to a matrix D that keeps the last ``rank`` columns.
Samples: theta = mean + (1/sqrt 2) sqrt(diag) z1 + (1/sqrt(2 (R - 1))) D^T z2, diag = sq_mean - mean^2,
z1 ~ N(0, I_P), z2 ~ N(0, I_R). The RACE model has no batch norm, so no statistics need updating.
``torch.optim.swa_utils`` would only give the mean; the covariance part is here.
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
    flat_vector,
    load_vector,
    model_and_config,
    parameter_names,
    posterior_parts,
    pretrain_point,
)
from potentials.model import ModelConfig
from structures.common import InputError, atomic_write_bytes


@dataclass(frozen=True)
class SWAGConfig:
    """SWAG settings; epochs are those of the training config (pretraining + collection)."""

    rank: int = 40  # R, columns of the deviation matrix
    collect_every: int = 2  # epochs between snapshots
    collect_fraction: float = 0.6  # the last fraction of the epochs is the collection phase
    lr: float = 1e-3  # constant learning rate of the collection phase
    n_samples: int = 30  # default number of test-time samples
    min_var: float = 1e-30  # floor of the diagonal variance

    def __post_init__(self):
        if self.rank < 2:
            raise InputError(f"SWAG rank must be >= 2, got {self.rank}")
        if not 0.0 < self.collect_fraction < 1.0:
            raise InputError(f"collect_fraction {self.collect_fraction} must lie strictly between 0 and 1")
        if self.collect_every < 1 or self.n_samples < 1:
            raise InputError("collect_every and n_samples must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, SWAGConfig] = {
    "paper": SWAGConfig(),
    "cpu": SWAGConfig(rank=10, collect_every=1, n_samples=20),
    "tiny": SWAGConfig(rank=3, collect_every=1, collect_fraction=0.5, n_samples=5),
}


class SWAGMoments:
    """Running moments of flattened weights (float64) and the last ``rank`` deviations."""

    def __init__(self, num_params: int, rank: int):
        self.rank = int(rank)
        self.n = 0
        self.mean = torch.zeros(num_params, dtype=torch.float64)
        self.sq_mean = torch.zeros(num_params, dtype=torch.float64)
        self.deviations = torch.zeros(0, num_params, dtype=torch.float64)
        self.epochs: list[int] = []

    def collect(self, theta: torch.Tensor, epoch: int = -1) -> None:
        """Fold one weight vector (P,) into the moments; the deviation uses the updated mean."""
        theta = theta.detach().to(torch.float64).cpu()
        self.n += 1
        self.mean += (theta - self.mean) / self.n
        self.sq_mean += (theta**2 - self.sq_mean) / self.n
        self.deviations = torch.cat([self.deviations, (theta - self.mean).unsqueeze(0)])[-self.rank :]
        self.epochs.append(int(epoch))

    def diag_variance(self, min_var: float = 1e-30) -> torch.Tensor:
        return (self.sq_mean - self.mean**2).clamp_min(min_var)

    def state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "rank": self.rank,
            "mean": self.mean,
            "sq_mean": self.sq_mean,
            "deviations": self.deviations,
            "epochs": list(self.epochs),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SWAGMoments:
        obj = cls(state["mean"].numel(), int(state["rank"]))
        obj.n, obj.mean, obj.sq_mean = int(state["n"]), state["mean"].double(), state["sq_mean"].double()
        obj.deviations, obj.epochs = state["deviations"].double(), [int(e) for e in state["epochs"]]
        return obj


def swag_draw(
    mean_var: torch.Tensor, deviations: torch.Tensor, k: int, generator: torch.Generator
) -> torch.Tensor:
    """(k, P) SWAG deviations from the mean: (1/sqrt 2) sqrt(var) z1 + D^T z2 / sqrt(2 (R - 1))."""
    p, r = mean_var.numel(), deviations.shape[0]
    z1 = torch.randn(k, p, generator=generator, dtype=torch.float64)
    out = z1 * mean_var.sqrt() / math.sqrt(2.0)
    if r >= 2:
        z2 = torch.randn(k, r, generator=generator, dtype=torch.float64)
        out = out + (z2 @ deviations) / math.sqrt(2.0 * (r - 1))
    return out


class SWAGPosterior(WeightSamplePosterior):
    """Posterior protocol for SWAG: mean_forward at the SWA mean, predict by sampling the Gaussian."""

    method = "swag"

    def __init__(
        self,
        model,
        config: ModelConfig,
        names: Sequence[str],
        diag_var: torch.Tensor,
        deviations: torch.Tensor,
        n_samples: int = 30,
        seed: int = 0,
        recal: RecalibrationPair | None = None,
        n_collected: int = 0,
    ):
        super().__init__(model, config, names, n_samples, seed, recal)
        self.diag_var = diag_var.double().cpu()
        self.deviations = deviations.double().cpu()
        self.n_collected = int(n_collected)

    def draw(self, k: int, generator: torch.Generator) -> torch.Tensor:
        return swag_draw(self.diag_var, self.deviations, k, generator)

    def payload_extra(self) -> dict[str, Any]:
        return {"diag_var": self.diag_var, "deviations": self.deviations, "n_collected": self.n_collected}


def from_checkpoint(payload: dict[str, Any]) -> SWAGPosterior:
    """Loader used by :func:`potentials.bayes.load_posterior` for method "swag"."""
    extra, model, config = posterior_parts(payload, "SWAG", ("names", "diag_var", "deviations"))
    return SWAGPosterior(
        model,
        config,
        extra["names"],
        extra["diag_var"],
        extra["deviations"],
        int(extra.get("n_samples", 30)),
        int(extra.get("seed", 0)),
        RecalibrationPair.from_payload(payload),
        int(extra.get("n_collected", 0)),
    )


def collection_epochs(epochs: int, cfg: SWAGConfig) -> tuple[int, int]:
    """(pretraining epochs, collection epochs) splitting ``epochs`` by ``cfg.collect_fraction``."""
    collect = max(2, int(round(cfg.collect_fraction * epochs)))
    return max(0, epochs - collect), collect


def fit_swag(
    train_atoms: Sequence,
    valid_atoms: Sequence | None,
    model_config: ModelConfig,
    train_config,
    cfg: SWAGConfig,
    out_dir: str | os.PathLike,
    e0s: dict[str, float] | None = None,
    progress: bool = False,
    seed: int = 0,
) -> SWAGPosterior:
    """Pretrain (``train_config`` for the first 1 - collect_fraction of its epochs), then train on at the
    constant ``cfg.lr`` collecting SWAG moments every ``cfg.collect_every`` epochs (resumable)."""
    from potentials.train import train

    out_dir = Path(out_dir)
    pre_epochs, collect = collection_epochs(train_config.epochs, cfg)
    init_from = pretrain_point(
        train_atoms, valid_atoms, model_config, train_config, pre_epochs, out_dir, progress, e0s
    )
    phase = replace(
        train_config,
        epochs=collect,
        lr=cfg.lr,
        scheduler="none",
        ema_decay=0.0,
        early_stopping_patience=collect + 1,
        loss=replace(train_config.loss, mse_warmup_epochs=0),
        seed=train_config.seed + 1,
    )
    moments_path = out_dir / "swag_moments.pt"
    state: dict[str, Any] = {"moments": None}
    if moments_path.exists() and (out_dir / "collect" / "last.pt").exists():
        state["moments"] = SWAGMoments.from_state(torch.load(moments_path, weights_only=True))

    def on_epoch_end(epoch: int, model: torch.nn.Module) -> None:
        if (collect - 1 - epoch) % cfg.collect_every != 0:  # the last epoch is always collected
            return
        names = parameter_names(model)
        if state["moments"] is None:
            state["moments"] = SWAGMoments(
                sum(dict(model.named_parameters())[n].numel() for n in names), cfg.rank
            )
        moments: SWAGMoments = state["moments"]
        if epoch in moments.epochs:  # re-run of an epoch after an interruption
            return
        moments.collect(flat_vector(model, names), epoch)
        import io

        buf = io.BytesIO()
        torch.save(moments.state(), buf)
        atomic_write_bytes(moments_path, buf.getvalue())

    last = train(
        train_atoms,
        valid_atoms,
        model_config,
        phase,
        out_dir / "collect",
        progress=progress,
        e0s=e0s,
        init_from=init_from,
        on_epoch_end=on_epoch_end,
        method="point",
    )
    moments = state["moments"]
    if moments is None or moments.n < 2:
        raise InputError(
            f"SWAG collected {0 if moments is None else moments.n} snapshot(s); "
            "give more epochs or a smaller collect_every"
        )
    model, config = model_and_config(checkpoint.load(last))
    names = parameter_names(model)
    load_vector(model, moments.mean, names)
    return SWAGPosterior(
        model,
        config,
        names,
        moments.diag_variance(cfg.min_var),
        moments.deviations,
        cfg.n_samples,
        seed,
        n_collected=moments.n,
    )
