"""Ray backend: each pending unit becomes one Ray core task (optional extra ``ptqx[ray]``).

Ray is imported only when this executor is built, so ptqx works without it. What crosses
the object store is small: the pickled :class:`~ptqx.experiment.units.Unit` (JSON params
and keys) going in, and a summary dict with the artifact's path coming out. Weights and
scores travel through the artifact store, which stays the source of truth: a rerun skips
every finished unit whichever backend made it.

Dependencies are expressed by passing the upstream tasks' results (those summaries) as
arguments of the downstream task, so Ray itself holds a unit back until its inputs exist
and runs everything else as soon as resources allow; the driver only watches results and
reports events.

Failure handling, by cause:

* worker process or node lost (OOM killer, preemption, ``kill -9``): Ray resubmits the
  task, up to ``max_retries`` times;
* CUDA out of memory inside a unit: retried in the same task after freeing the cache, with
  half the batch for units whose batch size is an execution setting (scoring), unchanged
  for units whose batch size is part of the result (training), up to ``oom_retries`` times;
* any other exception: not retried (a deterministic bug would fail again); the unit is
  reported "failed" with its error, its dependents "skipped", and the rest of the run
  goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .executors import EventFn, _error_text, _Graph, record_failure
from .units import Unit, run_unit

# ``pip install 'ptqx[ray]'`` installs this version (setup.py's "ray" extra).
RAY_VERSION = "2.60.0"
INSTALL_HINT = (
    f"the ray backend needs Ray: pip install 'ptqx[ray]' (or pip install 'ray=={RAY_VERSION}'), "
    "or run without --backend ray (in-process, or --jobs N for local worker processes)"
)

# Default GPU share of one unit: a small shadow model uses a fraction of a modern GPU, so
# four run side by side on each device.
DEFAULT_GPUS_PER_UNIT = 0.25


class BackendUnavailable(ImportError):
    """The requested backend's engine is not installed; the message says how to install it."""


def import_ray():
    """Import Ray or raise :class:`BackendUnavailable` with install instructions."""
    try:
        import ray
    except ImportError as e:
        raise BackendUnavailable(f"{INSTALL_HINT} (import failed: {e})") from None
    return ray


def _is_cuda_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def _score_batch_size(unit: Unit) -> int:
    """The batch a score unit uses when no ``batch_size`` hint is set (mirrors ``_run_score``)."""
    from .units import _score_batch, context_dataset

    ds, _ = context_dataset(unit)
    return _score_batch(len(unit.deps), int(ds.x_train[0].numel()))


