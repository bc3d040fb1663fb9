"""Graphs, batching, dataset readers and normalisation statistics.

A *graph* is one structure as a dict of tensors (float64 geometry, see :mod:`potentials.keys`);
:func:`collate_graphs` concatenates graphs into a batch with one per-atom index ``batch``.
Neighbour lists come from vesin-torch (periodic, slab ``pbc=(T,T,F)`` and open systems).
Units: Å, eV, eV/Å, eV/Å^3.

Total energies are kept in float64 whatever the model dtype: acac energies are ~ -9400 eV and
float32 resolves only ~1 meV there.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from potentials import keys as K
from structures.common import InputError

GraphDict = dict[str, torch.Tensor]


# ---- species ---------------------------------------------------------------------------------
def species_of(atoms, elements: Sequence[str]) -> torch.Tensor:
    """(N,) long species indices of ``atoms`` in ``elements``; InputError names an unknown element."""
    index = {s: i for i, s in enumerate(elements)}
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - index.keys())
    if unknown:
        raise InputError(
            f"unknown element {', '.join(unknown)} in {atoms.get_chemical_formula()}; "
            f"the model knows {', '.join(elements)}"
        )
    return torch.tensor([index[s] for s in symbols], dtype=torch.long)


# ---- neighbour lists -------------------------------------------------------------------------
_NL_CACHE = threading.local()  # one vesin NeighborList per cutoff and thread (they keep work buffers)


def _neighbor_list(cutoff: float):
    from vesin_torch import NeighborList

    cache = _NL_CACHE.__dict__.setdefault("by_cutoff", {})
    nl = cache.get(cutoff)
    if nl is None:
        nl = cache[cutoff] = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True, n_threads=1)
    return nl


def neighbor_list(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full neighbour list within ``cutoff`` Å.

    positions (N, 3) float64, cell (3, 3) rows = lattice vectors, pbc (3,) bool.
    Returns edge_index (2, E) long (row 0 sender j, row 1 receiver i) and integer shifts (E, 3)
    with r_ij = pos[j] - pos[i] + shift @ cell.
    """
    if positions.shape[0] == 0:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3)
    pbc = torch.as_tensor(pbc, dtype=torch.bool)
    for d in range(3):
        if pbc[d] and float(torch.linalg.norm(cell[d])) < 1e-8:
            raise InputError(
                f"periodic direction {d} has a zero-length cell vector; give the cell or set pbc False"
            )
    problem = cell_problem(np.asarray(cell.detach().cpu(), dtype=np.float64), np.asarray(pbc.cpu()))
    if problem:
        raise InputError(problem)
    cell = _usable_cell(cell, pbc)
    if _too_many_bins(positions, cell, pbc, cutoff):  # vesin's cell list can die with SIGFPE there
        return _ase_neighbor_list(positions, cell, pbc, cutoff)
    try:
        i, j, shifts = _neighbor_list(cutoff).compute(
            positions.to(torch.float64), cell.to(torch.float64), pbc, quantities="ijS"
        )
    except RuntimeError as exc:  # vesin refuses e.g. a singular box with partial periodicity
        raise InputError(f"cannot build the neighbour list: {str(exc).splitlines()[0]}") from exc
    edge_index = torch.stack([j.to(torch.long), i.to(torch.long)])
    return edge_index, shifts.to(torch.float64)


