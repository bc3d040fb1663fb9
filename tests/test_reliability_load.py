"""Load: a small version of benchmarks/load_test.py (every structure written once, resumable), and a Dask
run over two local worker processes that loses nothing when one worker is killed with SIGKILL mid-run."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from screening.pipeline import handle_from_loader, run_screen
from screening.store import load_results

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _load_module():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load_test = _load_module()


def _structure_rows(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
    try:
        return int(con.execute("SELECT count(*) FROM systems").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def test_small_load_run_writes_every_structure_once_and_resumes_for_free(tmp_path):
    db = tmp_path / "load.db"
    first = load_test.run_load(150, db, max_steps=10, batch_size=32)
    assert first["n_structures"] >= 150 and first["structures"] == first["n_structures"]
    assert first["dg_rows"] == first["n_hosts"] and first["peak_rss_mb"] >= first["rss_after_startup_mb"] > 0
    assert sum(first["status_counts"].values()) == first["n_structures"]
    again = load_test.run_load(150, db, max_steps=10, batch_size=32)
    assert again["n_relaxed_now"] == 0 and again["n_evaluations"] == 0  # everything found in the store


@pytest.mark.slow
def test_dask_run_loses_nothing_when_a_worker_is_sigkilled(tmp_path):
    from dask.distributed import Client, LocalCluster

    n = 100
    serial_db = tmp_path / "serial.db"
    config = load_test.load_config(n, max_steps=25, batch_size=8, chunk_size=4)
    run_screen(config, serial_db, model=handle_from_loader(load_test.posterior_loader()))
    db = tmp_path / "dask.db"
    killed: list[int] = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)  # {worker address: pid}
        assert len(pids) == 2
        victim = sorted(pids.values())[0]
        total_rows = _structure_rows(serial_db)

        def kill_mid_run() -> None:
            deadline = time.time() + 300
            while time.time() < deadline:
                if db.exists() and _structure_rows(db) >= total_rows // 3:  # a third written, tasks in flight
                    os.kill(victim, signal.SIGKILL)
                    killed.append(_structure_rows(db))
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_mid_run)
        killer.start()
        summary = run_screen(
            replace(config, scheduler=cluster.scheduler_address),
            db,
            model=handle_from_loader(load_test.posterior_loader()),
        )
        killer.join()
        survivors = client.run(os.getpid)
    assert killed and killed[0] < total_rows, "the worker was not killed mid-run"
    assert victim not in survivors.values()  # the victim really died (its nanny started a new worker)
    assert summary.n_relaxed == summary.n_structures >= n
    load_test.check_rows(db, summary.n_structures, summary.n_hosts)
    a, b = load_results(serial_db), load_results(db)
    assert list(a.host) == list(b.host)
    assert np.allclose(a.dg, b.dg, atol=1e-9) and np.allclose(a.dg_std, b.dg_std, atol=1e-9)
    assert list(a["flags"]) == list(b["flags"])
