"""DFT hand-off: VASP / QE / GPAW / extxyz export round trips, the --force rule, and ``screen validate``
with a cheap stand-in engine (EMT) plus a real GPAW run on tiny molecules (skipped without GPAW)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_reports import make_results_db

from cli import main


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    return make_results_db(
        tmp_path_factory.mktemp("store") / "results.db", metals=("Cu", "Pd"), motifs=("0Na", "6Na"), hetero=()
    )


def _store_atoms(db_path, row_id):
    import ase.db

    return ase.db.connect(str(db_path)).get(id=row_id).toatoms()


def _moments(atoms):
    from structures.metals import INITIAL_MAGMOM

    return np.array([INITIAL_MAGMOM.get(s, 0.0) for s in atoms.get_chemical_symbols()])


def _same_geometry(a, b, order=None):
    """Same symbols, cell and positions (modulo lattice vectors), after an optional permutation of ``b``."""
    if order is not None:
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        b = b[inv]
    assert a.get_chemical_symbols() == b.get_chemical_symbols()
    np.testing.assert_allclose(a.cell.array, b.cell.array, atol=1e-6)
    d = (a.get_scaled_positions() - b.get_scaled_positions() + 0.5) % 1.0 - 0.5
    np.testing.assert_allclose(d, 0.0, atol=1e-6)


def _export(db, out, fmt, *extra):
    assert (
        main(["export", "--db", str(db), "--select", "top:2", "--format", fmt, "--out", str(out), *extra])
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["candidates"]) == 2
    kinds = [e["kind"] for e in manifest["entries"]]
    assert kinds.count("host") == 2 and kinds.count("host+H") == 2 and kinds.count("H2") == 1
    for e in manifest["entries"]:
        assert all((out / f).is_file() for f in e["files"])
    return manifest


def test_vasp_export_round_trips_through_pymatgen(results_db, tmp_path):
    from ase.io import read
    from pymatgen.io.vasp.inputs import Incar, Kpoints, Poscar

    out = tmp_path / "vasp"
    m = _export(results_db, out, "vasp")
    for e in m["entries"]:
        folder = out / e["folder"]
        ref = _store_atoms(results_db, e["row_id"])
        assert ref.info.get("name", e["name"]) == e["name"] or e["kind"] == "H2"
        order = np.array(e["atom_order"])
        pos = Poscar.from_file(folder / "POSCAR")
        a = read(folder / "POSCAR", format="vasp")
        _same_geometry(ref, a, order)
        incar = Incar.from_file(folder / "INCAR")
        assert incar["ISPIN"] == 2 and incar["ENCUT"] == 500  # the default preset, pw500
        np.testing.assert_allclose(incar["MAGMOM"], _moments(a))  # per atom, in POSCAR order
        assert len(incar["MAGMOM"]) == len(pos.structure)
        if e["kind"] == "H2":
            assert "LDIPOL" not in incar and Kpoints.from_file(folder / "KPOINTS").kpts[0] == (1, 1, 1)
        else:
            assert incar["LDIPOL"] is True and incar["IDIPOL"] == 3  # vacuum along c
            assert incar["IBRION"] == 2 and incar["EDIFFG"] < 0
            assert list(Kpoints.from_file(folder / "KPOINTS").kpts[0]) == e["kpts"] == [3, 3, 1]
            assert any(m > 0 for m in incar["MAGMOM"])
        spec = (folder / "POTCAR.spec").read_text().split()
        assert [p.split("_")[0] for p in spec] == pos.site_symbols  # one POTCAR per species block, e.g. Cu_pv


def test_qe_gpaw_extxyz_round_trip_through_ase(results_db, tmp_path):
    from ase.io import read

    from reports.export import gpaw_parameters

    qe = _export(results_db, tmp_path / "qe", "qe")
    for e in qe["entries"]:
        ref = _store_atoms(results_db, e["row_id"])
        a = read(tmp_path / "qe" / e["folder"] / "pw.in", format="espresso-in")
        _same_geometry(ref, a)
        np.testing.assert_allclose(a.get_initial_magnetic_moments(), _moments(a))
        text = (tmp_path / "qe" / e["folder"] / "pw.in").read_text()
        assert "nspin            = 2" in text and ("tefield" in text) == (e["kind"] != "H2")
    gp = _export(results_db, tmp_path / "gpaw", "gpaw")
    for e in gp["entries"][1:]:  # one host+H* slab and the H2 box (each dry run is a fresh interpreter)
        folder = tmp_path / "gpaw" / e["folder"]
        ref = _store_atoms(results_db, e["row_id"])
        a = read(folder / "structure.xyz")
        _same_geometry(ref, a)
        np.testing.assert_allclose(a.get_initial_magnetic_moments(), _moments(a))
        res = subprocess.run(
            [sys.executable, str(folder / "run_gpaw.py"), "--dry-run"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        dry = json.loads(res.stdout)
        want = gpaw_parameters(a, "pw500")  # the default preset
        assert {k: v for k, v in dry["params"].items() if k != "poissonsolver"} == want
        assert dry["magmoms"] == pytest.approx(_moments(a).tolist())
        assert ("poissonsolver" in dry["params"]) == (e["kind"] != "H2") and dry["pbc"][2] == (
            e["kind"] == "H2"
        )
    xyz = _export(results_db, tmp_path / "xyz", "extxyz")
    for e in xyz["entries"]:
        _same_geometry(
            _store_atoms(results_db, e["row_id"]), read(tmp_path / "xyz" / e["folder"] / "structure.extxyz")
        )


def test_gpaw_parameters_match_the_labelling_engine(results_db, monkeypatch):
    """The exported GPAW settings are the engine's first SCF attempt: record what it passes to GPAW."""
    gpaw = pytest.importorskip("gpaw")
    from reports.export import gpaw_parameters
    from screening.labelling import get_engine, get_preset
    from screening.store import load_structures

    seen = {}
    monkeypatch.setattr(gpaw, "GPAW", lambda **kw: seen.update(kw) or object())
    atoms = load_structures(results_db)["atoms"].iloc[0]
    for preset in ("pw400", "pw500k4", "fast"):
        s = get_preset(preset)
        eng = get_engine("gpaw")
        eng.make(atoms.copy(), s, eng.attempts(s)[0], None)
        got = {k: v for k, v in seen.items() if k != "txt"}
        got["kpts"] = {"size": list(got["kpts"]["size"]), "gamma": got["kpts"]["gamma"]}
        assert got == gpaw_parameters(atoms, preset), preset


