"""Build TM2@Nx-graphene hosts: a graphene supercell with the dual-metal pocket of structures.motifs.

Geometry (Å): graphene with a_cc = 1.42 in the xy plane at z = VACUUM_C / 2, cell c = 20 Å along z
(>= 15 Å vacuum over the metal and H), pocket centre at the in-plane centre of the cell, metal
pair along x. Supercells (integer matrices over graphene's primitive vectors a1 = (a, 0),
a2 = (a/2, a*sqrt(3)/2), a = 2.46 Å):

- ``2r7``: the (2*sqrt7 x 2*sqrt7)R19.1° cell, 56 sites -> 52-atom C/N framework, pocket images 13.0 Å apart
  (the screening default);
- ``4x4``: 32 sites -> 28-atom framework + 2 metals = 30 atoms, pocket images 9.84 Å apart (the cheap DFT cell).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

from . import keys as K
from .common import InputError
from .metals import INITIAL_MAGMOM, resolve_metals
from .motifs import A_CC, HALF_A, METAL_XY, SITE_XY, Motif, get_motif

LATTICE_A = 2 * HALF_A  # Å, graphene lattice constant
VACUUM_C = 20.0  # Å, cell length along z
SUPERCELLS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "2r7": ((2, 4), (-4, 6)),
    "4x4": ((4, 0), (0, 4)),
    "5x5": ((5, 0), (0, 5)),
}
REMOVED_XY = np.array([[HALF_A, A_CC / 2], [HALF_A, -A_CC / 2], [-HALF_A, A_CC / 2], [-HALF_A, -A_CC / 2]])

ROLE_FRAMEWORK, ROLE_SHELL, ROLE_METAL, ROLE_ADSORBATE = 0, 1, 2, 3


@lru_cache(maxsize=8)
def _sheet(supercell: str) -> tuple[np.ndarray, np.ndarray]:
    """(cell (3,3), in-plane positions (n, 2) relative to the pocket centre) of the pristine sheet."""
    if supercell not in SUPERCELLS:
        raise InputError(f"unknown supercell {supercell!r}; allowed: {', '.join(SUPERCELLS)}")
    a1 = np.array([LATTICE_A, 0.0])
    a2 = np.array([LATTICE_A / 2, LATTICE_A * np.sqrt(3) / 2])
    (n1, m1), (n2, m2) = SUPERCELLS[supercell]
    A1, A2 = n1 * a1 + m1 * a2, n2 * a1 + m2 * a2
    sc = np.array([A1, A2])
    inv = np.linalg.inv(sc)
    basis = np.array([[0.0, A_CC], [0.0, -A_CC]])  # two sublattices around the hexagon centre at the origin
    span = int(abs(n1) + abs(m1) + abs(n2) + abs(m2)) + 2
    pts = []
    for i in range(-span, span + 1):
        for j in range(-span, span + 1):
            for b in basis:
                pts.append(i * a1 + j * a2 + b)
    pts = np.array(pts)
    # centre the pocket in the cell: fractional coordinate of origin -> (0.5, 0.5)
    frac = pts @ inv + 0.5
    frac = np.round(frac, 10)
    keep = np.all((frac >= 0) & (frac < 1), axis=1)
    frac = frac[keep]
    # canonical order (deterministic): by fractional y then x
    order = np.lexsort((frac[:, 0], frac[:, 1]))
    xy = (frac[order] - 0.5) @ sc
    expected = 2 * abs(n1 * m2 - m1 * n2)
    assert len(xy) == expected, (len(xy), expected)
    cell = np.zeros((3, 3))
    cell[0, :2], cell[1, :2], cell[2, 2] = A1, A2, VACUUM_C
    return cell, xy


def _nearest(xy: np.ndarray, targets: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(xy[:, None, :] - targets[None, :, :], axis=-1)
    idx = d.argmin(axis=0)
    assert np.all(d[idx, np.arange(len(targets))] < 1e-6)
    return idx


def metal_geometry(metal: str) -> tuple[float, float]:
    """(|x| offset from the pocket centre, height above the sheet) of a metal, in Å.

    Small 3d metals sit in the plane at the ideal divacancy centre (M-X = 1.88 Å). Larger metals are
    pushed apart (M-M >= 1.6 x covalent radius, so the pair is not compressed) and lifted so that the
    shortest M-X bond approaches 0.85 x (r_M + r_N) while every M-X stays within 1.80-2.20 Å.
    """
    r = float(covalent_radii[atomic_numbers[metal]])
    x = HALF_A + min(0.2, max(0.0, (1.6 * r - 2 * HALF_A) / 2))
    d_inplane = np.linalg.norm(SITE_XY[[0, 4]] - np.array([-x, 0.0]), axis=1)  # bridge, private
    d_target = float(np.clip(0.85 * (r + 0.71), 1.85, 2.10))
    z_want = np.sqrt(max(0.0, d_target**2 - d_inplane.min() ** 2))
    z_max = np.sqrt(max(0.0, 2.15**2 - d_inplane.max() ** 2))
    return float(x), float(min(z_want, z_max))


def host_name(metal: str, metal2: str, motif: Motif) -> str:
    """``Fe2@3Nb`` for homonuclear, ``FeCo@3Nb`` for heteronuclear pairs."""
    pair = f"{metal}2" if metal == metal2 else f"{metal}{metal2}"
    return f"{pair}@{motif.name}"


def build_host(metal: str, motif: Motif | str, metal2: str | None = None, supercell: str = "2r7") -> Atoms:
    """A TM2@Nx-graphene host: framework (C/N) + metal1 (at -x) + metal2 (at +x), periodic, with magmoms.

    Deterministic: the same inputs always give the same atoms in the same order
    (framework by position, then M1, M2). Info keys follow structures.keys.
    """
    metals = resolve_metals(metal)
    metals2 = metals if metal2 is None else resolve_metals(metal2)
    if len(metals) != 1 or len(metals2) != 1:
        bad = metal if len(metals) != 1 else metal2
        raise InputError(f"a host has one metal per site; got {bad!r}, allowed: one symbol such as Fe")
    metal, metal2 = metals[0], metals2[0]
    motif = get_motif(motif) if isinstance(motif, str) else motif
    cell, xy = _sheet(supercell)
    removed = _nearest(xy, REMOVED_XY)
    shell = _nearest(xy, SITE_XY)
    keep = np.setdiff1d(np.arange(len(xy)), removed)
    # framework order: the six first-shell atoms first (site order 0..5), then the rest by position
    rest = np.setdiff1d(keep, shell)
    frame_idx = np.concatenate([shell, rest])
    z0 = VACUUM_C / 2
    centre = cell[0, :2] * 0.5 + cell[1, :2] * 0.5
    symbols = ["C"] * len(frame_idx)
    for s in motif.n_sites:
        symbols[s] = "N"
    pos = np.zeros((len(frame_idx) + 2, 3))
    pos[: len(frame_idx), :2] = xy[frame_idx] + centre
    pos[: len(frame_idx), 2] = z0
    for m, sym in enumerate((metal, metal2)):
        x, z = metal_geometry(sym)
        pos[len(frame_idx) + m] = [centre[0] + np.sign(METAL_XY[m, 0]) * x, centre[1], z0 + z]
    atoms = Atoms(symbols + [metal, metal2], positions=pos, cell=cell, pbc=True)
    role = np.full(len(atoms), ROLE_FRAMEWORK, dtype=int)
    role[:6] = ROLE_SHELL
    role[-2:] = ROLE_METAL
    atoms.arrays[K.ROLE] = role
    magmoms = np.zeros(len(atoms))
    magmoms[-2] = INITIAL_MAGMOM[metal]
    magmoms[-1] = INITIAL_MAGMOM[metal2]
    atoms.set_initial_magnetic_moments(magmoms)
    n = len(atoms)
    name = host_name(metal, metal2, motif)
    atoms.info.update(
        {
            K.NAME: name,
            K.HOST: name,
            K.METAL: metal,
            K.METAL2: metal2,
            K.MOTIF: motif.name,
            K.N_N: motif.k,
            K.N_SITES: ",".join(map(str, motif.n_sites)),
            K.SITE: None,
            K.SUPERCELL: supercell,
            K.POCKET_INDICES: ",".join(map(str, [n - 2, n - 1, 0, 1, 2, 3, 4, 5])),
        }
    )
    return atoms


def pocket_indices(atoms: Atoms) -> tuple[int, int, list[int]]:
    """(metal1 index, metal2 index, [first-shell site 0..5 indices]) from the info record."""
    idx = [int(i) for i in str(atoms.info[K.POCKET_INDICES]).split(",")]
    return idx[0], idx[1], idx[2:]
