"""Flags: which results need a second look (the DFT queue of the reports).

Structure-level (from a relaxation): ``unstable_host`` (a metal left the C/N plane, or the metal pair
broke apart), ``h_migrated`` (H moved away from its starting site), ``h_desorbed`` (H far from every
atom), ``not_converged`` (FIRE stopped before max |F| < fmax), ``nonfinite`` (NaN/inf energy or forces).
Host-level (from ΔGH*): ``high_variance`` (σ above a threshold, or |ΔGH*| < 2σ so the sign near the
optimum is in doubt), ``pair_stretched`` (H* at the best site moved the metals apart against the relaxed
host: a possible spurious minimum of the model), ``aggregates`` (formation energy above the stability cut-off), ``nonfinite``.
Flags are stored as a comma-separated string in :data:`FLAG_NAMES` order plus one boolean per flag.
Distances in Å, energies in eV.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

from structures import keys as SK

FLAG_NAMES: tuple[str, ...] = (
    "high_variance",
    "unstable_host",
    "pair_stretched",
    "h_migrated",
    "h_desorbed",
    "not_converged",
    "nonfinite",
    "aggregates",
)


@dataclass(frozen=True)
class FlagConfig:
    """Thresholds of the flags."""

    max_sigma: float = 0.15  # eV, ΔGH* σ above this -> high_variance
    sign_sigmas: float = 2.0  # |ΔGH*| < sign_sigmas * σ -> high_variance
    max_metal_height: float = 2.0  # Å, |metal height above the mean plane of its first shell|
    max_mm_distance: float = 3.6  # Å, metal-metal distance (minimum image)
    h_migration: float = 1.0  # Å, H displacement from its starting position
    h_desorption: float = 2.5  # Å, distance from H to its nearest atom
    # Å, M–M distance of the best H* state minus the relaxed host's. v0.5.1's full screen (460 hosts): median
    # +0.006, 95th percentile +0.064, one host above 0.15 (Rh2@2Nd, +0.46 Å, where DFT puts 19 eV/Å on an Rh
    # and ΔE_H 5.5 eV above the model's: a spurious minimum; benchmarks/pair_stretch_audit.py)
    max_mm_stretch: float = 0.3


_DEFAULTS = FlagConfig()
#: what each flag means, for reports (the thresholds are FlagConfig's defaults; a run may set others)
FLAG_HELP: dict[str, str] = {
    "high_variance": f"σ(ΔGH*) above {_DEFAULTS.max_sigma:g} eV, or |ΔGH*| < {_DEFAULTS.sign_sigmas:g}σ so the sign near the "
    "optimum is in doubt",
    "unstable_host": f"a metal left the sheet (> {_DEFAULTS.max_metal_height:g} Å from the mean plane of its first "
    f"shell) or the pair broke apart (M–M > {_DEFAULTS.max_mm_distance:g} Å)",
    "pair_stretched": f"H* at the best site moved the metal pair > {_DEFAULTS.max_mm_stretch:g} Å apart against the "
    "relaxed host (column mm_stretch): possibly a spurious minimum of the model; DFT-check it with a relaxation",
    "h_migrated": f"H moved more than {_DEFAULTS.h_migration:g} Å from its starting site during the relaxation",
    "h_desorbed": f"H ended more than {_DEFAULTS.h_desorption:g} Å from every atom",
    "not_converged": "the relaxation stopped before max |F| < fmax",
    "nonfinite": "NaN or inf in an energy, force or σ",
    "aggregates": "formation energy above the stability cut-off (0 eV): the pair would rather form clusters",
}

PRESETS: dict[str, FlagConfig] = {
    "default": FlagConfig(),
    "strict": FlagConfig(max_sigma=0.10, h_migration=0.7),
}


def _mic(vectors: np.ndarray, atoms: Atoms) -> np.ndarray:
    """Minimum-image vectors (M, 3) in the cell of ``atoms``."""
    if atoms.pbc.any():
        return find_mic(np.atleast_2d(vectors), atoms.cell, atoms.pbc)[0]
    return np.atleast_2d(vectors)


def _pocket(atoms: Atoms) -> tuple[int, int, list[int]] | None:
    raw = atoms.info.get(SK.POCKET_INDICES)
    if raw in (None, ""):
        return None
    idx = [int(i) for i in str(raw).split(",") if i != ""]
    return idx[0], idx[1], idx[2:]


def metal_geometry(atoms: Atoms) -> dict[str, float]:
    """Heights (Å) of both metals above the mean plane of the first shell and their M-M distance."""
    pocket = _pocket(atoms)
    if pocket is None:
        return {}
    m1, m2, shell = pocket
    pos = atoms.get_positions()
    centre = pos[shell[0]] + _mic(pos[shell] - pos[shell[0]], atoms).mean(0)
    h1 = float(_mic(pos[m1] - centre, atoms)[0, 2])
    h2 = float(_mic(pos[m2] - centre, atoms)[0, 2])
    d = float(np.linalg.norm(_mic(pos[m2] - pos[m1], atoms)[0]))
    return {"metal_height1": h1, "metal_height2": h2, "mm_distance": d}


def structure_flags(
    initial: Atoms, relaxed: Atoms, status: str, energy: float, config: FlagConfig = FlagConfig()
) -> list[str]:
    """Flags of one relaxed structure; ``initial`` gives the starting H position."""
    flags: set[str] = set()
    pos = relaxed.get_positions()
    if status == "nonfinite" or not math.isfinite(energy) or not np.isfinite(pos).all():
        return order({"nonfinite"} | ({"not_converged"} if status != "converged" else set()))
    if status != "converged":
        flags.add("not_converged")
    geo = metal_geometry(relaxed)
    if geo:
        if max(abs(geo["metal_height1"]), abs(geo["metal_height2"])) > config.max_metal_height:
            flags.add("unstable_host")
        if geo["mm_distance"] > config.max_mm_distance:
            flags.add("unstable_host")
    ads = relaxed.info.get(SK.ADSORBATE_INDEX)
    if ads is not None and ads != "" and int(ads) >= 0:
        ads = int(ads)
        moved = np.linalg.norm(_mic(pos[ads] - initial.get_positions()[ads], relaxed)[0])
        if moved > config.h_migration:
            flags.add("h_migrated")
        others = np.delete(np.arange(len(relaxed)), ads)
        if len(others):
            nearest = np.linalg.norm(_mic(pos[others] - pos[ads], relaxed), axis=1).min()
            if nearest > config.h_desorption:
                flags.add("h_desorbed")
    return order(flags)


def pair_stretch(host: Atoms, state: Atoms) -> float:
    """M–M distance of ``state`` (relaxed host+H*) minus that of ``host`` (relaxed), Å; nan without a pocket."""
    a, b = metal_geometry(host), metal_geometry(state)
    if not a or not b:
        return math.nan
    return b["mm_distance"] - a["mm_distance"]


def stretch_flags(stretch: float, config: FlagConfig = FlagConfig()) -> list[str]:
    """``pair_stretched`` when H* moved the metal pair apart by more than ``config.max_mm_stretch`` (Å)."""
    return ["pair_stretched"] if math.isfinite(stretch) and stretch > config.max_mm_stretch else []


def dg_flags(dg: float, dg_std: float, config: FlagConfig = FlagConfig()) -> list[str]:
    """``high_variance`` / ``nonfinite`` from ΔGH* and its σ (eV)."""
    if not (math.isfinite(dg) and math.isfinite(dg_std)):
        return ["nonfinite"]
    if dg_std > config.max_sigma or abs(dg) < config.sign_sigmas * dg_std:
        return ["high_variance"]
    return []


def order(flags: Iterable[str]) -> list[str]:
    """Deduplicated flags in :data:`FLAG_NAMES` order (unknown names are refused)."""
    s = set(flags)
    unknown = s - set(FLAG_NAMES)
    if unknown:
        raise ValueError(f"unknown flag(s) {sorted(unknown)}; allowed: {', '.join(FLAG_NAMES)}")
    return [f for f in FLAG_NAMES if f in s]


def to_string(flags: Iterable[str]) -> str:
    """Comma-separated flags in canonical order ("" when none)."""
    return ",".join(order(flags))


def parse(text: str | None) -> list[str]:
    return order(f for f in (text or "").split(",") if f)


def to_booleans(flags: Iterable[str]) -> dict[str, bool]:
    """{"flag_<name>": bool} for every flag name."""
    s = set(flags)
    return {f"flag_{name}": name in s for name in FLAG_NAMES}


def counts(flag_strings: Iterable[str | None]) -> dict[str, int]:
    """{flag: number of rows carrying it} over stored flag strings, in :data:`FLAG_NAMES` order, flags that
    occur only."""
    n = dict.fromkeys(FLAG_NAMES, 0)
    for text in flag_strings:
        for f in parse(text if isinstance(text, str) else None):
            n[f] += 1
    return {f: c for f, c in n.items() if c}


def high_variance_note(n_high_variance: int, dg_std: Iterable[float]) -> str:
    """'' unless ``high_variance`` is on every host with a finite ΔGH* σ (eV, one per host): then one clause
    saying so and why (no σ is small enough for the flag to single a host out), and what separates them."""
    s = np.asarray(list(dg_std), float)
    s = s[np.isfinite(s)]
    if s.size == 0 or n_high_variance < s.size:
        return ""
    return (
        f"high_variance on every host: the smallest σ(ΔGH*) is {s.min():.2f} eV, above the run's threshold or "
        "large against |ΔGH*|, so the flag singles out no host: rank by P(active) and send DFT by information "
        "gain (`screen export --select bald`)"
    )
