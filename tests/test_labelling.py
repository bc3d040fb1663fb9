"""Reference labelling: EMT stand-in path, resume after a kill, flagged SCF failures, VASP/QE import,
GPAW, data command, DFT bench, CLI errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.cluster import Octahedron

from cli import main
from screening import labelling as L
from screening.cmd_data import H2_BONDS as D_H2_BONDS
from structures.common import InputError


def _clusters(n: int = 5) -> list[Atoms]:
    """Small EMT-supported structures: Cu/Ni clusters in periodic boxes, rattled differently."""
    out = []
    for i in range(n):
        a = Octahedron("Cu" if i % 2 == 0 else "Ni", 2)  # 6 atoms
        a.center(vacuum=4.0)
        a.pbc = True
        a.rattle(0.05, seed=i)
        a.info["name"] = f"cluster{i}"
        out.append(a)
    return out


class CountingEMT(EMT):
    """EMT that counts calls and can simulate a kill (KeyboardInterrupt) at a given call number."""

    calls = 0
    kill_at: int | None = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        CountingEMT.calls += 1
        if CountingEMT.kill_at is not None and CountingEMT.calls == CountingEMT.kill_at:
            raise KeyboardInterrupt
        super().calculate(atoms, properties, system_changes)


class FlakySCF(Calculator):
    """Stand-in SCF code: raises SCFError when built with converged=False; else EMT numbers."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, converged: bool, **kw):
        super().__init__(**kw)
        self.converged = converged

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if not self.converged:
            from ase.calculators.calculator import SCFError

            raise SCFError("SCF did not converge in 3 iterations")
        emt = EMT()
        emt.calculate(atoms, properties, system_changes)
        self.results = dict(emt.results)

    def get_number_of_iterations(self) -> int:
        return 7


def _flaky_engine(fail_names: set[str], fail_first_only: set[str]) -> L.Engine:
    def make(atoms, s, attempt, txt):
        name = atoms.info.get("name")
        ok = not (name in fail_names or (name in fail_first_only and attempt["magmom_scale"] == 1.0))
        return FlakySCF(converged=ok)

    return L.Engine(
        "flaky",
        make,
        lambda: "flaky 1.0",
        lambda s: {"ecut": s.ecut},
        attempts=L._gpaw_attempts,
        has_scf=True,
    )


def _rows(db_path):
    import ase.db

    return list(ase.db.connect(str(db_path)).select("label_key"))


def test_emt_labels_match_direct_and_export(tmp_path):
    frames = _clusters(4) + [molecule("H2", vacuum=4.0, pbc=True)]
    db = tmp_path / "labels.db"
    rep = L.label_structures(frames, "emt", db_path=db, progress=False)
    assert (rep.labelled, rep.converged, rep.failed) == (5, 5, 0)
    out = tmp_path / "train.extxyz"
    assert L.export_training_set(db, out, engine="emt") == 5
    from ase.io import read

    got = read(out, index=":")
    for a, ref in zip(got, frames):
        r = ref.copy()
        r.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(r.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), r.get_forces(), atol=1e-8)
        assert a.info["reference"] == "emt" and a.info["engine_version"].startswith("ase ")
        assert json.loads(a.info["reference_settings"])["physics"] == {}
    # the same structures under different physical settings of an SCF engine get different keys
    g = L.get_engine("gpaw")
    assert L.label_key(frames[0], g, L.PRESETS["pw400"]) != L.label_key(frames[0], g, L.PRESETS["pw500k4"])
    assert L.label_key(frames[0], g, L.PRESETS["pw400"]) == L.label_key(
        frames[0].copy(), g, L.LabelSettings()
    )


def test_host_queue_labels_with_record_keys(tmp_path):
    from structures.motifs import resolve_motifs

    q = L.build_queue(["Ni"], resolve_motifs("6Na"), supercell="4x4", with_h=True, sites=["top_M1"], h2=True)
    assert [a.info["name"] for a in q] == ["H2", "Ni2@6Na", "Ni2@6Na+H@top_M1"]
    assert L.kpts_for(q[1], L.PRESETS["pw400"]) == (3, 3, 1)
    assert L.kpts_for(q[1], L.PRESETS["pw500k4"]) == (4, 4, 1)
    assert L.kpts_for(q[0], L.PRESETS["pw400"]) == (1, 1, 1)
    # the default settings are the converged ones of the settings check: 500 eV, 3x3x1 k on the 4x4 cell
    import argparse

    from screening.cmd_label import add_settings_arguments

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    default = L.settings_from_args(parser.parse_args([]))
    assert default == L.PRESETS[L.DEFAULT_PRESET] and default.ecut == 500.0
    assert L.kpts_for(q[1], default) == (3, 3, 1)
    db = tmp_path / "l.db"
    L.label_structures(q, "emt", db_path=db, progress=False)
    rows = {r.name: r for r in _rows(db)}
    assert rows["Ni2@6Na+H@top_M1"].site == "top_M1" and rows["Ni2@6Na+H@top_M1"].motif == "6Na"
    assert (
        rows["Ni2@6Na"].get("site") is None
        and rows["Ni2@6Na"].n_N == 6
        and rows["Ni2@6Na"].supercell == "4x4"
    )
    text = L.write_readme(db, tmp_path / "README.md")
    assert "| Ni | 2 |" in text and "| 6Na | 2 |" in text and "core-hours" in text
    with pytest.raises(InputError, match="top_Q9"):
        L.build_queue(["Ni"], resolve_motifs("6Na"), supercell="4x4", with_h=True, sites=["top_Q9"])


def test_resume_after_kill_labels_only_missing(tmp_path):
    frames = _clusters(6)
    eng = L.Engine("counting-emt", lambda a, s, at, txt: CountingEMT(), lambda: "x", lambda s: {})
    db = tmp_path / "labels.db"
    CountingEMT.calls, CountingEMT.kill_at = 0, 4
    with pytest.raises(KeyboardInterrupt):
        L.label_structures(frames, eng, db_path=db, progress=False)
    assert len(_rows(db)) == 3  # three finished rows survived the kill, the fourth was never written
    CountingEMT.calls, CountingEMT.kill_at = 0, None
    rep = L.label_structures(frames + frames[:2], eng, db_path=db, progress=False)
    assert CountingEMT.calls == 3 and rep.labelled == 3 and rep.skipped == 5
    keys = [r.label_key for r in _rows(db)]
    assert len(keys) == 6 == len(set(keys))
    # a third run computes nothing
    CountingEMT.calls = 0
    assert (
        L.label_structures(frames, eng, db_path=db, progress=False).labelled == 0 and CountingEMT.calls == 0
    )


