"""Machinery shared by the Bayesian posteriors: flat weight vectors, evaluation of weight samples,
recalibration of a :class:`~potentials.posterior.Prediction` and checkpoint payloads.

A posterior over weights is a mean vector theta (P,) plus a way to draw deviations (K, P); sample k is
``functional_call(model, theta + delta_k)``. Draws come from a generator seeded by the posterior's
``seed``, so sample k is the same weights in every ``predict`` call: energies of a host and of its H*
state from the same sample k can be subtracted (ΔGH* per sample).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call

from potentials import checkpoint
from potentials import keys as K
from potentials.bayes.point import prediction_from_outputs
from potentials.calibration import Recalibration
from potentials.model import ModelConfig
from potentials.posterior import Prediction
from structures.common import InputError

# parameters of the aleatoric heads: they do not change the predicted energy or forces
HEAD_MARKERS = ("energy_var_head", "forces_cov_head")
KEEP_KEYS = (K.POSITIONS, K.ENERGY, K.FORCES, K.STRESS, K.ENERGY_VAR, K.FORCES_COV)


# ---- flat weight vectors -----------------------------------------------------------------------
def parameter_names(model: torch.nn.Module, heads: bool = True) -> list[str]:
    """Names of the trainable parameters in ``named_parameters`` order; ``heads=False`` drops the
    aleatoric-head parameters (those that cannot change energy or forces)."""
    return [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (heads or not any(m in n for m in HEAD_MARKERS))
    ]


def flat_vector(model: torch.nn.Module, names: Sequence[str]) -> torch.Tensor:
    """(P,) concatenation of the named parameters (detached copy, model dtype)."""
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in names]).clone()


def vector_to_params(
    vec: torch.Tensor, model: torch.nn.Module, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Split a (P,) vector into ``{name: tensor}`` shaped like the model's parameters (views of ``vec``)."""
    params = dict(model.named_parameters())
    out, offset = {}, 0
    for n in names:
        p = params[n]
        out[n] = vec[offset : offset + p.numel()].view(p.shape).to(p.dtype)
        offset += p.numel()
    if offset != vec.numel():
        raise ValueError(f"weight vector has {vec.numel()} entries, the named parameters {offset}")
    return out


@torch.no_grad()
def load_vector(model: torch.nn.Module, vec: torch.Tensor, names: Sequence[str]) -> None:
    """Copy a (P,) vector into the named parameters of ``model`` in place."""
    params = dict(model.named_parameters())
    for n, v in vector_to_params(vec, model, names).items():
        params[n].copy_(v)


# ---- evaluation --------------------------------------------------------------------------------
def _periodic(batch: dict[str, torch.Tensor]) -> bool:
    return bool(batch[K.PBC].all()) if K.PBC in batch else False


