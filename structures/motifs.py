"""Nitrogen motifs of the dual-metal (M2X6) pocket and their symmetry.

The pocket (see docs/structures.md and docs/motifs.png) sits in graphene at a hexagon whose four
side atoms are removed. Two metals M1 (at -x) and M2 (at +x) sit in the two resulting
divacancy-like holes, 2.46 Å apart along the zigzag direction x. Six first-shell atoms X0..X5
(C or N) bind them; coordinates relative to the pocket centre, in Å (a_cc = 1.42 Å)::

    X4 (-2a, +c)      X0 (0, +2c)      X2 (+2a, +c)         a = a_cc*sqrt(3)/2 = 1.23
              M1 (-a, 0)         M2 (+a, 0)                   c = a_cc/2 = 0.71
    X5 (-2a, -c)      X1 (0, -2c)      X3 (+2a, -c)

X0 and X1 bridge both metals; X2, X3 bind only M2; X4, X5 only M1. Each metal binds four.

A motif ``{k}N{letter}`` is one orbit of k-subsets of {0..5} (the sites that carry N) under the
pocket's point group, derived here from the coordinates (mirrors x->-x and y->-y and the C2
rotation; the sheet mirror z->-z acts trivially on in-plane sites). The orbit's representative
is its lexicographically smallest sorted index tuple; within each k, letters a, b, c, ... follow
the representatives in lexicographic order. Burnside's lemma gives 1, 2, 6, 6, 6, 2, 1 orbits for
k = 0..6; ``all`` means the 20 motifs with k = 2..5.
"""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .common import InputError

A_CC = 1.42  # Å, C-C bond in graphene
HALF_A = A_CC * np.sqrt(3.0) / 2.0  # Å, half the graphene lattice constant (1.23 Å)

#: First-shell site coordinates (x, y) in Å relative to the pocket centre, index = site number.
SITE_XY = np.array(
    [
        [0.0, A_CC],  # X0 bridge, +y
        [0.0, -A_CC],  # X1 bridge, -y
        [2 * HALF_A, A_CC],  # X2 M2-side, +y
        [2 * HALF_A, -A_CC],  # X3 M2-side, -y
        [-2 * HALF_A, A_CC],  # X4 M1-side, +y
        [-2 * HALF_A, -A_CC],  # X5 M1-side, -y
    ]
)
#: Ideal in-plane metal positions (x, y) in Å: M1 at -x, M2 at +x (the removed-atom dimer centres).
METAL_XY = np.array([[-HALF_A, 0.0], [HALF_A, 0.0]])
#: Sites bound to each metal (M1, M2).
METAL_NEIGHBOURS = ((0, 1, 4, 5), (0, 1, 2, 3))
BRIDGE_SITES = (0, 1)
MOTIF_KS_ALL = (2, 3, 4, 5)  # k values of `--motifs all`
ALIASES = {"M2N6": "6Na", "M2C6": "0Na"}


@dataclass(frozen=True)
class PocketOp:
    """One point-group operation of the bare homonuclear pocket, as permutations."""

    matrix: tuple[tuple[float, float], tuple[float, float]]  # 2x2 in-plane rotation/reflection
    site_perm: tuple[int, ...]  # site i -> site_perm[i]
    metal_perm: tuple[int, int]  # metal m -> metal_perm[m]


def _match(points: np.ndarray, images: np.ndarray) -> tuple[int, ...] | None:
    perm = []
    for img in images:
        d = np.linalg.norm(points - img, axis=1)
        j = int(np.argmin(d))
        if d[j] > 1e-6:
            return None
        perm.append(j)
    return tuple(perm) if len(set(perm)) == len(perm) else None


@lru_cache(maxsize=1)
def pocket_group() -> tuple[PocketOp, ...]:
    """Operations of the 2D point group of the pocket, found by testing every candidate
    operation of the hexagonal lattice (rotations by 60° multiples and mirrors) on the pocket
    coordinates: those mapping sites to sites and metals to metals are kept."""
    ops = []
    for n in range(6):
        th = n * np.pi / 3
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        for mirror in (False, True):
            m = rot @ np.diag([1.0, -1.0]) if mirror else rot
            sp = _match(SITE_XY, SITE_XY @ m.T)
            mp = _match(METAL_XY, METAL_XY @ m.T)
            if sp is not None and mp is not None:
                mat = tuple(tuple(float(round(v, 12)) for v in row) for row in m)
                ops.append(PocketOp(mat, sp, mp))  # type: ignore[arg-type]
    return tuple(ops)