def test_max_labels_caps_work(tmp_path):
    db = tmp_path / "l.db"
    assert L.label_structures(_clusters(4), "emt", db_path=db, progress=False, max_labels=2).labelled == 2
    assert L.label_structures(_clusters(4), "emt", db_path=db, progress=False).labelled == 2


def test_nonconverged_scf_flagged_retried_and_excluded(tmp_path):
    frames = _clusters(3)
    eng = _flaky_engine(fail_names={"cluster1"}, fail_first_only={"cluster2"})
    db = tmp_path / "labels.db"
    rep = L.label_structures(frames, eng, L.LabelSettings(), db_path=db, progress=False)
    assert (rep.converged, rep.failed) == (2, 1)
    rows = {r.name: r for r in _rows(db)}
    bad = rows["cluster1"]
    assert bad.converged is False and bad.status == "unconverged" and bad.n_attempts == 3
    assert bad.get("energy") is None  # never a silent number
    attempts = json.loads(bad.data["attempts"])
    assert [a["magmom_scale"] for a in attempts] == [1.0, 0.5, 0.0]
    assert all(not a["converged"] and "SCF" in a["error"] for a in attempts)
    retried = rows["cluster2"]
    assert retried.converged is True and retried.n_attempts == 2 and retried.n_scf == 7
    assert [a["converged"] for a in json.loads(retried.data["attempts"])] == [False, True]
    assert L.export_training_set(db, tmp_path / "t.extxyz") == 2
    from ase.io import read

    assert sorted(a.info["name"] for a in read(tmp_path / "t.extxyz", index=":")) == ["cluster0", "cluster2"]
    # flagged rows are "done" on resume unless retry_failed
    assert L.label_structures(frames, eng, db_path=db, progress=False).labelled == 0
    assert L.label_structures(frames, eng, db_path=db, progress=False, retry_failed=True).labelled == 1
    s = L.db_summary(db)
    assert (s["converged"], s["failed"]) == (2, 2)


def test_calculator_error_is_recorded_not_retried(tmp_path):
    def make(atoms, s, attempt, txt):
        raise ValueError("bad pseudopotential")

    eng = L.Engine("broken", make, lambda: "broken 0", lambda s: {}, attempts=L._gpaw_attempts, has_scf=True)
    L.label_structures(_clusters(1), eng, db_path=tmp_path / "l.db", progress=False)
    (row,) = _rows(tmp_path / "l.db")
    assert row.status == "error" and row.n_attempts == 1 and "bad pseudopotential" in row.data["error"]


def test_workers_match_serial(tmp_path):
    frames = _clusters(4)
    L.label_structures(frames, "emt", db_path=tmp_path / "a.db", progress=False, workers=1)
    L.label_structures(frames, "emt", db_path=tmp_path / "b.db", progress=False, workers=2)
    ea = {r.label_key: r.energy for r in _rows(tmp_path / "a.db")}
    eb = {r.label_key: r.energy for r in _rows(tmp_path / "b.db")}
    assert ea.keys() == eb.keys() and all(ea[k] == pytest.approx(eb[k], abs=1e-10) for k in ea)


def test_ase_engine_spec_and_errors(tmp_path):
    eng = L.get_engine("ase:ase.calculators.emt:EMT")
    L.label_structures(_clusters(1), eng, db_path=tmp_path / "l.db", progress=False)
    assert _rows(tmp_path / "l.db")[0].engine == "ase:ase.calculators.emt:EMT"
    with pytest.raises(InputError, match="no class 'Nope'"):
        L.label_structures(_clusters(1), "ase:ase.calculators.emt:Nope", db_path=tmp_path / "x.db")
    with pytest.raises(InputError, match="ase:<module>:<Class>"):
        L.get_engine("ase:onlymodule")
    with pytest.raises(InputError, match="EMT has no parameters for Fe"):
        L.label_structures([Atoms("Fe2", positions=[[0, 0, 0], [2, 0, 0]])], "emt", db_path=tmp_path / "y.db")


def test_gpaw_missing_names_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gpaw", None)
    with pytest.raises(InputError, match="pip install gpaw"):
        L.label_structures(_clusters(1), "gpaw", db_path=tmp_path / "l.db")
    assert not (tmp_path / "l.db").exists()


# ------------------------------------------------------------------ VASP / QE import
QE_HEADER = """
     Program PWSCF v.7.2 starts on  1Jan2026 at 10: 0: 0

     bravais-lattice index     =            0
     lattice parameter (alat)  =      {alat:.4f}  a.u.
     unit-cell volume          =    1000.0000 (a.u.)^3
     number of atoms/cell      =            {nat}
     number of atomic types    =            1
     kinetic-energy cutoff     =      30.0000  Ry
     Exchange-correlation= PBE
     celldm(1)=  {alat:.6f}  celldm(2)=   0.000000  celldm(3)=   0.000000

     crystal axes: (cart. coord. in units of alat)
               a(1) = (   1.000000   0.000000   0.000000 )
               a(2) = (   0.000000   1.000000   0.000000 )
               a(3) = (   0.000000   0.000000   1.000000 )

   Cartesian axes

     site n.     atom                  positions (alat units)
{positions}

     number of k points=     1  Fermi-Dirac smearing, width (Ry)=  0.0073
                       cart. coord. in units 2pi/alat
        k(    1) = (   0.0000000   0.0000000   0.0000000), wk =   2.0000000
"""


def _qe_step(energy_ry: float, forces_ry_bohr: np.ndarray) -> str:
    lines = [
        f"!    total energy              =    {energy_ry:.8f} Ry",
        "",
        "     Forces acting on atoms (cartesian axes, Ry/au):",
        "",
    ]
    for i, f in enumerate(forces_ry_bohr):
        lines.append(f"     atom    {i + 1} type  1   force =    {f[0]:.8f}   {f[1]:.8f}   {f[2]:.8f}")
    lines.append("")
    return "\n".join(lines) + "\n"