def _smaller_batch(unit: Unit) -> Unit | None:
    """A copy of ``unit`` with half its batch, or None when the batch is part of the result."""
    import dataclasses

    if unit.kind != "score":
        return None
    bs = int(unit.hints.get("batch_size") or _score_batch_size(unit))
    if bs <= 1:
        return None
    return dataclasses.replace(unit, hints={**unit.hints, "batch_size": max(1, bs // 2)})


def execute_unit(
    unit: Unit, store_root: str, *upstream: dict[str, Any], oom_retries: int = 2
) -> dict[str, Any]:
    """Body of one Ray task: run the unit (retrying CUDA OOM), return its artifact summary.

    ``upstream`` holds the results of the tasks this unit depends on; they are not read
    (the inputs come from the store by key) but passing them makes Ray run this task
    only after those tasks succeeded.

    Returns:
        ``run_unit``'s summary plus ``path`` (the artifact payload) and ``oom_retries``.
    """
    import torch

    attempt, current = 0, unit
    while True:
        try:
            info = run_unit(current, store_root)
            break
        except Exception as exc:  # noqa: BLE001  (only CUDA OOM is retried here)
            if not _is_cuda_oom(exc) or attempt >= oom_retries:
                raise
            attempt += 1
            torch.cuda.empty_cache()
            smaller = _smaller_batch(current)
            if smaller is not None:
                current = smaller
            else:
                # Same batch (it is part of the result): wait for units sharing the GPU.
                time.sleep(5.0 * attempt)
    from .store import FileStore

    path = FileStore(store_root)._paths(unit.key)[0]
    return {**info, "path": str(path), "oom_retries": attempt}


class RayExecutor:
    """Runs pending units as Ray tasks on a local or existing Ray cluster.

    Args:
        address: None starts a local Ray instance (or joins the cluster named by the
            ``RAY_ADDRESS`` environment variable, as under ``ray job submit``); "auto"
            joins the cluster started on this machine with ``ray start``; "HOST:PORT"
            joins that cluster. A Ray session already initialised in this process is
            reused and left running.
        num_cpus: CPUs of a local instance (None: all of this machine's).
        cpus_per_unit: ``num_cpus`` reserved by each unit, which is also its torch thread
            count (``ptqx run --threads N`` sets it).
        gpus_per_unit: ``num_gpus`` reserved by each unit that runs on a CUDA device; a
            fraction packs several units onto one GPU. Units that set ``num_gpus`` in
            their ``resources`` keep their own value.
        max_retries: resubmissions of a task whose worker process or node died.
        oom_retries: in-task retries of a unit that ran out of CUDA memory.
        usage_stats: allow Ray's usage statistics. Off by default (this is a privacy
            tool); setting ``RAY_USAGE_STATS_ENABLED`` in the environment also decides.
        runtime_env: Ray runtime environment for the tasks (e.g. ``{"env_vars": ...}``).

    Raises:
        BackendUnavailable: Ray is not installed.
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_unit: float = 1,
        gpus_per_unit: float = DEFAULT_GPUS_PER_UNIT,
        max_retries: int = 3,
        oom_retries: int = 2,
        usage_stats: bool = False,
        runtime_env: dict[str, Any] | None = None,
    ):
        if cpus_per_unit <= 0:
            raise ValueError(f"cpus_per_unit: need > 0, got {cpus_per_unit}")
        if not 0 < gpus_per_unit:
            raise ValueError(f"gpus_per_unit: need > 0, got {gpus_per_unit}")
        if gpus_per_unit > 1 and gpus_per_unit != int(gpus_per_unit):
            raise ValueError(
                f"gpus_per_unit: above 1 it must be a whole number of GPUs, got {gpus_per_unit}"
            )
        if max_retries < 0 or oom_retries < 0:
            raise ValueError(
                f"max_retries / oom_retries: need >= 0, got {max_retries} / {oom_retries}"
            )
        self.ray = import_ray()
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_unit = cpus_per_unit
        self.gpus_per_unit = gpus_per_unit
        self.max_retries = max_retries
        self.oom_retries = oom_retries
        self.usage_stats = usage_stats
        self.runtime_env = runtime_env

    # -- cluster ----------------------------------------------------------------------------
    def _init(self) -> bool:
        """Connect to (or start) Ray; True when this call started the session."""
        ray = self.ray
        if ray.is_initialized():
            return False
        # Must be set before ray.init: the setting is read when the session starts. A value
        # the user exported (opt-in) wins.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "1" if self.usage_stats else "0")
        kwargs: dict[str, Any] = {
            "include_dashboard": False,  # plain `ray` has no dashboard; don't try
            "logging_level": "WARNING",
        }
        if self.address is not None:
            kwargs["address"] = self.address
        elif self.num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
            kwargs["num_cpus"] = self.num_cpus
        if self.runtime_env:
            kwargs["runtime_env"] = self.runtime_env
        ray.init(**kwargs)
        return True

    def resources(self, unit: Unit) -> dict[str, float]:
        """What the task of ``unit`` reserves: CPUs always, a GPU share on CUDA devices."""
        res = dict(unit.resources or {})
        out = {"num_cpus": float(res.get("num_cpus", self.cpus_per_unit))}
        device = str(unit.hints.get("device", "cpu"))
        gpus = res.get("num_gpus")
        if gpus is None and device.startswith("cuda"):
            gpus = self.gpus_per_unit
        out["num_gpus"] = float(gpus or 0)
        return out

    def _for_ray(self, unit: Unit) -> Unit:
        """``unit`` with as many torch threads as CPUs its task reserves.

        The planner's thread hint is sized for a local process pool (cores // jobs); on a
        cluster a task may only use what it reserved, or tasks packed on one node fight
        over the cores (Ray sets OMP_NUM_THREADS the same way).
        """
        import dataclasses

        threads = max(1, int(self.resources(unit)["num_cpus"]))
        return dataclasses.replace(unit, hints={**unit.hints, "threads": threads})

    def _remote(self, unit: Unit):
        res = self.resources(unit)
        opts: dict[str, Any] = {
            "num_cpus": res["num_cpus"],
            "num_gpus": res["num_gpus"],
            "max_retries": self.max_retries,
            # Application errors are not retried by Ray: only lost workers/nodes are.
            "retry_exceptions": False,
            "name": unit.name,
        }
        if res["num_gpus"] > 0:
            # Ray's default for GPU tasks is max_calls=1: a fresh worker process per task,
            # so every unit would pay process start-up, the torch/CUDA import and context
            # creation again (measured: 40 GPU tasks in 40 processes 78-83 s, 4-9 s with
            # max_calls=0). 0 = unlimited calls per worker process. Units release their
            # GPU memory when they return, so reuse is safe.
            opts["max_calls"] = 0
        return self._task.options(**opts)

    # -- run ------------------------------------------------------------------------------
    def run(self, units: Sequence[Unit], store_root: str, on_event: EventFn) -> dict[str, str]:
        ray = self.ray
        started = self._init()
        store_root = str(Path(store_root).resolve())
        self._task = ray.remote(execute_unit)
        graph, errors = _Graph(units), {}
        refs: dict[str, Any] = {}
        key_of: dict[Any, str] = {}
        try:
            # Submit everything at once in dependency order; Ray holds each task until its
            # upstream results exist. Upstream units not in ``units`` are finished already.
            for u in _topological(units):
                args = [refs[d] for d in dict.fromkeys(u.deps) if d in refs]
                ref = self._remote(u).remote(
                    self._for_ray(u), store_root, *args, oom_retries=self.oom_retries
                )
                refs[u.key] = ref
                key_of[ref] = u.key
            for u in graph.ready():
                on_event(u, "start", {})
            order = {ref: i for i, ref in enumerate(refs.values())}
            waiting = list(refs.values())
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                if waiting:
                    more, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0)
                    ready += more
                # Submission order is a dependency order: an upstream result that arrived in
                # the same batch as its dependent's is reported first.
                for ref in sorted(ready, key=order.__getitem__):
                    key = key_of[ref]
                    if key in errors:  # already reported "skipped" (an upstream unit failed)
                        continue
                    u = graph.units[key]
                    try:
                        info = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001  (one failure must not stop the run)
                        record_failure(
                            graph, errors, u, _task_error(exc, self.max_retries), on_event
                        )
                        continue
                    graph.finished(key)
                    on_event(u, "done", info)
                    for nxt in graph.ready():
                        on_event(nxt, "start", {})
        except BaseException:
            # Interrupted driver: stop queued work; running units finish or die atomically.
            for r in refs.values():
                try:
                    ray.cancel(r)
                except Exception:  # noqa: BLE001,S110  (best effort on the way out)
                    pass
            raise
        finally:
            if started:
                ray.shutdown()
        return errors


def _topological(units: Sequence[Unit]) -> list[Unit]:
    """``units`` ordered so each comes after the pending units it depends on."""
    by_key = {u.key: u for u in units}
    seen: set[str] = set()
    out: list[Unit] = []
    for u in units:
        stack = [(u, False)]
        while stack:
            v, expanded = stack.pop()
            if v.key in seen:
                continue
            if expanded:
                seen.add(v.key)
                out.append(v)
                continue
            stack.append((v, True))
            stack.extend((by_key[d], False) for d in v.deps if d in by_key and d not in seen)
    return out


def _task_error(exc: BaseException, max_retries: int) -> str:
    """A readable error: the unit's own exception, or why Ray gave up on the task."""
    name = type(exc).__name__
    if name in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError"):
        return f"{name}: the task's worker or node died {max_retries + 1} times (max_retries={max_retries}): {exc}"
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return _error_text(cause)
    return _error_text(exc)
