"""The RACE potential: configuration, named presets and the builder.

``build_model(config)`` returns a :class:`~potentials.nn.ForceOutput` around :class:`RACEEnergy`;
``model(batch)`` returns the batch dict plus energy (G,) eV [float64], forces (N, 3) eV/Å, optional
stress, atomic_energy (N,), atomic_energy_logvar (N,), energy_var (G,) eV^2, forces_cov (N, 3, 3)
(eV/Å)^2, node_scalars (N, H) (input of ``model.readout_last``) and node_features.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from e3nn import o3
from torch import nn

from potentials import keys as K
from potentials.nn import (
    EnergyVarianceHead,
    ForceCovarianceHead,
    ForceOutput,
    RACEInteraction,
    RadialEmbedding,
    ZBLRepulsion,
)
from potentials.nn.interaction import hidden_irreps
from structures.common import InputError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and normalisation of a RACE potential. Lengths in Å, energies in eV."""

    elements: tuple[str, ...] = ()  # chemical symbols in species-index order
    cutoff: float = 5.0  # Å
    num_layers: int = 2
    channels: int = 32  # multiplicity of every irrep in the hidden features
    lmax: int = 2  # max l of hidden features and edge spherical harmonics
    parity: str = "natural"  # "natural" (0e, 1o, 2e, ...) or "both" (also 0o, 1e, 2o, ...)
    num_bessel: int = 8
    poly_p: int = 6  # envelope polynomial order
    radial_hidden: tuple[int, ...] = (64,)
    restrat_channels: int = 8  # width of the A0 map in the restratification product
    readout_hidden: int = 16  # width of the last-layer MLP readout (= node_scalars width)
    head_hidden: int = 16  # width of the energy log-variance head
    cov_channels: int = 4  # features per irrep feeding the force-covariance head
    gate: bool = True
    avg_num_neighbors: float = 1.0
    e0s: tuple[float, ...] = ()  # eV per element, same order as elements (zeros when empty)
    scale: float = 1.0  # eV, multiplies the summed readouts
    shift: float = 0.0  # eV/atom, added to every atomic energy
    dtype: str = "float32"
    # short-range prior (potentials.nn.repulsion): "none" or "zbl"; "none" is the default of the dataclass so
    # checkpoints written before the field existed load unchanged; every preset uses "zbl"
    repulsion: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(
                f"unknown model config field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
            )
        clean = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**clean)

    def validate(self) -> ModelConfig:
        if not self.elements:
            raise InputError("model config has no elements")
        if self.e0s and len(self.e0s) != len(self.elements):
            raise InputError(
                f"{len(self.e0s)} E0s for {len(self.elements)} elements {', '.join(self.elements)}"
            )
        if self.dtype not in DTYPES:
            raise InputError(f"dtype {self.dtype!r} not allowed; use one of {', '.join(DTYPES)}")
        if self.repulsion not in ("none", "zbl"):
            raise InputError(f"repulsion {self.repulsion!r} not allowed; use 'none' or 'zbl'")
        if self.parity not in ("natural", "both"):
            raise InputError(f"parity {self.parity!r} not allowed; use 'natural' or 'both'")
        if self.cutoff <= 0 or self.num_layers < 1 or self.channels < 1 or self.lmax < 0:
            raise InputError("cutoff, num_layers and channels must be positive and lmax >= 0")
        return self


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        cutoff=4.0,
        num_layers=2,
        channels=8,
        lmax=1,
        num_bessel=6,
        radial_hidden=(16,),
        restrat_channels=4,
        readout_hidden=8,
        head_hidden=8,
        cov_channels=2,
        repulsion="zbl",
    ),
    # screening default: the cheapest preset that still carries l=1 messages (about 9k atoms/s batched on one core)
    "fast": ModelConfig(
        cutoff=4.5, num_layers=2, channels=16, lmax=1, num_bessel=6, radial_hidden=(32,), repulsion="zbl"
    ),
    "small": ModelConfig(
        cutoff=5.0, num_layers=2, channels=32, lmax=2, num_bessel=8, radial_hidden=(64,), repulsion="zbl"
    ),
    "large": ModelConfig(
        cutoff=6.0,
        num_layers=5,
        channels=64,
        lmax=3,
        parity="both",
        num_bessel=8,
        radial_hidden=(64, 64, 64),
        restrat_channels=16,
        readout_hidden=32,
        head_hidden=32,
        cov_channels=8,
        repulsion="zbl",
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset ('tiny', 'small', 'large') with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise InputError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class RACEEnergy(nn.Module):
    """Atomic energies, features and uncertainty heads of the RACE architecture (no gradients)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        num_species = len(c.elements)
        irreps_sh = o3.Irreps.spherical_harmonics(c.lmax)
        irreps_hidden = hidden_irreps(c.channels, c.lmax, c.parity)
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.radial = RadialEmbedding(c.cutoff, c.num_bessel, c.poly_p)
        self.embedding = nn.Linear(num_species, c.channels, bias=False)  # A0: one-hot -> C x 0e
        nn.init.normal_(self.embedding.weight)  # unit-variance A0, the scale e3nn's normalised layers expect
        layers, readouts = [], []
        irreps = o3.Irreps(f"{c.channels}x0e")
        for t in range(c.num_layers):
            layer = RACEInteraction(
                irreps,
                irreps_sh,
                irreps_hidden,
                c.channels,
                num_species,
                c.num_bessel,
                tuple(c.radial_hidden),
                c.restrat_channels,
                c.avg_num_neighbors,
                c.gate,
            )
            layers.append(layer)
            irreps = layer.irreps_out
            if t < c.num_layers - 1:
                readouts.append(o3.Linear(irreps, o3.Irreps("1x0e")))
        self.layers = nn.ModuleList(layers)
        self.readouts = nn.ModuleList(readouts)
        self.readout_hidden = o3.Linear(irreps, o3.Irreps(f"{c.readout_hidden}x0e"))
        self.readout_last = nn.Linear(c.readout_hidden, 1, bias=False)
        self.energy_var_head = EnergyVarianceHead(irreps, c.head_hidden)
        self.forces_cov_head = ForceCovarianceHead(irreps, c.cov_channels)
        e0 = torch.tensor(c.e0s if c.e0s else [0.0] * num_species, dtype=torch.float64)
        self.register_buffer("e0", e0)
        self.register_buffer("scale", torch.tensor(float(c.scale), dtype=torch.float64))
        self.register_buffer("shift", torch.tensor(float(c.shift), dtype=torch.float64))
        self.num_species = num_species
        self.repulsion = None
        if c.repulsion == "zbl":
            from ase.data import atomic_numbers, covalent_radii

            zs = [atomic_numbers[e] for e in c.elements]
            self.repulsion = ZBLRepulsion(zs, [float(covalent_radii[z]) for z in zs])

    def forward(
        self, batch: dict[str, torch.Tensor], pos: torch.Tensor, cell: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Outputs for a batch (keys.py); ``pos`` (N, 3) and ``cell`` (G, 3, 3) may carry gradients."""
        species, graph = batch[K.SPECIES], batch[K.BATCH]
        edge_index = batch[K.EDGE_INDEX]
        sender, receiver = edge_index[0], edge_index[1]
        num_graphs = batch[K.NUM_ATOMS].shape[0]
        dtype = pos.dtype
        shifts = torch.einsum("ei,eij->ej", batch[K.EDGE_CELL_SHIFT].to(dtype), cell[graph[receiver]])
        vectors = pos[sender] - pos[receiver] + shifts
        lengths = torch.linalg.norm(vectors, dim=-1)
        edge_sh = self.spherical_harmonics(vectors)
        edge_radial, edge_env = self.radial(lengths)

        # comparison instead of F.one_hot, whose CUDA range check synchronises (no CUDA-graph capture)
        classes = torch.arange(self.num_species, device=species.device)
        onehot = (species.unsqueeze(-1) == classes).to(dtype)
        a0 = self.embedding(onehot)
        h = a0
        readout_sum = torch.zeros(species.shape[0], dtype=dtype, device=pos.device)
        for t, layer in enumerate(self.layers):
            h = layer(h, a0, onehot, edge_sh, edge_radial, edge_env, edge_index)
            if t < len(self.readouts):
                readout_sum = readout_sum + self.readouts[t](h).squeeze(-1)
        scalars = torch.nn.functional.silu(self.readout_hidden(h))
        readout_sum = readout_sum + self.readout_last(scalars).squeeze(-1)

        atomic_energy = self.scale * readout_sum.double() + self.shift + self.e0[species]
        if self.repulsion is not None:
            atomic_energy = atomic_energy + self.repulsion(lengths, edge_index, species).double()
        energy = torch.zeros(num_graphs, dtype=torch.float64, device=pos.device).index_add(
            0, graph, atomic_energy
        )
        log_scale2 = 2.0 * math.log(max(float(self.config.scale), 1e-12))
        logvar = self.energy_var_head(h) + log_scale2
        energy_var = torch.zeros(num_graphs, dtype=dtype, device=pos.device).index_add(0, graph, logvar.exp())
        forces_cov = self.forces_cov_head(h) * math.exp(log_scale2)
        return {
            K.EDGE_VECTORS: vectors,
            K.EDGE_LENGTHS: lengths,
            K.NODE_FEATURES: h,
            K.NODE_SCALARS: scalars,
            K.ATOMIC_ENERGY: atomic_energy,
            K.ENERGY: energy,
            K.ATOMIC_ENERGY_LOGVAR: logvar,
            K.ENERGY_VAR: energy_var,
            K.FORCES_COV: forces_cov,
        }


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda when available else cpu; else the named device (InputError if unavailable)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"device '{device}' is not a device name; allowed: auto, cpu, cuda, cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}' is not available on this machine; allowed: auto, cpu")
    return dev


def build_model(config: ModelConfig) -> ForceOutput:
    """RACE energy model wrapped by the force/stress gradient wrapper, in ``config.dtype``."""
    config.validate()
    dtype = DTYPES[config.dtype]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = ForceOutput(RACEEnergy(config))
    finally:
        torch.set_default_dtype(previous)
    return model