def _write_qe_output(path, symbols, steps):
    """pw.x relax output: header + first step, then ATOMIC_POSITIONS (angstrom) + results per step."""
    from ase.io.espresso import units

    Bohr = units["Bohr"]

    alat_bohr = 10.0 / Bohr
    pos0 = steps[0][0]
    plines = "\n".join(
        f"         {i + 1}           {s}  tau(   {i + 1}) = (   {p[0] / 10.0:.7f}   {p[1] / 10.0:.7f}   "
        f"{p[2] / 10.0:.7f}  )"
        for i, (s, p) in enumerate(zip(symbols, pos0))
    )
    text = QE_HEADER.format(alat=alat_bohr, nat=len(symbols), positions=plines)
    text += _qe_step(steps[0][1], steps[0][2])
    for pos, e, f in steps[1:]:
        text += "ATOMIC_POSITIONS (angstrom)\n"
        text += (
            "".join(f"{s}        {p[0]:.9f}   {p[1]:.9f}   {p[2]:.9f}\n" for s, p in zip(symbols, pos)) + "\n"
        )
        text += _qe_step(e, f)
    text += "\n     End of BFGS Geometry Optimization\n     JOB DONE.\n"
    path.write_text(text)


def test_qe_import_round_trip(tmp_path):
    from ase.io.espresso import units  # the QE reader converts with CODATA-2006 constants

    Ry, Bohr = units["Ry"], units["Bohr"]

    rng = np.random.default_rng(0)
    pos0 = np.array([[4.0, 5.0, 5.0], [5.1, 5.0, 5.0], [6.2, 5.1, 5.0]])
    steps = [
        (pos0 + 0.01 * k * rng.normal(size=pos0.shape), -45.5 - 0.01 * k, rng.normal(size=(3, 3)) * 0.01)
        for k in range(3)
    ]
    out = tmp_path / "relax.out"
    _write_qe_output(out, ["Cu", "Cu", "Cu"], steps)
    db = tmp_path / "l.db"
    assert main(["import", str(out), "--db", str(db)]) == 0
    rows = sorted(_rows(db), key=lambda r: r.ionic_step)
    assert len(rows) == 3 and all(r.engine == "qe" and r.engine_version == "qe v.7.2" for r in rows)
    for r, (pos, e, f) in zip(rows, steps):
        assert r.energy == pytest.approx(e * Ry, abs=1e-6)
        np.testing.assert_allclose(r.forces, f * Ry / Bohr, atol=1e-6)
        np.testing.assert_allclose(r.positions, pos, atol=1e-6)
    assert json.loads(rows[0].data["settings"])["physics"]["ecut_eV"] == pytest.approx(30 * Ry, abs=1e-2)
    assert main(["import", str(out), "--db", str(db)]) == 0  # re-import: nothing new
    assert len(_rows(db)) == 3


VASPRUN = """<?xml version="1.0" encoding="ISO-8859-1"?>
<modeling>
 <generator>
  <i name="program" type="string">vasp </i>
  <i name="version" type="string">6.4.2  </i>
 </generator>
 <kpoints>
  <generation param="Gamma">
   <v type="int" name="divisions">       3        3        1 </v>
  </generation>
  <varray name="kpointlist">
   <v>       0.00000000       0.00000000       0.00000000 </v>
  </varray>
  <varray name="weights">
   <v>       1.00000000 </v>
  </varray>
 </kpoints>
 <parameters>
  <i name="ENCUT">    400.00000000</i>
 </parameters>
 <atominfo>
  <atoms>       2 </atoms>
  <array name="atoms" >
   <dimension dim="1">ion</dimension>
   <field type="string">element</field>
   <field type="int">atomtype</field>
   <set>
    <rc><c>Ni</c><c>   1</c></rc>
    <rc><c>Ni</c><c>   1</c></rc>
   </set>
  </array>
 </atominfo>
 <structure name="initialpos" >
  <crystal>
   <varray name="basis" >
{basis}
   </varray>
  </crystal>
  <varray name="positions" >
{pos0}
  </varray>
 </structure>
{steps}
</modeling>
"""

VASP_STEP = """ <calculation>
  <scstep>
   <energy>
    <i name="e_fr_energy">  {efr:.8f} </i>
    <i name="e_wo_entrp">  {e0:.8f} </i>
    <i name="e_0_energy">  {e0:.8f} </i>
   </energy>
  </scstep>
  <structure>
   <crystal>
    <varray name="basis" >
{basis}
    </varray>
   </crystal>
   <varray name="positions" >
{pos}
   </varray>
  </structure>
  <varray name="forces" >
{forces}
  </varray>
  <energy>
   <i name="e_fr_energy">  {efr:.8f} </i>
   <i name="e_wo_entrp">  {e0:.8f} </i>
   <i name="e_0_energy">  {e0:.8f} </i>
  </energy>
 </calculation>"""


def _v(rows) -> str:
    return "\n".join("    <v>" + " ".join(f"{x:16.8f}" for x in r) + " </v>" for r in rows)


