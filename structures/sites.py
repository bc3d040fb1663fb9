"""H* adsorption sites near the pocket, deduplicated by the symmetry of the decorated host.

Candidate sites, in canonical order: ``top_M1``, ``top_M2`` (on top of each metal), ``bridge_MM``
(above the metal-metal midpoint) and ``top_X0`` .. ``top_X5`` (on top of each first-shell N or C).
Two candidates are equivalent when an operation of the pocket's point group maps the decorated
host onto itself (N sites onto N sites; for heteronuclear pairs, each metal onto itself) and one
candidate onto the other; the first candidate of each class in canonical order is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from . import keys as K
from .common import InputError
from .host import ROLE_ADSORBATE, pocket_indices
from .motifs import PocketOp, pocket_group

H_TOP_METAL = 1.60  # Å, M-H height of an on-top H
H_BRIDGE_MH = 1.75  # Å, M-H distance of the bridging H
H_TOP_N = 1.03  # Å, N-H
H_TOP_C = 1.10  # Å, C-H

CANDIDATES: tuple[str, ...] = ("top_M1", "top_M2", "bridge_MM") + tuple(f"top_X{i}" for i in range(6))


@dataclass(frozen=True)
class HSite:
    label: str  # e.g. "top_M1"
    position: tuple[float, float, float]  # Å, Cartesian
    multiplicity: int  # number of equivalent candidates represented


def _act(op: PocketOp, label: str) -> str:
    if label.startswith("top_M"):
        return f"top_M{op.metal_perm[int(label[-1]) - 1] + 1}"
    if label.startswith("top_X"):
        return f"top_X{op.site_perm[int(label[-1])]}"
    return label


def stabilizer(n_sites: tuple[int, ...], heteronuclear: bool) -> list[PocketOp]:
    """Operations that map the decorated pocket onto itself."""
    s = set(n_sites)
    ops = []
    for op in pocket_group():
        if {op.site_perm[i] for i in s} != s:
            continue
        if heteronuclear and op.metal_perm != (0, 1):
            continue
        ops.append(op)
    return ops


def site_classes(n_sites: tuple[int, ...], heteronuclear: bool) -> list[list[str]]:
    """Equivalence classes of candidate labels, each in canonical order, classes ordered by first member."""
    ops = stabilizer(n_sites, heteronuclear)
    seen: set[str] = set()
    classes = []
    for label in CANDIDATES:
        if label in seen:
            continue
        cls = sorted({_act(op, label) for op in ops}, key=CANDIDATES.index)
        seen.update(cls)
        classes.append(cls)
    return classes


def h_sites(host: Atoms) -> list[HSite]:
    """Symmetry-distinct H* sites of a host, with starting positions from its (possibly relaxed) geometry."""
    if host.info.get(K.SITE) not in (None, "", "None"):
        raise InputError(f"structure '{host.info.get(K.NAME)}' already carries H at {host.info[K.SITE]}")
    n_sites = tuple(int(i) for i in str(host.info[K.N_SITES]).split(",") if i != "")
    hetero = host.info[K.METAL] != host.info[K.METAL2]
    m1, m2, shell = pocket_indices(host)
    pos = host.get_positions()
    normal = np.array([0.0, 0.0, 1.0])
    out = []
    for cls in site_classes(n_sites, hetero):
        label = cls[0]
        if label.startswith("top_M"):
            p = pos[m1 if label == "top_M1" else m2] + H_TOP_METAL * normal
        elif label == "bridge_MM":
            mid = 0.5 * (pos[m1] + pos[m2])
            half = 0.5 * np.linalg.norm(pos[m1] - pos[m2])
            p = mid + np.sqrt(max(H_BRIDGE_MH**2 - half**2, 0.5**2)) * normal
        else:
            i = shell[int(label[-1])]
            p = pos[i] + (H_TOP_N if host[i].symbol == "N" else H_TOP_C) * normal
        out.append(HSite(label, tuple(float(v) for v in p), len(cls)))
    return out


def add_h(host: Atoms, site: HSite) -> Atoms:
    """Host + one H atom at ``site``; info gets site, name ``<host>+H@<site>`` and ads_index."""
    atoms = host.copy()
    atoms.append("H")
    atoms.positions[-1] = site.position
    role = atoms.arrays[K.ROLE]
    role[-1] = ROLE_ADSORBATE
    atoms.info[K.SITE] = site.label
    atoms.info[K.NAME] = f"{host.info[K.HOST]}+H@{site.label}"
    atoms.info[K.ADSORBATE_INDEX] = len(atoms) - 1
    return atoms
