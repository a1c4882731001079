"""The audit pipeline: config validation, content keys, artifact store, resume, corruption."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch

from ptqx.experiment import (
    UNIT_KINDS,
    ArtifactCorrupt,
    ArtifactMissing,
    AuditConfig,
    ConfigError,
    FileStore,
    audit,
    content_key,
    derive_seed,
    make_unit,
    plan_audit,
)
from ptqx.experiment.audit import pending_units  # noqa: F401


def tiny_config(out, **changes) -> AuditConfig:
    """Seconds-sized audit: 4 models on 160 digits, 1 epoch, RTN (min-max grid) at 4 and 2 bits."""
    base = dict(
        dataset="digits",
        n_models=4,
        universe_size=160,
        train={"epochs": 1, "batch_size": 32},
        methods=("rtn",),
        bits=(4, 2),
        quant_options={"rtn": {"grid": "minmax"}},
        calib_size=16,
        attacks=("lira_online", "global_threshold"),
        n_bootstrap=8,
        out=str(out),
    )
    base.update(changes)
    return AuditConfig(**base)


class Counter:
    """Wraps every unit runner to count executions by unit name."""

    def __init__(self, monkeypatch):
        self.names: list[str] = []
        for kind, fn in list(UNIT_KINDS.items()):
            monkeypatch.setitem(UNIT_KINDS, kind, self._wrap(fn))

    def _wrap(self, fn):
        def run(unit, inputs):
            self.names.append(unit.name)
            return fn(unit, inputs)

        return run

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.names:
            out[n.split("/")[0]] = out.get(n.split("/")[0], 0) + 1
        return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete tiny run (in-process), shared read-only; tests copy it to mutate."""
    out = tmp_path_factory.mktemp("run")
    res = audit(tiny_config(out), progress=False)
    return out, res


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


# -- config ------------------------------------------------------------------------------


def test_bad_configs_fail_with_one_message_before_work(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError) as e:
        tiny_config(
            out,
            methods=("rtn", "nope"),
            bits=(4, 5),
            n_models=-1,
            data_root=str(tmp_path / "missing"),
        )
    msg = str(e.value)
    for part in ("n_models", "bits: 5", "data_root", "missing"):
        assert part in msg, msg
    assert not out.exists()
    # Registry names are checked once the static checks pass; the message lists what exists.
    with pytest.raises(
        ConfigError, match=r"methods: unknown or not installed \['nope'\]; available: .*rtn"
    ):
        tiny_config(out, methods=("rtn", "nope"))
    with pytest.raises(ConfigError, match="attacks: unknown"):
        tiny_config(out, attacks=("lira_online", "psychic"))
    with pytest.raises(ConfigError, match="dataset: unknown"):
        tiny_config(out, dataset="imagenet22k")
    with pytest.raises(ConfigError, match="train: unknown TrainConfig field"):
        tiny_config(out, train={"epoch": 3})
    with pytest.raises(ConfigError, match="attack_mode"):
        tiny_config(out, attack_mode="loose")
    with pytest.raises(ConfigError, match="universe_size"):
        audit(tiny_config(out, universe_size=10**6), progress=False)
    assert not out.exists()


