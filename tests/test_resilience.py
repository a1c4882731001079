"""Resilience of the audit pipeline across executors (in-process, process pool, Ray).

Same results whatever runs the units; a worker killed mid-task is retried; a driver killed
with SIGKILL loses no finished unit; truncated artifacts are recomputed, never used; two
runs on one store do not corrupt each other; bad configs fail before any work. CPU only;
Ray (optional extra ``ptqx[ray]``) is started locally with ``ray.init(num_cpus=2)``, and
its tests are skipped when it is not installed. Unit executions are counted through
``tests/_faults.py`` (also installed in the Ray workers).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ptqx.cli import main
from ptqx.experiment import (
    ArtifactCorrupt,
    AuditConfig,
    AuditError,
    FileStore,
    audit,
    make_executor,
    plan_audit,
)

from . import _faults

REPO = Path(__file__).resolve().parents[1]

try:
    import ray
except ImportError:  # the lead decides whether CI installs the extra
    ray = None
needs_ray = pytest.mark.skipif(
    ray is None, reason="ray is not installed (pip install 'ptqx[ray]'); Ray backend not tested"
)

TOML = """
[audit]
dataset = "digits"
n_models = 4
universe_size = 96
methods = ["rtn"]
bits = [4]
calib_size = 16
attacks = ["lira_online", "global_threshold"]
n_bootstrap = 8
threads = 1
[train]
epochs = 1
batch_size = 32
[quant_options.rtn]
grid = "minmax"
"""
# threads = 1: every executor then runs each unit on one torch thread (Ray: one CPU per
# task). Torch's CPU reductions split work by thread count, so at another count float32
# results may differ in the last bit; at equal settings they must be bit-identical.
# 4 train + 4 quantize + 2 score + (1 + 2 attackers) x 2 attacks = 16 units.
N_UNITS = 16


@pytest.fixture(scope="module")
def toml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "audit.toml"
    path.write_text(TOML)
    return path


def config(toml: Path, out: Path, **overrides) -> AuditConfig:
    return AuditConfig.from_toml(toml, out=str(out), **overrides)


def cli_args(toml: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--config", str(toml), "--out", str(out), "--no-progress", "--no-report", *extra]


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """The fault/count folder, exported before Ray starts so its workers see it."""
    root = tmp_path_factory.mktemp("faults")
    old = os.environ.get(_faults.ENV)
    os.environ[_faults.ENV] = str(root)
    yield root
    if old is None:
        os.environ.pop(_faults.ENV, None)
    else:
        os.environ[_faults.ENV] = old


@pytest.fixture
def counted(faults, monkeypatch):
    """Counts unit executions in this process and in Ray workers; returns the reader."""
    (faults / "executions.log").unlink(missing_ok=True)
    _faults.install(monkeypatch)
    return lambda: _faults.executions(faults)


@pytest.fixture(scope="module")
def reference(toml, tmp_path_factory):
    """The tiny audit run in-process: the results every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    res = audit(config(toml, out), progress=False, report=False)
    return out, res


@pytest.fixture(scope="module")
def ray_session(faults):
    if ray is None:
        pytest.skip("ray is not installed")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={
            "worker_process_setup_hook": "tests._faults.install",
            # Workers must import this repository's `tests` package for the hook.
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
                )
            },
        },
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def rows(out: Path) -> list[dict]:
    return json.loads((Path(out) / "results.json").read_text())["rows"]


def same_outputs(a: Path, b: Path) -> None:
    assert rows(a) == rows(b)
    for f in sorted((a / "scores").glob("*.npy")):
        np.testing.assert_array_equal(np.load(f), np.load(b / "scores" / f.name), err_msg=f.name)


def assert_partial(out: Path, finished: set[str]) -> None:
    """results.json of a failed run: the rows of the ``finished`` configurations only."""
    doc = json.loads((Path(out) / "results.json").read_text())
    assert doc["complete"] is False and doc["missing"]
    assert {r["config"] for r in doc["rows"]} == finished
    assert not any(m.split(" / ")[0] in finished for m in doc["missing"])
    assert {p.stem for p in (Path(out) / "scores").glob("*.npy")} == finished