def test_vasprun_import_round_trip_and_bad_file(tmp_path):
    cell = np.diag([8.0, 8.0, 8.0])
    frac = [np.array([[0.4, 0.5, 0.5], [0.68, 0.5, 0.5]]), np.array([[0.41, 0.5, 0.5], [0.67, 0.5, 0.5]])]
    forces = [
        np.array([[-0.3, 0.0, 0.01], [0.3, 0.0, -0.01]]),
        np.array([[-0.05, 0.0, 0.0], [0.05, 0.0, 0.0]]),
    ]
    energies = [(-10.10, -10.12), (-10.30, -10.31)]  # (e_fr, e_0)
    steps = "\n".join(
        VASP_STEP.format(efr=efr, e0=e0, basis=_v(cell), pos=_v(p), forces=_v(f))
        for (efr, e0), p, f in zip(energies, frac, forces)
    )
    path = tmp_path / "vasprun.xml"
    path.write_text(VASPRUN.format(basis=_v(cell), pos0=_v(frac[0]), steps=steps))
    db = tmp_path / "l.db"
    assert main(["import", str(path), "--db", str(db)]) == 0
    rows = sorted(_rows(db), key=lambda r: r.ionic_step)
    assert [r.engine for r in rows] == ["vasp", "vasp"] and rows[0].engine_version == "vasp 6.4.2"
    for r, (_, e0), f, p in zip(rows, energies, forces, frac):
        assert r.energy == pytest.approx(e0, abs=1e-8)  # ASE reports the sigma -> 0 energy
        np.testing.assert_allclose(r.forces, f, atol=1e-8)
        np.testing.assert_allclose(r.positions, p @ cell, atol=1e-8)
    phys = json.loads(rows[0].data["settings"])["physics"]
    assert phys["ecut_eV"] == 400.0 and phys["kpts"] == [3, 3, 1]
    broken = tmp_path / "vasprun_broken.xml"
    broken.write_text("<modeling><generator><i name='program'>vasp</i></generator>\n<atominfo><oops")
    with pytest.raises(InputError, match="vasprun_broken.xml"):
        from screening.cmd_import import import_outputs

        import_outputs([str(broken)], str(tmp_path / "x.db"))
    assert main(["import", str(tmp_path / "missing.out"), "--db", str(db)]) == 2


# ------------------------------------------------------------------ real GPAW
@pytest.mark.gpaw
def test_gpaw_plane_wave_h2(tmp_path):
    pytest.importorskip("gpaw", reason="GPAW is not installed (optional extra: CC=g++ pip install gpaw)")
    h2 = molecule("H2")
    h2.center(vacuum=2.0)
    h2.pbc = True
    h2.info["name"] = "H2"
    db = tmp_path / "l.db"
    settings = L.LabelSettings(ecut=250.0, kpts=(1, 1, 1), maxiter=60)
    rep = L.label_structures([h2], "gpaw", settings, db_path=db, progress=False)
    assert rep.converged == 1
    (row,) = _rows(db)
    assert row.engine == "gpaw" and row.engine_version.startswith("gpaw ") and row.n_scf > 1
    assert -8.0 < row.energy < -5.0  # PBE H2 total energy relative to GPAW's atomic references, eV
    f = row.forces
    np.testing.assert_allclose(f[0], -f[1], atol=1e-3)  # Newton's third law along the bond
    assert abs(f[0, 2]) > 0.1 and np.abs(f[:, :2]).max() < 1e-3
    s = json.loads(row.data["settings"])
    assert s["physics"]["ecut"] == 250.0 and s["kpts_used"] == [1, 1, 1] and s["spinpol"] is True
    assert (tmp_path / "logs").is_dir()


def test_scf_ladder_cycles_mixers_and_moments():
    s = L.LabelSettings(magmom_scales=(1.0, 0.0), mixers=("msr1", "dif", "pulay"), mixer_betas=(0.05, 0.02))
    att = L.get_engine("gpaw").attempts(s)
    assert [a["mixer"] for a in att] == ["msr1", "dif", "pulay"]
    assert [a["magmom_scale"] for a in att] == [1.0, 0.0, 0.0] and [a["beta"] for a in att] == [
        0.05,
        0.02,
        0.02,
    ]
    dif = L.gpaw_mixer(att[1], s)
    assert dif["name"] == "multi" and dif["mixer_b"]["beta"] < dif["mixer_a"]["beta"]
    assert L.gpaw_mixer(att[2], s)["weight"] == s.mixer_weight
    paired = L.get_engine("gpaw").attempts(L.LabelSettings(spinpol=False))
    assert len(paired) == 2 and all(a["magmom_scale"] == 0.0 for a in paired)
    with pytest.raises(InputError, match="unknown SCF mixer 'broyden'"):
        L.gpaw_mixer({"mixer": "broyden"}, s)
    # the ladder is not physics: a settings hash does not depend on it
    assert L.get_engine("gpaw").physics(s) == L.get_engine("gpaw").physics(L.LabelSettings())


def test_gpaw_every_mixer_reaches_the_same_triplet_o2():
    pytest.importorskip("gpaw", reason="GPAW is not installed (optional extra: CC=g++ pip install gpaw)")
    s = L.LabelSettings(ecut=200.0, kpts=(1, 1, 1), maxiter=60, magmom_scales=(1.0,))
    eng = L.get_engine("gpaw")
    energies = []
    for att in eng.attempts(s):
        o2 = molecule("O2")
        o2.center(vacuum=2.5)
        o2.pbc = True
        o2.calc = eng.make(o2, s, att, None)
        energies.append(o2.get_potential_energy())
        assert abs(o2.get_magnetic_moment() - 2.0) < 0.05, att
    assert np.ptp(energies) < 2e-3, energies


# ------------------------------------------------------------------ CLI errors
@pytest.mark.parametrize(
    "argv, msg",
    [
        (["label", "--engine", "nope", "--hosts", "Ni"], "unknown engine 'nope'"),
        (["label", "--engine", "emt"], "nothing to label"),
        (["label", "--engine", "emt", "--hosts", "Xx"], "unknown metal 'Xx'"),
        (["label", "--engine", "emt", "--hosts", "Ni", "--kpts", "3x3"], "bad --kpts '3x3'"),
        (["label", "--engine", "emt", "--hosts", "Ni", "--workers", "0"], "--workers 0"),
        (["label", "--engine", "emt", "--hosts", "Ni", "--preset", "huge"], "unknown settings preset 'huge'"),
        (["label", "--engine", "emt", "--in", "nowhere.extxyz"], "'nowhere.extxyz' does not exist"),
        (["import", "nowhere.out"], "'nowhere.out' does not exist"),
    ],
)
def test_cli_errors(argv, msg, tmp_path, capsys):
    assert main(argv + ["--db", str(tmp_path / "l.db")]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "l.db").exists()


