"""The screen end to end: resume after a kill, executors, NaN handling, the CLI with a tiny checkpoint, CLI errors."""

from __future__ import annotations

import math
import os
from dataclasses import replace

import ase.db
import numpy as np
import pytest
import torch

import cli
from potentials import keys as K
from screening.pipeline import ScreenConfig, default_model_path, handle_from_loader, run_screen
from screening.relax import RelaxConfig
from screening.store import load_results
from screening.testing import MorseEnsemble, morse_posterior

torch.set_num_threads(1)

CONFIG = ScreenConfig(
    metals="Fe,Co",
    motifs="3Nb",
    supercell="4x4",
    relax=RelaxConfig(max_steps=60, batch_size=4),
    chunk_size=8,
    progress=False,
)
N_STRUCTURES = 20  # 2 hosts x (1 + 9 H* sites) in the 3Nb pocket


def _uids(db_path):
    return [row.uid for row in ase.db.connect(str(db_path)).select(kind="structure", state="relaxed")]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run: its results and its total number of mean_forward calls."""
    db = tmp_path_factory.mktemp("ref") / "ref.db"
    handle = handle_from_loader(morse_posterior)
    summary = run_screen(CONFIG, db, model=handle)
    return db, summary, handle.posterior.n_forward


def test_full_run_writes_every_row_once(reference_run):
    db, summary, _ = reference_run
    assert summary.n_structures == N_STRUCTURES and summary.n_relaxed == N_STRUCTURES and summary.n_dg == 2
    uids = _uids(db)
    assert len(uids) == len(set(uids)) == N_STRUCTURES
    df = load_results(db)
    assert sorted(df.host) == ["Co2@3Nb", "Fe2@3Nb"]
    assert df.dg.notna().all() and (df.dg_std > 0).all() and (df.n_samples == 4).all()
    assert np.allclose(df.dg_std**2, df.dg_std_epistemic**2 + df.dg_std_aleatoric**2)
    refs = {r.name for r in ase.db.connect(str(db)).select(kind="reference")}
    assert refs == {"H2", "pocket@3Nb/4x4", "bulk@Fe", "bulk@Co"}


def test_h_states_start_from_the_relaxed_host(reference_run):
    db, _, _ = reference_run
    rows = ase.db.connect(str(db))
    host = rows.get(kind="structure", state="relaxed", name="Fe2@3Nb")
    start = rows.get(kind="structure", state="initial", name="Fe2@3Nb+H@top_M1")
    unrelaxed = rows.get(kind="structure", state="initial", name="Fe2@3Nb")
    assert np.abs(host.positions - unrelaxed.positions).max() > 0.01  # the host did move
    assert np.allclose(start.positions[:-1], host.positions, atol=1e-12)
    m1 = int(start.pocket.split(",")[0])
    assert start.positions[-1][2] == pytest.approx(host.positions[m1][2] + 1.6, abs=1e-9)  # H on top of M1


def test_resume_after_a_kill_computes_only_the_missing_rows(tmp_path, reference_run):
    ref_db, _, total_calls = reference_run
    db = tmp_path / "killed.db"
    first = handle_from_loader(morse_posterior)
    first.posterior.fail_after = (
        total_calls // 2
    )  # the "kill": the model dies in the middle of the relaxations
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_screen(CONFIG, db, model=first)
    done = len(_uids(db))
    assert 0 < done < N_STRUCTURES  # some results were saved before the kill
    assert not (tmp_path / "killed.db.run-lock").exists()
    second = handle_from_loader(morse_posterior)
    summary = run_screen(CONFIG, db, model=second)
    assert summary.n_skipped == done and summary.n_relaxed == N_STRUCTURES - done
    assert summary.n_references == 0  # cached references are not recomputed
    uids = _uids(db)
    assert len(uids) == len(set(uids)) == N_STRUCTURES  # nothing lost, nothing duplicated
    assert second.posterior.n_forward < total_calls
    a, b = load_results(ref_db), load_results(db)
    assert np.allclose(a.dg, b.dg, atol=1e-9) and np.allclose(a.dg_std, b.dg_std, atol=1e-9)
    assert list(a["flags"]) == list(b["flags"])
    # a third run finds everything done and computes nothing
    third = handle_from_loader(morse_posterior)
    summary = run_screen(CONFIG, db, model=third)
    assert summary.n_relaxed == 0 and summary.n_dg == 0 and third.posterior.n_forward == 0


def test_changing_only_the_correction_reuses_relaxations(tmp_path, reference_run):
    ref_db, _, _ = reference_run
    db = tmp_path / "corr.db"
    import shutil

    shutil.copy(ref_db, db)
    config = replace(CONFIG, dg=replace(CONFIG.dg, correction=0.0))
    handle = handle_from_loader(morse_posterior)
    summary = run_screen(config, db, model=handle)
    assert summary.n_relaxed == 0 and summary.n_dg == 2
    old = load_results(db, settings_hash=CONFIG.settings_hash).set_index("host")
    new = load_results(db, settings_hash=config.settings_hash).set_index("host")
    assert np.allclose(old.dg - new.dg, 0.24)


class NaNForCobalt(MorseEnsemble):
    """Non-finite energies and forces for every structure that contains Co."""

    def _bad(self, batch):
        g = torch.zeros(batch[K.NUM_ATOMS].shape[0], dtype=torch.bool)
        g[batch[K.BATCH][batch[K.ATOMIC_NUMBERS] == 27]] = True
        return g

    def mean_forward(self, batch, compute_stress=False):
        out = super().mean_forward(batch)
        bad = self._bad(batch)
        out[K.ENERGY][bad] = math.nan
        out[K.FORCES][bad[batch[K.BATCH]]] = math.nan
        return out

    def predict(self, batch, n_samples=None, forces=True):
        pred = super().predict(batch, n_samples, forces)
        bad = self._bad(batch)
        pred.energy[bad] = math.nan
        pred.energy_samples[:, bad] = math.nan
        return pred


def _nan_posterior():
    return NaNForCobalt(("H", "C", "N", "Fe", "Co"))


def test_nan_energies_are_flagged_not_crashed(tmp_path):
    db = tmp_path / "nan.db"
    run_screen(CONFIG, db, model=handle_from_loader(_nan_posterior))
    df = load_results(db).set_index("host")
    assert df.loc["Co2@3Nb", "flag_nonfinite"] and "nonfinite" in df.loc["Co2@3Nb", "flags"]
    assert not df.loc["Fe2@3Nb", "flag_nonfinite"] and math.isfinite(df.loc["Fe2@3Nb", "dg"])
    statuses = {
        row.name: row.status for row in ase.db.connect(str(db)).select(kind="structure", state="relaxed")
    }
    assert statuses["Co2@3Nb"] == "nonfinite"


# ---- the CLI with a tiny real checkpoint -------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from potentials.bayes.point import PointPosterior
    from potentials.model import build_model, preset

    cfg = preset("tiny", elements=("H", "C", "N", "Fe", "Co"), dtype="float64")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    PointPosterior(build_model(cfg), cfg).save(path)
    return path


def test_cli_end_to_end_two_hosts_with_a_tiny_checkpoint(tmp_path, tiny_checkpoint, capsys):
    db = tmp_path / "cli.db"
    argv = [
        "run",
        "--metals",
        "Fe,Co",
        "--motifs",
        "3Nb",
        "--supercell",
        "4x4",
        "--model",
        str(tiny_checkpoint),
        "--db",
        str(db),
        "--max-steps",
        "10",
        "--batch-size",
        "8",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "20 relaxed now" in out and "Fe2@3Nb" in out and "Co2@3Nb" in out and "ΔGH*" in out
    df = load_results(db)
    assert len(df) == 2 and df.dg.notna().all() and (df.n_samples == 1).all()
    assert df.model_hash.str.startswith("m").all()
    assert cli.main(argv) == 0  # resume: nothing left to do
    assert "0 relaxed now, 20 already in the store" in capsys.readouterr().out


def _cli_error(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("screen run: error:")
    return err


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, tiny_checkpoint, capsys):
    db = tmp_path / "e.db"
    base = ["run", "--supercell", "4x4", "--db", str(db), "--model", str(tiny_checkpoint), "--no-progress"]
    assert "unknown metal 'Xx'" in _cli_error(base + ["--metals", "Fe,Xx"], capsys)
    assert "9Zz" in _cli_error(base + ["--metals", "Fe", "--motifs", "9Zz"], capsys)
    assert "empty selection" in _cli_error(base + ["--metals", "Fe", "--pairs", "hetero"], capsys)
    assert "does not cover element(s) Ni" in _cli_error(base + ["--metals", "Ni", "--motifs", "3Nb"], capsys)
    assert "--fmax" in _cli_error(base + ["--metals", "Fe", "--motifs", "3Nb", "--fmax", "-1"], capsys)
    assert "--workers" in _cli_error(base + ["--metals", "Fe", "--motifs", "3Nb", "--workers", "0"], capsys)
    missing = [
        "run",
        "--metals",
        "Fe",
        "--motifs",
        "3Nb",
        "--db",
        str(db),
        "--model",
        str(tmp_path / "nope.pt"),
    ]
    assert "not found" in _cli_error(missing, capsys)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert "cannot use model" in _cli_error(missing[:-1] + [str(broken)], capsys)
    if not default_model_path().exists():
        assert "default model" in _cli_error(
            ["run", "--metals", "Fe", "--motifs", "3Nb", "--db", str(db)], capsys
        )
    assert not db.exists()  # nothing half-written
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(os.urandom(2048))
    ok = [
        "run",
        "--metals",
        "Fe",
        "--motifs",
        "3Nb",
        "--supercell",
        "4x4",
        "--model",
        str(tiny_checkpoint),
        "--no-progress",
    ]
    assert "corrupt" in _cli_error(ok + ["--db", str(corrupt)], capsys)
    ro = tmp_path / "ro.db"
    from screening.store import Store

    with Store(ro):
        pass
    size = ro.stat().st_size
    os.chmod(ro, 0o444)
    try:
        assert "read-only" in _cli_error(ok + ["--db", str(ro)], capsys)
    finally:
        os.chmod(ro, 0o644)
    assert ro.stat().st_size == size


KILL_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
from dataclasses import replace
from screening.pipeline import handle_from_loader, run_screen
from screening.testing import MorseEnsemble
import test_screening_pipeline as t

class Slow(MorseEnsemble):
    def mean_forward(self, batch, compute_stress=False):
        time.sleep(0.01)  # slow enough to be killed in the middle of the relaxations
        return super().mean_forward(batch)

def slow():
    return Slow(("H", "C", "N", "Fe", "Co", "Ni", "Cu"))

run_screen(replace(t.CONFIG, relax=replace(t.CONFIG.relax, batch_size=2)), sys.argv[1], model=handle_from_loader(slow))
"""


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume(tmp_path, reference_run):
    import signal
    import subprocess
    import sys
    import time

    ref_db, _, _ = reference_run
    db = tmp_path / "sigkill.db"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(db)], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if db.exists() and len(_uids(db)) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(_uids(db))
    assert 3 <= done < N_STRUCTURES
    assert (tmp_path / "sigkill.db.run-lock").exists()  # a stale lock is left behind ...
    summary = run_screen(CONFIG, db, model=handle_from_loader(morse_posterior))  # ... and taken over
    assert summary.n_relaxed == N_STRUCTURES - done
    uids = _uids(db)
    assert len(uids) == len(set(uids)) == N_STRUCTURES
    a, b = load_results(ref_db), load_results(db)
    assert np.allclose(a.dg, b.dg, atol=1e-9)


