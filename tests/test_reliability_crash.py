"""Crash and resume: SIGKILL `screen run`, `screen train` and `screen learn` at seeded random moments.

Each command is started in a forked child of this (already imported) interpreter, which runs exactly what
the console script runs (``cli.main(argv)``), and is killed with SIGKILL at five or more different points
chosen by a seeded generator: after k rows / epochs / rounds were observed on disk plus a random delay.
After every kill the files on disk must be whole (SQLite integrity, checkpoints that load and verify,
JSON that parses); the final resume must give the results of an uninterrupted run (same rows, each
exactly once; same weights; same history).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import ase.db
import numpy as np
import pytest
import torch

import cli

torch.set_num_threads(1)

KILLS = 5  # at least this many SIGKILLs per command


# ---- running and killing `screen ...` --------------------------------------------------------------------------
def fork_cli(argv: list[str]) -> int:
    """Start ``screen <argv>`` (``cli.main``) in a forked child with output to /dev/null; returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        rc = 1
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            rc = int(cli.main(argv) or 0)
        finally:
            os._exit(rc)
    return pid


def kill_when(pid: int, ready: Callable[[], bool], delay: float, timeout: float = 120.0) -> None:
    """SIGKILL ``pid`` ``delay`` s after ``ready()`` turns true; fail if the child ends by itself first."""
    deadline = time.time() + timeout
    while not ready():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise AssertionError(f"the command ended (status {status}) before the kill point was reached")
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("kill point not reached in time")
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the command finished before the SIGKILL (status {status}); choose an earlier kill point"
    )


def run_to_end(argv: list[str], timeout: float = 120.0) -> int:
    """Run ``screen <argv>`` in a forked child to its end (killed and failed after ``timeout`` s: a hang)."""
    pid = fork_cli(argv)
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"screen {argv[0]} hung for {timeout} s")
        time.sleep(0.02)


def kill_points(seed: int, low: int, high: int, n: int = KILLS, step: int = 1) -> list[int]:
    """``n`` distinct sorted progress values of range(low, high, step) from a seeded generator."""
    rng = np.random.default_rng(seed)
    return sorted(int(v) for v in rng.choice(np.arange(low, high, step), size=n, replace=False))


# ---- screen run ----------------------------------------------------------------------------------------------
def make_tiny_checkpoint(path: Path) -> Path:
    """An untrained float64 RACE model (tiny preset, H C N Fe Co) as a point posterior checkpoint."""
    from potentials.bayes.point import PointPosterior
    from potentials.model import build_model, preset

    cfg = preset("tiny", elements=("H", "C", "N", "Fe", "Co"), dtype="float64")
    torch.manual_seed(0)
    PointPosterior(build_model(cfg), cfg).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def run_argv(model: Path, db: Path) -> list[str]:
    return [
        "run", "--metals", "Fe,Co", "--motifs", "3Nb", "--supercell", "4x4", "--model", str(model),
        "--db", str(db), "--max-steps", "12", "--batch-size", "2", "--chunk-size", "2", "--no-progress",
    ]  # fmt: skip


def row_count(db: Path) -> int:
    """Rows in the ASE database (0 while it does not exist or is locked)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(con.execute("SELECT count(*) FROM systems").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def check_store_whole(db: Path) -> None:
    """SQLite integrity; every structure has one initial and one relaxed row; no uid written twice."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    rows = list(ase.db.connect(str(db)).select(include_data=False))
    states: dict[str, list[str]] = {}
    other: Counter = Counter()
    for row in rows:
        if row.kind == "structure":
            states.setdefault(row.uid, []).append(row.state)
        elif row.kind in ("reference", "dg"):
            other[row.uid] += 1
    assert all(sorted(s) == ["initial", "relaxed"] for s in states.values()), "half-written structure"
    assert all(n == 1 for n in other.values()), "a reference or ΔG row was written twice"
    runs = Counter((r.model_hash, r.settings_hash) for r in rows if r.kind == "run")
    assert all(n == 1 for n in runs.values())


