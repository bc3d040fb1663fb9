"""Building blocks of the RACE potential: radial basis, embeddings, interaction, heads, force output."""

from potentials.nn.heads import EnergyVarianceHead, ForceCovarianceHead, sym_matrix_basis
from potentials.nn.interaction import RACEInteraction, hidden_irreps, uvu_instructions
from potentials.nn.output import ForceOutput
from potentials.nn.radial import BesselBasis, PolynomialEnvelope, RadialEmbedding
from potentials.nn.repulsion import ZBLRepulsion

__all__ = [
    "BesselBasis",
    "EnergyVarianceHead",
    "ForceCovarianceHead",
    "ForceOutput",
    "PolynomialEnvelope",
    "RACEInteraction",
    "RadialEmbedding",
    "hidden_irreps",
    "sym_matrix_basis",
    "uvu_instructions",
    "ZBLRepulsion",
]
