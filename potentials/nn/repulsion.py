"""Short-range nuclear repulsion prior: the Ziegler-Biersack-Littmark (ZBL) universal screened Coulomb pair
potential, switched off smoothly well inside the bonding distance.

Why: a message-passing potential only knows the distances its training frames visit. In a relaxation
started from an unseen site, nothing stops an H atom falling into an N or C nucleus (the first default
model put H at 0.03 Å from N). The ZBL wall is the physics of that region and has no parameters, so it does
not compete with the learned energy where the data live:

    E_ij = k_e Z_i Z_j / r * phi(r / a) * s(r),    a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)
    phi(x) = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x) + 0.28022 e^(-0.40290 x) + 0.02817 e^(-0.20162 x)

with k_e = 14.399645 eV Å and s(r) a C^2 switch from 1 below r_in = ``inner`` x (R_i + R_j) to 0 above
r_out = ``outer`` x (R_i + R_j) (R: covalent radii). With the defaults 0.5 and 0.75 the wall ends at 0.77 Å
for N-H (bond 1.01 Å), 1.14 Å for C-C (1.42 Å), 0.47 Å for H-H (0.74 Å) and 1.98 Å for Fe-Fe.
"""

from __future__ import annotations

import torch
from torch import nn

from potentials.nn.radial import PolynomialEnvelope

KE = 14.399645  # eV Å, e^2 / (4 pi eps0)
_C = (0.18175, 0.50986, 0.28022, 0.02817)
_D = (3.19980, 0.94229, 0.40290, 0.20162)


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energy (N,) eV from edge lengths (E,) Å; half of each pair to each atom.

    ``atomic_numbers`` and ``covalent_radii`` (Å) are given per species index.
    """

    def __init__(
        self,
        atomic_numbers: list[int],
        covalent_radii: list[float],
        inner: float = 0.5,
        outer: float = 0.75,
    ):
        super().__init__()
        if not 0.0 < inner < outer:
            raise ValueError(f"ZBL switch needs 0 < inner < outer, got {inner}, {outer}")
        self.register_buffer("z", torch.tensor(atomic_numbers, dtype=torch.float64), persistent=False)
        self.register_buffer("rcov", torch.tensor(covalent_radii, dtype=torch.float64), persistent=False)
        self.inner, self.outer = float(inner), float(outer)
        self.switch = PolynomialEnvelope(1.0, p=6)

    def pair_energy(self, r: torch.Tensor, si: torch.Tensor, sj: torch.Tensor) -> torch.Tensor:
        """E_ij (E,) eV for lengths r (E,) Å between species indices si, sj (E,)."""
        dtype = r.dtype
        zi, zj = self.z[si].to(dtype), self.z[sj].to(dtype)
        a = 0.46850 / (zi**0.23 + zj**0.23)
        x = r / a
        phi = sum(c * torch.exp(-d * x) for c, d in zip(_C, _D, strict=True))
        rsum = (self.rcov[si] + self.rcov[sj]).to(dtype)
        r_in, r_out = self.inner * rsum, self.outer * rsum
        t = ((r - r_in) / (r_out - r_in)).clamp(min=0.0)
        s = self.switch(t)
        # only pairs inside r_out contribute; the mask keeps far pairs (and their gradients) exactly zero
        inside = r < r_out
        safe_r = torch.where(inside, r, r_out)
        e = KE * zi * zj / safe_r * phi * s
        return torch.where(inside, e, torch.zeros_like(e))

    def forward(self, lengths: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        sender, receiver = edge_index[0], edge_index[1]
        e = self.pair_energy(lengths, species[receiver], species[sender])
        out = torch.zeros(species.shape[0], dtype=lengths.dtype, device=lengths.device)
        return out.index_add(0, receiver, 0.5 * e)  # each directed edge gives half the pair to its centre