def store_snapshot(db: Path) -> dict:
    """What a screen produced, by uid: geometry, energy and status of every row, ΔG results."""
    snap = {}
    for row in ase.db.connect(str(db)).select():
        if row.kind == "run":
            continue
        key = (row.kind, row.uid, row.get("state", ""))
        kvp = row.key_value_pairs
        snap[key] = {
            "positions": row.positions.copy(),
            "status": kvp.get("status"),
            "n_steps": kvp.get("n_steps"),
            "flags": kvp.get("flags"),
            "best_site": kvp.get("best_site"),
            **{k: float(kvp[k]) for k in ("e_relaxed", "dg", "dg_std", "e_form", "e_form_std") if k in kvp},
        }
    return snap


def assert_same_store(a: dict, b: dict, atol: float = 1e-8) -> None:
    assert sorted(a) == sorted(b), "rows differ"
    for key in a:
        x, y = a[key], b[key]
        assert np.allclose(x["positions"], y["positions"], atol=atol, rtol=0), key
        for k in x:
            if k == "positions":
                continue
            if isinstance(x[k], float):
                assert x[k] == pytest.approx(y[k], abs=atol, nan_ok=True), (key, k)
            else:
                assert x[k] == y[k], (key, k)


@pytest.mark.slow
def test_screen_run_sigkilled_at_random_moments_resumes_to_the_uninterrupted_result(
    tmp_path, tiny_checkpoint
):
    ref_db = tmp_path / "ref.db"
    assert cli.main(run_argv(tiny_checkpoint, ref_db)) == 0
    reference = store_snapshot(ref_db)
    total = row_count(ref_db)  # run + 4 references + 2 x 20 structure rows + 2 ΔG rows
    assert total == 47

    db = tmp_path / "killed.db"
    argv = run_argv(tiny_checkpoint, db)
    rng = np.random.default_rng(11)
    seen = []
    # the first kill lands during start-up / references (no structure row yet), the others after k rows;
    # rows arrive 4 at a time (2 structures x initial + relaxed) after the 5 run/reference rows
    targets = [0] + kill_points(seed=7, low=6, high=total - 10, step=4)
    for target in targets:
        pid = fork_cli(argv)
        delay = float(rng.uniform(0.3, 1.5)) if target == 0 else float(rng.uniform(0.0, 0.05))
        kill_when(pid, lambda t=target: row_count(db) >= t, delay)
        seen.append(row_count(db))
        if db.exists() and db.stat().st_size:
            check_store_whole(db)
    assert len(targets) > KILLS and len(set(seen)) >= 4, seen  # killed at different points
    assert seen[-1] < total
    assert run_to_end(argv) == 0  # takes over the stale run lock, computes only what is missing
    check_store_whole(db)
    assert_same_store(reference, store_snapshot(db))
    assert not Path(f"{db}.run-lock").exists()


@pytest.mark.slow
def test_a_kill_inside_a_database_write_does_not_block_the_resume(tmp_path, tiny_checkpoint):
    """A SIGKILL inside an ASE write used to leave ``<db>.lock`` behind, and ASE waits for it forever."""
    db = tmp_path / "x.db"
    argv = run_argv(tiny_checkpoint, db)
    argv[argv.index("--metals") + 1] = "Fe"
    pid = fork_cli(argv)
    kill_when(pid, lambda: row_count(db) >= 5, 0.0)
    Path(f"{db}.lock").write_text("")  # what a kill inside ase.db's write() leaves
    assert run_to_end(argv, timeout=90) == 0
    check_store_whole(db)
    assert len(list(ase.db.connect(str(db)).select(kind="dg"))) == 1


# ---- screen train --------------------------------------------------------------------------------------------
EPOCHS = 10


@pytest.fixture(scope="module")
def train_files(tmp_path_factory) -> tuple[Path, Path]:
    from ase.io import write

    from potentials.testing import emt_dataset

    folder = tmp_path_factory.mktemp("data")
    frames = emt_dataset(14, seed=0)
    write(folder / "train.xyz", frames[:10])
    write(folder / "valid.xyz", frames[10:])
    return folder / "train.xyz", folder / "valid.xyz"


def train_argv(files: tuple[Path, Path], out: Path) -> list[str]:
    return [
        "train", "--data", str(files[0]), "--valid", str(files[1]), "--preset", "tiny", "--out", str(out),
        "--epochs", str(EPOCHS), "--batch-size", "3", "--mse-warmup", "3", "--float64", "--quiet",
    ]  # fmt: skip


