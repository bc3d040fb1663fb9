"""Posterior interface: the one thing screening needs from potentials.

Every Bayesian method (deep ensemble, SWAG, IVON, Laplace) implements :class:`Posterior`.
Screening relaxes with :meth:`Posterior.mean_forward` (differentiable energy/forces at the
posterior mean / MAP / ensemble mean) and evaluates uncertainty with :meth:`Posterior.predict`.

Units: eV, eV/Å, variances eV^2 and (eV/Å)^2. G graphs, N atoms, K posterior samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Prediction:
    """Posterior predictive for a batch of G structures with N atoms in total."""

    energy: torch.Tensor  # (G,) eV, predictive mean
    forces: torch.Tensor  # (N, 3) eV/Å, predictive mean
    energy_var_aleatoric: torch.Tensor  # (G,) eV^2, mean over samples of the predicted (head) variance
    energy_var_epistemic: torch.Tensor  # (G,) eV^2, variance over samples of the sample means
    forces_var_aleatoric: torch.Tensor  # (N, 3) (eV/Å)^2, mean over samples of diag of the force covariance
    forces_var_epistemic: torch.Tensor  # (N, 3) (eV/Å)^2, variance over samples of the sample forces
    energy_samples: torch.Tensor  # (K, G) eV, energy of each posterior sample (K may be 1 for a point model)
    forces_samples: torch.Tensor | None = None  # (K, N, 3) eV/Å, when requested
    energy_var_samples: torch.Tensor | None = None  # (K, G) eV^2, aleatoric variance of each sample
    stress: torch.Tensor | None = None  # (G, 3, 3) eV/Å^3, predictive mean (periodic cells only)

    @property
    def energy_var(self) -> torch.Tensor:
        """(G,) eV^2 total predictive variance (aleatoric + epistemic)."""
        return self.energy_var_aleatoric + self.energy_var_epistemic

    @property
    def forces_var(self) -> torch.Tensor:
        """(N, 3) (eV/Å)^2 total predictive variance per component."""
        return self.forces_var_aleatoric + self.forces_var_epistemic


@runtime_checkable
class Posterior(Protocol):
    """What every Bayesian method exposes. Batches follow :mod:`potentials.keys`."""

    method: str  # "ensemble" | "swag" | "ivon" | "laplace" | "point"
    elements: tuple[str, ...]  # chemical symbols the model knows, in species-index order
    cutoff: float  # Å

    def mean_forward(
        self, batch: dict[str, torch.Tensor], compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energy (G,) and forces (N, 3) [and stress] of the posterior mean model; used by relaxations."""
        ...

    def predict(
        self, batch: dict[str, torch.Tensor], n_samples: int | None = None, forces: bool = True
    ) -> Prediction:
        """Posterior predictive over ``n_samples`` samples (method default when None)."""
        ...

    def to(self, device: torch.device | str) -> Posterior: ...
