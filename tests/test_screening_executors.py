"""Executors: serial, joblib (loky processes) and Dask distributed run the same task and give the same results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from screening import executors
from screening.executors import RelaxTask, SerialExecutor, make_executor, relax_task
from screening.pipeline import ScreenConfig, handle_from_loader, run_screen
from screening.relax import RelaxConfig
from screening.store import load_results
from screening.testing import morse_posterior
from structures.common import InputError
from structures.host import build_host

torch.set_num_threads(1)

CONFIG = ScreenConfig(
    metals="Fe",
    motifs="3Nb,2Na",
    supercell="4x4",
    relax=RelaxConfig(max_steps=40, batch_size=4),
    chunk_size=6,
    progress=False,
)


@pytest.fixture(scope="module")
def serial_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("serial") / "serial.db"
    run_screen(CONFIG, db, model=handle_from_loader(morse_posterior))
    return db


def _same_results(a_db, b_db):
    a, b = load_results(a_db), load_results(b_db)
    assert list(a.host) == list(b.host) and len(a) == 2
    assert np.allclose(a.dg, b.dg, atol=1e-9) and np.allclose(a.e_form, b.e_form, atol=1e-9)
    assert list(a["flags"]) == list(b["flags"])


def test_task_function_relaxes_a_chunk():
    hosts = [build_host(m, "3Nb", supercell="4x4") for m in ("Fe", "Co")]
    out = relax_task(RelaxTask(7, hosts, morse_posterior, RelaxConfig(max_steps=5)))
    assert out.task_id == 7 and sorted(r.index for r in out.results) == [0, 1]
    assert out.n_evaluations == 12 and all(r.n_steps == 5 for r in out.results)


def test_make_executor_choices():
    assert isinstance(make_executor(1), SerialExecutor)
    assert make_executor(3).name == "joblib" and make_executor(3).n_workers == 3
    with pytest.raises(InputError, match="--workers"):
        make_executor(0)


@pytest.mark.slow
def test_joblib_workers_give_the_serial_results(tmp_path, serial_db):
    db = tmp_path / "joblib.db"
    summary = run_screen(replace(CONFIG, workers=2), db, model=handle_from_loader(morse_posterior))
    assert summary.n_relaxed == summary.n_structures
    _same_results(serial_db, db)


@pytest.mark.slow
def test_dask_cluster_gives_the_serial_results(tmp_path, serial_db):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        db = tmp_path / "dask.db"
        run_screen(
            replace(CONFIG, scheduler=cluster.scheduler_address),
            db,
            model=handle_from_loader(morse_posterior),
        )
    _same_results(serial_db, db)


def test_dask_executor_reuses_this_process_client_and_leaves_it_open():
    from dask.distributed import Client, LocalCluster

    from screening.executors import DaskExecutor

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        ex = DaskExecutor(cluster.scheduler_address)
        assert ex.client is client
        assert sorted(ex.map_unordered(abs, [-2, -1, 3])) == [1, 2, 3]
        ex.close()
        assert client.status == "running"  # not ours to close


def test_unreachable_dask_scheduler_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "DASK_CONNECT_TIMEOUT", "1s")
    db = tmp_path / "d.db"
    with pytest.raises(InputError, match="Dask scheduler"):
        run_screen(
            replace(CONFIG, scheduler="tcp://127.0.0.1:9"), db, model=handle_from_loader(morse_posterior)
        )
    assert not db.exists()


def test_missing_dask_is_an_input_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.startswith("dask"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(InputError, match="dacscreen\\[cluster\\]"):
        make_executor(1, "tcp://127.0.0.1:8786")