def test_export_never_overwrites_without_force(results_db, tmp_path, capsys):
    out = tmp_path / "dft"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["export", "--db", str(results_db), "--select", "top:1", "--format", "extxyz", "--out", str(out)]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*argv, "--force"]) == 0
    assert (out / "manifest.json").exists() and (out / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".dft.tmp*"))  # no temporary folder left behind


def _emt_energy(atoms):
    from ase.calculators.emt import EMT

    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy()


def test_validate_with_stand_in_engine_writes_back_and_resumes(results_db, tmp_path, capsys, monkeypatch):
    import ase.db

    from reports.tables import load_table, rank
    from screening.store import load_structures

    labels = tmp_path / "labels.db"
    argv = [
        "validate",
        "--db",
        str(results_db),
        "--engine",
        "emt",
        "--select",
        "top:2",
        "--labels",
        str(labels),
        "--no-progress",
    ]
    assert main(argv) == 0
    df = rank(load_table(results_db))
    top = df.head(2)
    assert np.isfinite(top["dft_dg"]).all() and (top["dft_engine"] == "emt").all()
    assert not np.isfinite(df["dft_dg"].iloc[2:]).any()
    # the DFT ΔG is E(host+H) - E(host) - ½E(H2) + the model's correction, on the model-relaxed geometries
    structs = load_structures(results_db)
    h2 = [r for r in ase.db.connect(str(results_db)).select(kind="reference", ref_kind="h2")][0].toatoms()
    for _, r in top.iterrows():
        rows = structs[structs["host"] == r["host"]]
        host = rows[rows["site"].fillna("") == ""]["atoms"].iloc[0]
        hh = rows[rows["site"] == r["best_site"]]["atoms"].iloc[0]
        want = _emt_energy(hh) - _emt_energy(host) - 0.5 * _emt_energy(h2) + r["correction"]
        assert r["dft_dg"] == pytest.approx(want, abs=1e-8)
        # the engine's force along the M–M axis, on the host and on the H* state, is written back
        for atoms, key in ((host, "dft_mm_force_host"), (hh, "dft_mm_force")):
            want_f = _emt_mm_force(atoms)
            assert r[key] == pytest.approx(want_f, abs=1e-8)
        # and the largest force on any atom of the two points, and on the H: a geometry-failure test
        f_host, f_hh = (np.linalg.norm(_emt_forces(a), axis=1) for a in (host, hh))
        assert r["dft_fmax"] == pytest.approx(max(f_host.max(), f_hh.max()), abs=1e-8)
        assert r["dft_h_force"] == pytest.approx(f_hh[hh.numbers == 1].max(), abs=1e-8)
    n_labels = ase.db.connect(str(labels)).count()
    assert n_labels == 5  # 2 hosts, 2 H* states, the shared H2
    assert main(argv) == 0  # re-run: every single point is found in the label store
    assert ase.db.connect(str(labels)).count() == n_labels
    # the report now shows model vs DFT
    out = tmp_path / "report"
    # EMT at the model's geometries puts 12-15 eV/Å on H: geometry failures, named and not a parity point
    assert main(["report", "--db", str(results_db), "--out", str(out)]) == 0
    assert "DFT geometry failures" in (out / "report.html").read_text()
    assert not (out / "parity.png").exists()
    import screening.bench_model

    monkeypatch.setattr(screening.bench_model, "MAX_H_FORCE", 100.0)  # a stand-in engine, not DFT
    monkeypatch.setattr(screening.bench_model, "MAX_STATE_FORCE", 100.0)
    out = tmp_path / "report2"
    assert main(["report", "--db", str(results_db), "--out", str(out)]) == 0
    assert (out / "parity.png").exists() and (out / "calibration.svg").exists()
    header = (out / "ranking.csv").read_text().splitlines()[0].split(",")
    assert {"dft_dg", "dft_mm_force_host", "dft_mm_force", "dft_fmax"} <= set(header)
    capsys.readouterr()