def epochs_done(out: Path) -> int:
    try:
        return len(json.loads((out / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


def check_checkpoints_whole(out: Path) -> None:
    """Every checkpoint present loads with weights_only and matches its content hash."""
    from potentials import checkpoint

    for name in ("best.pt", "last.pt"):
        if (out / name).exists():
            checkpoint.load(out / name)  # raises InputError on a truncated or half-written file
    if (out / "history.json").exists():
        json.loads((out / "history.json").read_text())


def same_weights(a: Path, b: Path) -> bool:
    from potentials import checkpoint

    sa, sb = checkpoint.load(a)["state_dict"], checkpoint.load(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_screen_train_sigkilled_at_random_moments_resumes_to_the_same_weights(tmp_path, train_files):
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    assert cli.main(train_argv(train_files, ref)) == 0
    epoch_s = (time.perf_counter() - t0) / EPOCHS  # kill delays scale with this machine's speed
    out = tmp_path / "killed"
    argv = train_argv(train_files, out)
    rng = np.random.default_rng(5)
    points = kill_points(seed=3, low=0, high=EPOCHS - 2)
    seen = []
    for k in points:
        pid = fork_cli(argv)
        kill_when(pid, lambda k=k: epochs_done(out) >= k, float(rng.uniform(0.0, 0.7 * epoch_s)))
        seen.append(epochs_done(out))
        check_checkpoints_whole(out)
    assert len(set(seen)) >= 3, seen
    assert run_to_end(argv) == 0
    check_checkpoints_whole(out)
    assert same_weights(ref / "best.pt", out / "best.pt") and same_weights(ref / "last.pt", out / "last.pt")

    def history(folder):  # wall time (elapsed_s) is the one field a resumed run cannot reproduce
        return [
            {k: v for k, v in r.items() if k != "elapsed_s"}
            for r in json.loads((folder / "history.json").read_text())
        ]

    assert history(ref) == history(out)


def test_train_killed_between_best_and_last_checkpoint_resumes_exactly(tmp_path, train_files, monkeypatch):
    """The narrowest window of an epoch's end: best.pt is new, last.pt still the previous epoch's."""
    from potentials import checkpoint

    argv = train_argv(train_files, tmp_path / "ref")
    argv[argv.index("--epochs") + 1] = "5"
    assert cli.main(argv) == 0
    real_save = checkpoint.save
    calls = Counter()

    def dying_save(path, *args, **kwargs):
        calls[Path(path).name] += 1
        if Path(path).name == "last.pt" and calls["last.pt"] == 3:
            raise KeyboardInterrupt  # the process dies here
        return real_save(path, *args, **kwargs)

    cut = [*argv]
    cut[cut.index("--out") + 1] = str(tmp_path / "cut")
    monkeypatch.setattr(checkpoint, "save", dying_save)
    assert cli.main(cut) == 130
    assert epochs_done(tmp_path / "cut") == 2
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert cli.main(cut) == 0
    for name in ("best.pt", "last.pt"):
        assert same_weights(tmp_path / "ref" / name, tmp_path / "cut" / name)


# ---- screen learn --------------------------------------------------------------------------------------------
ROUNDS = 5


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory) -> Path:
    from ase.calculators.emt import EMT
    from ase.cluster import Octahedron
    from ase.io import write

    frames = []
    for i in range(18):
        atoms = Octahedron(["Cu", "Ni", "Au"][i % 3], 2)
        atoms.rattle(0.03 + 0.01 * (i % 4), seed=i)
        atoms.center(vacuum=4.0)
        atoms.calc = EMT()
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    path = tmp_path_factory.mktemp("pool") / "pool.extxyz"
    write(path, frames)
    return path


def learn_argv(pool: Path, out: Path) -> list[str]:
    return [
        "learn", "--pool", str(pool), "--out", str(out), "--init", "4", "--batch", "2", "--rounds", str(ROUNDS),
        "--strategy", "energy", "--method", "point", "--model-preset", "tiny", "--train-preset", "tiny",
        "--epochs", "1", "--no-progress",
    ]  # fmt: skip


def rounds_done(out: Path) -> int:
    try:
        return int(json.loads((out / "state.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def learn_result(out: Path) -> tuple[dict, str, list]:
    """(state without timings, labelled.extxyz text, state_dict of every round's posterior)."""
    from potentials import checkpoint

    state = json.loads((out / "state.json").read_text())
    for rec in state["rounds"]:
        for key in [k for k in rec if k.startswith("time_")]:
            rec.pop(key)
    weights = [checkpoint.load(p)["state_dict"] for p in sorted(out.glob("round_*/posterior.pt"))]
    return state, (out / "labelled.extxyz").read_text(), weights


def assert_same_learn(a: tuple, b: tuple) -> None:
    assert a[0] == b[0] and a[1] == b[1]
    assert len(a[2]) == len(b[2]) == ROUNDS + 1
    for wa, wb in zip(a[2], b[2]):
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def learn_reference(tmp_path_factory, pool_file) -> tuple:
    """(state, labelled.extxyz, weights, seconds per round) of an uninterrupted run."""
    out = tmp_path_factory.mktemp("al") / "ref"
    t0 = time.perf_counter()
    assert cli.main(learn_argv(pool_file, out)) == 0
    return (*learn_result(out), (time.perf_counter() - t0) / (ROUNDS + 1))


@pytest.mark.slow
def test_screen_learn_sigkilled_at_random_moments_resumes_to_the_same_run(
    tmp_path, pool_file, learn_reference
):
    out = tmp_path / "killed"
    argv = learn_argv(pool_file, out)
    rng = np.random.default_rng(2)
    seen = []
    round_s = learn_reference[3]
    for r in kill_points(seed=1, low=0, high=ROUNDS):  # one kill inside each of five rounds
        pid = fork_cli(argv)
        kill_when(pid, lambda r=r: rounds_done(out) >= r, float(rng.uniform(0.0, 0.7 * round_s)))
        seen.append(rounds_done(out))
        if (out / "state.json").exists():
            json.loads((out / "state.json").read_text())
    assert seen == sorted(seen) and seen[-1] < ROUNDS + 1
    assert run_to_end(argv) == 0
    assert_same_learn(learn_reference, learn_result(out))


def test_learn_killed_between_labels_and_state_resumes(tmp_path, pool_file, learn_reference, monkeypatch):
    """Killed after labelled.extxyz was written but before state.json: the round is redone, not refused."""
    from ase.io import read

    from potentials.active import ActiveLearner

    real_save = ActiveLearner._save
    calls = Counter()

    def dying_save(self):
        calls["save"] += 1
        if calls["save"] == 2:
            raise KeyboardInterrupt  # the process dies between the two writes of round 1
        return real_save(self)

    out = tmp_path / "cut"
    argv = learn_argv(pool_file, out)
    argv[argv.index("--rounds") + 1] = "1"  # rounds 0 and 1 are those of the 5-round reference
    monkeypatch.setattr(ActiveLearner, "_save", dying_save)
    assert cli.main(argv) == 130
    assert rounds_done(out) == 1 and len(read(out / "labelled.extxyz", index=":")) == 6  # state.json says 4
    monkeypatch.setattr(ActiveLearner, "_save", real_save)
    assert cli.main(argv) == 0
    state, _, weights = learn_result(out)
    ref_state, _, ref_weights, _ = learn_reference
    assert state["labelled"] == ref_state["labelled"][:6] and state["done"]
    assert [r["acquired"] for r in state["rounds"]] == [r["acquired"] for r in ref_state["rounds"][:2]]
    for wa, wb in zip(weights, ref_weights[:2], strict=True):
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_label_cache_does_not_wait_for_a_stale_ase_lock_file(tmp_path):
    """An oracle's label cache (labels.db) left locked by a killed run must not block the resume."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from potentials.active import CalculatorOracle

    cache = tmp_path / "labels.db"
    Path(f"{cache}.lock").write_text("")
    oracle = CalculatorOracle(lambda atoms: EMT(), "emt", {}, cache)
    t0 = time.time()
    out = oracle([bulk("Cu", "fcc", a=3.6)])
    assert time.time() - t0 < 5 and len(out) == 1 and len(oracle.cache) == 1
