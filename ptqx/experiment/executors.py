"""Executors: run a set of units in dependency order behind one small interface.

``Executor.run(units, store_root, on_event)`` receives only the pending units (finished
ones were already skipped by the caller), each with the keys it depends on. Upstream
units missing from ``units`` are taken as finished. Each executor calls
:func:`ptqx.experiment.units.run_unit` for a unit once all its pending upstream units
succeeded, reports ``on_event(unit, "start" | "done" | "failed" | "skipped", info)``,
keeps going after a failure (dependents of a failed unit are reported "skipped"), and
returns a {key: error message} dict of what did not finish. A distributed engine (Ray:
one task per unit, upstream results passed as task arguments so the engine orders the
work) implements the same method; the units and the store stay as they are.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from .units import Unit, run_unit

EventFn = Callable[[Unit, str, dict[str, Any]], None]


class Executor(Protocol):
    name: str

    def run(self, units: Sequence[Unit], store_root: str, on_event: EventFn) -> dict[str, str]: ...


def _error_text(exc: BaseException) -> str:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"{type(exc).__name__}: {exc}\n" + "".join(tb[-3:])


class _Graph:
    """Pending units with their unfinished upstream units."""

    def __init__(self, units: Sequence[Unit]):
        self.units = {u.key: u for u in units}
        self.waiting = {u.key: {d for d in u.deps if d in self.units} for u in units}
        self.children: dict[str, list[str]] = {k: [] for k in self.units}
        for u in units:
            for d in self.waiting[u.key]:
                self.children[d].append(u.key)
        self.order = [u.key for u in units]

    def ready(self) -> list[Unit]:
        out = [self.units[k] for k in self.order if k in self.waiting and not self.waiting[k]]
        for u in out:
            del self.waiting[u.key]
        return out

    def finished(self, key: str) -> None:
        for c in self.children[key]:
            if c in self.waiting:
                self.waiting[c].discard(key)

    def failed(self, key: str) -> list[Unit]:
        """Drop every unit downstream of ``key``; returns them."""
        dropped, stack = [], list(self.children[key])
        while stack:
            c = stack.pop()
            if c in self.waiting:
                del self.waiting[c]
                dropped.append(self.units[c])
                stack.extend(self.children[c])
        return dropped


def record_failure(
    graph: _Graph, errors: dict[str, str], unit: Unit, message: str, on_event: EventFn
) -> None:
    """Report ``unit`` as failed (``message``) and every unit downstream of it as skipped.

    Shared by every executor so a failure reads the same whatever ran the unit.
    """
    errors[unit.key] = message
    on_event(unit, "failed", {"error": errors[unit.key]})
    for d in graph.failed(unit.key):
        errors[d.key] = f"skipped: upstream unit {unit.name} failed"
        on_event(d, "skipped", {"error": errors[d.key]})


class InProcessExecutor:
    """Runs units one after another in this process (the default)."""

    name = "inprocess"

    def run(self, units: Sequence[Unit], store_root: str, on_event: EventFn) -> dict[str, str]:
        graph, errors = _Graph(units), {}
        while True:
            batch = graph.ready()
            if not batch:
                break
            for u in batch:
                on_event(u, "start", {})
                try:
                    info = run_unit(u, store_root)
                except Exception as exc:  # noqa: BLE001  (a unit's failure must not stop the others)
                    record_failure(graph, errors, u, _error_text(exc), on_event)
                    continue
                graph.finished(u.key)
                on_event(u, "done", info)
        return errors


def _worker_init(threads: int, setup_hook: str | None = None) -> None:
    import torch

    torch.set_num_threads(threads)
    import ptqx.ops  # noqa: F401  (load native kernels once per worker)

    if setup_hook:
        import importlib

        module, _, fn = setup_hook.rpartition(".")
        getattr(importlib.import_module(module), fn)()


#: Why a unit of a process pool whose worker died did not finish.
WORKER_DIED = (
    "worker process died (killed by the OS, e.g. out of memory, or by a signal) while this "
    "unit or one running beside it in the pool was running"
)


class ProcessPoolExecutor:
    """Runs independent units in ``jobs`` local worker processes.

    Workers are started with "spawn": forking a process whose torch/OpenMP thread pools
    are already running can deadlock. Each worker gets ``cpu_count // jobs`` torch
    threads so the pool does not oversubscribe the cores.

    A worker that dies (the OOM killer, ``kill -9``) breaks the whole pool: the units
    that were running in it are reported failed (:data:`WORKER_DIED`), their dependents
    skipped, and the remaining independent units go on in a fresh pool.

    Args:
        jobs: worker processes.
        setup_hook: optional "package.module.function" each worker calls once after
            start-up (like Ray's ``worker_process_setup_hook``; used for fault injection).
    """

    name = "processes"

    def __init__(self, jobs: int, *, setup_hook: str | None = None):
        if jobs < 1:
            raise ValueError(f"jobs: need >= 1, got {jobs}")
        self.jobs = jobs
        self.setup_hook = setup_hook

    def _pool(self) -> cf.ProcessPoolExecutor:
        threads = max(1, (os.cpu_count() or 1) // self.jobs)  # units' hints may override
        return cf.ProcessPoolExecutor(
            self.jobs,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(threads, self.setup_hook),
        )

    def run(self, units: Sequence[Unit], store_root: str, on_event: EventFn) -> dict[str, str]:
        graph, errors = _Graph(units), {}
        pool = self._pool()
        try:
            running: dict[cf.Future, Unit] = {}
            queue: list[Unit] = []
            while True:
                queue.extend(graph.ready())
                # Submit no more than there are workers: "start" then means started, and
                # units that become ready later (downstream work) are not stuck behind a
                # long FIFO of already-queued ones.
                broken = False
                while queue and len(running) < self.jobs and not broken:
                    u = queue.pop(0)
                    on_event(u, "start", {})
                    try:
                        running[pool.submit(run_unit, u, store_root)] = u
                    except BrokenProcessPool:
                        queue.insert(0, u)  # never ran: it goes to the fresh pool
                        broken = True
                if not running and not broken:
                    break
                if running:
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        u = running.pop(fut)
                        try:
                            info = fut.result()
                        except BrokenProcessPool:
                            record_failure(graph, errors, u, WORKER_DIED, on_event)
                            broken = True
                            continue
                        except Exception as exc:  # noqa: BLE001
                            record_failure(graph, errors, u, _error_text(exc), on_event)
                            continue
                        graph.finished(u.key)
                        on_event(u, "done", info)
                if broken:
                    # A broken pool fails every future it still holds; each such unit was
                    # running in it and is lost, so it is reported, never left "running".
                    for u in list(running.values()):
                        record_failure(graph, errors, u, WORKER_DIED, on_event)
                    running.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = self._pool()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return errors


def _ray_executor(jobs: int = 1, **options: Any) -> Executor:
    # Imported here: Ray is an optional extra, and importing it costs seconds.
    from .ray_executor import RayExecutor

    return RayExecutor(**options)


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "inprocess": lambda jobs=1, **_: InProcessExecutor(),
    "processes": lambda jobs=2, setup_hook=None, **_: ProcessPoolExecutor(
        jobs, setup_hook=setup_hook
    ),
    "ray": _ray_executor,
}


def make_executor(*, jobs: int = 1, backend: str | None = None, **options: Any) -> Executor:
    """``backend`` None picks in-process for one job, the process pool otherwise.

    ``options`` go to the backend's executor (e.g. ``address`` for "ray"); backends
    ignore options they do not have.

    Raises:
        ValueError: unknown backend.
        BackendUnavailable (an ImportError): the backend's engine is not installed.
    """
    backend = backend or ("inprocess" if jobs <= 1 else "processes")
    if backend not in EXECUTORS:
        raise ValueError(f"backend: unknown {backend!r}; available: {', '.join(EXECUTORS)}")
    return EXECUTORS[backend](jobs=jobs, **options)