def test_config_round_trips_through_dict_and_toml(tmp_path):
    c = tiny_config(tmp_path / "o", layer_bits={"fc": 8}, fprs=(1e-3,))
    assert AuditConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    toml = tmp_path / "a.toml"
    toml.write_text(
        '[audit]\ndataset = "digits"\nn_models = 4\nmethods = ["rtn"]\nbits = [4, 1.58]\n'
        'out = "x"\n[train]\nepochs = 1\n[quant_options.rtn]\ngrid = "minmax"\n'
    )
    t = AuditConfig.from_toml(toml, n_models=6)
    assert t.n_models == 6 and t.bits == (4.0, 1.58) and t.train_overrides() == {"epochs": 1}
    assert t.quant_options_for("rtn") == {"grid": "minmax"}
    with pytest.raises(ConfigError, match="unknown setting"):
        AuditConfig.from_dict({"dataset": "digits", "n_model": 3})


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "train", 1) == derive_seed(0, "train", 1)
    seeds = {derive_seed(s, "train", i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150


# -- content keys ------------------------------------------------------------------------


def test_content_keys_change_only_with_inputs(tmp_path):
    k = content_key("train", {"a": 1, "b": [1, 2]}, [])
    assert k == content_key("train", {"b": [1, 2], "a": 1}, [])
    assert k != content_key("train", {"a": 2, "b": [1, 2]}, [])
    assert k != content_key("quantize", {"a": 1, "b": [1, 2]}, [])
    assert content_key("score", {}, ["a" * 32]) != content_key("score", {}, ["b" * 32])

    base = plan_audit(tiny_config(tmp_path / "a"))
    keys = lambda p, kind: {u.name: u.key for u in p.units if u.kind == kind}  # noqa: E731
    # Execution settings change no key.
    same = plan_audit(tiny_config(tmp_path / "b", jobs=2, store=str(tmp_path / "s")))
    assert [u.key for u in same.units] == [u.key for u in base.units]
    # A bootstrap change touches attack units only.
    boot = plan_audit(tiny_config(tmp_path / "a", n_bootstrap=9))
    for kind in ("train", "quantize", "score"):
        assert keys(boot, kind) == keys(base, kind)
    assert not set(keys(boot, "attack").values()) & set(keys(base, "attack").values())
    # Adding a bit-width keeps every existing unit's key.
    more = plan_audit(tiny_config(tmp_path / "a", bits=(4, 2, 1.58)))
    for kind in ("train", "quantize", "score", "attack"):
        old = keys(base, kind)
        assert {n: keys(more, kind)[n] for n in old} == old
    # Training changes propagate downstream.
    ep = plan_audit(tiny_config(tmp_path / "a", train={"epochs": 2, "batch_size": 32}))
    for kind in ("train", "quantize", "score", "attack"):
        assert not set(keys(ep, kind).values()) & set(keys(base, kind).values())
    # Another seed: other keys, other masks.
    other = plan_audit(tiny_config(tmp_path / "a", seed=1))
    assert not np.array_equal(other.context["keep"], base.context["keep"])


def test_units_are_plain_and_picklable(tmp_path):
    import pickle

    plan = plan_audit(tiny_config(tmp_path))
    for u in plan.units:
        json.dumps(u.params)
        v = pickle.loads(pickle.dumps(u))
        assert (v.key, v.deps, v.params) == (u.key, u.deps, u.params)
    with pytest.raises(ValueError, match="unknown unit kind"):
        make_unit("bake", "x", {})


# -- store -------------------------------------------------------------------------------


def test_store_round_trip_checksum_and_atomicity(tmp_path, monkeypatch):
    s = FileStore(tmp_path / "st")
    key = "ab" * 16
    assert not s.exists(key) and s.list() == []
    with pytest.raises(ArtifactMissing):
        s.get(key)
    s.put(
        key,
        {"x": np.arange(5), "t": torch.ones(2, 3), "meta": {"a": np.float64(1.5), "l": [1, 2]}},
        meta={"kind": "test"},
    )
    got = s.get(key)
    assert torch.equal(got["x"], torch.arange(5)) and got["meta"] == {"a": 1.5, "l": [1, 2]}
    assert s.exists(key, verify=True) and s.list() == [key] and s.info(key)["kind"] == "test"
    # Truncated payload: exists() sees the size mismatch; get() refuses it.
    payload = tmp_path / "st" / key[:2] / f"{key}.pt"
    data = payload.read_bytes()
    payload.write_bytes(data[: len(data) // 2])
    assert not s.exists(key)
    with pytest.raises(ArtifactCorrupt):
        s.get(key)
    # Same size, flipped byte: only the checksum catches it.
    payload.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert s.exists(key) and not s.exists(key, verify=True)
    with pytest.raises(ArtifactCorrupt):
        s.get(key)
    # A crash during the write leaves neither a visible artifact nor a temp file.
    key2 = "cd" * 16

    def boom(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        s.put(key2, {"x": torch.zeros(3)})
    monkeypatch.undo()
    assert not s.exists(key2)
    assert not [p for p in (tmp_path / "st").rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="key"):
        s.get("../etc")


# -- runs: outputs, resume, corruption, changed settings --------------------------------


def test_run_folder_contents(finished_run):
    out, res = finished_run
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete"
    assert all(u["status"] == "done" for u in man["units"].values())
    assert len(man["seeds"]["train"]) == 4 and man["config"]["n_models"] == 4
    assert man["versions"]["torch"] == torch.__version__
    keep = np.load(out / "keep.npy")
    assert keep.shape == (4, 160) and keep.dtype == bool and (keep.sum(0) == 2).all()
    assert np.load(out / "labels.npy").shape == (160,)
    calib = np.load(out / "calibration.npy")
    assert (calib <= keep).all() and (calib.sum(1) == 16).all()
    for name in ("fp32", "rtn-4b", "rtn-2b"):
        s = np.load(out / "scores" / f"{name}.npy")
        assert s.shape == (4, 160, 2) and s.dtype == np.float64 and np.isfinite(s).all()
    doc = json.loads((out / "results.json").read_text())
    # fp32: one attacker; each quantized config: FP-reference and adaptive; 2 attacks each.
    assert len(doc["rows"]) == (1 + 2 * 2) * 2 == len(res.rows)
    assert {(r["config"], r["attacker"]) for r in doc["rows"]} == {
        ("fp32", "fp_reference"),
        ("rtn-4b", "fp_reference"),
        ("rtn-4b", "adaptive"),
        ("rtn-2b", "fp_reference"),
        ("rtn-2b", "adaptive"),
    }
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "test_acc.mean" in header and "attacker" in header
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "fp32" in (out / "report.md").read_text()


def test_resume_after_interrupt_recomputes_nothing_finished(finished_run, tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "run")
    counter = Counter(monkeypatch)
    done = []

    def stop_after(unit, event, info):
        if event == "done":
            done.append(unit.name)
            if len(done) == 7:
                raise KeyboardInterrupt  # a kill between units

    with pytest.raises(KeyboardInterrupt):
        audit(config, progress=False, on_event=stop_after)
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["status"] == "interrupted"
    assert counter.names == done
    # A half-written file from a kill during a write: a temp file, and a payload without its
    # checksum record. Neither may be read.
    store = tmp_path / "run" / "store"
    plan = plan_audit(config)
    nxt = next(u for u in plan.units if u.name not in done)
    (store / nxt.key[:2]).mkdir(parents=True, exist_ok=True)
    (store / nxt.key[:2] / f".{nxt.key}.pt.123.abcd.tmp").write_bytes(b"partial")
    (store / nxt.key[:2] / f"{nxt.key}.pt").write_bytes(b"half a payload")

    counter.names.clear()
    res = audit(config, progress=False, report=False)
    assert not set(counter.names) & set(done)
    assert len(counter.names) + len(done) == len(plan.units)
    assert nxt.name in counter.names
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "complete"
    # Same seeds, same numbers as an uninterrupted run.
    assert [r["metrics"] for r in res.rows] == [r["metrics"] for r in finished_run[1].rows]


def test_corrupt_artifact_is_recomputed(finished_run, tmp_path, monkeypatch):
    out = copy_run(finished_run[0], tmp_path / "run")
    config = tiny_config(out)
    plan = plan_audit(config)
    score = next(u for u in plan.units if u.name == "score/rtn-2b")
    attack = next(u for u in plan.units if u.name == "attack/rtn-4b/adaptive/lira_online")
    for u in (score, attack):
        p = out / "store" / u.key[:2] / f"{u.key}.pt"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
        p.write_bytes(bytes(data))
    counter = Counter(monkeypatch)
    res = audit(config, progress=False)
    assert sorted(counter.names) == sorted([score.name, attack.name])
    man = json.loads((out / "manifest.json").read_text())
    assert set(man["corrupt_artifacts_recomputed"]) == {score.name, attack.name}
    assert [r["metrics"] for r in res.rows] == [r["metrics"] for r in finished_run[1].rows]


def test_changed_setting_recomputes_only_dependents(finished_run, tmp_path, monkeypatch):
    out = copy_run(finished_run[0], tmp_path / "run")
    counter = Counter(monkeypatch)
    audit(tiny_config(out), progress=False, report=False)
    assert counter.names == []  # a rerun of a finished run does nothing
    audit(tiny_config(out, n_bootstrap=5), progress=False, report=False)
    assert set(counter.kinds()) == {"attack"} and len(counter.names) == 10
    counter.names.clear()
    res = audit(tiny_config(out, n_bootstrap=5, bits=(4, 2, 1.58)), progress=False, report=False)
    assert counter.kinds() == {"quantize": 4, "score": 1, "attack": 4}
    assert {r["config"] for r in res.rows} == {"fp32", "rtn-4b", "rtn-2b", "rtn-1.58b"}


def test_failed_unit_reports_and_keeps_the_rest(finished_run, tmp_path, monkeypatch):
    from ptqx.experiment import AuditError

    out = copy_run(finished_run[0], tmp_path / "run")
    real = UNIT_KINDS["quantize"]

    def broken(unit, inputs):
        if unit.params["bits"] == 1.58:
            raise RuntimeError("quantizer exploded")
        return real(unit, inputs)

    monkeypatch.setitem(UNIT_KINDS, "quantize", broken)
    with pytest.raises(AuditError, match="quantizer exploded") as e:
        audit(tiny_config(out, bits=(4, 2, 1.58), n_bootstrap=5), progress=False)
    assert "rerun the same command" in str(e.value)
    man = json.loads((out / "manifest.json").read_text())
    st = {n: u["status"] for n, u in man["units"].items()}
    assert man["status"] == "failed"
    assert st["train/0"] == "cached" and st["quantize/rtn-1.58b/0"] == "failed"
    assert (
        st["score/rtn-1.58b"] == "skipped"
        and st["attack/rtn-1.58b/adaptive/lira_online"] == "skipped"
    )
    assert st["attack/rtn-2b/adaptive/lira_online"] == "done"


def test_failed_method_still_writes_the_finished_results(finished_run, tmp_path, monkeypatch):
    """Every quantize unit of one method fails: the other configurations' rows are written
    (marked partial, the gaps named, the report built) and the AuditError still raised; a
    rerun without the fault replaces them with the complete results."""
    from ptqx.cli import main
    from ptqx.experiment import AuditError

    out = copy_run(finished_run[0], tmp_path / "run")
    config = tiny_config(out, methods=("rtn", "gptq"))
    real = UNIT_KINDS["quantize"]

    def broken(unit, inputs):
        if unit.params["method"] == "gptq":
            raise RuntimeError("gptq exploded")
        return real(unit, inputs)

    monkeypatch.setitem(UNIT_KINDS, "quantize", broken)
    with pytest.raises(AuditError, match="gptq exploded") as e:
        audit(config, progress=False)
    assert "quantize/gptq-4b/0" in str(e.value) and "rerun the same command" in str(e.value)
    assert "results.json" in str(e.value)
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "failed" and man["units"]["quantize/gptq-2b/3"]["status"] == "failed"

    doc = json.loads((out / "results.json").read_text())
    gaps = [
        f"gptq-{b} / {who} / {a}"
        for b in ("4b", "2b")
        for who in ("fp_reference", "adaptive")
        for a in ("lira_online", "global_threshold")
    ]
    assert doc["complete"] is False and sorted(doc["missing"]) == sorted(gaps)
    assert {c["name"] for c in doc["configs"]} == {"fp32", "rtn-4b", "rtn-2b", "gptq-4b", "gptq-2b"}
    # The finished configurations' rows, whole and as a complete run has them; no gptq row.
    assert [r["metrics"] for r in doc["rows"]] == [r["metrics"] for r in finished_run[1].rows]
    assert not any(r["config"].startswith("gptq") for r in doc["rows"])
    assert "gptq" not in (out / "results.csv").read_text()
    assert not any(k.startswith("gptq") for k in np.load(out / "rocs.npz").files)
    assert not (out / "scores" / "gptq-4b.npy").exists()
    text = (out / "report.md").read_text()
    assert "Missing results (8;" in text and "gptq-2b / adaptive / lira_online" in text
    assert "gptq-2b / adaptive / lira_online" in (out / "report.html").read_text()
    # `ptqx report` accepts the partial folder (its hashes match the files written).
    (out / "report.md").unlink()
    assert (
        main(["report", str(out)]) == 0 and "Missing results (8;" in (out / "report.md").read_text()
    )

    monkeypatch.setitem(UNIT_KINDS, "quantize", real)
    res = audit(config, progress=False)
    doc = json.loads((out / "results.json").read_text())
    assert doc["complete"] is True and doc["missing"] == []
    assert len(doc["rows"]) == len(res.rows) == (1 + 4 * 2) * 2
    assert {r["config"] for r in doc["rows"]} >= {"gptq-4b", "gptq-2b"}
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert "Missing results" not in (out / "report.md").read_text()
    assert (out / "scores" / "gptq-4b.npy").exists()


def test_config_is_frozen(tmp_path):
    c = tiny_config(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_models = 3  # type: ignore[misc]
    assert hash(c) == hash(dataclasses.replace(c))


@pytest.mark.slow
def test_process_pool_gives_identical_results(finished_run, tmp_path):
    """``--jobs 2``: units run in spawned worker processes; same seeds => same numbers."""
    # float32 reductions depend on the thread count, so workers use the in-process count.
    threads = torch.get_num_threads()
    res = audit(
        tiny_config(tmp_path / "pool", jobs=2, threads=threads), progress=False, report=False
    )
    man = json.loads((tmp_path / "pool" / "manifest.json").read_text())
    assert man["executor"] == "processes" and man["status"] == "complete"
    assert [r["metrics"] for r in res.rows] == [r["metrics"] for r in finished_run[1].rows]
    for name in ("fp32", "rtn-2b"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "pool" / "scores" / f"{name}.npy"),
            np.load(finished_run[0] / "scores" / f"{name}.npy"),
        )


def test_python_api_resumes_finished_run(finished_run, tmp_path, monkeypatch):
    import ptqx

    out = copy_run(finished_run[0], tmp_path / "run")
    counter = Counter(monkeypatch)
    res = ptqx.audit(tiny_config(out), progress=False, report=False)
    assert counter.names == [] and res.out == out
    assert res.table(attack="lira_online", attacker="adaptive")[0]["config"] == "rtn-4b"
    with pytest.raises(TypeError):
        ptqx.audit(tiny_config(out), n_models=3)


def test_report_without_matplotlib_still_has_tables(finished_run, tmp_path, monkeypatch):
    import sys

    from ptqx.experiment import write_report

    out = copy_run(finished_run[0], tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    md, html = write_report(out)
    text = html.read_text()
    assert "matplotlib is not installed" in text and "data:image/png" not in text
    assert "<table>" in text and "rtn-2b" in md.read_text()


def _md_row(text, *first_cells):
    head = "| " + " | ".join(first_cells) + " |"
    line = next(line for line in text.splitlines() if line.startswith(head))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_marks_fprs_the_sample_cannot_resolve(finished_run):
    # 4 models x 160 examples: 320 non-member pairs, FPR steps of 1/320. At 1e-4 and 1e-3 no
    # false positive fits; a number there would be the TPR at FPR 0 (it used to be printed).
    text = (finished_run[0] / "report.md").read_text()
    cells = _md_row(text, "fp32", "fp_reference", "lira_online")
    assert cells[5:7] == ["n/r", "n/r"] and cells[8:10] == ["n/r", "n/r"]
    assert cells[7].endswith("†") and "[" in cells[7]  # 1e-2: 3 false positives, flagged
    assert "TPR@0.01 rests on 3 false positives" in text
    assert "The paper's level 0.001 is not resolved here; the summary uses 0.01." in text
    assert "TPR@0.01 (FP ref)" in text and "TPR@0.001 (FP ref)" not in text
    assert "rests on 3 false positives" in (finished_run[0] / "report.html").read_text()


def test_report_differences_to_fp32_are_paired(finished_run):
    from ptqx.attacks.metrics import paired_difference
    from ptqx.experiment.report import _with_ci, summary_table

    doc = json.loads((finished_run[0] / "results.json").read_text())
    head, body = summary_table(doc)

    def row(config, attacker):
        return next(
            r["metrics"]
            for r in doc["rows"]
            if (r["config"], r["attacker"], r["attack"]) == (config, attacker, "lira_online")
        )

    for attacker in ("fp_reference", "adaptive"):
        col = head.index(
            f"Δ TPR@0.01 vs fp32 ({attacker.replace('fp_reference', 'FP ref')}, paired)"
        )
        d = paired_difference(row("rtn-2b", attacker), row("fp32", "fp_reference"), "tpr@0.01_le")
        assert np.isfinite(d["ci"]).all()
        assert next(b for b in body if b[0] == "rtn-2b")[col] == _with_ci((d["diff"], *d["ci"]), 4)
    assert next(b for b in body if b[0] == "fp32")[4] == "(reference)"


def test_report_of_partial_results_names_the_gaps(finished_run, tmp_path):
    from ptqx.experiment import write_report

    out = copy_run(finished_run[0], tmp_path / "run")
    doc = json.loads((out / "results.json").read_text())
    gone = {("rtn-2b", "adaptive", "lira_online"), ("fp32", "fp_reference", "lira_online")}
    doc["rows"] = [r for r in doc["rows"] if (r["config"], r["attacker"], r["attack"]) not in gone]
    (out / "results.json").write_text(json.dumps(doc))
    md, html = write_report(out)
    text = md.read_text()
    # A missing adaptive row is "missing", never "(same as FP ref)" with the other's numbers.
    rtn2 = _md_row(text, "rtn-2b")
    assert "(same as FP ref)" not in rtn2
    assert rtn2[5] == "missing" and rtn2[6] == "missing" and rtn2[4] == "missing"
    fp32 = _md_row(text, "fp32")
    assert fp32[2:4] == ["missing", "missing"] and "±" in fp32[1]  # accuracy from another row
    assert "Missing results (2;" in text
    for name in ("rtn-2b / adaptive / lira_online", "fp32 / fp_reference / lira_online"):
        assert name in text and name in html.read_text()


# -- run folders never mix configurations -------------------------------------------------


def test_run_folder_with_another_setup_is_refused(finished_run, tmp_path, monkeypatch):
    from ptqx.experiment.report import ReportError

    out = copy_run(finished_run[0], tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    doc = json.loads((out / "results.json").read_text())
    assert (
        doc["layout_hash"]
        and doc["config_hash"]
        and set(doc["score_sha256"])
        == {
            "fp32",
            "rtn-4b",
            "rtn-2b",
        }
    )
    counter = Counter(monkeypatch)
    for change, shown in (
        ({"seed": 1}, "seed 0 -> 1"),
        ({"n_models": 6, "universe_size": 96}, "n_models 4 -> 6"),
    ):
        with pytest.raises(
            ConfigError, match=rf"another membership setup \(.*{shown}.*--overwrite"
        ):
            audit(tiny_config(out, **change), progress=False)
    # Refused before anything ran or was written: the old run is intact and reportable.
    assert counter.names == []
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # A folder left mixed (membership files of another setup beside the old results, as
    # earlier versions wrote them) is refused by the report instead of read.
    np.save(out / "keep.npy", ~np.load(out / "keep.npy"))
    with pytest.raises(ReportError, match="another membership setup"):
        from ptqx.experiment import write_report

        write_report(out)
    # Scores that are not the ones results.json was made with are refused too.
    np.save(out / "keep.npy", np.load(finished_run[0] / "keep.npy"))
    np.save(out / "scores" / "rtn-2b.npy", np.zeros((4, 160, 2)))
    with pytest.raises(ReportError, match="rtn-2b.npy is not the score file"):
        write_report(out)


def test_overwrite_replaces_a_run_with_another_setup(finished_run, tmp_path):
    out = copy_run(finished_run[0], tmp_path / "run")
    (out / "scores" / "stale.npy").write_bytes(b"old")
    res = audit(
        tiny_config(out, n_models=4, universe_size=64, calib_size=8),
        progress=False,
        report=False,
        overwrite=True,
    )
    assert np.load(out / "keep.npy").shape == (4, 64)
    assert not (out / "report.html").exists() and not (out / "scores" / "stale.npy").exists()
    doc = json.loads((out / "results.json").read_text())
    assert doc["rows"] == res.rows and doc["config"]["universe_size"] == 64
    # The store keeps the other setup's artifacts.
    assert len(FileStore(out / "store").list()) > len(plan_audit(tiny_config(out)).units)


def test_every_config_problem_fails_before_training(tmp_path, monkeypatch):
    counter = Counter(monkeypatch)
    out = tmp_path / "never"
    cases = [
        (
            {"quant_options": {"rtn": {"itres": 5}}},
            r"quant_options\['rtn'\]: unknown option\(s\) itres",
        ),
        (
            {"quant_options": {"rtn": {"bits": 3, "calib": 1, "layer_bits": {}}}},
            r"quant_options\['rtn'\]: bits, calib, layer_bits cannot be an option",
        ),
        ({"quant_options": {"rtn": {"grid": "median"}}}, r"quant_options\['rtn'\]: at 4 bits"),
        ({"arch": "small_cnnn"}, "arch: unknown 'small_cnnn'"),
        ({"arch": "math:sqrt"}, r"arch: cannot build 'math:sqrt'"),
        ({"device": "cpux"}, "device: 'cpux' is not a torch device"),
        ({"layer_bits": {"nonexistent_layer": 8}}, "'nonexistent_layer' match"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            audit(tiny_config(out, **change), progress=False)
    assert counter.names == [] and not out.exists()
    # A pattern that does match is accepted.
    plan_audit(tiny_config(out, layer_bits={"fc*": 8}))


def test_toml_with_audit_table_rejects_other_top_level_keys(tmp_path):
    body = '[audit]\ndataset = "digits"\nn_models = 4\n'
    cases = {
        "n_models = 4\n" + body: "top-level setting 'n_models' is not read",
        body + "[trian]\nepochs = 1\n": "top-level table 'trian' is not read",
        body + "[train]\nepochs = 1\n": None,
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"c{i}.toml"
        path.write_text(text)
        if message is None:
            assert AuditConfig.from_toml(path).train_overrides() == {"epochs": 1}
        else:
            with pytest.raises(ConfigError, match=message):
                AuditConfig.from_toml(path)
    with pytest.raises(ConfigError, match="is a folder"):
        AuditConfig.from_toml(tmp_path)


def test_store_metadata_that_is_not_a_record_counts_as_missing(tmp_path):
    store = FileStore(tmp_path)
    key = "ab" * 16
    store.put(key, {"x": torch.zeros(2)})
    (tmp_path / key[:2] / f"{key}.json").write_text("[]")
    assert not store.exists(key) and not store.exists(key, verify=True)
    with pytest.raises(ArtifactMissing):
        store.get(key)
    with pytest.raises(ArtifactMissing):
        store.info(key)
