"""Fault injection and execution counting for tests/test_resilience.py.

``install()`` wraps every unit runner so that each execution appends the unit's name to
``$PTQX_TEST_FAULTS/executions.log`` (one short ``O_APPEND`` write per line, so lines from
concurrent processes do not interleave), and so that a unit whose one-shot flag file
``$PTQX_TEST_FAULTS/kill-<name>`` exists removes the flag and SIGKILLs its own process
mid-task (after its inputs were loaded, before its output is written). Ray workers call
``install`` through ``runtime_env={"worker_process_setup_hook": "tests._faults.install"}``;
the test process installs it with ``install(monkeypatch)``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "PTQX_TEST_FAULTS"


def flag_name(unit_name: str) -> str:
    return "kill-" + unit_name.replace("/", "_")


def install(monkeypatch=None) -> None:
    root = os.environ.get(ENV)
    if not root:
        return
    from ptqx.experiment import units

    for kind, fn in list(units.UNIT_KINDS.items()):
        wrapped = _wrap(fn, Path(root))
        if monkeypatch is not None:
            monkeypatch.setitem(units.UNIT_KINDS, kind, wrapped)
        else:
            units.UNIT_KINDS[kind] = wrapped


def _wrap(fn, root: Path):
    def run(unit, inputs):
        fd = os.open(root / "executions.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (unit.name + "\n").encode())
        finally:
            os.close(fd)
        try:
            (root / flag_name(unit.name)).unlink()
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(unit, inputs)

    return run


def executions(root: Path) -> list[str]:
    log = Path(root) / "executions.log"
    return log.read_text().split() if log.exists() else []
