"""Aleatoric uncertainty heads: per-atom energy log-variance and an equivariant SPD force covariance."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


def sym_matrix_basis(dtype: torch.dtype | None = None) -> torch.Tensor:
    """(6, 3, 3) change of basis from irreps 0e + 2e to symmetric 3x3 matrices in Cartesian x, y, z.

    S = einsum('nk,kij->nij', x, Q) satisfies S(D(R) x) = R S(x) R^T (e3nn's l=1 basis is x, y, z).
    Computed in float64, returned in ``dtype`` (default: the default dtype).
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        basis = o3.ReducedTensorProducts("ij=ji", i="1o").change_of_basis
    finally:
        torch.set_default_dtype(previous)
    return basis.to(dtype or previous)


def expm_sym3(s: torch.Tensor, squarings: int = 6, order: int = 10) -> torch.Tensor:
    """exp(S) of symmetric 3x3 matrices (..., 3, 3) without data-dependent branches.

    exp(S) = e^a exp(A), a = tr S / 3, A = S - a I traceless; exp(A) = (T(A / 2^k))^(2^k) with T the Taylor
    polynomial of degree ``order``. torch.linalg.matrix_exp picks its degree from the matrix norm, which on
    CUDA copies host constants to the device: that breaks CUDA-graph capture. Here the head bounds |A|_F by
    COV_ANISO_BOUND (4), so |A| / 64 <= 1/16 and the Taylor tail (1/16)^11 / 11! is below 1e-20: float64 exact.
    """
    eye = torch.eye(3, dtype=s.dtype, device=s.device)
    a = torch.diagonal(s, dim1=-2, dim2=-1).mean(-1)
    x = (s - a[..., None, None] * eye) / float(2**squarings)
    out = eye + x / order
    for n in range(order - 1, 0, -1):  # Horner: I + x (I + x/2 (I + x/3 (...)))
        out = eye + (x @ out) / n
    for _ in range(squarings):
        out = out @ out
    return torch.exp(a)[..., None, None] * out


#: Soft bounds (smooth, invariant) on the log-variance scale: without them the NLL phase of training can
#: push exp() to overflow and the covariance to inf/NaN. exp(±10) spans 9 orders of magnitude.
LOGVAR_BOUND = 10.0
COV_TRACE_BOUND = 6.0  # bound on the 0e coefficient of S
COV_ANISO_BOUND = 4.0  # bound on the norm of the 2e coefficients of S


class EnergyVarianceHead(nn.Module):
    """Invariant per-atom log-variance: scalars of h (N, F) -> (N,) log(eV^2) before the unit offset."""

    def __init__(self, irreps_in: o3.Irreps, hidden: int):
        super().__init__()
        self.linear = o3.Linear(irreps_in, o3.Irreps(f"{hidden}x0e"))
        self.out = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        raw = self.out(torch.nn.functional.silu(self.linear(h))).squeeze(-1)
        return LOGVAR_BOUND * torch.tanh(raw / LOGVAR_BOUND)  # smooth bound: exp() never overflows


class ForceCovarianceHead(nn.Module):
    """Per-atom 3x3 force covariance Sigma_i = exp(S_i), S_i symmetric from 0e + 2e features.

    S = Q(Linear(h) + TP(x, x)) with x a small set of 0e/1o/1e/2e features of h, so the 2e part exists
    even when h stops at l = 1. The matrix exponential of a symmetric matrix is SPD and commutes with
    rotations: Sigma(R h) = R Sigma(h) R^T; log det Sigma = tr S. Output (N, 3, 3) in model units.
    """

    def __init__(self, irreps_in: o3.Irreps, channels: int = 4):
        super().__init__()
        irreps_in = o3.Irreps(irreps_in)
        out = o3.Irreps("0e + 2e")
        present = {ir for _, ir in irreps_in}
        small = o3.Irreps([(channels, ir) for ir in map(o3.Irrep, ("0e", "1o", "1e", "2e")) if ir in present])
        self.linear = o3.Linear(irreps_in, out) if o3.Irrep("2e") in present else None
        self.pre = o3.Linear(irreps_in, small)
        self.square = o3.FullyConnectedTensorProduct(small, small, out)
        self.register_buffer("basis", sym_matrix_basis())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.pre(h)
        coeffs = self.square(x, x)
        if self.linear is not None:
            coeffs = coeffs + self.linear(h)
        iso = COV_TRACE_BOUND * torch.tanh(coeffs[:, :1] / COV_TRACE_BOUND)
        aniso = coeffs[:, 1:]
        norm2 = (aniso**2).sum(-1, keepdim=True)
        aniso = aniso * COV_ANISO_BOUND / torch.sqrt(COV_ANISO_BOUND**2 + norm2)  # rotation-invariant shrink
        coeffs = torch.cat([iso, aniso], dim=-1)
        s = torch.einsum("nk,kij->nij", coeffs, self.basis.to(coeffs.dtype))
        return expm_sym3(s)