def test_cli_label_in_file_and_export(tmp_path, capsys):
    from ase.io import read, write

    src = tmp_path / "in.extxyz"
    write(src, _clusters(3))
    db, out = tmp_path / "l.db", tmp_path / "out.extxyz"
    argv = [
        "label",
        "--engine",
        "emt",
        "--in",
        str(src),
        "--db",
        str(db),
        "--no-progress",
        "--export",
        str(out),
    ]
    assert main(argv + ["--readme", str(tmp_path / "README.md")]) == 0
    assert "3 labelled now" in capsys.readouterr().out
    readme = (tmp_path / "README.md").read_text()
    assert all(f"| cluster{i} | emt |" in readme for i in range(3)) and "Rows: 3 (3 converged" in readme
    assert len(read(out, index=":")) == 3
    assert main(argv) == 0
    assert "3 already labelled, 0 labelled now" in capsys.readouterr().out


# ------------------------------------------------------------------ screen data
def test_data_command_builds_labelled_split_set(tmp_path, capsys, monkeypatch):
    from ase.io import read

    out = tmp_path / "train.extxyz"
    argv = [
        "data",
        "--metals",
        "Ni,Cu",
        "--motifs",
        "6Na",
        "--sites",
        "top_M1",
        "--reference",
        "emt",
        "--n-rattle",
        "2",
        "--rattle",
        "0.05",
        "--strain",
        "0.02",
        "--relax-frames",
        "3",
        "--out",
        str(out),
        "--valid-fraction",
        "0.5",
        "--no-progress",
    ]
    assert main(argv) == 0
    train, valid = read(out, index=":"), read(tmp_path / "train.valid.extxyz", index=":")
    refs = [a for a in train + valid if a.info["frame"] in ("h2", "pocket", "bulk")]
    assert all(any(a is b for b in train) for a in refs)  # references always train
    # 6 H2 bond lengths, the 6Na pocket + 2 rattles, Ni and Cu bulk at 5 lattice scales
    assert [a.info["frame"] for a in refs].count("h2") == 6 and len(refs) == 6 + 3 + 10
    h2_d = sorted(a.get_distance(0, 1) for a in refs if a.info["frame"] == "h2")
    np.testing.assert_allclose(h2_d, D_H2_BONDS, atol=1e-8)
    train_h = [a for a in train if a.info["frame"] not in ("h2", "pocket", "bulk")]
    hosts_t, hosts_v = {a.info["host"] for a in train_h}, {a.info["host"] for a in valid}
    assert len(hosts_t) == len(hosts_v) == 1 and not hosts_t & hosts_v  # split by host, no leakage
    frames = train_h + valid
    kinds = [a.info["frame"] for a in frames]
    # 2 hosts x 2 structures (host, host+H): 1 base + 2 rattles + 2 strains each, up to 3 FIRE frames each,
    # and 3 H-scan copies of each H* state
    assert kinds.count("base") == 4 and kinds.count("rattle") == 8 and kinds.count("strain") == 8
    assert 4 <= kinds.count("relax") <= 12 and kinds.count("h_scan") == 6
    base = {a.info["name"]: a for a in frames if a.info["frame"] == "base"}
    for a in frames:
        assert a.info["reference"] == "emt" and "physics" in json.loads(a.info["reference_settings"])
        r = a.copy()
        r.calc = EMT()
        # extxyz stores positions to 1e-8 Å, so the recomputed labels agree to ~1e-7
        assert a.get_potential_energy() == pytest.approx(r.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(a.get_forces(), r.get_forces(), atol=1e-6)
        if a.info["frame"] == "strain":
            ref = base[a.info["name"]]
            ratio = a.cell.lengths() / ref.cell.lengths()
            np.testing.assert_allclose(ratio, [1 + a.info["strain"]] * 2 + [1.0], atol=1e-12)
        if a.info["frame"] == "rattle":
            d = a.positions - base[a.info["name"]].positions
            assert 0.01 < np.sqrt((d**2).mean()) < 0.1
        if a.info["frame"] == "h_scan":  # only the H moved, along z, by the offset
            d = a.positions - base[a.info["name"]].positions
            h = int(a.info["ads_index"])
            np.testing.assert_allclose(d[h], [0, 0, a.info["h_offset"]], atol=1e-7)
            assert np.abs(np.delete(d, h, axis=0)).max() < 1e-7
    capsys.readouterr()
    # resume: nothing is relabelled or relaxed again, the same frames come out
    import screening.cmd_data as D

    monkeypatch.setattr(D, "relax_frames", lambda *a, **k: pytest.fail("relaxation redone on resume"))
    assert main(argv) == 0
    assert "(0 labelled now" in capsys.readouterr().out
    again = read(out, index=":")
    assert [a.get_potential_energy() for a in again] == [a.get_potential_energy() for a in train]
    # a labelled file as the reference: its frames pass through with energies intact
    out2 = tmp_path / "from_file.extxyz"
    assert (
        main(["data", "--metals", "Ni,Cu", "--motifs", "6Na", "--reference", str(out), "--out", str(out2)])
        == 0
    )
    got = read(out2, index=":")
    assert len(got) == len(train) and got[0].get_potential_energy() == pytest.approx(
        train[0].get_potential_energy()
    )
    # the same labelled frames written twice (two runs sharing references) count once
    twice = tmp_path / "twice.extxyz"
    twice.write_text(out.read_text() * 2)
    out3 = tmp_path / "dedup.extxyz"
    argv3 = ["data", "--metals", "Ni,Cu", "--motifs", "6Na", "--reference", str(twice), "--out", str(out3)]
    assert main(argv3) == 0
    assert len(read(out3, index=":")) == len(train)


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--rattle", "-0.1"], "--rattle -0.1"),
        (["--valid-fraction", "1.5"], "--valid-fraction 1.5"),
        (["--reference", "nope"], "unknown engine 'nope'"),
        (["--metals", "Fe"], "EMT has no parameters for Fe"),
        (["--h-scan", "0.5,up"], "--h-scan offset 'up'"),
        (["--h-scan", "9"], "--h-scan offset 9.0"),
    ],
)
def test_data_command_errors(extra, msg, tmp_path, capsys):
    out = tmp_path / "t.extxyz"
    argv = ["data", "--metals", "Ni", "--reference", "emt", "--out", str(out), "--no-progress"]
    assert main(argv + extra) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists()


