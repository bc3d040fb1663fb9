"""The results store: round trip, transactions, the run lock, read-only / corrupt / foreign databases."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys

import ase.db
import numpy as np
import pytest

from screening.relax import RelaxResult
from screening.store import Store, check_database, load_results, load_structures, structure_uid
from structures.common import InputError
from structures.host import build_host


def _result(atoms, energy=-10.0, status="converged"):
    relaxed = atoms.copy()
    relaxed.positions[0, 2] += 0.1
    return RelaxResult(
        index=0, atoms=relaxed, energy=energy, fmax=0.01, n_steps=12, status=status, max_displacement=0.1
    )


def _dg_row(host="Fe2@3Nb", dg=-0.1, flags="high_variance", **extra):
    row = dict(
        host=host,
        metal="Fe",
        metal2="Fe",
        motif="3Nb",
        n_N=3,
        n_sites="0,2,3",
        supercell="4x4",
        best_site="top_M1",
        dg=dg,
        dg_std=0.2,
        dg_std_epistemic=0.1,
        dg_std_aleatoric=math.sqrt(0.03),
        site_agreement=1.0,
        e_form=-1.0,
        e_form_std=0.1,
        aggregates=False,
        converged=True,
        flags=flags,
        flag_high_variance=bool(flags),
        n_samples=4,
        correction=0.24,
        model_hash="mabc",
        relax_hash="rabc",
        settings_hash="sabc",
        uid=f"u{host}",
        data={"site_dg": {"top_M1": dg}, "dg_samples": np.array([dg - 0.1, dg + 0.1])},
    )
    row.update(extra)
    return row


def test_round_trip_structures_and_results(tmp_path):
    db_path = tmp_path / "r.db"
    host = build_host("Fe", "3Nb", supercell="4x4")
    with Store(db_path) as store:
        assert store.write_structures([(host, _result(host), ["not_converged"])], "mabc", "rabc") == 1
        store.write_dg_rows(
            [_dg_row(), _dg_row(host="Co2@3Nb", dg=math.nan, flags="nonfinite", metal="Co", metal2="Co")]
        )
        uid = structure_uid("Fe2@3Nb", "4x4", "mabc", "rabc")
        assert store.uids(kind="structure", state="relaxed") == {uid}
        rec = store.relaxed(kind="structure", model_hash="mabc")[uid]
        assert rec.energy == -10.0 and rec.status == "converged" and rec.flags == ["not_converged"]
        assert rec.atoms.info["site"] is None and rec.atoms.info["motif"] == "3Nb"
        assert np.array_equal(rec.atoms.arrays["role"], host.arrays["role"])
        assert np.allclose(rec.atoms.positions[0, 2], host.positions[0, 2] + 0.1)
    df = load_results(db_path, with_data=True)
    assert list(df["host"]) == ["Co2@3Nb", "Fe2@3Nb"]
    fe = df[df.host == "Fe2@3Nb"].iloc[0]
    assert fe.dg == pytest.approx(-0.1) and fe.dg_std_aleatoric == pytest.approx(math.sqrt(0.03))
    assert fe["flags"] == "high_variance" and fe.flag_high_variance and not fe.flag_nonfinite
    assert fe.n_N == 3 and fe.converged and fe.site_dg == {"top_M1": -0.1}
    assert np.allclose(fe.dg_samples, [-0.2, 0.0])
    co = df[df.host == "Co2@3Nb"].iloc[0]
    assert math.isnan(co.dg)  # NaN survives the round trip
    assert len(load_results(db_path, model_hash="other")) == 0
    rows = load_structures(db_path, state="initial")
    assert len(rows) == 1 and np.allclose(rows.iloc[0].atoms.positions, host.positions)


def test_a_failed_write_leaves_no_half_written_rows(tmp_path):
    db_path = tmp_path / "r.db"
    host = build_host("Fe", "3Nb", supercell="4x4")
    bad = host.copy()
    bad.info["name"] = "bad"
    bad_result = _result(bad)
    bad_result.status = object()  # not storable: ASE raises in the middle of the transaction
    with Store(db_path) as store:
        with pytest.raises(ValueError):
            store.write_structures([(host, _result(host), []), (bad, bad_result, [])], "mabc", "rabc")
        assert store.db.count() == 0


def test_second_run_is_refused_and_stale_lock_taken_over(tmp_path):
    db_path = tmp_path / "r.db"
    with Store(db_path):
        with pytest.raises(InputError, match="in use by another screen run"):
            Store(db_path).open()
    assert not (tmp_path / "r.db.run-lock").exists()  # released on exit
    # a lock left by a killed process (dead pid on this host) is taken over
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    import socket

    (tmp_path / "r.db.run-lock").write_text(f"{dead.stdout.strip()} {socket.gethostname()}\n")
    with Store(db_path) as store:
        assert store.db.count() == 0


def test_read_only_corrupt_and_foreign_databases(tmp_path):
    ro = tmp_path / "ro.db"
    with Store(ro):
        pass
    os.chmod(ro, 0o444)
    try:
        with pytest.raises(InputError, match="read-only"):
            Store(ro)
        assert len(load_results(ro)) == 0  # reading a read-only database is fine
    finally:
        os.chmod(ro, 0o644)
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="corrupt"):
        Store(junk)
    with pytest.raises(InputError, match="corrupt"):
        load_results(junk)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="not an ASE database"):
        Store(foreign)
    with pytest.raises(InputError, match="does not exist"):
        load_results(tmp_path / "missing.db")
    with pytest.raises(InputError, match=r"\.db"):
        check_database(tmp_path / "results.txt", writable=True)
    assert not (tmp_path / "missing.db").exists()


def test_store_is_a_plain_ase_database(tmp_path):
    db_path = tmp_path / "r.db"
    host = build_host("Co", "2Na", supercell="4x4")
    with Store(db_path) as store:
        store.write_structures([(host, _result(host, energy=-3.5), [])], "mabc", "rabc")
    db = ase.db.connect(str(db_path))
    row = db.get(kind="structure", state="relaxed")
    assert row.energy == pytest.approx(-3.5) and row.host == "Co2@2Na" and row.converged


def test_new_database_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """The schema is built in a temporary file and renamed into place: an interruption before the rename
    leaves no file (and no temporary) behind, and the next run creates the database normally."""

    import screening.store as store_module

    db_path = tmp_path / "new.db"

    class Killed(BaseException):  # stands in for a kill between schema set-up and rename
        pass

    def interrupted(src, dst):
        raise Killed

    monkeypatch.setattr(store_module.os, "replace", interrupted)
    with pytest.raises(Killed):
        with store_module.Store(db_path):
            pass
    assert not db_path.exists() and not list(tmp_path.glob(".new.db.init-*"))
    monkeypatch.undo()  # (store_module.os is the os module itself)
    with store_module.Store(db_path) as st:
        assert st.db.count() == 0
    tables = {
        r[0] for r in sqlite3.connect(db_path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"systems", "information", "keys"} <= tables