def _usable_cell(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """``cell`` with its non-periodic rows replaced by an orthogonal completion when the cell is singular.

    Shifts along non-periodic directions are always zero, so those rows never enter r_ij; a slab whose
    third vector is zero or parallel to the others is thus still a valid input.
    """
    if bool(pbc.all()) or not bool(pbc.any()):
        return cell
    c = np.asarray(cell.detach().cpu(), dtype=np.float64)
    if abs(np.linalg.det(c)) > 1e-9 * max(float(np.abs(c).max()), 1.0) ** 3:
        return cell
    from ase.cell import Cell

    open_rows = ~np.asarray(pbc.cpu(), dtype=bool)
    c = c.copy()
    c[open_rows] = 0.0
    return torch.as_tensor(np.asarray(Cell(c).complete()), dtype=cell.dtype, device=cell.device)


def _too_many_bins(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> bool:
    """True when the structure spans more than MAX_BINS cut-offs (a huge cell or an atom far away)."""
    # numpy, not torch: tiny reductions in torch cost milliseconds each when the intra-op pool is contended
    pos = np.asarray(positions.detach().cpu(), dtype=np.float64)
    span = float(np.ptp(pos, axis=0).max()) if pos.shape[0] else 0.0
    lengths = np.linalg.norm(np.asarray(cell.detach().cpu(), dtype=np.float64), axis=1)
    for d in range(3):
        if bool(pbc[d]):
            span = max(span, float(lengths[d]))
    return span > MAX_BINS * float(cutoff)


def _ase_neighbor_list(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ASE's neighbour list (bins capped, so sparse giant systems are cheap); same convention as vesin."""
    from ase.cell import Cell
    from ase.neighborlist import primitive_neighbor_list

    cell_np = np.asarray(cell.detach().cpu(), dtype=np.float64)
    i, j, shifts = primitive_neighbor_list(
        "ijS",
        np.asarray(pbc.cpu(), dtype=bool),
        Cell(cell_np).complete(),
        np.asarray(positions.detach().cpu(), dtype=np.float64),
        float(cutoff),
    )
    order = np.lexsort((j, i))
    edge_index = torch.as_tensor(np.stack([j[order], i[order]]), dtype=torch.long)
    return edge_index, torch.as_tensor(shifts[order], dtype=torch.float64)


MAX_BINS = 20_000  # structures spanning more cut-off lengths than this use ASE's neighbour list
MIN_CELL_HEIGHT = 0.4  # Å, smallest spacing of lattice planes along a periodic direction
MIN_DISTANCE = 0.4  # Å, atoms closer than this (periodic images included) are refused by read_dataset


def cell_problem(cell: np.ndarray, pbc: np.ndarray) -> str | None:
    """Why a (3, 3) cell cannot be used with periodicity ``pbc`` (None when it can).

    Refused: non-finite entries, and periodic directions whose lattice planes are closer than
    :data:`MIN_CELL_HEIGHT` (a degenerate cell, or atoms on top of their own periodic images).
    """
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(cell).all():
        return "the cell has non-finite (NaN/inf) entries"
    periodic = [d for d in range(3) if bool(np.asarray(pbc).reshape(-1)[d])]
    for d in periodic:
        others = [cell[e] for e in periodic if e != d]
        a = cell[d]
        if len(others) == 0:
            height = float(np.linalg.norm(a))
        elif len(others) == 1:
            b = others[0]
            height = float(np.linalg.norm(np.cross(a, b)) / max(np.linalg.norm(b), 1e-300))
        else:
            area = np.linalg.norm(np.cross(others[0], others[1]))
            height = float(abs(np.linalg.det(cell)) / max(area, 1e-300))
        if not height >= MIN_CELL_HEIGHT:
            return (
                f"the cell is degenerate or too small along periodic direction {d} (lattice-plane spacing "
                f"{height:.3g} Å < {MIN_CELL_HEIGHT} Å): atoms would overlap their periodic images"
            )
    return None


def closest_pair(atoms, below: float) -> tuple[int, int, float] | None:
    """(i, j, distance Å) of the closest pair of atoms (periodic images included) nearer than ``below``."""
    if len(atoms) == 0:
        return None
    pos = torch.as_tensor(np.asarray(atoms.positions), dtype=torch.float64)
    cell = torch.as_tensor(np.asarray(atoms.cell.array), dtype=torch.float64)
    # a search radius of a few Å: vesin's cell list gets one bin per radius, and 0.4 Å bins over a slab's
    # vacuum cost milliseconds per structure
    edge_index, shifts = neighbor_list(pos, cell, torch.as_tensor(np.asarray(atoms.pbc)), max(below, 3.0))
    if edge_index.shape[1] == 0:
        return None
    j, i = edge_index
    d = (pos[j] - pos[i] + shifts @ cell).norm(dim=1)
    k = int(torch.argmin(d))
    if not float(d[k]) < below:
        return None
    return int(i[k]), int(j[k]), float(d[k])


# ---- labels ----------------------------------------------------------------------------------
def _calc_result(atoms, name: str):
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    return results.get(name)


def energy_label(atoms) -> float | None:
    """Total energy (eV) stored in ``atoms.info['energy']`` or on a SinglePointCalculator."""
    value = atoms.info.get(K.ENERGY, _calc_result(atoms, "energy"))
    return None if value is None else float(value)


def forces_label(atoms) -> np.ndarray | None:
    """Forces (N, 3) eV/Å stored in ``atoms.arrays['forces']`` or on a SinglePointCalculator."""
    value = atoms.arrays.get(K.FORCES)
    if value is None:
        value = _calc_result(atoms, "forces")
    return None if value is None else np.asarray(value, dtype=np.float64).reshape(-1, 3)


def stress_label(atoms) -> np.ndarray | None:
    """Stress (3, 3) eV/Å^3 (ASE sign convention) from info or calculator, Voigt or full."""
    value = atoms.info.get(K.STRESS)
    if value is None:
        value = _calc_result(atoms, "stress")
    if value is None:
        return None
    return _full_stress(value)


def _full_stress(value) -> np.ndarray:
    from ase.stress import voigt_6_to_full_3x3_stress

    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 6:
        return voigt_6_to_full_3x3_stress(arr)
    if arr.size == 9:
        return arr.reshape(3, 3)
    raise InputError(f"stress has {arr.size} components; expected 6 (Voigt) or 9")


# ---- graphs and batches ----------------------------------------------------------------------
def atoms_to_graph(atoms, elements: Sequence[str], cutoff: float, with_labels: bool = True) -> GraphDict:
    """One structure as a graph dict (float64 geometry, unbatched: ``cell`` is (3, 3), ``pbc`` (3,)).

    Labels (``energy`` () float64, ``forces`` (N, 3), ``stress`` (3, 3), ``weight`` (),
    ``energy_weight`` ()) are added when ``with_labels`` and present on the atoms (weights default to 1).
    """
    pos = torch.as_tensor(np.asarray(atoms.positions), dtype=torch.float64)
    if not torch.isfinite(pos).all():
        raise InputError(f"non-finite (NaN/inf) positions in {atoms.get_chemical_formula()}")
    pbc = torch.as_tensor(np.asarray(atoms.pbc), dtype=torch.bool)
    cell = torch.as_tensor(np.asarray(atoms.cell.array), dtype=torch.float64)
    species = species_of(atoms, elements)
    edge_index, shifts = neighbor_list(pos, cell, pbc, cutoff)
    graph: GraphDict = {
        K.POSITIONS: pos,
        K.ATOMIC_NUMBERS: torch.as_tensor(np.asarray(atoms.numbers), dtype=torch.long),
        K.SPECIES: species,
        K.CELL: cell,
        K.PBC: pbc,
        K.EDGE_INDEX: edge_index,
        K.EDGE_CELL_SHIFT: shifts,
    }
    if with_labels:
        energy = energy_label(atoms)
        if energy is not None:
            graph[K.ENERGY] = torch.tensor(energy, dtype=torch.float64)
        forces = forces_label(atoms)
        if forces is not None:
            graph[K.FORCES] = torch.as_tensor(forces)
        stress = stress_label(atoms)
        if stress is not None:
            graph[K.STRESS] = torch.as_tensor(stress)
        for key in (K.WEIGHT, K.ENERGY_WEIGHT):
            graph[key] = torch.tensor(float(atoms.info.get(key, 1.0)), dtype=torch.float64)
        if K.SHIFTED_ENERGY_WEIGHT in atoms.info:
            w = float(atoms.info[K.SHIFTED_ENERGY_WEIGHT])
            graph[K.SHIFTED_ENERGY_WEIGHT] = torch.tensor(w, dtype=torch.float64)
    return graph


def all_pairs_graph(graph: GraphDict) -> GraphDict:
    """The graph of an open (non-periodic) structure with every ordered pair i != j as an edge.

    Pairs beyond the cutoff get a zero radial envelope, so the model's energy and forces are those of the
    cutoff neighbour list; what changes is that the edge count depends only on the atom count. Batches of
    same-size molecules then have static shapes, which a captured CUDA graph needs
    (benchmarks/gpu_graph_train.py). Edges E = N (N - 1), (2, E) long; shifts (E, 3) zeros.
    """
    if bool(graph[K.PBC].any()):
        raise InputError("all_pairs_graph is for open structures; periodic cells need the neighbour list")
    n = graph[K.POSITIONS].shape[0]
    sender, receiver = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = sender != receiver
    edge_index = torch.stack([sender[keep], receiver[keep]])
    shifts = torch.zeros(edge_index.shape[1], 3, dtype=graph[K.EDGE_CELL_SHIFT].dtype)
    return {**graph, K.EDGE_INDEX: edge_index, K.EDGE_CELL_SHIFT: shifts}


def collate_graphs(
    graphs: Sequence[GraphDict],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Concatenate graphs into one batch following :mod:`potentials.keys`.

    Floating tensors are cast to ``dtype`` except ``energy`` which stays float64. A label is kept only
    when every graph has it.
    """
    if not graphs:
        raise InputError("cannot build a batch from zero structures")
    dtype = dtype or torch.get_default_dtype()
    n_atoms = torch.tensor([g[K.POSITIONS].shape[0] for g in graphs], dtype=torch.long)
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    batch: dict[str, torch.Tensor] = {
        K.POSITIONS: torch.cat([g[K.POSITIONS] for g in graphs]).to(dtype),
        K.ATOMIC_NUMBERS: torch.cat([g[K.ATOMIC_NUMBERS] for g in graphs]),
        K.SPECIES: torch.cat([g[K.SPECIES] for g in graphs]),
        K.BATCH: torch.repeat_interleave(torch.arange(len(graphs)), n_atoms),
        K.NUM_ATOMS: n_atoms,
        K.CELL: torch.stack([g[K.CELL] for g in graphs]).to(dtype),
        K.PBC: torch.stack([g[K.PBC] for g in graphs]),
        K.EDGE_INDEX: torch.cat([g[K.EDGE_INDEX] + off for g, off in zip(graphs, offsets.tolist())], dim=1),
        K.EDGE_CELL_SHIFT: torch.cat([g[K.EDGE_CELL_SHIFT] for g in graphs]).to(dtype),
    }
    for key in (K.ENERGY, K.WEIGHT, K.ENERGY_WEIGHT):
        if all(key in g for g in graphs):
            batch[key] = torch.stack([g[key] for g in graphs]).to(torch.float64)
    if all(K.FORCES in g for g in graphs):
        batch[K.FORCES] = torch.cat([g[K.FORCES] for g in graphs]).to(dtype)
    if all(K.STRESS in g for g in graphs):
        batch[K.STRESS] = torch.stack([g[K.STRESS] for g in graphs]).to(dtype)
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch


def collate(
    atoms_list: Sequence,
    elements: Sequence[str],
    cutoff: float,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    with_labels: bool = True,
) -> dict[str, torch.Tensor]:
    """Batch of ``atoms_list`` (neighbour lists within ``cutoff`` Å) as a dict of tensors, see keys.py."""
    graphs = [atoms_to_graph(a, elements, cutoff, with_labels=with_labels) for a in atoms_list]
    return collate_graphs(graphs, dtype=dtype, device=device)


# ---- readers ---------------------------------------------------------------------------------
def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"data file is empty: {path}")
    return path


def _read_db(path: Path, index: str | int | slice) -> list:
    """Rows of an ASE database with key-value pairs in ``info`` and per-atom data in ``arrays``."""
    import sqlite3

    from ase.db import connect
    from ase.io.formats import string2index

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # look first: ase.db would add its tables
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    if "systems" not in tables:
        raise InputError(f"{path} is an SQLite file but not an ASE database (no 'systems' table)")
    frames = []
    for row in connect(str(path), use_lock_file=False).select():
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        for key, value in (row.get("data") or {}).items():
            value = np.asarray(value)
            if value.ndim >= 1 and value.shape[0] == len(atoms):
                atoms.arrays[key] = value
            else:
                atoms.info[key] = value
        frames.append(atoms)
    selected = frames[string2index(index) if isinstance(index, str) else index]
    return selected if isinstance(selected, list) else [selected]


def _read_frames(path: Path, index: str | int | slice) -> list:
    from ase.io import read

    suffix = path.suffix.lower()
    try:
        if suffix == ".db":
            frames = _read_db(path, index)
        else:
            frames = read(
                path,
                index=index,
                format="extxyz" if suffix in (".xyz", ".extxyz") else None,
                do_not_split_by_at_sign=True,  # "Cu2@4Na.extxyz" is a file name, not file@index
            )
    except InputError:
        raise
    except (StopIteration, IndexError) as exc:
        raise InputError(f"no structure at index {index!r} in {path}") from exc
    except KeyError as exc:  # e.g. an unknown chemical symbol in an extxyz file
        raise InputError(f"cannot read {path}: unknown chemical symbol or key {exc}") from exc
    except Exception as exc:  # ase raises many types for malformed files
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError(f"no structures in {path} (index {index!r})")
    return frames


def read_dataset(
    path: str | os.PathLike,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str | None = None,
    index: str | int | slice = ":",
    min_distance: float = MIN_DISTANCE,
) -> list:
    """Read labelled structures (extxyz or ASE .db) with labels normalised for :func:`collate`.

    Whatever the source keys (info/arrays or a SinglePointCalculator), the labels end up in
    ``atoms.info['energy']`` (eV), ``atoms.arrays['forces']`` (eV/Å) and ``atoms.info['stress']``
    (3, 3) eV/Å^3. Raises InputError, naming the file and the structure, for a missing/empty/malformed
    file, missing or malformed labels, non-finite positions, energies or forces, a degenerate or
    non-finite cell, and atoms closer than ``min_distance`` Å (periodic images included).
    """
    path = _check_path(path)
    frames = _read_frames(path, index)
    for n, atoms in enumerate(frames):
        where = f"structure {n} of {path}"
        if len(atoms) == 0:
            raise InputError(f"{where} has no atoms")
        if not np.isfinite(atoms.positions).all():
            raise InputError(f"{where} has non-finite (NaN/inf) positions")
        problem = cell_problem(atoms.cell.array, atoms.pbc)
        if problem:
            raise InputError(f"{where}: {problem}")
        try:
            pair = closest_pair(atoms, min_distance) if min_distance > 0 else None
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        if pair is not None:
            i, j, d = pair
            raise InputError(
                f"{where}: atoms {i} and {j} overlap ({d:.3g} Å apart, minimum {min_distance} Å)"
            )
        calc_results = dict(getattr(atoms.calc, "results", None) or {})
        energy = atoms.info.get(energy_key, calc_results.get(energy_key))
        if energy is None:
            raise InputError(f"energy key '{energy_key}' missing in {where}; pass --energy-key")
        try:
            energy = float(np.asarray(energy, dtype=np.float64).item())
        except (TypeError, ValueError) as exc:
            shown = repr(energy)[:40]
            raise InputError(f"energy '{energy_key}' of {where} is not one number ({shown})") from exc
        forces = atoms.arrays.get(forces_key, calc_results.get(forces_key))
        if forces is None and len(atoms) == 1:
            forces = np.zeros((1, 3))  # an isolated atom feels no force
        if forces is None:
            raise InputError(f"forces key '{forces_key}' missing in {where}; pass --forces-key")
        try:
            forces = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
        except (TypeError, ValueError) as exc:
            shape = np.shape(forces) if not isinstance(forces, str) else "text"
            raise InputError(
                f"forces '{forces_key}' of {where} have shape {shape}; expected ({len(atoms)}, 3) numbers"
            ) from exc
        stress = None
        if stress_key is not None:
            stress = atoms.info.get(stress_key, calc_results.get(stress_key))
            if stress is None:
                raise InputError(f"stress key '{stress_key}' missing in {where}")
            try:
                stress = _full_stress(stress)
            except (InputError, TypeError, ValueError) as exc:
                raise InputError(f"stress '{stress_key}' of {where}: {exc}") from exc
        atoms.calc = None
        atoms.info[K.ENERGY] = energy
        atoms.arrays[K.FORCES] = forces
        if stress is not None:
            atoms.info[K.STRESS] = stress
        if not (math.isfinite(energy) and np.isfinite(forces).all()):
            raise InputError(f"non-finite energy or forces in {where}")
        if stress is not None and not np.isfinite(stress).all():
            raise InputError(f"non-finite stress in {where}")
    return frames


#: a single-atom frame counts as an isolated atom only when no periodic image is closer than this (Å)
ISOLATED_MIN_IMAGE_DISTANCE = 8.0


#: what ``replay_frames(energies=...)`` replays the energy of: nothing, the stability references (bulk
#: metals and metal-free pockets, ``ref_kind`` / ``frame`` bulk or pocket), or every replayed frame
REPLAY_ENERGIES = ("none", "references", "all")


def _is_reference(atoms) -> bool:
    return any(str(atoms.info.get(k, "")) in ("bulk", "pocket") for k in ("ref_kind", "frame"))


def replay_frames(
    path: str | os.PathLike,
    n: int,
    seed: int = 0,
    option: str = "--replay",
    energies: str = "none",
    energy_weight: float = 1.0,
    weight: float = 1.0,
    **keys,
) -> list:
    """``n`` seeded structures of ``path`` (isolated atoms and H2 left out) marked ``energy_weight`` 0:
    their forces train, their energies (on another code's reference, e.g. SevenNet-0 frames while
    fine-tuning on DFT) do not. Replaying them keeps a fine-tuned network near its pre-training forces.

    ``energies="references"`` also replays the energies of the bulk-metal and pocket frames (all of them,
    on top of the ``n`` drawn from the rest; ``"all"``: of every frame), marked
    ``K.SHIFTED_ENERGY_WEIGHT`` = ``energy_weight``: the trainer moves them by its per-element E0 re-fit,
    so formation energies, which no DFT label covers, keep the pre-training reference's values.

    ``weight``: the per-structure loss weight ``K.WEIGHT`` of every replayed frame (forces and any replayed
    energy), relative to the fine-tuning labels' 1: below 1 the replayed teacher's forces pull less against
    the labels' where the two disagree (e.g. the metal–metal forces of DFT and SevenNet-0, docs/dft.md)."""
    if n < 1:
        raise InputError(f"{option}-n {n} is not allowed; allowed: >= 1")
    if energies not in REPLAY_ENERGIES:
        raise InputError(
            f"{option}-energies {energies!r} is not allowed; allowed: {', '.join(REPLAY_ENERGIES)}"
        )
    if energies != "none" and not energy_weight > 0:
        raise InputError(f"{option}-energy-weight {energy_weight} is not allowed; allowed: > 0")
    if not weight > 0:
        raise InputError(f"{option}-weight {weight} is not allowed; allowed: > 0")
    structures, _ = split_isolated(read_dataset(path, **keys))
    frames = [a for a in structures if len(a) > 2 or bool(np.asarray(a.pbc).any())]  # no H2
    if not frames:
        raise InputError(f"{option} {path}: no structure to replay (only isolated atoms or H2)")
    refs = [a for a in frames if _is_reference(a)] if energies == "references" else []
    ref_ids = {id(a) for a in refs}
    rest = [a for a in frames if id(a) not in ref_ids]  # drawn from, as before when no reference
    idx = np.sort(np.random.default_rng(seed).choice(len(rest), min(n, len(rest)), replace=False))
    drawn = [rest[i] for i in idx]
    for a in refs + drawn:
        a.info[K.ENERGY_WEIGHT] = 0.0
        if weight != 1.0:
            a.info[K.WEIGHT] = float(weight)
    for a in refs + (drawn if energies == "all" else []):
        a.info[K.SHIFTED_ENERGY_WEIGHT] = float(energy_weight)
    return refs + drawn


def _is_isolated_atom(atoms) -> bool:
    """config_type IsolatedAtom, or one atom with no periodic image within ISOLATED_MIN_IMAGE_DISTANCE.

    A one-atom *periodic* cell (bcc/fcc bulk metal) is a bulk structure, not an isolated atom: treating it
    as one silently dropped every such frame from training (found in session 3: bulk Ag was 10 eV/atom off).
    """
    config = str(atoms.info.get("config_type", "")).lower().replace("_", "")
    if config == "isolatedatom":
        return True
    if len(atoms) != 1:
        return False
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        return True
    cell = np.asarray(atoms.cell)[pbc]
    shifts = np.array(np.meshgrid(*[[-1, 0, 1]] * len(cell))).reshape(len(cell), -1).T
    shifts = shifts[np.any(shifts != 0, axis=1)]
    return float(np.linalg.norm(shifts @ cell, axis=1).min()) >= ISOLATED_MIN_IMAGE_DISTANCE


def read_e0s(path: str | os.PathLike, energy_key: str = "energy") -> dict[str, float]:
    """Isolated-atom energies (eV) from an extxyz of single-atom frames / config_type=IsolatedAtom."""
    path = _check_path(path)
    e0s: dict[str, float] = {}
    for atoms in _read_frames(path, ":"):
        if not _is_isolated_atom(atoms) or len(atoms) != 1:
            continue
        energy = atoms.info.get(energy_key, _calc_result(atoms, "energy") if energy_key == "energy" else None)
        if energy is None:
            raise InputError(f"energy key '{energy_key}' missing for isolated {atoms[0].symbol} in {path}")
        e0s[atoms[0].symbol] = float(energy)
    if not e0s:
        raise InputError(f"no isolated-atom (single-atom) frames in {path}")
    return e0s


def split_isolated(atoms_list: Sequence) -> tuple[list, list]:
    """(structures, isolated atoms): frames with config_type IsolatedAtom or one atom go to the second list."""
    rest, iso = [], []
    for atoms in atoms_list:
        (iso if _is_isolated_atom(atoms) else rest).append(atoms)
    return rest, iso


# ---- statistics ------------------------------------------------------------------------------
def composition_matrix(atoms_list: Sequence, elements: Sequence[str]) -> np.ndarray:
    """(G, S) counts of each element per structure."""
    index = {s: i for i, s in enumerate(elements)}
    counts = np.zeros((len(atoms_list), len(elements)))
    for g, atoms in enumerate(atoms_list):
        for s in atoms.get_chemical_symbols():
            if s not in index:
                raise InputError(f"unknown element {s}; the model knows {', '.join(elements)}")
            counts[g, index[s]] += 1
    return counts


def fit_e0s(atoms_list: Sequence, elements: Sequence[str]) -> dict[str, float]:
    """Per-element reference energies (eV) by least squares of total energy vs composition.

    Elements absent from the data get 0. With a single composition the fit is under-determined and
    the minimum-norm solution is returned (then the model's shift absorbs the rest).
    """
    energies = np.array([_require_energy(a) for a in atoms_list])
    return dict(zip(elements, per_element_fit(atoms_list, elements, energies).tolist()))


def per_element_fit(atoms_list: Sequence, elements: Sequence[str], values: np.ndarray) -> np.ndarray:
    """Per-element constants (same order as ``elements``) whose sums over each structure's atoms best fit
    ``values`` (least squares, minimum norm when under-determined); 0 for elements absent from the data."""
    counts = composition_matrix(atoms_list, elements)
    present = counts.sum(0) > 0
    out = np.zeros(len(elements))
    if present.any():
        out[present] = np.linalg.lstsq(counts[:, present], np.asarray(values, float), rcond=None)[0]
    return out


def _require_energy(atoms) -> float:
    energy = energy_label(atoms)
    if energy is None:
        raise InputError(f"structure {atoms.get_chemical_formula()} has no energy label")
    return energy


def avg_num_neighbors(atoms_list: Iterable, cutoff: float) -> float:
    """Mean number of neighbours within ``cutoff`` Å per atom (normalises message sums)."""
    edges = atoms = 0
    for a in atoms_list:
        pos = torch.as_tensor(np.asarray(a.positions), dtype=torch.float64)
        edge_index, _ = neighbor_list(
            pos, torch.as_tensor(a.cell.array, dtype=torch.float64), torch.as_tensor(a.pbc), cutoff
        )
        edges += edge_index.shape[1]
        atoms += len(a)
    return edges / max(atoms, 1)


def scaling_statistics(
    atoms_list: Sequence, elements: Sequence[str], e0s: dict[str, float]
) -> dict[str, float]:
    """Mean/std of per-atom interaction energies (E - sum E0)/N (eV/atom) and force RMS/std (eV/Å)."""
    counts = composition_matrix(atoms_list, elements)
    e0 = np.array([e0s.get(s, 0.0) for s in elements])
    energies = np.array([_require_energy(a) for a in atoms_list])
    per_atom = (energies - counts @ e0) / counts.sum(1)
    forces = [forces_label(a) for a in atoms_list]
    forces = (
        np.concatenate([f for f in forces if f is not None]) if any(f is not None for f in forces) else None
    )
    return {
        "energy_per_atom_mean": float(per_atom.mean()),
        "energy_per_atom_std": float(per_atom.std()),
        "forces_rms": float(np.sqrt((forces**2).mean())) if forces is not None else 1.0,
        "forces_std": float(forces.std()) if forces is not None else 1.0,
    }