def _emt_forces(atoms) -> np.ndarray:
    from ase.calculators.emt import EMT

    a = atoms.copy()
    a.calc = EMT()
    return a.get_forces()


def _emt_mm_force(atoms) -> float:
    from ase.calculators.emt import EMT

    from screening.mm_bond import bond_force, metal_pair_indices

    a = atoms.copy()
    a.calc = EMT()
    i, j = metal_pair_indices(a)
    return bond_force(a, a.get_forces(), i, j)


def test_mm_force_note_names_the_direction_and_stays_quiet_below_the_threshold():
    from reports.validate import MM_FORCE_NOTE, ValidationResult, mm_force_note, result_line

    r = ValidationResult(host="Fe2@3Nd", dg_row_id=1, site="top_X0", dg_model=0.1, dg_std=0.3, status="ok")
    r.dft_dg, r.mm_force_host, r.mm_force = -0.2, -5.06, 1.0
    note = mm_force_note(r, "gpaw")
    assert "gpaw pulls the metal pair together with 5.06 eV/Å (host)" in note
    assert note in result_line(r, "gpaw")
    import pandas as pd

    from reports.html import mm_force_text

    df = pd.DataFrame({"host": ["A", "B", "C"], "dft_mm_force_host": [-5.0, 1.0, np.nan],
                       "dft_mm_force": [-4.0, -2.5, np.nan]})  # fmt: skip
    text = mm_force_text(df)
    assert "mean 3.75 eV/Å over 2 validated hosts (largest 5.00, A)" in text and "on 2:" in text
    assert mm_force_text(df.drop(columns=["dft_mm_force_host", "dft_mm_force"])) == ""
    from reports.html import bond_line_text

    df["dg"], df["dft_dg"], df["dft_dg_bond"] = [0.0, 0.1, 0.2], [0.3, -0.2, 0.1], [0.5, -0.1, np.nan]
    text = bond_line_text(df)
    assert text.startswith("2 host(s): DFT ΔGH* moves by +0.150 eV on average (+0.100 to +0.200)")
    assert "MAE on them is 0.300 eV against the single points, 0.350 eV against the relaxed bond" in text
    assert bond_line_text(df.drop(columns=["dft_dg_bond"])) == ""
    r.mm_force_host, r.mm_force = 0.5, 3.2
    assert "pushes the metal pair apart with 3.20 eV/Å (H*)" in mm_force_note(r, "gpaw")
    r.mm_force_host, r.mm_force = MM_FORCE_NOTE * 0.9, float("nan")
    assert mm_force_note(r, "gpaw") == "" and "metal pair" not in result_line(r, "gpaw")


def test_validate_killed_half_way_keeps_the_finished_candidates_in_the_store(tmp_path, monkeypatch, capsys):
    """Each candidate is written back the moment its host, host+H* and H2 are labelled: a run killed while
    the second candidate is computed leaves the first one's DFT ΔGH* in the results store, and the re-run
    computes only what is missing."""
    from dataclasses import replace

    import ase.db
    from ase.calculators.emt import EMT

    from reports.tables import load_table, rank
    from screening import labelling as L

    db = make_results_db(tmp_path / "r.db", metals=("Cu", "Pd"), motifs=("0Na",), hetero=())
    calls = {"n": 0, "die_at": 4}

    def make(atoms, settings, attempt, txt):
        calls["n"] += 1
        if calls["n"] == calls["die_at"]:
            raise KeyboardInterrupt  # the session ends during the fourth single point
        return EMT()

    monkeypatch.setitem(L.ENGINES, "emt_dies", replace(L.get_engine("emt"), name="emt_dies", make=make))
    labels = tmp_path / "labels.db"
    argv = ["validate", "--db", str(db), "--engine", "emt_dies", "--select", "id:Cu2@0Na,Pd2@0Na"]
    argv += ["--labels", str(labels), "--no-progress"]
    assert main(argv) == 130  # the CLI's exit status after an interrupt
    out, err = capsys.readouterr()
    assert "interrupted; finished work is saved" in err
    assert "done: Cu2@0Na (" in out and "emt_dies" in out and "Pd2@0Na" not in out.split("done:")[-1]
    df = rank(load_table(db)).set_index("host")
    assert np.isfinite(df.loc["Cu2@0Na", "dft_dg"]) and df.loc["Cu2@0Na", "dft_status"] == "ok"
    assert np.isnan(df.loc["Pd2@0Na", "dft_dg"])
    first = df.loc["Cu2@0Na", "dft_dg"]
    assert ase.db.connect(str(labels)).count() == 3  # Cu2@0Na, its H*, H2
    calls.update(n=0, die_at=-1)
    assert main(argv) == 0
    assert calls["n"] == 2  # the re-run computed the two missing single points only
    df = rank(load_table(db)).set_index("host")
    assert np.isfinite(df["dft_dg"]).all() and df.loc["Cu2@0Na", "dft_dg"] == pytest.approx(first, abs=1e-12)
    capsys.readouterr()


