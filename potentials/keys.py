"""The data contract: every key that flows between data, model, losses and posteriors.

A *batch* is a ``dict[str, torch.Tensor]`` of G graphs (structures) with N atoms and E directed
edges in total. One per-atom graph index, ``BATCH``, is used everywhere and never renamed.
Units: Å, eV, eV/Å, eV/Å^3; variances in eV^2 and (eV/Å)^2.
"""

from __future__ import annotations

# ---- inputs (built by potentials.data) -------------------------------------------------------
POSITIONS = "pos"  # (N, 3) float, Å; requires_grad is set by the force wrapper
ATOMIC_NUMBERS = "atomic_numbers"  # (N,) long, Z
SPECIES = "species"  # (N,) long, index into the model's element list
BATCH = "batch"  # (N,) long, graph index of each atom (0..G-1)
NUM_ATOMS = "num_atoms"  # (G,) long
CELL = "cell"  # (G, 3, 3) float, Å, rows are lattice vectors (zeros for open systems)
PBC = "pbc"  # (G, 3) bool
EDGE_INDEX = "edge_index"  # (2, E) long: row 0 = sender j (neighbour), row 1 = receiver i (centre)
EDGE_CELL_SHIFT = "edge_cell_shift"  # (E, 3) float, integer lattice shifts S: r_ij = r_j - r_i + S @ cell
# derived inside the model from POSITIONS so that gradients flow:
EDGE_VECTORS = "edge_vectors"  # (E, 3) float, Å, r_j - r_i + S @ cell
EDGE_LENGTHS = "edge_lengths"  # (E,) float, Å

# ---- labels (targets, from data files) -------------------------------------------------------
ENERGY = "energy"  # (G,) float, eV (total energy)
FORCES = "forces"  # (N, 3) float, eV/Å
STRESS = "stress"  # (G, 3, 3) float, eV/Å^3 (ASE sign convention)
WEIGHT = "weight"  # (G,) float, optional per-structure loss weight
ENERGY_WEIGHT = "energy_weight"  # (G,) float, optional weight of the energy term alone: 0 keeps a frame's
# forces in training but not its energy (replay frames whose energies are on another code's reference)
SHIFTED_ENERGY_WEIGHT = "shifted_energy_weight"  # (G,) float, optional, training only: a replay frame whose
# energy is on the pre-trained model's reference. Left out of the E0 re-fit (its ENERGY_WEIGHT is 0); then
# its label moves by the re-fit's per-element E0 shift and it trains with this energy weight
# (potentials.train.shift_replay_energies: bulk metals and pockets that no DFT label covers)

# ---- model outputs ---------------------------------------------------------------------------
NODE_FEATURES = "node_features"  # (N, F) e3nn irreps array, last message-passing layer
NODE_SCALARS = "node_scalars"  # (N, S) invariant features fed to the readouts (last-layer Laplace uses them)
ATOMIC_ENERGY = "atomic_energy"  # (N,) float, eV, sum over layers of each layer's readout + E0
TOTAL_ENERGY = ENERGY  # the model writes its prediction under the same key as the label
PRED_FORCES = FORCES  # likewise
PRED_STRESS = STRESS
ATOMIC_ENERGY_LOGVAR = "atomic_energy_logvar"  # (N,) float, log(eV^2) per-atom aleatoric variance
ENERGY_VAR = "energy_var"  # (G,) float, eV^2, pooled aleatoric energy variance (sum of per-atom variances)
FORCES_COV = "forces_cov"  # (N, 3, 3) float, (eV/Å)^2, aleatoric SPD force covariance per atom

# ---- posterior predictive (potentials.posterior.Prediction mirrors these) ----------------------
ENERGY_VAR_EPI = "energy_var_epistemic"  # (G,) eV^2, spread over posterior samples
FORCES_VAR_EPI = "forces_var_epistemic"  # (N, 3) (eV/Å)^2, spread over posterior samples
ENERGY_SAMPLES = "energy_samples"  # (K, G) eV, energies of K posterior samples

# keys that the collate function produces (the model's input)
INPUT_KEYS = (POSITIONS, ATOMIC_NUMBERS, SPECIES, BATCH, NUM_ATOMS, CELL, PBC, EDGE_INDEX, EDGE_CELL_SHIFT)