def test_sevenn_engine_labels(tmp_path):
    pytest.importorskip("sevenn", reason="SevenNet is not installed (optional extra: pip install sevenn)")
    h2 = molecule("H2", vacuum=4.0, pbc=True)
    rep = L.label_structures([h2], "sevenn", db_path=tmp_path / "l.db", progress=False)
    (row,) = _rows(tmp_path / "l.db")
    assert rep.converged == 1 and row.engine_version.startswith("sevenn ") and -8 < row.energy < -5
    np.testing.assert_allclose(row.forces[0], -row.forces[1], atol=1e-4)


# ------------------------------------------------------------------ screen bench dft
def test_bench_dft_reads_triples_from_store(tmp_path, capsys):
    """ΔE_H arithmetic and the keep/tighten verdict on a store with known energies (no DFT run)."""
    import ase.db

    from screening.bench_dft import delta_e_h
    from structures.motifs import resolve_motifs

    q = L.build_queue(
        ["Ni", "Cu"], resolve_motifs("6Na"), supercell="4x4", with_h=True, sites=["top_M1"], h2=True
    )
    gp = L.get_engine("gpaw")
    energies = {
        "pw400": {
            "H2": -6.70,
            "Ni2@6Na": -250.0,
            "Ni2@6Na+H@top_M1": -253.0,
            "Cu2@6Na": -240.0,
            "Cu2@6Na+H@top_M1": -243.2,
        },
        "pw500k4": {
            "H2": -6.72,
            "Ni2@6Na": -250.5,
            "Ni2@6Na+H@top_M1": -253.52,
            "Cu2@6Na": -240.3,
            "Cu2@6Na+H@top_M1": -243.3,
        },
    }
    db_path = tmp_path / "labels.db"
    db = ase.db.connect(str(db_path))
    for preset, es in energies.items():
        s = L.PRESETS[preset]
        for a in q:
            res = {
                "converged": True,
                "status": "ok",
                "energy": es[a.info["name"]],
                "forces": np.zeros((len(a), 3)),
                "wall_s": 1800.0,
                "attempts": [{"magmom_scale": 1.0, "converged": True}],
                "n_scf": 30,
            }
            L.write_label_row(
                db, a, L.label_key(a, gp, s), "gpaw", "gpaw test", {"physics": gp.physics(s)}, res
            )
    # a `screen validate` row of the same host at another (model-relaxed) geometry must not join the triple
    s = L.PRESETS["pw400"]
    moved = q[1].copy()
    moved.positions[-1, 2] += 0.1
    moved.info.update(frame="dft_validation", source="results.db")
    res = {**res, "energy": -999.0}
    L.write_label_row(
        db, moved, L.label_key(moved, gp, s), "gpaw", "gpaw test", {"physics": gp.physics(s)}, res
    )
    table = delta_e_h(str(db_path))
    sh = L.settings_hash(gp, L.PRESETS["pw400"])
    assert table[sh]["Ni2@6Na+H@top_M1"]["dE_H"] == pytest.approx(-253.0 + 250.0 + 3.35)
    assert main(["bench", "dft", "--db", str(db_path), "--hosts", "Ni,Cu,Fe", "--root", str(tmp_path)]) == 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    # Ni: 0.35 -> 0.34 (keep); Cu: 0.15 -> 0.36 (tighten); Fe: not in the store
    assert "| Ni2@6Na+H@top_M1 | +0.350 | +0.340 | -0.010 | keep |" in md
    assert "| Cu2@6Na+H@top_M1 | +0.150 | +0.360 | +0.210 | tighten |" in md
    assert "| Fe2@6Na+H@top_M1 | not finished | not finished |" in md
    res = json.loads((tmp_path / "benchmarks" / "results" / "dft.json").read_text())
    assert [r["verdict"] for r in res["settings_check"]] == ["keep", "tighten"]
    assert res["store"]["core_hours"] == pytest.approx(11 * 0.5)
    # the same check on the model-relaxed geometries of `screen validate` (--frames validation): only those
    # rows pair up (the latest row of a structure wins), each settings with its own H2
    label = {"converged": True, "status": "ok", "forces": None, "wall_s": 1800.0, "n_scf": 30}
    val = {"pw400": (-6.70, -250.2, -253.1), "pw500": (-6.71, -250.4, -253.28)}
    for preset, (e_h2, e_host, e_ads) in val.items():
        s = L.PRESETS[preset]
        for a, e in zip((q[0], q[1], q[2]), (e_h2, e_host, e_ads)):
            b = a.copy()
            b.positions[-1, 2] += 0.05  # a model-relaxed geometry: not the builder's
            b.info.update(frame="dft_validation")
            L.write_label_row(
                db,
                b,
                L.label_key(b, gp, s),
                "gpaw",
                "gpaw test",
                {"physics": gp.physics(s)},
                {**label, "energy": e, "forces": np.zeros((len(b), 3))},
            )
    table = delta_e_h(str(db_path), frames=("dft_validation",))
    assert table[sh]["Ni2@6Na+H@top_M1"]["dE_H"] == pytest.approx(-253.1 + 250.2 + 3.35)
    # the model card takes both geometry sets; of the validated structure only its latest settings (pw500)
    from screening.bench_model import dft_triples

    val = [t for t in dft_triples(str(db_path)) if t["geometry"] == "validate"]
    assert len(val) == 1 and val[0]["dft_de"] == pytest.approx(-253.28 + 250.4 + 0.5 * 6.71)
    assert {t["geometry"] for t in dft_triples(str(db_path))} == {"builder", "validate"}
    argv = [
        "bench",
        "dft",
        "--db",
        str(db_path),
        "--hosts",
        "Ni",
        "--frames",
        "validation",
        "--tight",
        "pw500",
    ]
    assert main([*argv, "--root", str(tmp_path)]) == 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| Ni2@6Na+H@top_M1 | +0.450 | +0.475 | +0.025 | keep |" in md and "Model-relaxed geometries" in md
    assert main([*argv, "--compute"]) == 2
    # a ladder with a further preset that is not in the store yet
    assert main([*argv, "--also", "pw600", "--root", str(tmp_path)]) == 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| Ni2@6Na+H@top_M1 | +0.450 | +0.475 (+0.025) | not finished |" in md
    # a second check in its own section leaves the first one in place
    assert main([*argv, "--root", str(tmp_path), "--section", "dft_kpoints"]) == 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## dft_kpoints" in md and "## dft\n" in md
    assert (tmp_path / "benchmarks" / "results" / "dft_kpoints.json").exists()
    assert main([*argv, "--root", str(tmp_path), "--section", "../x"]) == 2