def orbit(sites: tuple[int, ...], ops: tuple[PocketOp, ...] | None = None) -> set[tuple[int, ...]]:
    """All images of a set of N sites under the group."""
    ops = pocket_group() if ops is None else ops
    return {tuple(sorted(op.site_perm[s] for s in sites)) for op in ops}


@dataclass(frozen=True)
class Motif:
    """A nitrogen decoration of the six first-shell sites."""

    name: str  # e.g. "3Nb"
    k: int  # number of N atoms
    n_sites: tuple[int, ...]  # canonical representative: sorted first-shell site indices carrying N
    description: str

    @property
    def multiplicity(self) -> int:
        """Number of equivalent decorations in the orbit."""
        return len(orbit(self.n_sites))


def describe(n_sites: tuple[int, ...]) -> str:
    """Human description: where the N atoms sit."""
    s = set(n_sites)
    nb = len(s & {0, 1})
    n1 = len(s & {4, 5})
    n2 = len(s & {2, 3})
    parts = [f"{nb} bridging N", f"{n1}+{n2} private N (M1+M2)"]
    if n1 == 1 and n2 == 1:
        same_side = (4 in s and 2 in s) or (5 in s and 3 in s)
        parts.append(
            "private N on the same side (cis)" if same_side else "private N on opposite sides (trans)"
        )
    if nb == 1 and (n1 + n2) >= 1:
        b = 0 if 0 in s else 1
        near = {0: {2, 4}, 1: {3, 5}}[b]
        parts.append(f"{len(s & near)} private N next to the bridging N")
    return ", ".join(parts)


@lru_cache(maxsize=1)
def catalogue() -> tuple[Motif, ...]:
    """Every motif, k = 0..6, in canonical order."""
    motifs = []
    for k in range(7):
        reps = sorted({min(orbit(c)) for c in itertools.combinations(range(6), k)})
        for letter, rep in zip(string.ascii_lowercase, reps):
            motifs.append(Motif(f"{k}N{letter}", k, rep, describe(rep)))
    return tuple(motifs)


def get_motif(name: str) -> Motif:
    """Look a motif up by name (or alias such as M2N6); InputError when unknown."""
    key = ALIASES.get(name.strip(), name.strip())
    for m in catalogue():
        if m.name.lower() == key.lower():
            return m
    allowed = ", ".join(m.name for m in catalogue())
    raise InputError(f"unknown motif {name!r}; allowed: all, {allowed}, or a motif file (.json/.toml)")


def load_motif_file(path: str | Path) -> Motif:
    """A user motif: JSON or TOML with ``name`` and ``n_sites`` (first-shell indices 0..5 that are N)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read motif file '{path}': {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"motif file '{path}' is not valid {path.suffix[1:] or 'JSON'}: {exc}") from None
    if not isinstance(data, dict) or "n_sites" not in data:
        raise InputError(
            f"motif file '{path}' must define 'n_sites' (list of first-shell sites 0..5 that are N)"
        )
    sites = data["n_sites"]
    if not isinstance(sites, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sites):
        raise InputError(f"motif file '{path}': n_sites must be a list of integers 0..5, got {sites!r}")
    bad = [s for s in sites if not 0 <= s <= 5]
    if bad or len(set(sites)) != len(sites):
        raise InputError(f"motif file '{path}': n_sites {sites!r} must be distinct integers in 0..5")
    name = str(data.get("name", path.stem))
    if not name or any(c in name for c in "@+, /"):
        raise InputError(
            f"motif file '{path}': name {name!r} must be non-empty without '@', '+', ',', ' ' or '/'"
        )
    rep = tuple(sorted(sites))
    return Motif(name, len(rep), rep, str(data.get("description", describe(rep))))


def resolve_motifs(spec: str | list[str]) -> list[Motif]:
    """``"all"`` (the 20 motifs with k = 2..5), a comma list of names, or motif files."""
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return [m for m in catalogue() if m.k in MOTIF_KS_ALL]
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    if not items:
        raise InputError(f"empty motif selection {spec!r}; allowed: all or a comma list such as 2Na,3Nb")
    out: list[Motif] = []
    for item in items:
        if item.lower().endswith((".json", ".toml")) or Path(item).is_file():
            m = load_motif_file(item)
        else:
            m = get_motif(item)
        if m not in out:
            out.append(m)
    return out
