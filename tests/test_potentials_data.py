"""Graphs, neighbour lists, readers and statistics of potentials.data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.neighborlist import neighbor_list as ase_neighbor_list

from potentials import keys as K
from potentials.data import (
    atoms_to_graph,
    avg_num_neighbors,
    collate,
    fit_e0s,
    read_dataset,
    read_e0s,
    scaling_statistics,
)
from structures.common import InputError


def _edge_set(edge_index, shifts):
    return {(int(j), int(i), *map(int, s)) for (j, i), s in zip(edge_index.T.tolist(), shifts.tolist())}


@pytest.mark.parametrize(
    "atoms",
    [
        molecule("CH3CH2OH"),  # open
        fcc111("Cu", (2, 2, 3), vacuum=6.0),  # slab, pbc (T, T, F)
        bulk("Cu", "fcc", a=3.6) * (2, 1, 1),  # bulk, small cell: many periodic images
        fcc111("Cu", (2, 2, 2)),  # slab with a zero third cell vector
    ],
    ids=["open", "slab", "bulk", "slab-zero-cell"],
)
def test_neighbor_list_matches_ase(atoms):
    cutoff = 4.0
    graph = atoms_to_graph(atoms, ("H", "C", "O", "Cu"), cutoff, with_labels=False)
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    expected = {(int(b), int(a), *map(int, s)) for a, b, s in zip(i, j, S)}
    assert _edge_set(graph[K.EDGE_INDEX], graph[K.EDGE_CELL_SHIFT]) == expected
    assert len(expected) > 0


def test_collate_offsets_and_shift_convention():
    atoms = [molecule("H2O"), bulk("Cu", "fcc", a=3.6), fcc111("Cu", (1, 1, 2), vacuum=5.0)]
    batch = collate(atoms, ("H", "O", "Cu"), 3.0, dtype=torch.float64, with_labels=False)
    assert batch[K.BATCH].tolist() == [0, 0, 0, 1, 2, 2]
    assert batch[K.NUM_ATOMS].tolist() == [3, 1, 2]
    assert batch[K.CELL].shape == (3, 3, 3) and batch[K.PBC].shape == (3, 3)
    sender, receiver = batch[K.EDGE_INDEX]
    # edges never cross graphs and r_ij = pos[j] - pos[i] + S @ cell[batch[i]] has length < cutoff
    assert torch.equal(batch[K.BATCH][sender], batch[K.BATCH][receiver])
    cell = batch[K.CELL][batch[K.BATCH][receiver]]
    vec = (
        batch[K.POSITIONS][sender]
        - batch[K.POSITIONS][receiver]
        + torch.einsum("ei,eij->ej", batch[K.EDGE_CELL_SHIFT], cell)
    )
    assert float(vec.norm(dim=1).max()) < 3.0
    assert float(vec.norm(dim=1).min()) == pytest.approx(0.9686, abs=1e-4)  # the O-H bond of H2O
    # bulk Cu (1 atom) sees its 12 periodic images at a / sqrt(2)
    assert int((batch[K.BATCH][receiver] == 1).sum()) == 12


def test_unknown_element_and_nan_positions():
    with pytest.raises(InputError, match=r"unknown element Fe.*knows H, O"):
        collate([Atoms("FeO", positions=[(0, 0, 0), (1.6, 0, 0)])], ("H", "O"), 3.0)
    bad = molecule("H2O")
    bad.positions[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        collate([bad], ("H", "O"), 3.0)


def _labelled(atoms, energy, seed=0):
    forces = np.random.default_rng(seed).normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def test_read_extxyz_both_label_styles(tmp_path):
    a = _labelled(molecule("H2O"), -14.0)
    path = tmp_path / "calc.xyz"
    write(path, [a], format="extxyz")  # energy/forces end up on a SinglePointCalculator when read
    frames = read_dataset(path)
    assert frames[0].info[K.ENERGY] == pytest.approx(-14.0)
    np.testing.assert_allclose(frames[0].arrays[K.FORCES], a.get_forces())

    b = molecule("H2O")
    b.info["REF_energy"] = -3.5
    b.arrays["REF_forces"] = np.ones((3, 3))
    path2 = tmp_path / "ref.xyz"
    write(path2, [b], format="extxyz")
    frames = read_dataset(path2, energy_key="REF_energy", forces_key="REF_forces")
    batch = collate(frames, ("H", "O"), 3.0, dtype=torch.float64)
    assert batch[K.ENERGY].tolist() == [-3.5]
    assert batch[K.ENERGY].dtype == torch.float64
    assert torch.equal(batch[K.FORCES], torch.ones(3, 3, dtype=torch.float64))
    with pytest.raises(InputError, match=r"energy key 'energy' missing in structure 0 of .*ref.xyz"):
        read_dataset(path2)
    with pytest.raises(InputError, match=r"forces key 'forces' missing"):
        read_dataset(path2, energy_key="REF_energy")


def test_read_db_with_custom_keys(tmp_path):
    from ase.db import connect

    atoms = molecule("CH4")
    db = connect(tmp_path / "data.db")
    db.write(atoms, dft_e=-24.0, data={"dft_f": np.full((5, 3), 0.25)})
    frames = read_dataset(tmp_path / "data.db", energy_key="dft_e", forces_key="dft_f")
    assert frames[0].info[K.ENERGY] == -24.0
    np.testing.assert_allclose(frames[0].arrays[K.FORCES], 0.25)


def test_reader_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_dataset(tmp_path / "missing.xyz")
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_dataset(tmp_path / "empty.xyz")
    (tmp_path / "junk.xyz").write_text("3\nnot an extxyz header\nH 0 0\n")
    with pytest.raises(InputError):
        read_dataset(tmp_path / "junk.xyz")
    nan = _labelled(molecule("H2O"), -1.0)
    nan.positions[1, 2] = np.inf
    write(tmp_path / "nan.xyz", [nan], format="extxyz")
    with pytest.raises(InputError, match="non-finite"):
        read_dataset(tmp_path / "nan.xyz")


def test_fit_and_read_e0s(tmp_path):
    e0 = {"H": -13.6, "O": -2037.8}
    frames = []
    for n_h, n_o in [(2, 1), (1, 1), (2, 2), (4, 1)]:
        atoms = Atoms("H" * n_h + "O" * n_o, positions=np.arange(3 * (n_h + n_o)).reshape(-1, 3) * 1.1)
        frames.append(_labelled(atoms, n_h * e0["H"] + n_o * e0["O"]))
    fitted = fit_e0s(frames, ("H", "O", "C"))
    assert (
        fitted["H"] == pytest.approx(e0["H"]) and fitted["O"] == pytest.approx(e0["O"]) and fitted["C"] == 0.0
    )
    stats = scaling_statistics(frames, ("H", "O"), e0)
    assert abs(stats["energy_per_atom_mean"]) < 1e-9 and stats["forces_rms"] > 0.5

    isolated = []
    for symbol, energy in e0.items():
        atom = Atoms(symbol)
        atom.info["config_type"] = "IsolatedAtom"
        atom.info["energy"] = energy
        isolated.append(atom)
    write(tmp_path / "e0.xyz", isolated + [frames[0]], format="extxyz")
    assert read_e0s(tmp_path / "e0.xyz") == pytest.approx(e0)


def test_avg_num_neighbors():
    assert avg_num_neighbors([bulk("Cu", "fcc", a=3.6)], 3.0) == 12
    assert avg_num_neighbors(
        [Atoms("H2", positions=[(0, 0, 0), (0, 0, 0.74)]), Atoms("H")], 3.0
    ) == pytest.approx(2 / 3)


def test_one_atom_bulk_cell_is_a_structure_not_an_isolated_atom():
    from ase import Atoms
    from ase.build import bulk

    from potentials.data import split_isolated

    fcc = bulk("Cu", "fcc", a=3.6)  # one atom, periodic: neighbours at 2.5 Å
    boxed = Atoms("Cu", cell=[20, 20, 20], pbc=True)  # one atom, images 20 Å away
    free = Atoms("Au")  # no cell, no pbc
    tagged = bulk("Au", "fcc", a=4.08)
    tagged.info["config_type"] = "IsolatedAtom"
    slab_line = Atoms("Ni", cell=[2.5, 20, 20], pbc=[True, False, False])  # a chain: image 2.5 Å away
    rest, iso = split_isolated([fcc, boxed, free, tagged, slab_line])
    assert rest == [fcc, slab_line] and iso == [boxed, free, tagged]


def test_file_names_with_at_sign_are_not_file_at_index(tmp_path):
    """Host names such as Cu2@4Na end up in file names; ASE would read 'Cu2@4Na.extxyz' as file 'Cu2', index
    '4Na.extxyz'."""
    from ase.io import write

    from potentials.data import read_dataset
    from potentials.testing import emt_dataset

    frames = emt_dataset(3, seed=1, with_stress=False)
    path = tmp_path / "Cu2@4Na.extxyz"
    write(path, frames, format="extxyz")
    got = read_dataset(str(path))
    assert len(got) == 3 and np.allclose(got[2].positions, frames[2].positions)


def test_energy_weight_travels_from_extxyz_to_the_batch(tmp_path):
    """A replay frame's ``energy_weight`` (info key) survives extxyz and reaches the batch; 1 by default."""
    frames = []
    for k, w in enumerate((None, 0.0)):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.rattle(0.05, seed=k)
        a.calc = SinglePointCalculator(a, energy=-1.0 - k, forces=np.zeros((len(a), 3)))
        if w is not None:
            a.info[K.ENERGY_WEIGHT] = w
        frames.append(a)
    write(tmp_path / "f.extxyz", frames)
    back = read_dataset(tmp_path / "f.extxyz")
    batch = collate(back, ("Cu",), 3.0)
    assert batch[K.ENERGY_WEIGHT].tolist() == [1.0, 0.0]
    assert batch[K.ENERGY].tolist() == [-1.0, -2.0]
