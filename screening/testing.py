"""Cheap analytic stand-ins for tests and smoke runs: a Morse-pair ensemble Posterior and a reference collate.

:class:`MorseEnsemble` implements :class:`potentials.posterior.Posterior` with K Morse pair potentials
(one per "posterior sample") in torch, so screening can be tested without the neural model. Energies
are exact and differentiable; forces are ``-dE/dpos`` by autograd. Units: Å, eV, eV/Å.

:func:`reference_collate` builds a batch per :mod:`potentials.keys` with vesin-torch; screening uses
``potentials.data.collate`` when it is available and this function otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers, covalent_radii

from potentials import keys as K
from potentials.posterior import Prediction


def reference_collate(
    atoms_list: Sequence[Atoms], elements: Sequence[str], cutoff: float, dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """Concatenate structures into one batch (potentials.keys layout), full neighbour list r < cutoff."""
    from vesin_torch import NeighborList

    index = {s: i for i, s in enumerate(elements)}
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    pos, z, spec, batch, nat, cells, pbcs, edges, shifts = [], [], [], [], [], [], [], [], []
    offset = 0
    for g, atoms in enumerate(atoms_list):
        n = len(atoms)
        p = torch.tensor(atoms.get_positions(), dtype=torch.float64)
        cell = torch.tensor(np.asarray(atoms.cell[:]), dtype=torch.float64)
        pbc = torch.tensor(np.asarray(atoms.pbc, dtype=bool))
        i, j, s = nl.compute(p, cell, pbc, "ijS")
        # vesin pairs (i, j) with r_ij = r_j - r_i + S @ cell; contract row 0 = sender j, row 1 = receiver i
        edges.append(torch.stack([j, i]).long() + offset)
        shifts.append(s.to(dtype))
        pos.append(p.to(dtype))
        numbers = atoms.get_atomic_numbers()
        z.append(torch.as_tensor(numbers, dtype=torch.long))
        spec.append(torch.tensor([index[sym] for sym in atoms.get_chemical_symbols()], dtype=torch.long))
        batch.append(torch.full((n,), g, dtype=torch.long))
        nat.append(n)
        cells.append(cell.to(dtype))
        pbcs.append(pbc)
        offset += n
    return {
        K.POSITIONS: torch.cat(pos),
        K.ATOMIC_NUMBERS: torch.cat(z),
        K.SPECIES: torch.cat(spec),
        K.BATCH: torch.cat(batch),
        K.NUM_ATOMS: torch.tensor(nat, dtype=torch.long),
        K.CELL: torch.stack(cells),
        K.PBC: torch.stack(pbcs),
        K.EDGE_INDEX: torch.cat(edges, dim=1),
        K.EDGE_CELL_SHIFT: torch.cat(shifts),
    }


@dataclass(frozen=True)
class MorseConfig:
    """Morse pair ensemble: phi(r) = D [exp(-2a(r-r0)) - 2 exp(-a(r-r0))] * fc(r).

    r0 = r_scale * (r_cov(A) + r_cov(B)) (ASE covalent radii). Each pair has its own cut-off
    rc = r0 + reach: fc = 1 below ``rc - taper`` and falls to 0 at rc as a half cosine, so graphene's
    first shell (1.42 Å) binds and its second (2.46 Å) does not, while metal-metal pairs reach their
    bulk neighbours. The posterior's ``cutoff`` is the largest rc. Each member k scales D and r0 by
    (1 + spread * u_k) with u_k fixed, deterministic numbers in [-1, 1]. A toy for tests, not chemistry.
    """

    n_members: int = 4
    depth: float = 1.0  # eV
    alpha: float = 1.8  # 1/Å
    r_scale: float = 0.93  # graphene C-C at 1.41 Å
    reach: float = 0.9  # Å, pair cut-off beyond r0
    taper: float = 0.4  # Å
    spread: float = 0.03
    aleatoric_std: float = 0.01  # eV per atom, member-specific scale of the pooled head variance


class MorseEnsemble:
    """An ensemble of K Morse pair potentials implementing the Posterior protocol (float64, CPU/GPU)."""

    method = "ensemble"

    def __init__(self, elements: Sequence[str], config: MorseConfig = MorseConfig(), device: str = "cpu"):
        self.elements = tuple(elements)
        self.config = config
        self.dtype = torch.float64
        self.device = torch.device(device)
        radii = torch.tensor([covalent_radii[atomic_numbers[s]] for s in self.elements], dtype=torch.float64)
        u = torch.linspace(-1.0, 1.0, config.n_members, dtype=torch.float64)
        if config.n_members == 1:
            u = torch.zeros(1, dtype=torch.float64)
        base = config.r_scale * (radii[:, None] + radii[None, :])
        self._rc = base + config.reach  # (S, S) Å
        self.cutoff = float(self._rc.max()) + 1e-6
        self._r0 = base[None] * (1 + config.spread * u.flip(0))[:, None, None]
        self._depth = config.depth * (1 + config.spread * u)  # (K,)
        self._ale = config.aleatoric_std * (1 + 0.5 * u) ** 2  # (K,) eV per atom
        self.n_forward = 0  # mean_forward calls
        self.n_structures = 0  # structures passed through mean_forward
        self.fail_after: int | None = None  # raise RuntimeError after this many mean_forward calls (tests)
        self.to(device)

    def to(self, device: torch.device | str) -> MorseEnsemble:
        self.device = torch.device(device)
        self._r0 = self._r0.to(self.device)
        self._rc = self._rc.to(self.device)
        self._depth = self._depth.to(self.device)
        self._ale = self._ale.to(self.device)
        return self

    @property
    def model_hash(self) -> str:
        c = self.config
        return f"morse:{'-'.join(self.elements)}:{c.n_members}:{c.depth}:{c.alpha}:{c.r_scale}:{c.reach}:{c.taper}:{c.spread}"

    def _member_energies(self, batch: dict[str, torch.Tensor], pos: torch.Tensor) -> torch.Tensor:
        """(K, G) eV."""
        c = self.config
        src, dst = batch[K.EDGE_INDEX]
        shift = batch[K.EDGE_CELL_SHIFT].to(pos.dtype)
        cell = batch[K.CELL].to(pos.dtype)[batch[K.BATCH][dst]]
        vec = pos[src] - pos[dst] + torch.einsum("ei,eij->ej", shift, cell)
        r = vec.norm(dim=1)
        spec = batch[K.SPECIES]
        rc = self._rc[spec[src], spec[dst]]  # (E,)
        inside = r < rc
        r = torch.where(inside, r, rc)
        r0 = self._r0[:, spec[src], spec[dst]]  # (K, E)
        x = torch.exp(-c.alpha * (r[None] - r0))
        t = ((r - (rc - c.taper)) / c.taper).clamp(0.0, 1.0)
        fc = 0.5 * (torch.cos(torch.pi * t) + 1.0) * inside
        phi = self._depth[:, None] * (x * x - 2 * x) * fc[None]  # (K, E)
        g = batch[K.NUM_ATOMS].shape[0]
        out = torch.zeros(phi.shape[0], g, dtype=pos.dtype, device=pos.device)
        out.index_add_(1, batch[K.BATCH][dst], 0.5 * phi)
        return out

    def _check(self) -> None:
        if self.fail_after is not None and self.n_forward >= self.fail_after:
            raise RuntimeError("simulated failure (MorseEnsemble.fail_after)")

    def mean_forward(
        self, batch: dict[str, torch.Tensor], compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energy (G,) eV and forces (N, 3) eV/Å of the ensemble-mean potential."""
        self._check()
        self.n_forward += 1
        self.n_structures += int(batch[K.NUM_ATOMS].shape[0])
        with torch.enable_grad():
            pos = batch[K.POSITIONS].detach().to(self.dtype).requires_grad_(True)
            energy = self._member_energies(batch, pos).mean(0)
            (grad,) = torch.autograd.grad(energy.sum(), pos)
        return {K.ENERGY: energy.detach(), K.FORCES: -grad}

    def predict(
        self, batch: dict[str, torch.Tensor], n_samples: int | None = None, forces: bool = True
    ) -> Prediction:
        """Members as posterior samples (the first ``n_samples`` members when given)."""
        k = self.config.n_members if n_samples is None else min(int(n_samples), self.config.n_members)
        with torch.enable_grad():
            pos = batch[K.POSITIONS].detach().to(self.dtype).requires_grad_(forces)
            e = self._member_energies(batch, pos)[:k]  # (K, G)
            if forces:
                f = torch.stack(
                    [-torch.autograd.grad(e[i].sum(), pos, retain_graph=True)[0] for i in range(k)]
                )
            else:
                f = torch.zeros(k, *pos.shape, dtype=pos.dtype, device=pos.device)
        e, f = e.detach(), f.detach()
        nat = batch[K.NUM_ATOMS].to(e.dtype)
        var_k = (self._ale[:k, None] ** 2) * nat[None]  # (K, G) eV^2
        return Prediction(
            energy=e.mean(0),
            forces=f.mean(0),
            energy_var_aleatoric=var_k.mean(0),
            energy_var_epistemic=e.var(0, unbiased=False),
            forces_var_aleatoric=torch.zeros_like(f[0]),
            forces_var_epistemic=f.var(0, unbiased=False),
            energy_samples=e,
            forces_samples=f,
            energy_var_samples=var_k,
        )


def morse_posterior(
    elements: Sequence[str] = ("H", "C", "N", "Fe", "Co", "Ni", "Cu"), n_members: int = 4
) -> MorseEnsemble:
    """A module-level factory (picklable for joblib / Dask workers)."""
    return MorseEnsemble(elements, MorseConfig(n_members=n_members))


class PosteriorCalculator(Calculator):
    """ASE calculator over ``posterior.mean_forward`` for one structure (tests compare against ASE's FIRE)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, posterior, collate_fn=None, **kwargs):
        super().__init__(**kwargs)
        self.posterior = posterior
        self.collate_fn = collate_fn or reference_collate

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = self.collate_fn([self.atoms], self.posterior.elements, self.posterior.cutoff)
        out = self.posterior.mean_forward(batch)
        e = float(out[K.ENERGY][0])
        self.results = {
            "energy": e,
            "free_energy": e,
            "forces": out[K.FORCES].detach().cpu().numpy().astype(float),
        }