def test_summary_names_the_dft_anchoring():
    from screening.pipeline import RunSummary, format_summary

    s = RunSummary("r.db", "m1", "s1", 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0)
    assert "anchored" not in format_summary(s)
    s.anchor = {"offset": 0.81, "sigma_add": 0.42, "hosts": ["Au2@4Nf", "Pt2@5Na"]}
    text = format_summary(s)
    assert "offset +0.810 eV, σ_anchor 0.420 eV" in text and "2 DFT hosts (Au2@4Nf, Pt2@5Na)" in text
    assert "site class" not in text
    s.anchor.update(
        class_offsets={"metal": 0.05, "N": 0.91}, class_sigma={"metal": 0.4}, pair_deviations={"Au2": 0.7}
    )
    text = format_summary(s)
    assert "H on N +0.910 eV, H on metal +0.050 eV (σ 0.400)" in text and "deviations for 1 pairs" in text


def test_batch_size_defaults_by_device_and_an_explicit_one_wins():
    import argparse

    from screening.cmd_run import add_arguments, config_from_args
    from screening.relax import default_batch_size

    assert default_batch_size("cpu") == 32 and default_batch_size("cuda:1") == 512
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--device", "cpu"])).relax.batch_size == 32
    assert config_from_args(parser.parse_args(["--device", "cpu", "--batch-size", "7"])).relax.batch_size == 7
    auto = config_from_args(parser.parse_args([])).relax.batch_size  # auto: the machine's device
    assert auto == (512 if torch.cuda.is_available() else 32)
    # the batch size does not change results, so a GPU run and a CPU run share the store's rows
    cpu, gpu = (config_from_args(parser.parse_args(["--batch-size", b])) for b in ("32", "512"))
    assert cpu.relax_hash == gpu.relax_hash and cpu.settings_hash == gpu.settings_hash


def test_batch_size_zero_is_one_line(tmp_path, tiny_checkpoint, capsys):
    db = tmp_path / "b.db"
    argv = ["run", "--metals", "Fe", "--motifs", "3Nb", "--model", str(tiny_checkpoint), "--db", str(db)]
    assert "--batch-size 0 not allowed" in _cli_error([*argv, "--batch-size", "0"], capsys)
    assert not db.exists()


def test_bench_screen_writes_json_and_section_with_the_default_batch_size(tmp_path, tiny_checkpoint):
    import json

    argv = ["bench", "screen", "--model", str(tiny_checkpoint), "--metals", "Fe", "--motifs", "3Nb"]
    argv += ["--max-steps", "5", "--device", "cpu", "--threads", "1", "--batch-sizes", "1,2"]
    argv += ["--scaling-structures", "2", "--scaling-steps", "1", "--sevenn", "0", "--root", str(tmp_path)]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "benchmarks" / "results" / "screen.json").read_text())
    assert result["settings"]["batch_size"] == 32  # screen run's CPU default
    assert "<!-- bench:screen:end -->" in (tmp_path / "BENCHMARKS.md").read_text()