def test_validate_reuse_only_attaches_existing_labels_and_computes_none(tmp_path, capsys):
    """A second store with the same geometries (a screen repeated with an anchored copy of the network):
    --reuse-only attaches the labels of the first one's hosts and leaves the others unvalidated."""
    import ase.db

    from reports.tables import load_table, rank

    first = make_results_db(tmp_path / "a.db", metals=("Cu", "Pd"), motifs=("0Na", "6Na"), hetero=())
    second = make_results_db(tmp_path / "b.db", metals=("Cu", "Pd"), motifs=("0Na", "6Na"), hetero=())
    labels = tmp_path / "labels.db"
    base = ["validate", "--engine", "emt", "--labels", str(labels), "--no-progress"]
    assert main([*base, "--db", str(first), "--select", "id:Cu2@0Na"]) == 0
    n_labels = ase.db.connect(str(labels)).count()
    capsys.readouterr()
    named = ["--select", "id:Cu2@0Na,Pd2@0Na,Cu2@6Na", "--reuse-only"]
    assert main([*base, "--db", str(second), *named]) == 0
    assert ase.db.connect(str(labels)).count() == n_labels  # nothing computed
    a, b = (rank(load_table(p)).set_index("host") for p in (first, second))
    assert b.loc["Cu2@0Na", "dft_dg"] == pytest.approx(a.loc["Cu2@0Na", "dft_dg"], abs=1e-12)
    assert np.isnan(b.loc["Pd2@0Na", "dft_dg"]) and np.isnan(b.loc["Pd2@0Na", "dft_status"] or np.nan)
    out = capsys.readouterr().out
    assert "validating 3 candidate(s)" in out  # every named host, not the default --max 2
    assert "Pd2@0Na (" in out and "Cu2@6Na (" in out  # named as not validated
    assert main([*base, "--db", str(second), *named, "--max", "1"]) == 0
    out = capsys.readouterr().out
    assert "--select names 3 hosts; --max 1 keeps the first 1" in out and "validating 1 candidate(s)" in out
    assert main([*base, "--db", str(second), "--select", "id:Cu2@0Na", "--reuse-only", "--relax"]) == 2


def test_validate_relax_lowers_the_energy(results_db, tmp_path):
    import ase.db

    labels = tmp_path / "relaxed.db"
    assert (
        main(
            [
                "validate",
                "--db",
                str(results_db),
                "--engine",
                "emt",
                "--select",
                "top:1",
                "--relax",
                "--steps",
                "3",
                "--labels",
                str(labels),
                "--no-progress",
            ]
        )
        == 0
    )
    db = ase.db.connect(str(labels))
    rows = list(db.select())
    assert len(rows) == 3 and all(r.get("frame") == "dft_relaxed" for r in rows)
    store = ase.db.connect(str(results_db))
    for r in rows:  # the labelled geometry is the BFGS-relaxed one: lower in energy than the model's geometry
        start = [s for s in store.select(name=r.name) if s.get("state", "relaxed") == "relaxed" and s.natoms]
        assert len(start) == 1, r.name
        assert r.energy < _emt_energy(start[0].toatoms()) - 1e-6
    dg = [r for r in ase.db.connect(str(results_db)).select("dft_status") if r.get("dft_relax")]
    assert dg and all(np.isfinite(r.dft_dg) for r in dg)


