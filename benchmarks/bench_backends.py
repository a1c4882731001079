"""Ray backend overheads and executor speed-ups on a small Fashion-MNIST audit.

Not a pytest-benchmark file: each measurement is a whole process (an audit from an empty
store, or a Ray session from start to shutdown), so it is timed with a wall clock and
printed as a table for benchmarks/RESULTS.md. Run from the repository root:

    python benchmarks/bench_backends.py [--models 4 --universe 2000 --epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ray_overheads(n_tasks: int, n_chain: int) -> dict[str, float]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    import ray

    t_import = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def noop(*upstream):
        return "path"

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get(noop.remote())  # first task: starts a worker process
    t_first = time.perf_counter() - t0
    ray.get([noop.remote() for _ in range(20)])  # warm both workers
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(n_tasks)])
    t_indep = (time.perf_counter() - t0) / n_tasks
    t0 = time.perf_counter()
    ref = noop.remote()
    for _ in range(n_chain - 1):
        ref = noop.remote(ref)  # like a unit waiting for its upstream unit's result
    ray.get(ref)
    t_chain = (time.perf_counter() - t0) / n_chain
    t0 = time.perf_counter()
    ray.shutdown()
    t_down = time.perf_counter() - t0
    return {
        "import_s": t_import,
        "init_s": t_init,
        "first_task_s": t_first,
        "shutdown_s": t_down,
        "per_task_independent_ms": 1e3 * t_indep,
        "per_task_chained_ms": 1e3 * t_chain,
    }


def audit_wall(flags: list[str], backend_flags: list[str], root: Path) -> tuple[float, dict]:
    out = root / ("".join(backend_flags).replace("-", "") or "inprocess")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "ptqx", "run", *flags, "--out", str(out), *backend_flags]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    man = json.loads((out / "manifest.json").read_text())
    unit_s = sum(u.get("seconds", 0.0) for u in man["units"].values())
    rows = json.loads((out / "results.json").read_text())["rows"]
    return wall, {"units": man["units_run_last_invocation"], "unit_seconds": unit_s, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--universe", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--skip-audit", action="store_true")
    a = p.parse_args()

    o = ray_overheads(a.tasks, 50)
    print("Ray (local, num_cpus=2):")
    for k, v in o.items():
        print(f"  {k:28s} {v:8.3f}")
    if a.skip_audit:
        return
    flags = [
        "--dataset", "fashion-mnist", "--models", str(a.models), "--universe", str(a.universe),
        "--epochs", str(a.epochs), "--methods", "rtn", "--bits", "4,2",
        "--attacks", "lira_online,global_threshold", "--calib-size", "64", "--bootstrap", "20",
        "--no-progress", "--no-report",
    ]  # fmt: skip
    print("ptqx run " + " ".join(flags))
    with tempfile.TemporaryDirectory(prefix="ptqx-bench-") as tmp:
        root = Path(tmp)
        results = {}
        for name, bflags in (
            ("inprocess", []),
            ("jobs2", ["--jobs", "2"]),
            ("ray", ["--backend", "ray"]),
        ):
            wall, info = audit_wall(flags, bflags, root)
            results[name] = (wall, info)
            print(
                f"  {name:10s} wall {wall:7.1f} s  units {info['units']}  "
                f"sum of unit times {info['unit_seconds']:7.1f} s",
                flush=True,
            )
        base = results["inprocess"][0]
        for name in ("jobs2", "ray"):
            same = results[name][1]["rows"] == results["inprocess"][1]["rows"]
            print(
                f"  speed-up {name} vs inprocess: {base / results[name][0]:.2f}x  same rows: {same}"
            )


if __name__ == "__main__":
    main()
