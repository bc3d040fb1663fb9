"""The RACE interaction layer: equivariant message passing with iterative restratification.

One layer, for receiver i with neighbours j (N atoms, E edges, C channels):

1. message   m_ij = [ TP_uvu(W h_j, Y(r_ij); R(|r_ij|)) , u(|r_ij|) h_j ]   (edge harmonics Y, radial MLP R,
   envelope u); the second block is the sender's own features, cut off smoothly
2. aggregate A_i = Linear( sum_j m_ij / avg_num_neighbors )
3. restratify B_i = TP_full(A_i, Linear(A0_i))   with A0 the one-body species embedding, re-injected in
   every layer (body order + 1 per layer)
4. update   h_i' = Gate( Linear(B_i) + TP(h_i, onehot_i) )   (species-dependent skip connection)
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn


def hidden_irreps(channels: int, lmax: int, parity: str = "natural") -> o3.Irreps:
    """C x (0e + 1o + 2e + ...) for parity 'natural', C x (0e + 0o + 1o + 1e + ...) for 'both'."""
    if parity not in ("natural", "both"):
        raise ValueError(f"parity must be 'natural' or 'both', got {parity!r}")
    irreps = []
    for ell in range(lmax + 1):
        natural = 1 if ell % 2 == 0 else -1
        irreps.append((channels, (ell, natural)))
        if parity == "both":
            irreps.append((channels, (ell, -natural)))
    return o3.Irreps(irreps)


def uvu_instructions(
    irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_target: o3.Irreps
) -> tuple[o3.Irreps, list[tuple[int, int, int, str, bool]]]:
    """Channel-wise ('uvu') paths irreps_in x irreps_sh -> every output irrep present in irreps_target.

    Returns the (sorted) output irreps of the tensor product and its instruction list.
    """
    wanted = {ir for _, ir in irreps_target}
    out, instructions = [], []
    for i1, (mul, ir1) in enumerate(irreps_in):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir_out in ir1 * ir2:
                if ir_out in wanted:
                    instructions.append((i1, i2, len(out), "uvu", True))
                    out.append((mul, ir_out))
    irreps_out, perm, _ = o3.Irreps(out).sort()
    instructions = [(i1, i2, perm[k], mode, train) for i1, i2, k, mode, train in instructions]
    return irreps_out, instructions


def _gate_for(irreps_hidden: o3.Irreps) -> Gate:
    """Gate nonlinearity producing ``irreps_hidden``: SiLU / tanh on scalars, sigmoid gates on l > 0."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gates = o3.Irreps([(gated.num_irreps, "0e")]) if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, acts, gates, [torch.sigmoid] if gated.num_irreps else [], gated)


class RACEInteraction(nn.Module):
    """One RACE message-passing layer (see module docstring).

    Args:
        irreps_in: irreps of the incoming node features h (N, irreps_in.dim).
        irreps_sh: irreps of the edge spherical harmonics.
        irreps_hidden: irreps of the outgoing node features.
        a0_dim: width C0 of the one-body embedding A0 (C0 x 0e).
        num_species: S, width of the one-hot species attributes.
        num_basis: radial features per edge; radial_hidden: hidden widths of the radial MLP.
        restrat_channels: width of the linear map of A0 that enters the restratification product.
        avg_num_neighbors: normalisation of the neighbour sum.
        gate: apply the gate nonlinearity (otherwise the layer is linear in h).
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_hidden: o3.Irreps,
        a0_dim: int,
        num_species: int,
        num_basis: int,
        radial_hidden: tuple[int, ...],
        restrat_channels: int,
        avg_num_neighbors: float,
        gate: bool = True,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        irreps_mid, instructions = uvu_instructions(self.irreps_in, irreps_sh, irreps_hidden)
        self.conv_tp = o3.TensorProduct(
            self.irreps_in, irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial_mlp = FullyConnectedNet(
            [num_basis, *radial_hidden, self.conv_tp.weight_numel], torch.nn.functional.silu
        )
        self.linear_msg = o3.Linear(irreps_mid + self.irreps_in, irreps_hidden)
        irreps_a0 = o3.Irreps(f"{restrat_channels}x0e")
        self.linear_a0 = o3.Linear(o3.Irreps(f"{a0_dim}x0e"), irreps_a0)
        self.restratify = o3.FullyConnectedTensorProduct(irreps_hidden, irreps_a0, irreps_hidden)
        self.gate = _gate_for(irreps_hidden) if gate else None
        irreps_pre = self.gate.irreps_in if gate else irreps_hidden
        self.linear_out = o3.Linear(irreps_hidden, irreps_pre)
        self.skip = o3.FullyConnectedTensorProduct(self.irreps_in, o3.Irreps(f"{num_species}x0e"), irreps_pre)
        self.irreps_out = self.gate.irreps_out if gate else irreps_hidden

    def forward(
        self,
        h: torch.Tensor,
        a0: torch.Tensor,
        onehot: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_envelope: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> torch.Tensor:
        """h (N, F_in), a0 (N, C0), onehot (N, S), edge_sh (E, SH), edge_radial (E, B), edge_envelope (E,),
        edge_index (2, E) [sender j, receiver i] -> (N, F_out)."""
        sender, receiver = edge_index[0], edge_index[1]
        h_up = self.linear_up(h)
        h_j = h_up[sender]
        tp = self.conv_tp(h_j, edge_sh, self.radial_mlp(edge_radial))
        message = torch.cat([tp, h_j * edge_envelope.unsqueeze(-1)], dim=-1)
        agg = torch.zeros(h.shape[0], message.shape[1], dtype=message.dtype, device=message.device)
        agg.index_add_(0, receiver, message)
        a = self.linear_msg(agg / self.avg_num_neighbors)
        b = self.restratify(a, self.linear_a0(a0))
        out = self.linear_out(b) + self.skip(h, onehot)
        return self.gate(out) if self.gate is not None else out