def test_validate_without_gpaw_names_the_install_command(results_db, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gpaw", None)  # import gpaw -> ImportError
    assert (
        main(["validate", "--db", str(results_db), "--engine", "gpaw", "--select", "top:1", "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "pip install gpaw" in err and err.count("\n") == 0


def _tiny_store(path):
    """A results store whose 'host' is N2, its H* state N2H and the H2 reference in 5 Å boxes (cheap)."""
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    from screening.relax import RelaxResult
    from screening.store import Store

    def box(a):
        a.set_cell([5.0, 5.0, 5.0])
        a.center()
        a.pbc = True
        return a

    host = box(molecule("N2"))
    hh = host.copy()
    hh.append("H")
    hh.positions[-1] = hh.positions[1] + [0.0, 1.02, 0.3]
    info = {
        "host": "N2@0Na",
        "metal": "Cu",
        "metal2": "Cu",
        "motif": "0Na",
        "n_N": 0,
        "n_sites": "",
        "supercell": "box",
    }
    host.info.update(info, name="N2@0Na", site=None)
    hh.info.update(info, name="N2@0Na+H@top_X0", site="top_X0", ads_index=2)
    h2 = box(molecule("H2"))
    h2.info.update(name="H2")

    def res(a):
        r = a.copy()
        r.calc = SinglePointCalculator(r, energy=0.0, forces=np.zeros((len(r), 3)))
        return RelaxResult(0, r, 0.0, 0.0, 0, "converged", 0.0)

    with Store(path) as st:
        st.write_structures([(host, res(host), []), (hh, res(hh), [])], "m", "r")
        st.write_reference(h2, res(h2), "m", "r", "h2")
        st.write_dg_rows(
            [
                {
                    "uid": "d1",
                    **info,
                    "best_site": "top_X0",
                    "dg": 0.1,
                    "dg_std": 0.3,
                    "dg_std_epistemic": 0.3,
                    "dg_std_aleatoric": 0.0,
                    "converged": True,
                    "flags": "",
                    "correction": 0.24,
                    "model_hash": "m",
                    "relax_hash": "r",
                    "settings_hash": "s",
                    "code_version": "v",
                }
            ]
        )
    return path


@pytest.mark.gpaw
@pytest.mark.slow
def test_validate_with_real_gpaw(tmp_path, capsys):
    pytest.importorskip("gpaw", reason="GPAW is an optional extra: pip install gpaw && gpaw install-data")
    from reports.tables import load_table

    db = _tiny_store(tmp_path / "tiny.db")
    assert (
        main(
            [
                "validate",
                "--db",
                str(db),
                "--engine",
                "gpaw",
                "--preset",
                "fast",
                "--select",
                "all",
                "--labels",
                str(tmp_path / "gpaw_labels.db"),
                "--no-progress",
            ]
        )
        == 0
    )
    row = load_table(db).iloc[0]
    assert row["dft_engine"] == "gpaw" and row["dft_settings"].startswith("fast:")
    # N2 + ½H2 -> N2H is strongly uphill in PBE: a finite, positive ΔG of order eV
    assert np.isfinite(row["dft_dg"]) and 0.5 < row["dft_dg"] < 6.0
    assert Path(tmp_path / "logs").is_dir()


def test_export_bald_selection_leaves_excluded_hosts_out(results_db, tmp_path, capsys):
    """The DFT-training queue (`--select bald --exclude-hosts FILE`) never proposes a held-out host."""
    from reports.tables import load_table, rank, select

    df = rank(load_table(results_db))
    first = select(df, "bald")["host"][0]
    held = tmp_path / "heldout.txt"
    held.write_text(f"# held out\n{first}\n")
    out = tmp_path / "q"
    argv = ["export", "--db", str(results_db), "--select", "bald", "--max", "2", "--format", "extxyz"]
    assert main([*argv, "--out", str(out), "--exclude-hosts", str(held)]) == 0
    names = {s.get("host") for s in json.loads((out / "manifest.json").read_text())["candidates"]}
    assert first not in names and len(names) == 2
    assert main([*argv, "--out", str(tmp_path / "bad"), "--exclude-hosts", "Fe2,Co2@2Na"]) == 2
    assert "not a host name: Fe2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_validate_skip_labelled_pairs_sends_the_next_label_to_an_unlabelled_pair(
    results_db, tmp_path, capsys, monkeypatch
):
    import screening.bench_model
    from reports.tables import load_table, rank
    from screening.anchoring import labelled_pairs, pair_of

    # EMT puts large forces on H at these geometries; the H-force rule is tested in test_labelling.py
    monkeypatch.setattr(screening.bench_model, "MAX_H_FORCE", float("inf"))

    labels = tmp_path / "labels.db"
    df = rank(load_table(results_db))
    first = df["host"].iloc[0]
    base = ["validate", "--db", str(results_db), "--engine", "emt", "--labels", str(labels), "--no-progress"]
    assert main([*base, "--select", f"id:{first}"]) == 0
    assert labelled_pairs(str(labels), "emt") == {pair_of(first)}
    capsys.readouterr()
    assert main([*base, "--select", "bald:per-metal", "--max", "4", "--skip-labelled-pairs"]) == 0
    out = capsys.readouterr().out
    assert f"skipping metal pairs with DFT labels in {labels}: {pair_of(first)}" in out
    assert labelled_pairs(str(labels), "emt") == {pair_of(h) for h in df["host"]}  # the other pair, once
    chosen = out.split("candidate(s) with emt")[1].split(":", 1)[1].split(";")[0]
    assert pair_of(first) not in {pair_of(h.strip()) for h in chosen.split(",")}
    # every pair labelled: nothing left to choose, one clear line, non-zero exit
    assert main([*base, "--select", "bald:per-metal", "--skip-labelled-pairs"]) == 2
    assert "matches no candidate" in capsys.readouterr().err


def test_validate_warns_when_the_chosen_site_moved(tmp_path, capsys):
    """A best site the screen flagged h_migrated is a doubtful single point: validate says so (and how to
    relax first) before spending DFT on it."""
    import ase.db

    from reports.tables import load_table, rank

    db_path = make_results_db(tmp_path / "r.db", metals=("Cu",), motifs=("0Na",), hetero=())
    top = rank(load_table(db_path)).iloc[0]
    with ase.db.connect(str(db_path)) as db:
        db.update(int(top["id"]), flags="high_variance,h_migrated", flag_h_migrated=True)
    argv = ["validate", "--db", str(db_path), "--engine", "emt", "--select", "top:1"]
    assert main([*argv, "--labels", str(tmp_path / "labels.db"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (
        f"warning: {top['host']} H@{top['best_site']} is flagged h_migrated (H now " in out
        and "--relax" in out
    )
    assert re.search(r"\(H now \d\.\d\d Å from [A-Z][a-z]?, \d\.\d\d Å from [A-Z][a-z]?\)", out)


def test_h_neighbours_text_names_the_nearest_atoms_across_the_cell():
    from ase import Atoms

    from reports.validate import h_neighbours_text

    # H 1.64 Å above a Ru, and a C at x = 9.5 Å in a 10 Å cell
    a = Atoms(
        "RuCH", positions=[[5, 5, 5], [9.5, 5, 5], [0.5, 5, 5]], cell=[10, 10, 10], pbc=[True, True, False]
    )
    a.positions[2] = [5, 5, 6.64]
    assert h_neighbours_text(a) == " (H now 1.64 Å from Ru, 4.79 Å from C)"
    a.positions[2] = [0.3, 5, 5]  # 0.8 Å from C through the boundary
    assert h_neighbours_text(a, n=1) == " (H now 0.80 Å from C)"
    assert h_neighbours_text(None) == "" and h_neighbours_text(Atoms("Ru")) == ""


def test_validate_site_classes_labels_the_best_site_of_each_other_class(tmp_path, capsys):
    """--site-classes: besides the best site, the lowest H* state (model energy) of each requested binding
    class is labelled too, as a triple with the same host; the ΔG row keeps the best site's DFT value. A
    geometry moved by less than the match tolerance reuses its label (a re-screen in a later session)."""
    import ase.db

    from reports.tables import load_table, rank, select
    from reports.validate import class_states
    from screening.anchoring import site_class
    from screening.bench_model import dft_triples
    from screening.store import load_structures

    db = make_results_db(tmp_path / "r.db", metals=("Cu",), motifs=("6Na",), hetero=(), all_sites=True)
    row = rank(load_table(db)).iloc[0]
    structs = load_structures(db)
    states = structs[(structs["host"] == row["host"]) & (structs["site"].fillna("") != "")]
    classes = {str(q["site"]): site_class(q["atoms"]) for _, q in states.iterrows()}
    own = classes[str(row["best_site"])]
    others = sorted({c for c in classes.values() if c != own})
    assert others, classes  # the fixture has H on the metals and on the first shell
    picked = class_states(db, select(rank(load_table(db)), f"id:{row['host']}"), ("metal", "N", "C"))
    assert sorted(site_class(s.atoms) for s in picked) == others
    for s in picked:  # the lowest model energy of its class
        site = s.folder.split("@")[-1]
        same = states[[classes[str(q)] == site_class(s.atoms) for q in states["site"]]]
        assert float(states[states["site"] == site]["e_relaxed"].iloc[0]) == pytest.approx(
            same["e_relaxed"].min()
        )
    labels = tmp_path / "labels.db"
    argv = ["validate", "--db", str(db), "--engine", "emt", "--select", f"id:{row['host']}"]
    argv += ["--labels", str(labels), "--no-progress", "--site-classes", "metal,N,C"]
    assert main(argv) == 0
    assert ase.db.connect(str(labels)).count() == 3 + len(others)  # host, best H*, H2 + one per class
    triples = [
        t for t in dft_triples(str(labels), engine="emt", max_h_force=np.inf) if t["host"] == row["host"]
    ]
    assert len(triples) == 1 + len(others)
    best = rank(load_table(db)).set_index("host").loc[row["host"]]
    mine = [t for t in triples if t["name"].endswith("@" + str(row["best_site"]))][0]
    assert best["dft_dg"] == pytest.approx(mine["dft_de"] + best["correction"], abs=1e-9)
    # the host's DFT ΔGH* is the lowest over the labelled sites, with its site and the classes covered
    low = min(triples, key=lambda t: t["dft_de"])
    assert best["dft_dg_host"] == pytest.approx(low["dft_de"] + best["correction"], abs=1e-9)
    assert best["dft_dg_host"] <= best["dft_dg"] + 1e-12
    assert best["dft_site_host"] == low["name"].rsplit("@", 1)[-1]
    assert best["dft_host_classes"] == ",".join(sorted(set(others) | {own}))
    # a re-screen that moved an atom by 5e-4 Å (below MATCH_TOL): no new single point; by 2e-3 Å: new ones
    from screening import labelling as L

    def moved(d):
        out = [s.atoms.copy() for s in picked]
        for a in out:
            a.positions[0, 0] += d
        return out

    rep = L.label_structures(moved(5e-4), "emt", db_path=labels, progress=False)
    assert rep.skipped == len(picked) and rep.labelled == 0 and L.MATCH_TOL == 1e-3
    assert L.label_structures(
        moved(5e-4), "emt", db_path=labels, progress=False, match_tol=0.0
    ).labelled == len(picked)
    assert L.label_structures(moved(2e-3), "emt", db_path=labels, progress=False).labelled == len(picked)
    assert main([*argv[:-1], "metal,Fe"]) == 2
    assert "--site-classes" in capsys.readouterr().err
    # the model's own site has no label (e.g. a re-anchored screen moved it), its other sites do: --reuse-only
    # writes the host's DFT minimum alone ("partial"), removes the stale same-site value, and the report uses it
    from reports.figures import validation_stats

    with ase.db.connect(str(labels)) as ldb:
        ldb.delete(
            [r.id for r in ldb.select() if str(r.get("name", "")).endswith("@" + str(row["best_site"]))]
        )
    capsys.readouterr()
    assert main([*argv, "--reuse-only"]) == 0
    assert "at other sites only: dft_dg_host" in capsys.readouterr().out
    again = rank(load_table(db)).set_index("host").loc[row["host"]]
    others_min = min(t["dft_de"] for t in triples if t is not mine) + best["correction"]
    assert again["dft_status"] == "partial" and not np.isfinite(again["dft_dg"])
    assert again["dft_dg_host"] == pytest.approx(others_min, abs=1e-9)
    st = validation_stats(rank(load_table(db)))
    assert st["n"] == 0 and st["n_host"] == 1 and st["n_other_site"] == 1


def test_export_site_classes_writes_the_best_site_of_each_other_class(tmp_path, capsys):
    """`export --site-classes metal,N,C`: besides host, best H* and H2, one H* folder per other binding class
    (the model's lowest state of that class), listed under the candidate in the manifest; an unknown class
    is one line and no folder."""
    from reports.tables import load_table, rank, select
    from reports.validate import class_states

    db = make_results_db(tmp_path / "r.db", metals=("Cu",), motifs=("6Na",), hetero=(), all_sites=True)
    row = rank(load_table(db)).iloc[0]
    want = class_states(db, select(rank(load_table(db)), f"id:{row['host']}"), ("metal", "N", "C"))
    assert want
    argv = ["export", "--db", str(db), "--select", f"id:{row['host']}", "--format", "extxyz"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--site-classes", "metal,N,C"]) == 0
    man = json.loads((tmp_path / "x" / "manifest.json").read_text())
    folders = man["candidates"][0]["folders"]
    assert folders[:3] == [f"{row['host']}/host", f"{row['host']}/H@{row['best_site']}", "H2"]
    assert folders[3:] == [s.folder for s in want]
    for f in folders:
        assert (tmp_path / "x" / f / "structure.extxyz").exists()
    assert main([*argv, "--out", str(tmp_path / "y"), "--site-classes", "metal,O"]) == 2
    assert "--site-classes: unknown class 'O'; allowed: metal, N, C" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def _emt_line_minimum(atoms) -> float:
    """The bond-line estimate of `screen validate --bond-line`, recomputed by hand with EMT."""
    from ase.calculators.emt import EMT

    from screening.mm_bond import bond_force, line_minimum, line_step, metal_pair_indices, stretch_pair

    a = atoms.copy()
    a.calc = EMT()
    i, j = metal_pair_indices(a)
    e0, f0 = a.get_potential_energy(), bond_force(a, a.get_forces(), i, j)
    b = stretch_pair(a, i, j, line_step(f0))
    b.calc = EMT()
    return line_minimum(e0, f0, b.get_potential_energy(), bond_force(b, b.get_forces(), i, j), line_step(f0))[
        0
    ]


def test_validate_bond_line_relaxes_the_metal_pair_and_resumes(results_db, tmp_path, capsys):
    import ase.db

    from reports.tables import load_table, rank
    from screening.store import load_structures

    labels = tmp_path / "bond.db"
    argv = ["validate", "--db", str(results_db), "--engine", "emt", "--select", "top:1", "--bond-line",
            "--labels", str(labels), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "bond line: 2 single point(s)" in out and "M–M bond relaxed: emt" in out
    rows = list(ase.db.connect(str(labels)).select())
    line = [r for r in rows if r.get("frame") == "dft_bond_line"]
    assert len(rows) == 5 and len(line) == 2  # host, H*, H2 and the two moved pairs
    assert all(0 < abs(r.bond_step) <= 0.15 for r in line)
    top = rank(load_table(results_db)).head(1).iloc[0]
    structs = load_structures(results_db)
    host_rows = structs[structs["host"] == top["host"]]
    host = host_rows[host_rows["site"].fillna("") == ""]["atoms"].iloc[0]
    hh = host_rows[host_rows["site"] == top["best_site"]]["atoms"].iloc[0]
    h2 = [r for r in ase.db.connect(str(results_db)).select(kind="reference", ref_kind="h2")][0].toatoms()
    want = _emt_line_minimum(hh) - _emt_line_minimum(host) - 0.5 * _emt_energy(h2) + top["correction"]
    assert np.isfinite(want) and top["dft_dg_bond"] == pytest.approx(want, abs=1e-8)
    assert top["dft_mm_k_host"] > 0 and top["dft_mm_k"] > 0
    assert top["dft_wall_s"] == pytest.approx(sum(r.wall_s for r in rows))  # the bond line's cost counts
    # each relaxed pair lies lower than the model geometry's single point: the bond line only relaxes
    assert _emt_line_minimum(host) < _emt_energy(host) and _emt_line_minimum(hh) < _emt_energy(hh)
    assert main(argv) == 0  # resumed: the moved pairs are found in the label store, nothing is recomputed
    assert ase.db.connect(str(labels)).count() == 5
    assert main([*argv[:-3], "--labels", str(labels), "--reuse-only", "--no-progress"]) == 0
    assert "M–M bond relaxed" in capsys.readouterr().out
    out_dir = tmp_path / "report"
    assert main(["report", "--db", str(results_db), "--out", str(out_dir)]) == 0
    assert "dft_dg_bond" in (out_dir / "ranking.csv").read_text().splitlines()[0].split(",")
    assert main([*argv, "--relax"]) == 2
    assert "--bond-line" in capsys.readouterr().err


def test_site_classes_skip_states_that_stretch_the_metal_pair(tmp_path):
    """--site-classes never picks an H* state that stretches the metal pair > 0.3 Å against the host; when
    the best site itself does (the row is flagged pair_stretched), the lowest sane site of its own class is
    picked too, so the host gets a DFT value at a sane site (v0.5.1's Rh2@2Nd: top_M2 and bridge_MM
    stretched by 0.46 Å, top_M1 not)."""
    import ase.db

    from reports.tables import load_table, rank, select
    from reports.validate import class_states
    from screening.anchoring import site_class
    from screening.store import _record

    db = make_results_db(tmp_path / "r.db", metals=("Cu",), motifs=("2Nd",), hetero=(), all_sites=True)
    store = ase.db.connect(str(db))
    rows = {r.get("site") or "": r for r in store.select(kind="structure", state="relaxed")}
    row = rank(load_table(db)).iloc[0]
    best = str(row["best_site"])
    metal_sites = [s for s, q in rows.items() if s and site_class(_record(q).atoms) == "metal"]
    assert best in metal_sites and len(metal_sites) >= 3, metal_sites
    others = sorted((s for s in metal_sites if s != best), key=lambda s: rows[s].e_relaxed)
    lowest, second = others[0], others[1]

    def stretch(site, by=0.5):  # move the second metal along the pair axis
        q = rows[site]
        a = q.toatoms()
        i, j = (int(x) for x in str(q.pocket).split(",")[:2])
        axis = a.positions[j] - a.positions[i]
        a.positions[j] += by * axis / np.linalg.norm(axis)
        store.update(q.id, atoms=a)

    sel = select(rank(load_table(db)), f"id:{row['host']}")
    assert class_states(db, sel, ("metal",)) == []  # the best site's own class: nothing more to label
    stretch(best)
    stretch(lowest)
    dg_id = int(row["id"])
    store.update(dg_id, flags="high_variance,pair_stretched", flag_pair_stretched=True)
    sel = select(rank(load_table(db)), f"id:{row['host']}")
    picked = class_states(db, sel, ("metal",))
    assert [s.folder.split("@")[-1] for s in picked] == [second]  # the lowest metal site not stretched
