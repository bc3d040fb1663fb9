"""DFT hand-off: inputs for VASP (pymatgen), Quantum ESPRESSO and GPAW (ASE) or plain extxyz.

For each selected candidate three states are written together, from the model-relaxed geometries of the
results store: the bare host, host+H* at the best site, and the H2 reference; with ``--site-classes`` also
host+H* at the model's best site of each other binding class (H on a metal, N or C), because the pre-trained
model ranks sites of different classes wrongly (DFT put H on the metal of Ir2@2Nb and Ru2@5Na ~1 eV below the
N/C site the model chose): the host's ΔGH* is then DFT's minimum over those sites. Layout under ``--out``::

    manifest.json                  every folder -> database row id, name, kind, files, settings
    <host>/host/                   e.g. Fe2@3Nb/host/
    <host>/H@<site>/               e.g. Fe2@3Nb/H@top_M1/
    H2/

Per folder: vasp -> POSCAR, INCAR, KPOINTS, POTCAR.spec (POTCAR symbols; POTCARs are licensed, not shipped);
qe -> pw.in; gpaw -> structure.xyz + run_gpaw.py (``python run_gpaw.py``); extxyz -> structure.extxyz.

Physics follow a labelling preset of :mod:`screening.labelling` (``pw500``: PBE, 500 eV, k density 3.5/Å⁻¹,
Fermi-Dirac 0.1 eV), spin-polarised with initial moments from :data:`structures.metals.INITIAL_MAGMOM`, and a
dipole correction along the vacuum axis of slabs (none for the H2 box). A non-empty ``--out`` is never
overwritten without ``force`` (with it, the exported entries replace same-named ones, other files stay); the
export is built in a temporary sibling folder and moved into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from structures.common import InputError, atomic_write_text

FORMATS = ("vasp", "qe", "gpaw", "extxyz")
TASKS = ("relax", "scf")
RY = 13.605693122994  # eV per Rydberg
BOHR = 0.529177210903  # Å


@dataclass(frozen=True)
class ExportConfig:
    """What the written inputs ask the DFT code to do.

    preset: labelling preset (ecut eV, k-point density, smearing eV, xc). task: relax | scf. fmax: eV/Å, force
    criterion of relaxations (VASP EDIFFG = −fmax). max_steps: ionic steps. ediff: eV, SCF criterion (VASP).
    qe_ecutwfc: Ry, wave-function cutoff for QE (PAW/USPP need more than the GPAW plane-wave cutoff);
    qe_dual: ecutrho / ecutwfc. pseudo: QE pseudopotential file pattern ({symbol} is replaced).
    """

    preset: str = "pw500"
    task: str = "relax"
    fmax: float = 0.03
    max_steps: int = 200
    ediff: float = 1e-5
    qe_ecutwfc: float = 45.0
    qe_dual: float = 8.0
    pseudo: str = "{symbol}.pbe.UPF"


PRESETS: dict[str, ExportConfig] = {
    "relax": ExportConfig(),
    "scf": ExportConfig(task="scf"),
    "tight": ExportConfig(preset="pw500k4", fmax=0.02, ediff=1e-6, qe_ecutwfc=60.0),
}


@dataclass
class State:
    """One structure to hand off. kind: host | host+H | H2; row_id: its row in the results store (None when
    the H2 reference was not stored and is rebuilt)."""

    kind: str
    name: str
    atoms: Any
    row_id: int | None
    folder: str


@dataclass
class Candidate:
    """A selected host: its ΔG row and the three states."""

    host: str
    dg_row_id: int
    dg: float
    dg_std: float
    best_site: str
    correction: float
    states: list[State] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# reading candidates from the store
# ----------------------------------------------------------------------------------------------------------
def load_candidates(db_path: str | os.PathLike, selected) -> list[Candidate]:
    """Host, host+H* (best site) and H2 of each selected ΔG row, as relaxed by the model.

    InputError when a relaxed host or H* row is missing (e.g. a results store from another code version).
    """
    import ase.db

    from screening.dgh import h2_molecule
    from screening.store import load_structures
    from structures import keys as SK

    db = ase.db.connect(str(db_path), type="db")
    out: list[Candidate] = []
    h2_cache: dict[tuple[str, str], State] = {}
    for _, r in selected.iterrows():
        mh, rh = str(r.get("structure_model_hash") or r["model_hash"]), str(r["relax_hash"])
        rows = load_structures(db_path, state="relaxed", host=str(r["host"]), model_hash=mh, relax_hash=rh)
        if rows.empty:
            raise InputError(
                f"no relaxed structures of host '{r['host']}' (model {mh}) in '{db_path}'; "
                f"allowed: hosts relaxed by `screen run` into this database"
            )
        site_col = rows["site"].fillna("").astype(str) if "site" in rows else rows["id"].map(lambda _: "")
        host_rows = rows[site_col == ""]
        h_rows = rows[site_col == str(r["best_site"])]
        if host_rows.empty or h_rows.empty:
            raise InputError(
                f"host '{r['host']}': relaxed {'host' if host_rows.empty else 'H@' + str(r['best_site'])} "
                f"state missing in '{db_path}'; allowed: a complete `screen run` database"
            )
        cand = Candidate(
            host=str(r["host"]),
            dg_row_id=int(r["id"]),
            dg=float(r["dg"]),
            dg_std=float(r["dg_std"]),
            best_site=str(r["best_site"]),
            correction=float(r.get("correction", 0.24)),
        )
        hr, sr = host_rows.iloc[-1], h_rows.iloc[-1]
        cand.states.append(State("host", str(hr["name"]), hr["atoms"], int(hr["id"]), f"{cand.host}/host"))
        cand.states.append(
            State("host+H", str(sr["name"]), sr["atoms"], int(sr["id"]), f"{cand.host}/H@{cand.best_site}")
        )
        if (mh, rh) not in h2_cache:
            ref = [row for row in db.select(kind="reference", ref_kind="h2", model_hash=mh, relax_hash=rh)]
            if ref:
                atoms = ref[-1].toatoms(add_additional_information=False)
                atoms.info[SK.NAME] = "H2"
                h2_cache[(mh, rh)] = State("H2", "H2", atoms, int(ref[-1].id), "H2")
            else:
                h2_cache[(mh, rh)] = State("H2", "H2", h2_molecule(), None, "H2")
        cand.states.append(h2_cache[(mh, rh)])
        out.append(cand)
    return out


# ----------------------------------------------------------------------------------------------------------
# physics shared by the writers
# ----------------------------------------------------------------------------------------------------------
def initial_moments(atoms) -> np.ndarray:
    """μB per atom: INITIAL_MAGMOM for the screened metals, 0 for C, N, H (and anything else)."""
    from structures.metals import INITIAL_MAGMOM

    return np.array([INITIAL_MAGMOM.get(s, 0.0) for s in atoms.get_chemical_symbols()], dtype=float)


def dipole_axis(atoms) -> int | None:
    """Index of the single vacuum axis of a slab (dipole correction along it); None for bulk or molecules."""
    from screening.labelling import vacuum_axes

    vac = vacuum_axes(atoms)
    return vac.index(True) if sum(vac) == 1 else None


def _prepare(atoms):
    """A clean copy: no calculator or constraints, initial moments from the metals."""
    a = atoms.copy()
    a.calc = None
    a.set_constraint()
    a.set_initial_magnetic_moments(initial_moments(a))
    return a


def gpaw_parameters(atoms, preset: str) -> dict[str, Any]:
    """GPAW keyword arguments of the first SCF attempt of ``screening.labelling``'s ``gpaw`` engine
    (``preset``),
    without ``txt``. JSON-able; a test compares them with the engine's so the two cannot drift apart."""
    from screening.labelling import get_engine, get_preset, gpaw_mixer, kpts_for

    s = get_preset(preset)
    attempt = get_engine("gpaw").attempts(s)[0]
    params: dict[str, Any] = {
        "mode": {"name": "pw", "ecut": s.ecut},
        "xc": s.xc,
        "kpts": {"size": list(kpts_for(atoms, s)), "gamma": True},
        "occupations": {"name": "fermi-dirac", "width": s.smearing},
        "spinpol": s.spinpol,
        "mixer": gpaw_mixer(attempt, s),
        "maxiter": s.maxiter,
        "convergence": {"eigenstates": s.scf_eigenstates},
    }
    return params