def test_bench_dft_cell_size_check_keeps_supercells_apart(tmp_path, capsys):
    """The same host in the 4x4 and the 5x5 cell at the same settings: two triples, never mixed, and the
    cell-size check (--tight-supercell) compares them."""
    import ase.db

    from screening.bench_dft import delta_e_h
    from screening.bench_model import dft_triples
    from structures.motifs import resolve_motifs

    gp, s = L.get_engine("gpaw"), L.PRESETS["pw500"]
    db_path = tmp_path / "labels.db"
    db = ase.db.connect(str(db_path))
    energies = {
        "4x4": {"H2": -6.70, "Ni2@6Na": -250.0, "Ni2@6Na+H@top_M1": -253.0},
        "5x5": {"H2": -6.70, "Ni2@6Na": -410.0, "Ni2@6Na+H@top_M1": -413.03},
    }
    for cell, es in energies.items():
        q = L.build_queue(
            ["Ni"], resolve_motifs("6Na"), supercell=cell, with_h=True, sites=["top_M1"], h2=True
        )
        for a in q:
            res = {"converged": True, "status": "ok", "energy": es[a.info["name"]],
                   "forces": np.zeros((len(a), 3)), "wall_s": 600.0, "n_scf": 20}  # fmt: skip
            L.write_label_row(
                db, a, L.label_key(a, gp, s), "gpaw", "gpaw test", {"physics": gp.physics(s)}, res
            )
    sh = L.settings_hash(gp, s)
    table = delta_e_h(str(db_path))[sh]
    assert table["Ni2@6Na+H@top_M1"]["dE_H"] == pytest.approx(-253.0 + 250.0 + 3.35)
    assert table["Ni2@6Na+H@top_M1 (5x5)"]["dE_H"] == pytest.approx(-413.03 + 410.0 + 3.35)
    names = sorted(t["name"] for t in dft_triples(str(db_path), sh))
    assert names == ["Ni2@6Na+H@top_M1", "Ni2@6Na+H@top_M1 (5x5)"]
    argv = ["bench", "dft", "--db", str(db_path), "--hosts", "Ni", "--base", "pw500", "--tight", "pw500"]
    assert main([*argv, "--tight-supercell", "5x5", "--root", str(tmp_path)]) == 0
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| Ni2@6Na+H@top_M1 | +0.350 | +0.320 | -0.030 | keep |" in md and "5x5 cell" in md
    assert main([*argv, "--tight-supercell", "5x5", "--frames", "validation"]) == 2
    assert "--frames builder only" in capsys.readouterr().err


def _ni_co_label_store(tmp_path, co_h_energy: float, forces_of) -> tuple[str, str]:
    """A pw500 label store with the Ni2@6Na and Co2@6Na triples (H at top_M1) and H2; ``forces_of(atoms)``
    gives each row's DFT forces. Returns (path, settings hash)."""
    import ase.db

    from structures.motifs import resolve_motifs

    gp, s = L.get_engine("gpaw"), L.PRESETS["pw500"]
    db_path = tmp_path / "labels.db"
    db = ase.db.connect(str(db_path))
    energies = {"H2": -6.70, "Ni2@6Na": -250.0, "Ni2@6Na+H@top_M1": -253.0, "Co2@6Na": -260.0,
                "Co2@6Na+H@top_M1": co_h_energy}  # fmt: skip
    for a in L.build_queue(["Ni", "Co"], resolve_motifs("6Na"), with_h=True, sites=["top_M1"], h2=True):
        res = {"converged": True, "status": "ok", "energy": energies[a.info["name"]], "forces": forces_of(a),
               "wall_s": 600.0, "n_scf": 20}  # fmt: skip
        L.write_label_row(db, a, L.label_key(a, gp, s), "gpaw", "gpaw test", {"physics": gp.physics(s)}, res)
    return str(db_path), L.settings_hash(gp, s)


def test_dft_triples_leave_out_a_single_point_far_from_any_minimum(tmp_path):
    """A host+H single point with a large DFT force on H (a broken model geometry) is no ΔE_H truth."""
    from screening.bench_model import MAX_H_FORCE, dft_triples, left_out_note

    def forces_of(a):
        forces = np.zeros((len(a), 3))
        if a.info["name"].startswith("Co2@6Na+H"):
            forces[a.numbers == 1, 2] = 2.0 * MAX_H_FORCE
        return forces

    db_path, sh = _ni_co_label_store(tmp_path, -260.1, forces_of)
    left_out: list = []
    kept = dft_triples(db_path, sh, left_out=left_out)
    assert [t["name"] for t in kept] == ["Ni2@6Na+H@top_M1"] and kept[0]["h_force"] == 0.0
    assert [t["name"] for t in left_out] == ["Co2@6Na+H@top_M1"]
    assert left_out[0]["h_force"] == pytest.approx(2.0 * MAX_H_FORCE)
    assert "Co2@6Na+H@top_M1 (10.0 eV/Å)" in left_out_note(left_out)
    assert len(dft_triples(db_path, sh, max_h_force=float("inf"))) == 2
    # each triple says how far its host and its H* state are from a DFT minimum (largest force on any atom)
    assert kept[0]["host_fmax"] == 0.0 and kept[0]["state_fmax"] == 0.0
    assert left_out[0]["state_fmax"] == pytest.approx(2.0 * MAX_H_FORCE) and left_out[0]["host_fmax"] == 0.0