def evaluate(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    params: dict[str, torch.Tensor] | None = None,
    forces: bool = True,
    stress: bool | None = None,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """One model evaluation (optionally with replaced weights ``params``), keeping only the outputs
    a prediction needs. Forces need autograd, so they are computed even under ``torch.no_grad``."""
    stress = _periodic(batch) if stress is None else stress
    kwargs = {"compute_forces": forces, "compute_stress": stress and forces, "create_graph": create_graph}
    ctx = torch.enable_grad() if forces else torch.no_grad()
    with ctx:
        out = model(batch, **kwargs) if params is None else functional_call(model, params, (batch,), kwargs)
    return {k: (out[k] if create_graph else out[k].detach()) for k in KEEP_KEYS if k in out}


def mean_of_outputs(outs: Sequence[dict[str, torch.Tensor]], compute_stress: bool) -> dict[str, torch.Tensor]:
    """Average energy (G,), forces (N, 3) [and stress] over models: the mixture mean used by relaxations."""
    keys = [K.ENERGY, K.FORCES] + ([K.STRESS] if compute_stress and K.STRESS in outs[0] else [])
    return {k: torch.stack([o[k] for o in outs]).mean(0) for k in keys}


def samples_prediction(
    outs: Sequence[dict[str, torch.Tensor]], forces: bool, aleatoric: tuple[bool, bool] = (True, True)
) -> Prediction:
    """Prediction from K sample outputs (law of total variance). ``aleatoric`` = (energy, forces):
    False zeroes that head's variance (a model trained without that likelihood has an untrained head)."""
    pred = prediction_from_outputs(list(outs), forces=forces)
    if not aleatoric[0]:
        pred.energy_var_aleatoric = torch.zeros_like(pred.energy_var_aleatoric)
        if pred.energy_var_samples is not None:
            pred.energy_var_samples = torch.zeros_like(pred.energy_var_samples)
    if not aleatoric[1]:
        pred.forces_var_aleatoric = torch.zeros_like(pred.forces_var_aleatoric)
    return pred


# ---- recalibration -----------------------------------------------------------------------------
@dataclass
class RecalibrationPair:
    """Recalibration of energies (per structure) and forces (per component); ``dg``: an extra σ factor
    for derived ΔGH* (fitted on reference ΔGH* of calibration hosts by ``screen bench heldout
    --calibrate-out``; the energy factor is fitted on single energies, whose errors are not those of a
    difference of relaxed minima)."""

    energy: Recalibration = field(default_factory=Recalibration)
    forces: Recalibration = field(default_factory=Recalibration)
    dg: float = 1.0
    #: DFT anchoring of ΔGH* (``screen anchor``): eV added to every ΔGH* / ΔE_H, and eV added in quadrature
    #: to its σ (the leave-one-host-out error of the anchoring); ``anchor`` records how they were fitted
    dg_offset: float = 0.0
    dg_sigma_add: float = 0.0
    anchor: dict[str, Any] | None = None
    #: how ``dg`` was fitted against DFT (``screen anchor --sigma-only``): hosts, z-scores, the factor and
    #: ``parent_dg``, the factor before it (so the network hash of the copy is its parent's)
    dg_fit: dict[str, Any] | None = None

    def calibration_dict(self) -> dict[str, float]:
        """Sigma factors in the checkpoint's ``calibration`` field (same meaning as for point models)."""
        return {"energy": float(self.energy.scale), "forces": float(self.forces.scale)}

    def to_dict(self) -> dict[str, Any]:
        out = {"energy": self.energy.to_dict(), "forces": self.forces.to_dict(), "dg": float(self.dg)}
        if self.anchor is not None or self.dg_offset or self.dg_sigma_add:
            out.update(
                dg_offset=float(self.dg_offset), dg_sigma_add=float(self.dg_sigma_add), anchor=self.anchor
            )
        if self.dg_fit is not None:
            out["dg_fit"] = self.dg_fit
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RecalibrationPair:
        full = (payload.get("extra") or {}).get("recalibration")
        if full:
            return cls(
                Recalibration.from_dict(full.get("energy")),
                Recalibration.from_dict(full.get("forces")),
                float(full.get("dg", 1.0)),
                float(full.get("dg_offset", 0.0)),
                float(full.get("dg_sigma_add", 0.0)),
                full.get("anchor"),
                full.get("dg_fit"),
            )
        cal = payload.get("calibration") or {}
        kind = "scale" if cal else "none"
        return cls(
            Recalibration(kind, float(cal.get("energy", 1.0))),
            Recalibration(kind, float(cal.get("forces", 1.0))),
        )


def recalibrate(pred: Prediction, recal: RecalibrationPair) -> Prediction:
    """Scale every variance (aleatoric and epistemic) by s^2; means are unchanged.

    Samples stay the raw posterior draws: each is one consistent potential (its forces are -dE/dx),
    which a separate energy and force factor would break. A user of ``energy_samples`` who wants the
    calibrated spread multiplies deviations from the mean by ``recal.energy.scale``.
    """
    se, sf = float(recal.energy.scale), float(recal.forces.scale)
    if se == 1.0 and sf == 1.0:
        return pred
    pred.energy_var_aleatoric = pred.energy_var_aleatoric * se**2
    pred.energy_var_epistemic = pred.energy_var_epistemic * se**2
    pred.forces_var_aleatoric = pred.forces_var_aleatoric * sf**2
    pred.forces_var_epistemic = pred.forces_var_epistemic * sf**2
    if pred.energy_var_samples is not None:
        pred.energy_var_samples = pred.energy_var_samples * se**2
    return pred


# ---- a posterior given by weight samples -------------------------------------------------------
class WeightSamplePosterior:
    """Posterior over the weights ``names`` of ``model``: mean ``theta`` (the model's weights) plus
    deviations drawn by :meth:`draw` (subclasses). Implements the Posterior protocol."""

    method = "weights"

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        names: Sequence[str],
        n_samples: int,
        seed: int = 0,
        recal: RecalibrationPair | None = None,
    ):
        self.model = model.eval()
        self.config = config
        self.elements = tuple(config.elements)
        self.cutoff = float(config.cutoff)
        self.names = list(names)
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.recal = recal or RecalibrationPair()
        self._cache: tuple[int, torch.Tensor] | None = None

    # -- to be provided by subclasses
    def draw(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """(k, P) deviations from the mean weights, float64, on the CPU."""
        raise NotImplementedError

    def payload_extra(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared
    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def mean_vector(self) -> torch.Tensor:
        return flat_vector(self.model, self.names)

    def sample_deltas(self, k: int | None = None) -> torch.Tensor:
        """(k, P) deviations delta_k from the mean (model dtype and device); the same draws for the
        same k in every call (generator seeded with ``seed``)."""
        k = self.n_samples if k is None else int(k)
        if k < 1:
            raise ValueError(f"n_samples must be >= 1, got {k}")
        if self._cache is None or self._cache[0] != k:
            gen = torch.Generator().manual_seed(self.seed)
            self._cache = (k, self.draw(k, gen))
        return self._cache[1].to(device=self.device, dtype=self.dtype)

    def sample_vectors(self, k: int | None = None) -> torch.Tensor:
        """(k, P) weight samples theta + delta_k."""
        return self.mean_vector.unsqueeze(0) + self.sample_deltas(k)

    def sample_params(self, k: int | None = None) -> list[dict[str, torch.Tensor]]:
        """K weight dicts for ``torch.func.functional_call`` (downstream batched use of samples)."""
        return [vector_to_params(v, self.model, self.names) for v in self.sample_vectors(k)]

    def mean_forward(
        self, batch: dict[str, torch.Tensor], compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energy (G,) eV and forces (N, 3) eV/Å at the mean weights; differentiable w.r.t. positions
        when ``batch['pos'].requires_grad``."""
        create = bool(batch[K.POSITIONS].requires_grad)
        out = evaluate(self.model, batch, forces=True, stress=compute_stress, create_graph=create)
        keep = (K.ENERGY, K.FORCES) + ((K.STRESS,) if compute_stress else ())
        return {k: (out[k] if create else out[k].detach()) for k in keep if k in out}

    def predict(
        self, batch: dict[str, torch.Tensor], n_samples: int | None = None, forces: bool = True
    ) -> Prediction:
        outs = [evaluate(self.model, batch, p, forces=forces) for p in self.sample_params(n_samples)]
        return recalibrate(samples_prediction(outs, forces), self.recal)

    def to(self, device: torch.device | str) -> WeightSamplePosterior:
        self.model.to(device)
        return self

    def save(self, path: str | os.PathLike) -> str:
        """Write the posterior (mean weights + method tensors + recalibration); returns the content hash."""
        extra = {
            **self.payload_extra(),
            "names": list(self.names),
            "n_samples": self.n_samples,
            "seed": self.seed,
            "recalibration": self.recal.to_dict(),
            **checkpoint.provenance_extra(self),
        }
        return checkpoint.save(
            path,
            self.model,
            self.config,
            extra=extra,
            method=self.method,
            calibration=self.recal.calibration_dict(),
        )


def model_and_config(payload: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None):
    """(model in eval mode, ModelConfig) of a loaded checkpoint payload."""
    return checkpoint.model_from_payload(payload, state_dict), ModelConfig.from_dict(payload["config"])


def posterior_parts(payload: dict[str, Any], method: str, required: Sequence[str]):
    """(extra dict, model, ModelConfig) of a posterior checkpoint; InputError naming the first of the
    ``required`` extra keys it lacks (``method`` names the posterior in the message)."""
    extra = payload.get("extra") or {}
    for key in required:
        if key not in extra:
            raise InputError(f"{method} checkpoint lacks {key!r}")
    model, config = model_and_config(payload)
    return extra, model, config


def batches_of(
    graphs: Sequence[dict], batch_size: int, dtype: torch.dtype
) -> Iterable[dict[str, torch.Tensor]]:
    """Collated batches of ``batch_size`` graphs in order."""
    from potentials.data import collate_graphs

    for start in range(0, len(graphs), batch_size):
        yield collate_graphs(graphs[start : start + batch_size], dtype=dtype)


def pretrain_point(
    train_atoms, valid_atoms, model_config, train_config, epochs: int, out_dir, progress: bool, e0s
) -> os.PathLike | None:
    """The point-model warm start of SWAG and IVON: ``epochs`` epochs of ``train_config`` with the default
    optimiser in ``out_dir/pretrain`` (resumable); its best checkpoint, or None when ``epochs`` is 0."""
    from dataclasses import replace
    from pathlib import Path

    from potentials.train import train

    if epochs <= 0:
        return None
    return train(
        train_atoms,
        valid_atoms,
        model_config,
        replace(train_config, epochs=epochs),
        Path(out_dir) / "pretrain",
        progress=progress,
        e0s=e0s,
        method="point",
    )
