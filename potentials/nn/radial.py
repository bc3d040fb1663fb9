"""Radial basis of edge lengths: Bessel functions times a polynomial envelope (C^2 at the cutoff)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialEnvelope(nn.Module):
    """u(r) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = r / rc; 0 for r >= rc.

    Value, first and second derivative vanish at rc, so energies and forces are continuous when an
    atom crosses the cutoff. r: (E,) Å -> (E,).
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff, self.p = float(cutoff), int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p, x = self.p, r / self.cutoff
        u = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * x**p
            + p * (p + 2) * x ** (p + 1)
            - 0.5 * p * (p + 1) * x ** (p + 2)
        )
        return torch.where(x < 1.0, u, torch.zeros_like(u))


class BesselBasis(nn.Module):
    """B_n(r) = sqrt(2 / rc) sin(n pi r / rc) / r, n = 1..num_basis. r: (E,) Å -> (E, num_basis)."""

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = False):
        super().__init__()
        freqs = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff
        if trainable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freqs * r) / r


class RadialEmbedding(nn.Module):
    """Bessel basis times envelope: (E,) Å -> ((E, num_basis) features, (E,) envelope)."""

    def __init__(self, cutoff: float, num_basis: int = 8, p: int = 6):
        super().__init__()
        self.bessel = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialEnvelope(cutoff, p)

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        env = self.envelope(r)
        return self.bessel(r) * env.unsqueeze(-1), env