# ----------------------------------------------------------------------------------------------------------
# writers (each writes into an existing folder and returns the file names)
# ----------------------------------------------------------------------------------------------------------
def species_order(atoms) -> np.ndarray:
    """Permutation grouping atoms by element (C, N, other framework, metals, H last), stable within each."""
    from structures.metals import METALS

    def group(sym: str) -> tuple[int, str]:
        if sym == "H":
            return (3, "")
        if sym in METALS:
            return (2, "")
        return (0 if sym == "C" else 1, sym)

    syms = atoms.get_chemical_symbols()
    first = {s: i for i, s in reversed(list(enumerate(syms)))}
    return np.array(sorted(range(len(syms)), key=lambda i: (*group(syms[i]), first[syms[i]], i)), dtype=int)


def write_vasp(atoms, folder: Path, config: ExportConfig, title: str) -> dict[str, Any]:
    """POSCAR, INCAR, KPOINTS and POTCAR.spec (pymatgen objects); atoms sorted by species (order in the
    manifest: ``atom_order[i]`` is the store index of POSCAR atom i)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp.inputs import Incar, Kpoints, Poscar
    from pymatgen.io.vasp.sets import MPRelaxSet

    from screening.labelling import get_preset, kpts_for

    s = get_preset(config.preset)
    order = species_order(atoms)
    a = atoms[order]
    mom = initial_moments(a)
    structure = AseAtomsAdaptor.get_structure(a)
    poscar = Poscar(structure, comment=title[:80])
    incar: dict[str, Any] = {
        "SYSTEM": title[:40],
        "PREC": "Accurate",
        "ENCUT": s.ecut,
        "GGA": "PE",
        "ISPIN": 2 if s.spinpol else 1,
        "ISMEAR": -1,
        "SIGMA": s.smearing,
        "EDIFF": config.ediff,
        "NELM": s.maxiter,
        "ALGO": "Normal",
        "LREAL": "Auto",
        "LASPH": True,
        "LORBIT": 11,
        "LWAVE": False,
        "LCHARG": False,
        "ISYM": 0,
    }
    if s.spinpol:
        incar["MAGMOM"] = [float(m) for m in mom]
    if config.task == "relax":
        incar.update({"IBRION": 2, "NSW": config.max_steps, "ISIF": 2, "EDIFFG": -abs(config.fmax)})
    else:
        incar.update({"IBRION": -1, "NSW": 0})
    axis = dipole_axis(a)
    if axis is not None:
        com = np.linalg.solve(a.cell.array.T, a.get_center_of_mass())
        incar.update({"LDIPOL": True, "IDIPOL": axis + 1, "DIPOL": [float(x % 1.0) for x in com]})
    kpts = kpts_for(a, s)
    potcar_map = MPRelaxSet.CONFIG["POTCAR"]
    missing = [e for e in poscar.site_symbols if e not in potcar_map]
    if missing:
        raise InputError(
            f"no POTCAR symbol known for {','.join(missing)}; "
            f"allowed elements: {', '.join(sorted(potcar_map))}"
        )
    atomic_write_text(folder / "POSCAR", poscar.get_str(significant_figures=10))
    atomic_write_text(folder / "INCAR", Incar(incar).get_str(sort_keys=False, pretty=True).rstrip() + "\n")
    atomic_write_text(folder / "KPOINTS", str(Kpoints.gamma_automatic(kpts)))
    atomic_write_text(folder / "POTCAR.spec", "\n".join(potcar_map[e] for e in poscar.site_symbols) + "\n")
    return {
        "files": ["POSCAR", "INCAR", "KPOINTS", "POTCAR.spec"],
        "atom_order": order.tolist(),
        "kpts": list(kpts),
        "dipole_axis": axis,
    }


def write_qe(atoms, folder: Path, config: ExportConfig, title: str) -> dict[str, Any]:
    """``pw.in`` through ASE's espresso-in writer: spin-polarised, starting_magnetization from the metals'
    moments (ASE's convention), Fermi-Dirac smearing, dipole correction (tefield/dipfield) for slabs."""
    from ase.io import write

    from screening.labelling import get_preset, kpts_for

    s = get_preset(config.preset)
    a = _prepare(atoms)
    kpts = kpts_for(a, s)
    control: dict[str, Any] = {
        "calculation": config.task,
        "prefix": "pwscf",
        "pseudo_dir": "./pseudo",
        "outdir": "./tmp",
        "tprnfor": True,
        "title": title[:70],
    }
    system: dict[str, Any] = {
        "ecutwfc": config.qe_ecutwfc,
        "ecutrho": config.qe_ecutwfc * config.qe_dual,
        "occupations": "smearing",
        "smearing": "fd",
        "degauss": s.smearing / RY,
        "nspin": 2 if s.spinpol else 1,
    }
    electrons: dict[str, Any] = {
        "conv_thr": config.ediff / RY,
        "mixing_beta": 0.2,
        "electron_maxstep": s.maxiter,
    }
    data: dict[str, Any] = {"control": control, "system": system, "electrons": electrons}
    if config.task == "relax":
        control.update({"nstep": config.max_steps, "forc_conv_thr": config.fmax / (RY / BOHR)})
        data["ions"] = {"ion_dynamics": "bfgs"}
    axis = dipole_axis(a)
    if axis is not None:
        frac = a.get_scaled_positions(wrap=True)[:, axis]
        centre = float(np.angle(np.exp(2j * np.pi * frac).mean()) / (2 * np.pi)) % 1.0  # periodic mean
        control.update({"tefield": True, "dipfield": True})
        system.update({"edir": axis + 1, "emaxpos": (centre + 0.45) % 1.0, "eopreg": 0.05, "eamp": 0.0})
    pseudos = {sym: config.pseudo.format(symbol=sym) for sym in sorted(set(a.get_chemical_symbols()))}
    path = folder / "pw.in"
    import io

    buf = io.StringIO()
    if not s.spinpol:
        a.set_initial_magnetic_moments(None)
    write(buf, a, format="espresso-in", input_data=data, pseudopotentials=pseudos, kpts=tuple(kpts))
    atomic_write_text(path, buf.getvalue())
    return {"files": ["pw.in"], "kpts": list(kpts), "pseudopotentials": pseudos, "dipole_axis": axis}


_GPAW_SCRIPT = '''#!/usr/bin/env python
"""GPAW {task} of {name} ({kind}); written by `screen export` from {db} (row {row_id}).

Run:  python run_gpaw.py            (needs GPAW: pip install gpaw && gpaw install-data)
      python run_gpaw.py --dry-run  (print the structure and settings, no GPAW needed)
Writes gpaw.txt, result.json (energy eV, magnetic moment muB, forces eV/Ang){traj}.
"""
import json
import sys
from pathlib import Path

from ase.io import read

HERE = Path(__file__).resolve().parent
PARAMS = {params}
TASK = "{task}"
FMAX = {fmax}  # eV/Ang
STEPS = {steps}
DIPOLE_AXIS = {axis}  # vacuum axis of a slab: dipole layer along it (GPAW needs that axis non-periodic)

atoms = read(HERE / "structure.xyz")
if DIPOLE_AXIS is not None:
    pbc = list(atoms.pbc)
    pbc[DIPOLE_AXIS] = False
    atoms.pbc = pbc
    PARAMS["poissonsolver"] = {{"dipolelayer": "xy"}}
if "--dry-run" in sys.argv:
    print(json.dumps({{"formula": atoms.get_chemical_formula(), "natoms": len(atoms),
                      "pbc": atoms.pbc.tolist(), "magmoms": atoms.get_initial_magnetic_moments().tolist(),
                      "task": TASK, "params": PARAMS}}))
    sys.exit(0)

from gpaw import GPAW  # noqa: E402

atoms.calc = GPAW(txt=str(HERE / "gpaw.txt"), **PARAMS)
if TASK == "relax":
    from ase.optimize import BFGS

    opt = BFGS(atoms, trajectory=str(HERE / "relax.traj"), logfile=str(HERE / "relax.log"))
    opt.run(fmax=FMAX, steps=STEPS)
result = {{"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist()}}
try:
    result["magmom"] = float(atoms.calc.get_magnetic_moment())
except Exception:
    pass
(HERE / "result.json").write_text(json.dumps(result, indent=1))
print(f"{name}: E = {{result['energy']:.6f}} eV")
'''


def write_gpaw(
    atoms, folder: Path, config: ExportConfig, title: str, db: str = "", row_id: Any = None, kind: str = ""
) -> dict[str, Any]:
    """``structure.xyz`` (extxyz, initial moments) and ``run_gpaw.py`` (the labelling engine's settings)."""
    from ase.io import write

    a = _prepare(atoms)
    params = gpaw_parameters(a, config.preset)
    axis = dipole_axis(a)
    _write_extxyz(folder / "structure.xyz", a, write)
    script = _GPAW_SCRIPT.format(
        task=config.task,
        name=title,
        kind=kind,
        db=Path(db).name or "?",
        row_id=row_id,
        params=repr(params),
        fmax=config.fmax,
        steps=config.max_steps,
        axis=axis,
        traj=", relax.traj and relax.log" if config.task == "relax" else "",
    )
    atomic_write_text(folder / "run_gpaw.py", script)
    os.chmod(folder / "run_gpaw.py", 0o755)
    return {"files": ["structure.xyz", "run_gpaw.py"], "kpts": params["kpts"]["size"], "dipole_axis": axis}


def _write_extxyz(path: Path, atoms, write) -> None:
    import io

    a = atoms.copy()
    a.info = {k: v for k, v in a.info.items() if isinstance(v, str | int | float | bool) and v is not None}
    buf = io.StringIO()
    write(buf, a, format="extxyz")
    atomic_write_text(path, buf.getvalue())


def write_extxyz(atoms, folder: Path, config: ExportConfig, title: str) -> dict[str, Any]:
    from ase.io import write

    _write_extxyz(folder / "structure.extxyz", _prepare(atoms), write)
    return {"files": ["structure.extxyz"]}


# ----------------------------------------------------------------------------------------------------------
# the export
# ----------------------------------------------------------------------------------------------------------
def export(
    candidates: Sequence[Candidate],
    out: str | os.PathLike,
    fmt: str,
    config: ExportConfig = ExportConfig(),
    db_path: str = "",
    selection: str = "",
    force: bool = False,
) -> dict[str, Any]:
    """Write every state of every candidate (the shared H2 once) and ``manifest.json``; returns the manifest.

    InputError: unknown format or task, ``out`` not a folder, or a non-empty ``out`` without ``force``.
    """
    from screening.labelling import get_preset

    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}'; allowed: {', '.join(FORMATS)}")
    if config.task not in TASKS:
        raise InputError(f"unknown task '{config.task}'; allowed: {', '.join(TASKS)}")
    settings = get_preset(config.preset)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' exists and is not a folder; allowed: a new or empty folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"--out '{out}' is not empty; choose a new folder or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    entries: list[dict[str, Any]] = []
    done: set[str] = set()
    try:
        for cand in candidates:
            for st in cand.states:
                if st.folder in done:
                    continue
                done.add(st.folder)
                folder = tmp / st.folder
                folder.mkdir(parents=True, exist_ok=True)
                a = _prepare(st.atoms)
                title = st.name
                if fmt == "vasp":
                    info = write_vasp(a, folder, config, title)
                elif fmt == "qe":
                    info = write_qe(a, folder, config, title)
                elif fmt == "gpaw":
                    info = write_gpaw(a, folder, config, title, db_path, st.row_id, st.kind)
                else:
                    info = write_extxyz(a, folder, config, title)
                entries.append(
                    {
                        "folder": st.folder,
                        "files": [f"{st.folder}/{f}" for f in info.pop("files")],
                        "kind": st.kind,
                        "name": st.name,
                        "host": cand.host if st.kind != "H2" else None,
                        "row_id": st.row_id,
                        "dg_row_id": cand.dg_row_id if st.kind != "H2" else None,
                        "natoms": len(a),
                        "formula": a.get_chemical_formula(),
                        "magmoms": {str(i): float(m) for i, m in enumerate(initial_moments(a)) if m},
                        **info,
                    }
                )
        manifest = {
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "database": str(db_path),
            "selection": selection,
            "format": fmt,
            "task": config.task,
            "export_config": asdict(config),
            "physics": {
                k: v
                for k, v in settings.to_dict().items()
                if k in ("xc", "ecut", "kdens", "smearing", "spinpol")
            },
            "candidates": [
                {
                    "host": c.host,
                    "dg_row_id": c.dg_row_id,
                    "best_site": c.best_site,
                    "dg": c.dg,
                    "dg_std": c.dg_std,
                    "correction": c.correction,
                    "folders": [s.folder for s in c.states],
                }
                for c in candidates
            ],
            "entries": entries,
            "dg_formula": "dG = E(host+H) - E(host) - 0.5 E(H2) + correction (eV); with several H@ folders "
            "per host, its dG is the lowest",
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        if not out.exists():
            os.replace(tmp, out)
        else:  # --force: replace what this export writes, keep unrelated files
            for item in tmp.iterdir():
                dest = out / item.name
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                elif dest.exists() or dest.is_symlink():
                    dest.unlink()
                os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
