"""A single trained model as a (degenerate) posterior: K = 1 sample, epistemic variance 0."""

from __future__ import annotations

import os
from typing import Any

import torch

from potentials import checkpoint
from potentials import keys as K
from potentials.model import ModelConfig
from potentials.posterior import Prediction


def prediction_from_outputs(outs: list[dict[str, torch.Tensor]], forces: bool = True) -> Prediction:
    """Posterior predictive from the outputs of K models/samples on the same batch (law of total variance).

    Shared by every sampling method: energies (K, G) and forces (K, N, 3) give the epistemic spread, the
    heads' ``energy_var`` / diag(``forces_cov``) averaged over samples give the aleatoric part.
    """
    energies = torch.stack([o[K.ENERGY].detach() for o in outs])
    energy_var = torch.stack([o[K.ENERGY_VAR].detach() for o in outs]).to(energies.dtype)
    n_atoms = outs[0][K.POSITIONS].shape[0]
    dtype = outs[0][K.POSITIONS].dtype
    if forces:
        f = torch.stack([o[K.FORCES].detach() for o in outs])
        f_var_alea = torch.stack(
            [torch.diagonal(o[K.FORCES_COV].detach(), dim1=-2, dim2=-1) for o in outs]
        ).mean(0)
        f_var_epi = f.var(0, unbiased=False)
        f_mean = f.mean(0)
    else:
        f = None
        f_mean = f_var_alea = f_var_epi = torch.zeros(n_atoms, 3, dtype=dtype)
    stress = torch.stack([o[K.STRESS].detach() for o in outs]).mean(0) if K.STRESS in outs[0] else None
    return Prediction(
        energy=energies.mean(0),
        forces=f_mean,
        energy_var_aleatoric=energy_var.mean(0),
        energy_var_epistemic=energies.var(0, unbiased=False),
        forces_var_aleatoric=f_var_alea,
        forces_var_epistemic=f_var_epi,
        energy_samples=energies,
        forces_samples=f,
        energy_var_samples=energy_var,
        stress=stress,
    )


class PointPosterior:
    """Posterior protocol for one model: epistemic = 0, aleatoric variances from the model's heads."""

    method = "point"

    def __init__(
        self, model: torch.nn.Module, config: ModelConfig, calibration: dict[str, float] | None = None
    ):
        self.model = model.eval()
        self.config = config
        self.elements = tuple(config.elements)
        self.cutoff = float(config.cutoff)
        self.calibration = dict(calibration or {})

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def mean_forward(
        self, batch: dict[str, torch.Tensor], compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        out = self.model(batch, compute_forces=True, compute_stress=compute_stress, create_graph=False)
        keep = (K.ENERGY, K.FORCES, K.STRESS)
        return {k: out[k].detach() for k in keep if k in out}

    def predict(
        self, batch: dict[str, torch.Tensor], n_samples: int | None = None, forces: bool = True
    ) -> Prediction:
        stress = bool(batch[K.PBC].all()) if K.PBC in batch else False
        if forces:
            out = self.model(batch, compute_forces=True, compute_stress=stress, create_graph=False)
        else:
            with torch.no_grad():
                out = self.model(batch, compute_forces=False)
        pred = prediction_from_outputs([out], forces=forces)
        scale_e, scale_f = self.calibration.get("energy", 1.0), self.calibration.get("forces", 1.0)
        pred.energy_var_aleatoric = pred.energy_var_aleatoric * scale_e**2
        pred.forces_var_aleatoric = pred.forces_var_aleatoric * scale_f**2
        return pred

    def to(self, device: torch.device | str) -> PointPosterior:
        self.model.to(device)
        return self

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> str:
        extra = {**(extra or {}), **checkpoint.provenance_extra(self)}
        return checkpoint.save(
            path, self.model, self.config, extra=extra, method=self.method, calibration=self.calibration
        )

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> PointPosterior:
        model = checkpoint.model_from_payload(payload)
        return cls(model, ModelConfig.from_dict(payload["config"]), payload.get("calibration"))


def from_checkpoint(payload: dict[str, Any]) -> PointPosterior:
    """Loader used by :func:`potentials.bayes.load_posterior` for method "point"."""
    return PointPosterior.from_checkpoint(payload)
