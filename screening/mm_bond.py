"""The metal–metal bond of a dual-atom site as one coordinate: the reference's force along it, its stiffness,
and what relaxing it would change in ΔE_H.

``screen validate`` takes DFT single points at the model-relaxed geometries. There the largest DFT force is
on a metal and along the M–M axis (docs/dft.md, thirteenth measurement): plane-wave PBE pulls the pair of
Fe, Co, Ni, Ru, Rh, Ir, Os, Re or Mn together and pushes Au, Ag or Cu apart, by up to 7 eV/Å, where the
SevenNet-0-taught model puts no force. Along that one coordinate d (Å):

    f = −dE/dd = (F_j − F_i)·u / 2      (eV/Å; u the unit vector from metal i to metal j; f < 0: shorter)
    K = d²E/dd²                         (eV/Å², a central difference of f with any ASE calculator)
    E_relax ≈ −f² / (2K)                (eV; the energy relaxing d alone would release, harmonic)

and from two single points along d (`screen validate --bond-line`), the minimum of the cubic through their
energies and forces (:func:`line_minimum`).

and ΔE_H = E(host+H) − E(host) − ½E(H2) at the model geometry moves by E_relax(host+H) − E_relax(host)
when both relax along d. A full-coordinate first-order estimate (the model's surface tilted to the DFT
forces) was tried first and diverged: with forces this large the tilt, not the model, sets the minimum.
"""

from __future__ import annotations

import math

import numpy as np

NON_METALS = ("H", "C", "N")


def metal_pair_indices(atoms) -> tuple[int, int]:
    """The two metal atoms of a dual-atom structure: those of its pocket record (``pocket_indices``, read by
    :func:`screening.flags._pocket`) when it carries one, else the atoms that are not H, C or N. ValueError
    when there are not exactly two."""
    from .flags import _pocket

    pocket = _pocket(atoms)
    if pocket is not None:
        return pocket[0], pocket[1]
    metals = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s not in NON_METALS]
    if len(metals) != 2:
        raise ValueError(f"{atoms.get_chemical_formula()}: {len(metals)} metal atoms; a dual-atom site has 2")
    return metals[0], metals[1]


def _axis(atoms, i: int, j: int) -> np.ndarray:
    v = atoms.get_distance(i, j, mic=bool(atoms.pbc.any()), vector=True)
    return v / np.linalg.norm(v)


def bond_force(atoms, forces: np.ndarray, i: int, j: int) -> float:
    """f = −dE/dd (eV/Å) from the forces (N, 3) eV/Å on atoms i and j; negative: the bond wants to shorten."""
    u = _axis(atoms, i, j)
    f = np.asarray(forces, dtype=float)
    return float((f[j] - f[i]) @ u / 2.0)


def stretch_pair(atoms, i: int, j: int, dd: float):
    """A copy of ``atoms`` (no calculator) with metals i and j each moved dd/2 Å along their axis, so their
    distance changes by dd Å (negative: closer); every other atom stays."""
    u = _axis(atoms, i, j)
    a = atoms.copy()
    a.calc = None
    a.positions[j] += dd / 2 * u
    a.positions[i] -= dd / 2 * u
    return a


def bond_stiffness(atoms, calc, i: int, j: int, h: float = 0.02) -> float:
    """K = d²E/dd² (eV/Å²) of ``calc`` by a central difference of :func:`bond_force` over d ± h Å (each metal
    moved h/2)."""
    fs = []
    for dd in (h, -h):
        a = stretch_pair(atoms, i, j, dd)
        a.calc = calc
        fs.append(bond_force(a, a.get_forces(), i, j))
    return -(fs[0] - fs[1]) / (2 * h)


def bond_relaxation_energy(f: float, k: float) -> float:
    """−f²/(2K) eV: the harmonic energy released by relaxing the bond; nan when K ≤ 0 (no minimum)."""
    return -(f * f) / (2.0 * k) if k > 0 else math.nan


def delta_e_h_shift(f_host: float, k_host: float, f_state: float, k_state: float) -> float:
    """Change of ΔE_H (eV) when host and host+H both relax their M–M bond: E_relax(H*) − E_relax(host)."""
    return bond_relaxation_energy(f_state, k_state) - bond_relaxation_energy(f_host, k_host)


# Stiffness guess (eV/Å²) that sets the step of a DFT bond line (`screen validate --bond-line`): between the
# two plane-wave finite differences of docs/dft.md (Ru2@2Nf 25.9, Au2@5Na 46.5); the line itself measures K
BOND_K_GUESS = 30.0
# largest move of the M–M distance on a bond line (Å): the harmonic range of those finite differences (0.1 Å
# steps reproduced the DFT energy change within 0.025 eV)
BOND_MAX_STEP = 0.15


def line_step(f: float, k_guess: float = BOND_K_GUESS, max_step: float = BOND_MAX_STEP) -> float:
    """dd (Å) toward the harmonic minimum of the bond from its force f = −dE/dd (eV/Å): f / k_guess, clipped
    to ±max_step; 0 for a non-finite f."""
    if not math.isfinite(f):
        return 0.0
    return float(np.clip(f / k_guess, -max_step, max_step))


def line_minimum(
    e0: float, f0: float, e1: float, f1: float, step: float, reach: float = 0.6
) -> tuple[float, float]:
    """Minimum of the energy along the bond from two points ``step`` Å apart (energies eV, bond forces
    f = −dE/dd eV/Å): the cubic through both energies and both slopes (Hermite), whose local minimum is
    returned as (E_min eV, K eV/Å²) with K = −(f1 − f0)/step, the secant stiffness. Exact for a harmonic bond;
    on EMT dimers 0.05–0.3 Å from their minimum within 26 meV where the harmonic −f²/(2K) was off by up to
    0.28 eV. Without a cubic minimum within ``reach`` Å (a short step far from the minimum), the harmonic
    −f²/(2K) from the point of smaller |f|; (nan, K) when K ≤ 0 too (or step is 0).
    """
    if step == 0 or not all(map(math.isfinite, (e0, f0, e1, f1))):
        return math.nan, math.nan
    k = -(f1 - f0) / step
    g0 = -f0  # E(x) = e0 + g0 x + b x² + c x³, x along the step from the first point
    a = e1 - e0 - g0 * step
    c = (-(f1 - f0) - 2 * a / step) / step**2
    b = (a - c * step**3) / step**2
    if abs(c) < 1e-12:
        roots = [-g0 / (2 * b)] if b > 0 else []
    else:
        roots = [float(r.real) for r in np.roots([3 * c, 2 * b, g0]) if abs(r.imag) < 1e-12]
    minima = [x for x in roots if 2 * b + 6 * c * x > 0 and abs(x) <= reach]
    if minima:
        x = minima[0]
        return e0 + g0 * x + b * x * x + c * x**3, k
    # a short step far from the minimum can leave the cubic without one: the harmonic −f²/(2K) from the
    # point of smaller |f| (the shorter extrapolation), when K > 0 and that minimum is within reach
    e, f = (e1, f1) if abs(f1) <= abs(f0) else (e0, f0)
    if k > 0 and abs(f / k) <= reach:
        return e + bond_relaxation_energy(f, k), k
    return math.nan, k
