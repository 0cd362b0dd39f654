"""Where cells run: in this process, in a pool of spawned worker processes, or on Ray.

Every backend keeps at most ``workers`` tasks in flight, so the driver knows exactly which
cells are running (the status it records) and a task starts only when a worker is free.
Workers run :func:`capgap.sweep.cell.run_task` (one cell, or a lockstep group of cells) and
hand back plain dicts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

from capgap.errors import CapgapError
from capgap.runs import env_threads, use_threads
from capgap.sweep.cell import run_task

BACKENDS = ("local", "ray")
Payload = dict[str, Any]
Callback = Callable[[Payload], None]


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers``: the cores (CAPGAP_THREADS or all) split evenly."""
    return max(1, env_threads() // max(1, workers))


def execute(payloads: list[Payload], *, workers: int, backend: str,
            on_start: Callback, on_result: Callback) -> None:
    """Run every payload; ``on_start(payload)`` before and ``on_result(result)`` after each."""
    if backend not in BACKENDS:
        raise CapgapError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if workers < 1:
        raise CapgapError(f"--workers must be at least 1, got {workers}")
    if not payloads:
        return
    if backend == "ray":
        _run_ray(payloads, workers, on_start, on_result)
    elif workers == 1:
        _run_inline(payloads, on_start, on_result)
    else:
        _run_pool(payloads, workers, on_start, on_result)


def _run_inline(payloads: list[Payload], on_start: Callback, on_result: Callback) -> None:
    """One worker: no process to spawn (and a debugger sees the cell)."""
    with _env_restored("CAPGAP_THREADS"):
        for p in payloads:
            on_start(p)
            on_result(run_task(p))


def _run_pool(payloads: list[Payload], workers: int, on_start: Callback,
              on_result: Callback) -> None:
    """Spawned processes (fork would copy the driver's torch threads and locks).

    A worker that dies (killed, out of memory) breaks a ``ProcessPoolExecutor``: every cell
    in flight comes back failed, and the driver starts a fresh pool for the cells left, so
    one lost worker costs a re-run of its cells, not the sweep.
    """
    threads = payloads[0]["threads"]
    ctx = get_context("spawn")
    pools: list[ProcessPoolExecutor] = []

    def new_pool() -> ProcessPoolExecutor:
        pools.append(ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                         initializer=use_threads, initargs=(threads,)))
        return pools[-1]

    def submit(p: Payload) -> Future:
        try:
            return (pools[-1] if pools else new_pool()).submit(run_task, p)
        except BrokenProcessPool:  # a worker died since the last submit
            pools[-1].shutdown(wait=False, cancel_futures=True)
            return new_pool().submit(run_task, p)

    try:
        _windowed(payloads, workers, submit, _wait_futures, on_start, on_result)
    finally:
        for p in pools:
            p.shutdown(wait=True, cancel_futures=True)


def _wait_futures(pending: list[Any]) -> tuple[list[Any], list[Payload]]:
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    return [f for f in pending if f not in done], [_future_result(f) for f in done]


def _future_result(f: Future) -> Payload:
    try:
        return f.result()
    except Exception as e:  # a worker died (killed, out of memory): the task failed
        key = getattr(f, "capgap_key", "?")
        return {"key": key, "error": f"worker died: {type(e).__name__}: {e}"}


def _windowed(payloads: list[Payload], workers: int, submit: Callable[[Payload], Any],
              wait_some: Callable[[list[Any]], tuple[list[Any], list[Payload]]],
              on_start: Callback, on_result: Callback) -> None:
    """Keep ``workers`` tasks in flight until every payload has a result."""
    queue = list(payloads)
    pending: list[Any] = []
    while queue or pending:
        while queue and len(pending) < workers:
            p = queue.pop(0)
            on_start(p)
            handle = submit(p)
            _tag(handle, p["key"])
            pending.append(handle)
        pending, results = wait_some(pending)
        for r in results:
            on_result(r)


def _tag(handle: Any, key: str) -> None:
    try:
        handle.capgap_key = key
    except AttributeError:  # Ray ObjectRefs take no attributes; their results carry the key
        pass


def _run_ray(payloads: list[Payload], workers: int, on_start: Callback,
             on_result: Callback) -> None:
    """Cells as Ray tasks, each asking for its share of CPUs (a GPU when one is there).

    Connects to the cluster in RAY_ADDRESS when set, else starts a local instance.
    """
    try:
        import ray
    except ImportError:
        raise CapgapError("--backend ray needs Ray: pip install ray "
                          "(with -c constraints.txt to keep torch as it is)") from None
    started = not ray.is_initialized()
    if started:
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    task = ray.remote(**ray_resources(ray.cluster_resources(), payloads[0]["threads"],
                                      workers))(run_task)
    keys: dict[Any, str] = {}

    def submit(p: Payload) -> Any:
        ref = task.remote(p)
        keys[ref] = p["key"]
        return ref

    def wait_some(pending: list[Any]) -> tuple[list[Any], list[Payload]]:
        done, rest = ray.wait(pending, num_returns=1)
        return rest, [_ray_result(ray, ref, keys[ref]) for ref in done]

    try:
        _windowed(payloads, workers, submit, wait_some, on_start, on_result)
    finally:
        if started:
            ray.shutdown()


def ray_resources(cluster: dict[str, float], threads: int, workers: int) -> dict[str, float]:
    """What each cell's Ray task asks for: its CPU threads and, where the cluster has GPUs,
    an equal share of them (at most one each). Ray hides every GPU from a task that asks for
    none, so a cell would silently train on CPU."""
    gpus = float(cluster.get("GPU", 0))
    if gpus <= 0:
        return {"num_cpus": threads}
    return {"num_cpus": threads, "num_gpus": min(1.0, gpus / max(1, workers))}


def _ray_result(ray: Any, ref: Any, key: str) -> Payload:
    try:
        return ray.get(ref)
    except Exception as e:  # the task's worker died
        return {"key": key, "error": f"ray task failed: {type(e).__name__}: {e}"}


@contextmanager
def _env_restored(name: str) -> Iterator[None]:
    old = os.environ.get(name)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
