"""ASE calculator over any :class:`~potentials.posterior.Posterior` (or a checkpoint path).

Results: ``energy`` eV, ``forces`` eV/Å, ``stress`` (Voigt, eV/Å^3, fully periodic cells only) from the
posterior mean model, and ``energy_std`` eV / ``forces_std`` (N, 3) eV/Å from the posterior predictive
(aleatoric + epistemic), computed only when asked for (or always with ``uncertainty=True``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from potentials.data import collate
from potentials.posterior import Posterior


class BayesianCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "forces_std"]

    def __init__(
        self,
        posterior: Posterior | str | os.PathLike,
        device: str = "cpu",
        n_samples: int | None = None,
        uncertainty: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(posterior, str | os.PathLike):
            from potentials.bayes import load_posterior

            posterior = load_posterior(posterior, device=device)
        else:
            posterior = posterior.to(device)
        self.posterior = posterior
        self.device = device
        self.n_samples = n_samples
        self.uncertainty = uncertainty
        self.dtype = getattr(posterior, "dtype", torch.get_default_dtype())

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = collate(
            [self.atoms],
            self.posterior.elements,
            self.posterior.cutoff,
            dtype=self.dtype,
            device=self.device,
            with_labels=False,
        )
        periodic = bool(self.atoms.pbc.all())
        out = self.posterior.mean_forward(batch, compute_stress=periodic and "stress" in properties)
        energy = float(out["energy"].detach().cpu()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().numpy().astype(np.float64),
        }
        if "stress" in out:
            from ase.stress import full_3x3_to_voigt_6_stress

            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"].detach().cpu().numpy()[0])
        if self.uncertainty or {"energy_std", "forces_std"} & set(properties):
            pred = self.posterior.predict(batch, n_samples=self.n_samples, forces=True)
            self.results["energy_std"] = float(pred.energy_var.detach().cpu()[0].sqrt())
            self.results["forces_std"] = pred.forces_var.detach().cpu().sqrt().numpy().astype(np.float64)
