"""Enumerate the catalogue: hosts and their H* states for a metal and motif selection."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from ase import Atoms

from .common import InputError
from .host import build_host
from .motifs import Motif
from .sites import add_h, h_sites

PAIRS = ("homo", "hetero")


def metal_pairs(metals: Sequence[str], pairs: str = "homo") -> list[tuple[str, str]]:
    """Homonuclear (M, M) pairs, or every unordered heteronuclear pair (M1 before M2 in the given order)."""
    if pairs == "homo":
        return [(m, m) for m in metals]
    if pairs == "hetero":
        return list(itertools.combinations(metals, 2))
    raise InputError(f"unknown pair mode {pairs!r}; allowed: {', '.join(PAIRS)}")


def iter_structures(
    metals: Sequence[str],
    motifs: Sequence[Motif],
    pairs: str = "homo",
    with_h: bool = True,
    supercell: str = "2r7",
) -> Iterator[Atoms]:
    """Yield each host followed by its symmetry-distinct H* states, metals outer, motifs inner."""
    for m1, m2 in metal_pairs(metals, pairs):
        for motif in motifs:
            host = build_host(m1, motif, metal2=m2, supercell=supercell)
            yield host
            if with_h:
                for site in h_sites(host):
                    yield add_h(host, site)


def count_structures(
    metals: Sequence[str], motifs: Sequence[Motif], pairs: str = "homo", with_h: bool = True
) -> int:
    """Number of structures ``iter_structures`` yields (without building them)."""
    from .sites import site_classes

    n = 0
    for m1, m2 in metal_pairs(metals, pairs):
        for motif in motifs:
            n += 1 + (len(site_classes(motif.n_sites, m1 != m2)) if with_h else 0)
    return n
