"""Reusable physics checks for potentials and posteriors (used by the tests of every method).

Each check takes ``predict(batch) -> dict`` (e.g. ``model`` or ``posterior.mean_forward``) and raises
AssertionError with the measured error. Use float64 models: tolerances assume double precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from potentials import keys as K
from potentials.data import collate

Predict = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def random_orthogonal(seed: int = 0, reflect: bool = True) -> np.ndarray:
    """A random 3x3 rotation (times -1, an improper rotation, when ``reflect``)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def transformed(atoms, rot: np.ndarray, translation: Sequence[float] = (0.0, 0.0, 0.0)):
    """Copy of ``atoms`` with positions r -> R r + t and cell rows c -> R c."""
    out = atoms.copy()
    out.positions = atoms.positions @ rot.T + np.asarray(translation)
    out.cell = atoms.cell.array @ rot.T
    return out


def _run(
    predict: Predict, atoms_list, elements, cutoff, dtype=torch.float64, **kw
) -> dict[str, torch.Tensor]:
    batch = collate(atoms_list, elements, cutoff, dtype=dtype, with_labels=False)
    return {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in predict(batch, **kw).items()}


def assert_equivariant_outputs(
    predict: Predict, atoms, elements, cutoff, seed: int = 0, atol: float = 1e-8, reflect: bool = True
) -> dict[str, float]:
    """E, energy_var invariant; F -> R F; forces_cov -> R Sigma R^T; stress -> R s R^T under O(3) + translation."""
    rot = random_orthogonal(seed, reflect)
    stress = bool(np.all(atoms.pbc))
    a = _run(predict, [atoms], elements, cutoff, compute_stress=stress)
    b = _run(predict, [transformed(atoms, rot, (0.3, -1.2, 0.7))], elements, cutoff, compute_stress=stress)
    R = torch.as_tensor(rot, dtype=a[K.FORCES].dtype)
    errors = {
        "energy": float((a[K.ENERGY] - b[K.ENERGY]).abs().max()),
        "forces": float((a[K.FORCES] @ R.T - b[K.FORCES]).abs().max()),
    }
    if K.ENERGY_VAR in a:
        errors["energy_var"] = float((a[K.ENERGY_VAR] - b[K.ENERGY_VAR]).abs().max())
    if K.FORCES_COV in a:
        errors["forces_cov"] = float((R @ a[K.FORCES_COV] @ R.T - b[K.FORCES_COV]).abs().max())
    if stress and K.STRESS in a:
        errors["stress"] = float((R @ a[K.STRESS] @ R.T - b[K.STRESS]).abs().max())
    bad = {k: v for k, v in errors.items() if not v <= atol}
    assert not bad, f"equivariance errors above {atol}: {bad}"
    return errors


def assert_permutation_invariant(
    predict: Predict, atoms, elements, cutoff, seed: int = 0, atol: float = 1e-9
) -> None:
    """Energy unchanged and forces permuted when the atom order is shuffled."""
    perm = np.random.default_rng(seed).permutation(len(atoms))
    a = _run(predict, [atoms], elements, cutoff)
    b = _run(predict, [atoms[perm]], elements, cutoff)
    err_e = float((a[K.ENERGY] - b[K.ENERGY]).abs().max())
    err_f = float((a[K.FORCES][perm] - b[K.FORCES]).abs().max())
    assert err_e <= atol and err_f <= atol, f"permutation errors: energy {err_e}, forces {err_f}"


def assert_forces_match_fd(
    predict: Predict, atoms, elements, cutoff, h: float = 1e-5, atol: float = 1e-6, n_atoms: int = 3
) -> float:
    """Forces equal -dE/dx by central finite differences (first ``n_atoms`` atoms, all directions)."""
    forces = _run(predict, [atoms], elements, cutoff)[K.FORCES].numpy()
    worst = 0.0
    for i in range(min(n_atoms, len(atoms))):
        for d in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, d] += sign * h
                energies.append(float(_run(predict, [moved], elements, cutoff)[K.ENERGY][0]))
            fd = -(energies[0] - energies[1]) / (2 * h)
            worst = max(worst, abs(fd - forces[i, d]))
    assert worst <= atol, f"forces differ from finite differences by {worst}"
    return worst


def assert_stress_matches_fd(
    predict: Predict, atoms, elements, cutoff, h: float = 1e-5, atol: float = 1e-6
) -> float:
    """Stress equals (1/V) dE/d(strain) by central finite differences of symmetric strains."""
    stress = _run(predict, [atoms], elements, cutoff, compute_stress=True)[K.STRESS][0].numpy()
    volume = atoms.get_volume()
    worst = 0.0
    for i in range(3):
        for j in range(i, 3):
            eps = np.zeros((3, 3))
            eps[i, j] += 0.5 * h
            eps[j, i] += 0.5 * h
            energies = []
            for sign in (1, -1):
                strained = atoms.copy()
                deform = np.eye(3) + sign * eps
                strained.set_cell(atoms.cell.array @ deform, scale_atoms=False)
                strained.positions = atoms.positions @ deform
                energies.append(float(_run(predict, [strained], elements, cutoff)[K.ENERGY][0]))
            fd = (energies[0] - energies[1]) / (2 * h) / volume
            worst = max(worst, abs(fd - stress[i, j]))
    assert worst <= atol, f"stress differs from finite differences by {worst}"
    return worst


