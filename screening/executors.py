"""Where relaxations run: in-process (serial), joblib/loky processes on this machine, or a Dask cluster.

Every executor runs the same task function, :func:`relax_task`, on :class:`RelaxTask` chunks and
hands the :class:`TaskOutput` back to the parent, which alone writes the store (single writer).
Workers load the model once per process (``task.loader()``, cached) -- no modules are pickled,
only the loader (a module-level function or ``functools.partial`` of one with a checkpoint path).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from structures.common import InputError

from .relax import RelaxConfig, RelaxResult

_MODELS: dict[tuple[str, str], Any] = {}  # (loader repr, device) -> posterior, per process
DASK_CONNECT_TIMEOUT = "5s"


@dataclass
class RelaxTask:
    """A chunk of structures to relax with one model on one device."""

    task_id: int
    structures: list  # list[ase.Atoms]
    loader: Callable[[], Any]  # () -> Posterior; picklable
    config: RelaxConfig = field(default_factory=RelaxConfig)
    device: str = "cpu"
    threads: int | None = None  # torch threads in the worker (None: leave as is)


@dataclass
class TaskOutput:
    task_id: int
    results: list[RelaxResult]  # RelaxResult.index is the position in task.structures (empty when the
    #                             results went to relax_task's on_result instead)
    wall_s: float
    n_evaluations: int  # structure-force evaluations


def _key(loader: Callable[[], Any], device: str) -> tuple[str, str]:
    return (repr(loader), str(device))


def seed_model(loader: Callable[[], Any], device: str, posterior: Any) -> None:
    """Register an already loaded posterior for ``loader`` in this process (the serial executor reuses it)."""
    _MODELS[_key(loader, device)] = posterior


def get_model(loader: Callable[[], Any], device: str) -> Any:
    key = _key(loader, device)
    if key not in _MODELS:
        _MODELS[key] = loader().to(device)
    return _MODELS[key]


def relax_task(
    task: RelaxTask, on_result: Callable[[RelaxTask, RelaxResult], None] | None = None
) -> TaskOutput:
    """Relax one chunk (the task function of every executor). ``on_result`` is for in-process progress."""
    import torch

    from .relax import RelaxProgress, relax_many

    if task.threads:
        torch.set_num_threads(int(task.threads))
    posterior = get_model(task.loader, task.device)
    t0 = time.perf_counter()
    evals = [0]

    def count(p: RelaxProgress) -> None:
        evals[0] = p.n_evaluations

    results = []
    for r in relax_many(
        task.structures, posterior.mean_forward, config=task.config, device=task.device, callback=count
    ):
        if on_result is not None:  # in-process: handed over at once, not kept (memory stays bounded)
            on_result(task, r)
        else:
            results.append(r)
    return TaskOutput(task.task_id, results, time.perf_counter() - t0, evals[0])


class Executor(Protocol):
    name: str
    in_process: bool

    def map_unordered(self, fn: Callable, tasks: Iterable, **kwargs: Any) -> Iterator: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs tasks one after the other in this process (``kwargs`` such as on_result are passed through)."""

    name = "serial"
    in_process = True
    n_workers = 1

    def map_unordered(self, fn: Callable, tasks: Iterable, **kwargs: Any) -> Iterator:
        for task in tasks:
            yield fn(task, **kwargs)

    def close(self) -> None:
        pass


class JoblibExecutor:
    """``n_workers`` loky processes on this machine; results arrive as tasks finish."""

    name = "joblib"
    in_process = False

    def __init__(self, n_workers: int):
        self.n_workers = int(n_workers)

    def map_unordered(self, fn: Callable, tasks: Iterable, **kwargs: Any) -> Iterator:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=self.n_workers, backend="loky", return_as="generator_unordered")
        yield from parallel(delayed(fn)(t) for t in tasks)

    def close(self) -> None:
        pass


class DaskExecutor:
    """Tasks sent to a running Dask distributed scheduler at ``address`` (optional extra ``cluster``)."""

    name = "dask"
    in_process = False

    def __init__(self, address: str):
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise InputError(
                "--scheduler needs Dask distributed, which is not installed; install the extra: pip install 'dacscreen[cluster]'"
            ) from exc
        self._own_client = True
        existing = _default_client_for(address)
        if existing is not None:
            # a Client of this process already talks to that scheduler (a notebook, a test): use it. A second
            # Client has its own event loop, and futures of one waited on through the other fail at random
            # ("Event ... is bound to a different event loop")
            self.client, self._own_client = existing, False
            self.n_workers = max(1, len(self.client.scheduler_info().get("workers", {})))
            return
        try:
            self.client = Client(address, timeout=DASK_CONNECT_TIMEOUT)
        except Exception as exc:  # OSError / TimeoutError from the comm layer
            raise InputError(
                f"cannot reach the Dask scheduler at '{address}' ({type(exc).__name__}); start it or fix --scheduler"
            ) from exc
        self.n_workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def map_unordered(self, fn: Callable, tasks: Iterable, **kwargs: Any) -> Iterator:
        from dask.distributed import as_completed

        futures = self.client.map(fn, list(tasks), pure=False)
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._own_client:
            self.client.close()


def _default_client_for(address: str):
    """This process's default Dask Client when it is connected to ``address``, else None."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    try:
        same = str(client.scheduler.address).rstrip("/") == str(address).rstrip("/")
    except AttributeError:
        return None
    return client if same and client.status == "running" else None


def make_executor(workers: int = 1, scheduler: str | None = None) -> Executor:
    """Serial for ``workers == 1``, joblib for ``workers > 1``, Dask when a scheduler address is given."""
    if scheduler:
        return DaskExecutor(scheduler)
    if workers is None or int(workers) < 1:
        raise InputError(f"--workers {workers} not allowed; need an integer >= 1")
    if int(workers) == 1:
        return SerialExecutor()
    return JoblibExecutor(int(workers))


def worker_threads(workers: int) -> int:
    """torch threads per worker process so that workers x threads = the cores of this machine."""
    return max(1, (os.cpu_count() or 1) // max(1, int(workers)))
