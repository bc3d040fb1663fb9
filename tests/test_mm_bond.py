"""``screening.mm_bond``: the M–M bond coordinate of a dual-atom site (force, stiffness, relaxation energy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from screening import mm_bond as B
from structures import keys as SK


class Bond(Calculator):
    """One harmonic bond between atoms i and j (minimum image): E = ½ k (d − d0)² eV."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, i: int, j: int, k: float, d0: float):
        super().__init__()
        self.i, self.j, self.k, self.d0 = i, j, k, d0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        v = self.atoms.get_distance(self.i, self.j, mic=True, vector=True)
        d = np.linalg.norm(v)
        e = 0.5 * self.k * (d - self.d0) ** 2
        f = np.zeros((len(self.atoms), 3))
        f[self.j] = -self.k * (d - self.d0) * v / d
        f[self.i] = -f[self.j]
        self.results = {"energy": e, "free_energy": e, "forces": f}


def _site(d: float = 2.5) -> Atoms:
    """A periodic 'sheet' with two Fe across the cell boundary, so the M–M vector needs the minimum image."""
    a = Atoms("C2NFe2", positions=[[1, 1, 5], [2, 1, 5], [3, 2, 5], [9.0 - d / 2, 4, 5], [d / 2, 4.2, 5]])
    a.cell = [9.0, 8.0, 10.0]
    a.pbc = True
    return a


def test_metal_pair_from_pocket_indices_or_symbols():
    a = _site()
    assert B.metal_pair_indices(a) == (3, 4)
    a.info[SK.POCKET_INDICES] = "4,3,0,1,2"
    assert B.metal_pair_indices(a) == (4, 3)
    with pytest.raises(ValueError, match="1 metal atoms"):
        B.metal_pair_indices(Atoms("C3Fe", positions=np.eye(4, 3) * 2))


def test_bond_force_stiffness_and_relaxation_energy_of_a_harmonic_bond():
    a = _site()
    i, j = B.metal_pair_indices(a)
    d = a.get_distance(i, j, mic=True)
    calc = Bond(i, j, k=20.0, d0=d - 0.15)  # the bond wants to be 0.15 Å shorter
    a.calc = calc
    f = B.bond_force(a, a.get_forces(), i, j)
    assert f == pytest.approx(-20.0 * 0.15, rel=1e-9)  # −dE/dd < 0: shorten
    assert B.bond_force(a, a.get_forces(), j, i) == pytest.approx(f, rel=1e-12)  # symmetric in i, j
    k = B.bond_stiffness(a, calc, i, j)
    assert k == pytest.approx(20.0, rel=1e-4)
    assert B.bond_relaxation_energy(f, k) == pytest.approx(-a.get_potential_energy(), rel=1e-4)  # exact
    assert math.isnan(B.bond_relaxation_energy(f, -1.0))
    assert B.delta_e_h_shift(f, k, 0.0, k) == pytest.approx(a.get_potential_energy(), rel=1e-4)


def test_bond_force_is_minus_the_energy_derivative_with_emt():
    a = Atoms("Cu2Au", positions=[[0, 0, 0], [2.4, 0.3, 0.1], [1.2, 2.0, 0.0]])
    a.calc = EMT()
    i, j = 0, 1
    f = B.bond_force(a, a.get_forces(), i, j)
    u = a.get_distance(i, j, vector=True)
    u /= np.linalg.norm(u)
    h = 1e-4
    e = []
    for s in (1.0, -1.0):
        b = a.copy()
        b.positions[j] += s * h / 2 * u
        b.positions[i] -= s * h / 2 * u
        b.calc = EMT()
        e.append(b.get_potential_energy())
    assert f == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=1e-6)


def test_line_step_points_to_the_minimum_and_is_clipped():
    assert B.line_step(-3.0) == pytest.approx(-3.0 / B.BOND_K_GUESS)  # f < 0: shorten
    assert B.line_step(100.0) == B.BOND_MAX_STEP and B.line_step(-100.0) == -B.BOND_MAX_STEP
    assert B.line_step(float("nan")) == 0.0


def test_line_minimum_is_exact_on_a_harmonic_bond_and_refuses_no_minimum():
    a = _site()
    i, j = B.metal_pair_indices(a)
    d = a.get_distance(i, j, mic=True)
    calc = Bond(i, j, k=20.0, d0=d - 0.3)  # minimum 0.3 Å shorter: the clipped step stops half way
    points = []
    for dd in (0.0, B.line_step(-20.0 * 0.3)):
        b = B.stretch_pair(a, i, j, dd)
        b.calc = calc
        points.append((b.get_potential_energy(), B.bond_force(b, b.get_forces(), i, j), dd))
    (e0, f0, _), (e1, f1, step) = points
    assert step == -B.BOND_MAX_STEP
    e_min, k = B.line_minimum(e0, f0, e1, f1, step)
    assert k == pytest.approx(20.0, rel=1e-9) and e_min == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(B.line_minimum(e0, f0, e0 - f0 * step, f0, step)[0])  # a straight line: no minimum
    assert math.isnan(B.line_minimum(e0, f0, e1, f1, 0.0)[0])


def test_line_minimum_of_an_anharmonic_emt_pair_is_close_to_the_scanned_minimum():
    """Two points of a real (EMT) Au–Au bond 0.2 Å too long: the cubic estimate lands within 10 meV of a
    dense scan along the bond (the harmonic −f²/2K from the nearer point: 50 meV), far closer than the
    energy the line started from."""
    d_eq = 2.4  # any start; the scan finds the real minimum
    a = Atoms("Au2", positions=[[0, 0, 0], [d_eq, 0, 0]], cell=[12, 12, 12], pbc=False)
    a.calc = EMT()
    dd = np.linspace(-0.6, 0.6, 1201)
    scan = []
    for x in dd:
        b = B.stretch_pair(a, 0, 1, x)
        b.calc = EMT()
        scan.append(b.get_potential_energy())
    x_min = dd[int(np.argmin(scan))]
    start = B.stretch_pair(a, 0, 1, x_min + 0.2)
    start.calc = EMT()
    e0, f0 = start.get_potential_energy(), B.bond_force(start, start.get_forces(), 0, 1)
    step = B.line_step(f0)
    second = B.stretch_pair(start, 0, 1, step)
    second.calc = EMT()
    e1, f1 = second.get_potential_energy(), B.bond_force(second, second.get_forces(), 0, 1)
    e_min, k = B.line_minimum(e0, f0, e1, f1, step)
    assert f0 < 0 and step < 0 and k > 0
    assert abs(e_min - min(scan)) < 0.01 < e0 - min(scan)
