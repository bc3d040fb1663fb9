"""Forces and stress as gradients of the energy (the conservative-force wrapper)."""

from __future__ import annotations

import torch
from torch import nn

from potentials import keys as K


class ForceOutput(nn.Module):
    """Wrap an energy model ``model(batch, pos, cell) -> dict`` (with ``energy`` (G,)) and add gradients.

    forces = -dE/dpos (N, 3) eV/Å; stress = (1/V) dE/d(strain) (G, 3, 3) eV/Å^3 (ASE sign convention),
    from a symmetric strain applied to positions and cell; graphs with zero cell volume get zero stress.
    ``create_graph`` defaults to ``self.training`` (needed to train on forces).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        create_graph = self.training if create_graph is None else create_graph
        pos, cell = batch[K.POSITIONS], batch[K.CELL]
        if not (compute_forces or compute_stress):
            return {**batch, **self.model(batch, pos, cell)}
        with torch.enable_grad():
            if not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            inputs = [pos]
            if compute_stress:
                strain = torch.zeros_like(cell, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos = pos + torch.einsum("ni,nij->nj", pos, sym[batch[K.BATCH]])
                cell = cell + torch.bmm(cell, sym)
                inputs.append(strain)
            out = self.model(batch, pos, cell)
            grads = torch.autograd.grad(
                out[K.ENERGY].sum(), inputs, create_graph=create_graph, allow_unused=True
            )
        forces = grads[0] if grads[0] is not None else torch.zeros_like(inputs[0])
        out[K.FORCES] = -forces
        if compute_stress:
            virial = grads[1] if grads[1] is not None else torch.zeros_like(batch[K.CELL])
            volume = torch.linalg.det(batch[K.CELL]).abs()
            safe = torch.where(volume > 1e-8, volume, torch.ones_like(volume))
            out[K.STRESS] = torch.where(
                (volume > 1e-8)[:, None, None], virial / safe[:, None, None], torch.zeros_like(virial)
            )
        return {**batch, **out}

    @property
    def readout_last(self) -> nn.Module:
        """The final Linear energy readout (input: ``node_scalars``); used by last-layer Laplace."""
        return self.model.readout_last

    @property
    def config(self):
        return self.model.config