def artifact_files(store: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file of every complete artifact: a rewrite changes both."""
    s = FileStore(store)
    out = {}
    for key in s.list():
        for p in s._paths(key):
            st = p.stat()
            out[str(p)] = (st.st_ino, st.st_mtime_ns)
    return out


def assert_store_clean(store: Path) -> None:
    s = FileStore(store)
    for key in s.list():
        assert s.exists(key, verify=True), f"artifact {key} in {store} fails its checksum"


# -- config errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--methods", "rtn,telepathy"], "methods: unknown or not installed ['telepathy']"),
        (["--bits", "4,5"], "bits: 5"),
        (["--models", "-3"], "n_models"),
        (["--data-root", "/nonexistent/ptqx"], "data_root"),
    ],
)
@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_bad_config_fails_before_any_backend_starts(
    toml, tmp_path, capsys, monkeypatch, backend, flags, message
):
    # Ray made unimportable: a bad config must be reported before the backend is even loaded.
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "never"
    assert main([*cli_args(toml, out), "--backend", backend, "--jobs", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptqx run: invalid audit configuration") and message in err
    assert err.count("ptqx run:") == 1
    assert not out.exists()


def test_ray_backend_without_ray_says_how_to_install(toml, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "never"
    assert main([*cli_args(toml, out), "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ptqx[ray]'" in err and "--jobs" in err
    assert not out.exists()
    assert main([*cli_args(toml, out), "--address", "auto", "--backend", "processes"]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err


# -- same results whatever runs the units ---------------------------------------------------


@pytest.mark.slow
def test_process_pool_reproduces_in_process(reference, toml, tmp_path):
    out = tmp_path / "pool"
    audit(config(toml, out, jobs=2), progress=False, report=False)
    same_outputs(reference[0], out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["executor"] == "processes" and man["units_run_last_invocation"] == N_UNITS


@needs_ray
@pytest.mark.slow
def test_ray_reproduces_in_process(reference, ray_session, toml, tmp_path, counted):
    out = tmp_path / "ray"
    assert main([*cli_args(toml, out), "--backend", "ray"]) == 0
    same_outputs(reference[0], out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["executor"] == "ray" and man["status"] == "complete"
    assert sorted(counted()) == sorted(u.name for u in plan_audit(config(toml, out)).units)
    # The store is the source of truth: a rerun with another backend does nothing.
    counted_before = len(counted())
    audit(config(toml, out), progress=False, report=False)
    assert len(counted()) == counted_before


# -- a worker killed mid-task ---------------------------------------------------------------


@needs_ray
@pytest.mark.slow
def test_ray_worker_killed_mid_task_is_retried(reference, ray_session, toml, tmp_path, counted):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    plan = plan_audit(config(toml, out))
    store = FileStore(out / "store")
    for u in plan.units:
        if u.kind in ("score", "attack"):
            store.delete(u.key)
    (Path(os.environ[_faults.ENV]) / _faults.flag_name("score/rtn-4b")).touch()
    res = audit(
        config(toml, out), progress=False, report=False, executor=make_executor(backend="ray")
    )
    ran = counted()
    # The killed attempt and Ray's retry; every other unit once.
    assert ran.count("score/rtn-4b") == 2, ran
    assert sorted(set(ran)) == sorted(u.name for u in plan.units if u.kind in ("score", "attack"))
    assert len(ran) == len(set(ran)) + 1
    assert res.manifest["status"] == "complete"
    same_outputs(reference[0], out)


# -- the driver killed with SIGKILL ---------------------------------------------------------


def _kill_driver_after(cmd: list[str], store: Path, log: Path, n_artifacts: int) -> int:
    """Start ``cmd``, SIGKILL it once ``n_artifacts`` are complete; returns how many were."""
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while len(FileStore(store).list()) < n_artifacts:
            assert proc.poll() is None, f"driver ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "driver made no progress in 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # Tasks already running on a cluster die with the driver's job, a moment later; wait
    # until nothing new lands so "finished" is final.
    seen, stable_since = FileStore(store).list(), time.monotonic()
    while time.monotonic() - stable_since < 3.0:
        time.sleep(0.2)
        now = FileStore(store).list()
        if now != seen:
            seen, stable_since = now, time.monotonic()
    return len(seen)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["inprocess", pytest.param("ray", marks=needs_ray)])
def test_driver_sigkill_loses_no_finished_unit(
    request, reference, toml, tmp_path, counted, backend
):
    out = tmp_path / "run"
    extra = ["--backend", backend]
    if backend == "ray":
        # The driver joins the test's Ray cluster: killing it leaves the cluster up, as with
        # `ray job submit`, and its in-flight tasks are cancelled with its job.
        extra += ["--address", request.getfixturevalue("ray_session")]
    cmd = [sys.executable, "-m", "ptqx", *cli_args(toml, out, *extra)]
    store = out / "store"
    finished = _kill_driver_after(cmd, store, tmp_path / "driver.log", n_artifacts=3)
    assert 3 <= finished < N_UNITS
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "running"  # SIGKILL: no chance to write anything else
    assert_store_clean(store)
    before = artifact_files(store)
    done_keys = set(FileStore(store).list())
    plan = plan_audit(config(toml, out))
    done_names = {u.name for u in plan.units if u.key in done_keys}

    # Rerun the same command (in this process, so every execution is counted).
    assert main(cli_args(toml, out, "--backend", backend)) == 0
    ran = counted()
    assert not set(ran) & done_names, f"finished units recomputed: {set(ran) & done_names}"
    assert len(ran) == len(set(ran)) == N_UNITS - len(done_names)
    after = artifact_files(store)
    assert {p: after[p] for p in before} == before  # finished artifacts untouched
    assert json.loads((out / "manifest.json").read_text())["units_run_last_invocation"] == len(ran)
    assert_store_clean(store)
    same_outputs(reference[0], out)


# -- truncated artifacts --------------------------------------------------------------------


def _truncate(store: FileStore, key: str) -> None:
    payload = store._paths(key)[0]
    data = payload.read_bytes()
    payload.write_bytes(data[: len(data) // 3])


def test_truncated_artifacts_are_recomputed(reference, toml, tmp_path, counted):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    plan = plan_audit(config(toml, out))
    by_name = {u.name: u for u in plan.units}
    store = FileStore(out / "store")
    # A finished output truncated; a model truncated whose consumer must rerun.
    _truncate(store, by_name["score/fp32"].key)
    _truncate(store, by_name["quantize/rtn-4b/2"].key)
    store.delete(by_name["score/rtn-4b"].key)
    with pytest.raises(ArtifactCorrupt, match="checksum"):
        store.get(by_name["score/fp32"].key)
    audit(config(toml, out), progress=False, report=False)
    assert sorted(counted()) == ["quantize/rtn-4b/2", "score/fp32", "score/rtn-4b"]
    assert_store_clean(out / "store")
    same_outputs(reference[0], out)


def test_artifact_truncated_during_a_run_is_never_used(reference, toml, tmp_path, counted):
    """Corruption after the pre-run check (a flaky shared file system): the unit that loads
    it fails on the checksum, the run says so, and the rerun recomputes both."""
    out = tmp_path / "run"
    # Only the store is copied: a run folder copied from the reference would already hold
    # results.json, and the check below could not fail.
    shutil.copytree(reference[0] / "store", out / "store")
    plan = plan_audit(config(toml, out))
    by_name = {u.name: u for u in plan.units}
    store = FileStore(out / "store")
    for name in ("quantize/rtn-4b/1", "score/rtn-4b"):
        store.delete(by_name[name].key)

    def corrupt_when_done(unit, event, info):
        if unit.name == "quantize/rtn-4b/1" and event == "done":
            _truncate(store, unit.key)

    with pytest.raises(AuditError, match="ArtifactCorrupt") as e:
        audit(config(toml, out), progress=False, report=False, on_event=corrupt_when_done)
    assert "score/rtn-4b" in str(e.value)
    # A failed run writes the rows that finished, marked partial, never one that needs a
    # failed unit (nor its scores).
    assert_partial(out, finished={"fp32"})
    audit(config(toml, out), progress=False, report=False)
    # The first score attempt stopped while loading its inputs, before computing anything.
    assert counted() == ["quantize/rtn-4b/1", "quantize/rtn-4b/1", "score/rtn-4b"]
    same_outputs(reference[0], out)


def test_process_pool_worker_killed_fails_its_units_cleanly(
    reference, toml, tmp_path, faults, counted
):
    """A pool worker SIGKILLed mid-unit (the OOM killer) breaks the pool: the units that were
    running are reported failed, none stays "running", finished work is kept, and a rerun
    completes with the reference numbers."""
    from ptqx.experiment.executors import WORKER_DIED, ProcessPoolExecutor

    out = tmp_path / "run"
    shutil.copytree(reference[0] / "store", out / "store")
    plan = plan_audit(config(toml, out))
    by_name = {u.name: u for u in plan.units}
    store = FileStore(out / "store")
    for name in ("quantize/rtn-4b/1", "quantize/rtn-4b/2", "score/rtn-4b"):
        store.delete(by_name[name].key)
    (faults / _faults.flag_name("quantize/rtn-4b/1")).touch()
    pool = ProcessPoolExecutor(2, setup_hook="tests._faults.install")
    with pytest.raises(AuditError, match="worker process died") as e:
        audit(config(toml, out, jobs=2), progress=False, report=False, executor=pool)
    assert e.value.failed[by_name["quantize/rtn-4b/1"].key] == WORKER_DIED
    man = json.loads((out / "manifest.json").read_text())
    status = {n: u["status"] for n, u in man["units"].items()}
    assert man["status"] == "failed" and "running" not in status.values()
    assert status["quantize/rtn-4b/1"] == "failed" and status["score/rtn-4b"] == "skipped"
    assert not (faults / _faults.flag_name("quantize/rtn-4b/1")).exists()
    assert_partial(out, finished={"fp32"})
    audit(config(toml, out), progress=False, report=False)
    assert_store_clean(out / "store")
    same_outputs(reference[0], out)


# -- two runs on one store at once ----------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_runs_on_one_store(reference, toml, tmp_path):
    store = tmp_path / "shared-store"
    shutil.copytree(reference[0] / "store", store)
    plan = plan_audit(config(toml, tmp_path / "a"))
    s = FileStore(store)
    for u in plan.units:
        if u.kind != "train":  # both runs race on every quantize, score and attack unit
            s.delete(u.key)
    procs = []
    for name in ("a", "b"):
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115  (closed below)
        cmd = [
            sys.executable,
            "-m",
            "ptqx",
            *cli_args(toml, tmp_path / name, "--store", str(store)),
        ]
        procs.append((subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log))
    for p, log in procs:
        rc = p.wait(timeout=300)
        log.close()
        assert rc == 0, Path(log.name).read_text()[-3000:]
    assert_store_clean(store)
    assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")]
    for name in ("a", "b"):
        same_outputs(reference[0], tmp_path / name)
