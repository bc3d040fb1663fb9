"""Structure record: the ``atoms.info`` keys every later stage groups and joins on.

Never parse names: read these keys.
"""

from __future__ import annotations

NAME = "name"  # str, e.g. "Fe2@3Nb" (host) or "Fe2@3Nb+H@top_M1" (adsorbate state)
HOST = "host"  # str, host name, e.g. "Fe2@3Nb" (same for the bare host and its H* states)
METAL = "metal"  # str, first metal symbol, e.g. "Fe"
METAL2 = "metal2"  # str, second metal symbol (== METAL for homonuclear pairs)
MOTIF = "motif"  # str, motif name, e.g. "3Nb"
N_N = "n_N"  # int, number of N atoms on the six first-shell sites
N_SITES = "n_sites"  # str, comma-separated first-shell site indices (0..5) that carry N, e.g. "0,2,5"
SITE = "site"  # str or None: H* site label, e.g. "top_M1", "bridge_MM", "top_X3"; None for the bare host
SUPERCELL = "supercell"  # str, supercell preset name, e.g. "2r7" (56-site graphene) or "4x4"
POCKET_INDICES = "pocket"  # str, comma-separated atom indices: metal1, metal2, first-shell sites 0..5
ADSORBATE_INDEX = "ads_index"  # int, index of the H atom (absent for the bare host)
REFERENCE = "reference"  # str, labeller of a labelled frame (screening.labelling engine): gpaw, vasp, qe
# (DFT), sevenn, emt, ase:<module>:<Class>

# per-atom arrays (atoms.arrays)
ROLE = "role"  # int per atom: 0 = framework, 1 = first shell, 2 = metal, 3 = adsorbate
