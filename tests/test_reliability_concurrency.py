"""Two `screen run` processes on one database: the second is refused with a clear message, readers may
read while a run writes, and the database is never corrupted (PRAGMA integrity_check, row counts)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import ase.db
import pytest
import torch
from test_reliability_crash import check_store_whole, fork_cli, make_tiny_checkpoint, row_count, run_argv

import cli
from screening import store as store_module
from screening.store import Store, load_results, load_structures
from structures.common import InputError

torch.set_num_threads(1)

TOTAL_ROWS = 47  # run + 4 references + 2 x 20 structure rows + 2 ΔG rows (see test_reliability_crash)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def poll(pid: int) -> int | None:
    """Exit code of a finished child (reaped), None while it runs."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        return None
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1


def wait(pid: int, timeout: float = 120.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rc = poll(pid)
        if rc is not None:
            return rc
        time.sleep(0.02)
    raise AssertionError("screen run did not finish")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    return err


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_first_writes_and_readers_see_whole_rows(
    tmp_path, tiny_checkpoint, capsys
):
    db = tmp_path / "shared.db"
    argv = run_argv(tiny_checkpoint, db)
    argv[argv.index("--max-steps") + 1] = "30"  # a longer first run
    first = fork_cli(argv)
    rc = None
    try:
        deadline = time.time() + 60
        while row_count(db) < 6 and time.time() < deadline:  # the first run holds the lock and writes
            time.sleep(0.02)
        refusals, reads, last = 0, 0, 0
        while (rc := poll(first)) is None:
            if refusals < 3:
                code = cli.main(argv)  # the same command again, on the same database
                if code == 0:  # only possible when the first run ended meanwhile
                    assert (rc := poll(first)) is not None
                    break
                assert code == 2
                err = _error_line(capsys)
                assert f"database '{db}' is in use by another screen run (pid {first} on" in err
                refusals += 1
            df = load_results(db)  # a reader (screen report) while the run writes: no lock needed
            rows = load_structures(db)
            assert df["dg"].notna().all() and len(df) <= 2
            if len(rows):  # relaxed rows appear whole (initial + relaxed in one transaction)
                assert rows["uid"].is_unique
            assert row_count(db) >= last
            last = row_count(db)
            reads += 1
            time.sleep(0.05)
    finally:
        if rc is None:
            rc = wait(first)
    assert rc == 0 and refusals >= 2 and reads >= 2
    check_store_whole(db)
    assert row_count(db) == TOTAL_ROWS
    assert not Path(f"{db}.run-lock").exists()


@pytest.mark.slow
def test_two_runs_started_together_one_runs_one_is_refused(tmp_path, tiny_checkpoint):
    db = tmp_path / "race.db"
    argv = run_argv(tiny_checkpoint, db)
    a, b = fork_cli(argv), fork_cli(argv)
    codes = sorted([wait(a), wait(b)])
    assert codes == [0, 2]
    check_store_whole(db)
    assert row_count(db) == TOTAL_ROWS


def test_stale_lock_takeover_is_race_free(tmp_path):
    """Three processes find the lock of a killed run at the same moment: exactly one takes it over."""
    db = tmp_path / "stale.db"
    lock = Path(f"{db}.run-lock")
    for trial in range(10):
        lock.write_text(f"999999999 {socket.gethostname()}\n")  # a dead pid on this host
        r, w = os.pipe()
        go = time.time() + 0.15
        pids = []
        done = tmp_path / f"attempted-{trial}"  # one line per child that has tried; under CPU load a late
        done.write_text("")  # child must not find the lock already released by the winner
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                code = b"e"
                try:
                    os.close(r)

                    def slow_alive(pid: int, real=store_module._alive) -> bool:  # a slow file system
                        time.sleep(0.02)  # widens the race window
                        return real(pid)

                    store_module._alive = slow_alive
                    store = Store(db)
                    while time.time() < go:
                        pass
                    try:
                        store.open()
                        code = b"1"
                        with open(done, "a") as fh:
                            fh.write("1\n")
                        deadline = time.time() + 30
                        while done.read_text().count("\n") < 3 and time.time() < deadline:
                            time.sleep(0.01)  # hold the lock until every child has tried
                        store.close()
                    except InputError:
                        code = b"0"
                        with open(done, "a") as fh:
                            fh.write("0\n")
                finally:
                    os.write(w, code)
                    os._exit(0)
            pids.append(pid)
        os.close(w)
        for pid in pids:
            os.waitpid(pid, 0)
        with os.fdopen(r, "rb") as fh:
            got = fh.read()
        assert sorted(got) == sorted(b"100"), f"trial {trial}: {got!r} (1 = took the lock, 0 = refused)"
        assert not lock.exists()
    check_store_whole(db)


def test_a_lock_file_left_empty_by_a_kill_is_taken_over(tmp_path):
    db = tmp_path / "empty-lock.db"
    Path(f"{db}.run-lock").write_text("")  # killed between creating the lock and writing its pid
    with Store(db) as store:
        store.write_run("m1", "s1", "-", {})
    assert len(list(ase.db.connect(str(db)).select(kind="run"))) == 1


def test_a_lock_held_on_another_host_is_refused_with_its_holder(tmp_path):
    db = tmp_path / "remote.db"
    Path(f"{db}.run-lock").write_text("12345 other-node\n")
    with pytest.raises(InputError, match=r"in use by another screen run \(pid 12345 on other-node\)"):
        Store(db).open()
    assert not db.exists() or row_count(db) == 0


def test_a_database_locked_for_long_is_reported_busy_not_corrupt(tmp_path, monkeypatch):
    import sqlite3

    from screening.store import check_database

    db = tmp_path / "busy.db"
    with Store(db) as store:
        store.write_run("m1", "s1", "-", {})
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    con = sqlite3.connect(db)
    con.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        with pytest.raises(InputError, match="is busy"):
            check_database(db, writable=True)
    finally:
        con.rollback()
        con.close()
    assert check_database(db, writable=True) == db


def _write_sections(root: str, proc: int, n: int) -> None:
    from structures.common import write_bench_payload

    for i in range(n):
        payload = {"name": f"p{proc}_s{i}", "command": "test", "date": "now", "hardware": {}}
        write_bench_payload(payload, f"section {proc}/{i}", root)


def test_benchmarks_written_side_by_side_keep_every_section(tmp_path):
    """Benchmarks that run side by side (a learning-curve grid) each rewrite BENCHMARKS.md: none may lose
    another's section (write_bench_payload serialises the read-modify-write)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_sections, args=(str(tmp_path), p, 25)) for p in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    text = (tmp_path / "BENCHMARKS.md").read_text()
    missing = [
        f"p{p}_s{i}" for p in range(6) for i in range(25) if f"<!-- bench:p{p}_s{i}:end -->" not in text
    ]
    assert not missing, f"{len(missing)} sections lost, e.g. {missing[:3]}"
    assert len(list((tmp_path / "benchmarks" / "results").glob("*.json"))) == 150