def test_dft_triples_leave_out_a_state_with_a_huge_force_on_any_atom(tmp_path):
    """A model-relaxed H* state with a DFT force on a metal far above any relaxed geometry's (Rh2@2Nd+H@top_M2:
    19 eV/Å on Rh, 0.3 on H) is no ΔE_H truth either; a force just below the cap stays in."""
    from screening.bench_model import MAX_H_FORCE, MAX_STATE_FORCE, dft_triples, left_out_note

    def forces_of(a):
        forces = np.zeros((len(a), 3))
        if "+H" in a.info["name"]:
            metal = [i for i, z in enumerate(a.numbers) if z in (27, 28)][0]
            forces[a.numbers == 1, 0] = 0.5 * MAX_H_FORCE  # the force on H alone would keep both
            forces[metal, 1] = (1.3 if a.info["name"].startswith("Co") else 0.9) * MAX_STATE_FORCE
        return forces

    db_path, sh = _ni_co_label_store(tmp_path, -258.0, forces_of)
    left_out: list = []
    kept = dft_triples(db_path, sh, left_out=left_out)
    assert [t["name"] for t in kept] == ["Ni2@6Na+H@top_M1"]
    assert [t["name"] for t in left_out] == ["Co2@6Na+H@top_M1"]
    assert left_out[0]["state_fmax"] == pytest.approx(1.3 * MAX_STATE_FORCE)
    note = left_out_note(left_out)
    assert f"Co2@6Na+H@top_M1 ({1.3 * MAX_STATE_FORCE:.1f} eV/Å)" in note and "on an atom" in note
    assert len(dft_triples(db_path, sh, max_state_force=float("inf"))) == 2
    assert len(dft_triples(db_path, sh, max_h_force=float("inf"))) == 2  # keep-all callers keep it


class _DiesAfterCheckpoint:
    """Wraps a GPAW calculator: the session ends one SCF iteration after the first checkpoint."""

    def __init__(self, calc):
        self.calc, self.written = calc, False

    def iconverge(self, atoms):
        for ctx in self.calc.iconverge(atoms):
            if self.written:
                raise KeyboardInterrupt
            yield ctx

    def write(self, *args, **kwargs):
        self.calc.write(*args, **kwargs)
        self.written = True


def _gpaw_h2_killed_after_checkpoint(settings, logs):
    """H2 single point (key ``k``) interrupted one iteration after its checkpoint at SCF iteration 3."""
    from dataclasses import replace

    h2 = molecule("H2")
    h2.center(vacuum=2.0)
    h2.pbc = True

    def converge_then_die(atoms, calc, path, **kw):
        L._gpaw_converge(atoms, _DiesAfterCheckpoint(calc), path, every=3, **kw)

    dying = replace(L.get_engine("gpaw"), converge=converge_then_die)
    with pytest.raises(KeyboardInterrupt):
        L.compute_label(h2, dying, settings, str(logs), "k")
    assert (logs / "k.a0.gpw").exists()
    assert json.loads((logs / "k.a0.gpw.json").read_text()) == {"scf": 3}
    return h2


def test_gpaw_single_point_killed_mid_scf_continues_from_its_checkpoint(tmp_path):
    """A long single point killed with its session (here: an interrupt after the first checkpoint) continues
    from its SCF checkpoint: same energy as an uninterrupted run, fewer SCF iterations the second time, the
    checkpoint removed at the end and the interrupted log kept."""
    pytest.importorskip("gpaw", reason="GPAW is not installed (optional extra: CC=g++ pip install gpaw)")
    settings = L.LabelSettings(ecut=250.0, kpts=(1, 1, 1), maxiter=60)
    logs = tmp_path / "logs"
    h2 = _gpaw_h2_killed_after_checkpoint(settings, logs)
    fresh = L.compute_label(h2, "gpaw", settings, str(tmp_path / "fresh"), "k")
    assert fresh["converged"] and not list((tmp_path / "fresh").glob("*.gpw"))
    again = L.compute_label(h2, "gpaw", settings, str(logs), "k")
    assert again["converged"] and again["attempts"][0]["restarted"] == 1
    assert again["attempts"][0]["scf_before"] == 3
    assert again["energy"] == pytest.approx(fresh["energy"], abs=1e-4)
    np.testing.assert_allclose(again["forces"], fresh["forces"], atol=1e-3)
    assert again["n_scf"] < fresh["n_scf"]
    assert not (logs / "k.a0.gpw").exists() and (logs / "k.a0.part1.txt").exists()
    assert not (logs / "k.a0.gpw.json").exists()


def test_gpaw_restarted_attempt_gets_maxiter_in_all_not_afresh(tmp_path):
    """``maxiter`` caps an attempt over its restarts: killed after 3 iterations with ``maxiter`` 4, the
    restarted attempt may run one more and is then recorded as not converged (a restarted GPAW calculator
    would otherwise count from 1 again with its checkpoint's ``maxiter``, every session anew)."""
    pytest.importorskip("gpaw", reason="GPAW is not installed (optional extra: CC=g++ pip install gpaw)")
    settings = L.LabelSettings(ecut=250.0, kpts=(1, 1, 1), maxiter=4)
    logs = tmp_path / "logs"
    h2 = _gpaw_h2_killed_after_checkpoint(settings, logs)
    again = L.compute_label(h2, "gpaw", settings, str(logs), "k")
    first = again["attempts"][0]
    assert first["restarted"] == 1 and first["scf_before"] == 3 and first["converged"] is False
    assert first["n_scf"] == 1 and "Convergence" in first["error"]
    assert not (logs / "k.a0.gpw").exists() and not (logs / "k.a0.gpw.json").exists()


def test_scf_iterations_counted_from_interrupted_logs_when_a_checkpoint_has_no_count(tmp_path):
    """Checkpoints written before the count existed: the iterations in the attempt's interrupted logs (old
    and new GPAW log formats) stand in."""
    (tmp_path / "k.a0.part1.txt").write_text("iter:   1  12:00:00  -1.0\niter:   2  12:01:00  -1.1\n")
    (tmp_path / "k.a0.part2.txt").write_text(
        "|iter:   1| 12:00:00 | -1.0 |\n|iter:   2| x |\n|iter:   3| x |\n"
    )
    (tmp_path / "k.a1.part1.txt").write_text("iter:   1  another attempt\n")
    assert L._scf_before(tmp_path / "k.a0.gpw", str(tmp_path / "k.a0.txt")) == 5
    (tmp_path / "k.a0.gpw.json").write_text('{"scf": 7}')
    assert L._scf_before(tmp_path / "k.a0.gpw", str(tmp_path / "k.a0.txt")) == 7