def assert_batch_consistent(predict: Predict, atoms_list, elements, cutoff, atol: float = 1e-9) -> None:
    """A batch of structures gives the same energies, forces and variances as one at a time."""
    together = _run(predict, atoms_list, elements, cutoff)
    alone = [_run(predict, [a], elements, cutoff) for a in atoms_list]
    for key in (K.ENERGY, K.ENERGY_VAR):
        if key in together:
            err = float((together[key] - torch.cat([o[key] for o in alone])).abs().max())
            assert err <= atol, f"batched {key} differs by {err}"
    for key in (K.FORCES, K.FORCES_COV):
        if key in together:
            err = float((together[key] - torch.cat([o[key] for o in alone])).abs().max())
            assert err <= atol, f"batched {key} differs by {err}"


def dimer_scan(predict: Predict, symbols: tuple[str, str], distances: Sequence[float], elements, cutoff):
    """(energies (M,), force on atom 1 along the bond (M,)) of an isolated dimer at the given distances."""
    from ase import Atoms

    energies, forces = [], []
    for r in distances:
        out = _run(predict, [Atoms(symbols, positions=[(0, 0, 0), (r, 0, 0)])], elements, cutoff)
        energies.append(float(out[K.ENERGY][0]))
        forces.append(float(out[K.FORCES][1, 0]))
    return np.array(energies), np.array(forces)


def assert_smooth_at_cutoff(
    predict: Predict, symbols: tuple[str, str], elements, cutoff, delta: float = 1e-3
) -> None:
    """Energy and force are continuous when the dimer distance crosses the cutoff.

    Just inside the cutoff the energy must be within C delta^3 of the non-interacting value and the
    force within C delta^2 of zero (C^2 envelope), while well inside it the dimer does interact.
    """
    e, f = dimer_scan(predict, symbols, [cutoff - 0.5, cutoff - delta, cutoff + delta], elements, cutoff)
    scale = max(abs(e[0] - e[2]) / 0.5**3, abs(f[0]) / 0.5**2, 1e-12)
    assert abs(e[0] - e[2]) > 1e-8, (
        "the dimer does not interact inside the cutoff: the check would be vacuous"
    )
    assert abs(e[1] - e[2]) <= 50 * scale * delta**3, f"energy jumps at the cutoff by {abs(e[1] - e[2])}"
    assert abs(f[1]) <= 50 * scale * delta**2 and f[2] == 0.0, f"force jumps at the cutoff: {f[1]} -> {f[2]}"


def emt_dataset(n: int, seed: int = 0, rattle: float = 0.05, with_stress: bool = True) -> list:
    """``n`` rattled Cu/Au fcc cells (4 atoms, periodic) labelled with ASE's EMT (eV, eV/Å, eV/Å^3)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.1 * rng.normal(), cubic=True)
        atoms.symbols[rng.random(len(atoms)) < 0.3] = "Au"
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)) + k)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if with_stress:
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def emt_clusters(n: int, seed: int = 0) -> list:
    """``n`` open Cu3Al2 clusters (5 atoms, 0.12 Å noise around a fixed shape) with EMT energy (info) and
    forces (arrays), no calculator attached."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5], [2.5, 2.5, 0]], dtype=float)
    return emt_labelled([Atoms("Cu3Al2", positions=base + rng.normal(0, 0.12, base.shape)) for _ in range(n)])


def emt_labelled(frames: Sequence) -> list:
    """Copies of ``frames`` with ASE's EMT energy (``info['energy']``, eV) and forces (``arrays['forces']``,
    eV/Å), no calculator attached."""
    from ase.calculators.emt import EMT

    out = []
    for a in frames:
        a = a.copy()
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
        out.append(a)
    return out


def emt_low_fidelity(frames: list, v0_scale: float = 1.15, e0_shift: float = 0.1) -> list:
    """The same structures labelled by a *cheaper, biased* EMT: every element's V0 scaled by ``v0_scale``
    and E0 shifted by ``e0_shift`` eV (a stand-in for SevenNet-0 against DFT in two-fidelity tests)."""
    import ase.calculators.emt as emt_module
    from ase.calculators.singlepoint import SinglePointCalculator

    original = emt_module.parameters
    biased = {k: (v[0] + e0_shift, v[1], v[2] * v0_scale, *v[3:]) for k, v in original.items()}
    out = []
    emt_module.parameters = biased
    try:
        for a in frames:
            b = a.copy()
            b.calc = emt_module.EMT()
            res = {"energy": b.get_potential_energy(), "forces": b.get_forces()}
            b.calc = SinglePointCalculator(b, **res)
            out.append(b)
    finally:
        emt_module.parameters = original
    return out


def tiny_train_configs(epochs: int = 4, lr: float = 2e-2, **loss):
    """(ModelConfig, TrainConfig) of the tests' tiny float64 model: batch 4, EMA 0.5, cosine schedule, MSE
    loss unless ``loss`` overrides LossConfig fields."""
    from potentials.losses import LossConfig
    from potentials.model import preset
    from potentials.train import train_preset

    train_cfg = train_preset(
        "tiny",
        epochs=epochs,
        batch_size=4,
        lr=lr,
        ema_decay=0.5,
        scheduler="cosine",
        loss=LossConfig(**{"kind": "mse", **loss}),
    )
    return preset("tiny", dtype="float64"), train_cfg
