"""``audit(config)``: plan the work units, run what is missing, collect results, write the report.

Run folder (``config.out``)::

    manifest.json        config, resolved train config, seeds, versions, git commit,
                         data fingerprint, per-unit status/time/key
    universe.npy         int64 [M]  positions of the membership universe in the train split
    keep.npy             bool [N, M] membership of example m in model n's training set
    labels.npy           int64 [M]  labels of the universe
    calibration.npy      bool [N, M] the examples model n was calibrated on (every method
                         of model n uses the same ones, so methods compare like for like)
    scores/<config>.npy  float64 [N, M, V] LiRA scores per model configuration
    rocs.npz             pooled ROC curves (thinned) for the plots
    results.json/.csv    one row per configuration x attacker x attack
    report.md/.html      tables and plots
    store/               content-keyed artifacts (models, scores, attack outputs)

A run folder belongs to one membership setup (data, universe, keep, calibration: its
``layout_hash``). Rerunning with settings that keep the setup (more bits, other
attacks, fewer bootstrap resamples) extends the run; a run whose setup differs is
refused before anything is written, unless ``overwrite=True`` (``--overwrite``), which
first removes the old run's top-level outputs (never the store). ``results.json``
records the config hash, the layout hash and the sha256 of every score file it was made
with, so ``ptqx report`` refuses a folder whose files do not belong together.

If units fail, the results of those that finished are written anyway: ``results.json``
then says ``"complete": false`` and lists its ``missing`` rows ("config / attacker /
attack"), the report names them, the manifest says ``"status": "failed"``, and
:class:`AuditError` is still raised. Rerunning resumes and overwrites them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import AuditConfig, ConfigError, derive_seed
from .executors import Executor, make_executor
from .store import FileStore, atomic_save_npy, atomic_write_text
from .units import (
    Unit,
    _load_dataset,
    calibration_positions,
    dataset_fingerprint,
    digest,
    make_unit,
    universe_indices,
)

FP_CONFIG = "fp32"
ATTACKERS = {
    "fp_reference": "reference models in full precision (the paper's attacker)",
    "adaptive": "reference models quantized with the same method and bits",
}


class AuditError(RuntimeError):
    """Some units failed; the message names them and how to resume."""

    def __init__(self, message: str, failed: dict[str, str]):
        super().__init__(message)
        self.failed = failed


def config_name(method: str | None, bits: float | None) -> str:
    return FP_CONFIG if method is None else f"{method}-{bits:g}b"


@dataclasses.dataclass(frozen=True)
class AuditResults:
    """What ``audit`` returns.

    Attributes:
        rows: one dict per configuration x attacker x attack (schema in ``results.json``).
        out: the run folder.
        manifest: the run's manifest (config, seeds, versions, unit status).
    """

    rows: list[dict[str, Any]]
    out: Path
    manifest: dict[str, Any]

    def table(
        self, *, attack: str | None = None, attacker: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            r
            for r in self.rows
            if (attack is None or r["attack"] == attack)
            and (attacker is None or r["attacker"] == attacker)
        ]


@dataclasses.dataclass
class Plan:
    units: list[Unit]
    configs: list[dict[str, Any]]  # name, method, bits, score (unit key)
    attacks: list[dict[str, Any]]  # config, attacker, attack, key
    context: dict[str, Any]  # universe, keep, calibration, seeds, dataset info


# ---------------------------------------------------------------------------------------
# Planning


def _resolve_dataset(config: AuditConfig):
    try:
        ds = _load_dataset(config.dataset, config.data_root)
    except (ValueError, OSError) as e:  # DatasetError is a ValueError
        raise ConfigError(
            f"invalid audit configuration:\n  - dataset {config.dataset!r}: {e}"
        ) from None
    problems = []
    n_train = int(ds.y_train.shape[0])
    if config.universe_size is not None and config.universe_size > n_train:
        problems.append(
            f"universe_size: {config.universe_size} exceeds the {n_train} training examples of {config.dataset!r}"
        )
    if config.n_views > ds.max_views():
        problems.append(
            f"n_views: {config.n_views} exceeds the {ds.max_views()} deterministic views of {config.dataset!r}"
        )
    problems += _model_problems(config, ds)
    if problems:
        raise ConfigError("invalid audit configuration:\n  - " + "\n  - ".join(problems))
    return ds


def _model_problems(config: AuditConfig, ds) -> list[str]:
    """Build the architecture once for the data set and check what the quantizers will
    need of it (layer_bits keys that match layers, no unsupported weight layers), so such
    a problem fails before any model is trained."""
    from ptqx.quant import find_layers, match_layers

    from .registries import build_model

    try:
        model = build_model(
            config.arch,
            num_classes=ds.num_classes,
            in_channels=ds.in_channels,
            image_size=ds.image_size,
        )
    except Exception as e:  # noqa: BLE001  (a user's builder may raise anything)
        return [
            f"arch: cannot build {config.arch!r} for {config.dataset!r} ({type(e).__name__}: {e})"
        ]
    try:
        layers, unsupported = find_layers(model)
    except (TypeError, ValueError) as e:  # tied weights
        return [f"arch: {config.arch!r} cannot be quantized ({e})"]
    p = []
    if config.layer_bits:
        try:
            match_layers(list(layers), config.layer_bits_dict())
        except (KeyError, ValueError) as e:
            p.append(str(e).strip("'\""))
    strict = [m for m in config.methods if config.quant_options_for(m).get("unsupported") != "skip"]
    if unsupported and strict:
        names = ", ".join(f"{n} ({t})" for n, t in unsupported[:5])
        p.append(
            f"arch: {config.arch!r} has weight layers ptqx cannot quantize: {names}; set "
            f'quant_options.<method>.unsupported = "skip" for {", ".join(strict)}'
        )
    return p


def _input_rows_per_sample(model, ds) -> dict[str, int]:
    """Layer name -> rows one input image adds to the layer's Hessian (receptive fields
    of a conv, tokens of a Linear; summed over calls), from one probe forward pass."""
    import torch

    from ptqx.quant import find_layers, layer_input_rows

    layers, _ = find_layers(model)
    rows = dict.fromkeys(layers, 0)

    def hook(name):
        def fn(mod, args):
            rows[name] += int(layer_input_rows(mod, args[0]).shape[1])

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, ds.in_channels, ds.image_size, ds.image_size))
    except Exception:  # noqa: BLE001  (a user's model may reject the probe: no check then)
        return {}
    finally:
        for h in handles:
            h.remove()
    return rows


def _quantizer_problems(config: AuditConfig, ds, n_calib: int) -> list[str]:
    """What would make every quantize unit of a method fail, found before any training.

    The option values (``quant_options``) and the calibration size are checked the way
    the method checks them (``ptqx.quant.api.check_options``). For a method that inverts
    Hessians without damping (OBC's default ``damp=0``), a layer that gets fewer input
    rows than it has inputs (the ResNet-18 ``fc``: 512 inputs, one row per image) has a
    singular Hessian: with ``calib_size=256`` all OBC units failed after the training.
    """
    from ptqx.quant import QUANTIZERS
    from ptqx.quant.api import check_options

    from .registries import build_model

    p: list[str] = []
    rows = None
    for method in config.methods:
        opts = config.quant_options_for(method)
        try:
            check_options(method, bits=config.bits[0], num_samples=n_calib, **opts)
        except (TypeError, ValueError) as e:
            p.append(f"quant_options[{method!r}]: {e}")
            continue
        if "damp" not in QUANTIZERS[method].options:
            continue
        if opts.get("damp", QUANTIZERS[method].options["damp"]) != 0:
            continue
        if rows is None:
            model = build_model(
                config.arch,
                num_classes=ds.num_classes,
                in_channels=ds.in_channels,
                image_size=ds.image_size,
            )
            rows = _input_rows_per_sample(model, ds)
            cols = {n: m.weight[0].numel() for n, m in model.named_modules() if n in rows}
        short = sorted(
            (n for n in rows if 0 < rows[n] * n_calib < cols[n]),
            key=lambda n: -cols[n] / rows[n],
        )
        if short:
            n = short[0]  # the layer that needs the most images sets the calib_size needed
            cap = (
                f"; each model has only {n_calib} members to draw them from"
                if n_calib < config.calib_size
                else ""
            )
            p.append(
                f"quant_options[{method!r}]: damp = 0 needs as many calibration input rows per "
                f"layer as the layer has inputs, but layer {n!r} has {cols[n]} inputs and gets "
                f"{rows[n] * n_calib} rows ({n_calib} calibration images x {rows[n]}), so its "
                f"Hessian is singular{f' (also: {len(short) - 1} more layers)' if len(short) > 1 else ''}; "
                f"set calib_size >= {-(-cols[n] // rows[n])} (--calib-size{cap}) or damp "
                f"(e.g. damp = 0.01 under [quant_options.{method}] in a --config TOML)"
            )
    return p


def plan_audit(config: AuditConfig, ds=None) -> Plan:
    """Every unit of the audit, with content keys, in dependency order."""
    from ptqx.train import balanced_keep

    from .registries import train_config

    ds = ds if ds is not None else _resolve_dataset(config)
    tc = train_config(config.dataset, config.train_overrides())
    tc_dict = json.loads(json.dumps(dataclasses.asdict(tc), default=str))
    seed = config.seed
    seeds: dict[str, Any] = {
        "run": seed,
        "universe": derive_seed(seed, "universe"),
        "keep": derive_seed(seed, "keep"),
    }
    uidx = universe_indices(int(ds.y_train.shape[0]), config.universe_size, seeds["universe"])
    m, n = int(uidx.size), config.n_models
    keep = np.asarray(balanced_keep(n, m, seed=seeds["keep"]), dtype=bool)
    data = {
        "name": config.dataset,
        "fingerprint": dataset_fingerprint(ds),
        "universe_size": config.universe_size,
        "universe_seed": seeds["universe"],
    }
    keep_spec = {"n_models": n, "seed": seeds["keep"]}
    hints = {
        "device": config.device,
        "data_root": config.data_root,
        "threads": config.threads_per_unit,
    }
    seeds["train"] = [derive_seed(seed, "train", i) for i in range(n)]
    seeds["calib"] = [derive_seed(seed, "calib", i) for i in range(n)]
    seeds["calib_augment"] = [derive_seed(seed, "calib_augment", i) for i in range(n)]
    calib = np.zeros((n, m), dtype=bool)
    for i in range(n):
        calib[i, calibration_positions(keep[i], config.calib_size, seeds["calib"][i])] = True

    units: list[Unit] = []
    common = {"data": data, "keep": keep_spec, "arch": config.arch}
    train_keys = []
    for i in range(n):
        u = make_unit(
            "train",
            f"train/{i}",
            {**common, "model_index": i, "train": tc_dict, "seed": seeds["train"][i]},
            hints=hints,
        )
        units.append(u)
        train_keys.append(u.key)

    configs = [{"name": FP_CONFIG, "method": None, "bits": 32.0, "models": train_keys}]
    seeds["quantize"] = {}
    for method in config.methods:
        for bits in config.bits:
            name = config_name(method, bits)
            qkeys = []
            for i in range(n):
                qseed = derive_seed(seed, "quantize", method, bits, i)
                seeds["quantize"].setdefault(name, []).append(qseed)
                params = {
                    **common,
                    "model_index": i,
                    "method": method,
                    "bits": float(bits),
                    "layer_bits": config.layer_bits_dict(),
                    "options": config.quant_options_for(method),
                    "calib": {
                        "size": config.calib_size,
                        "augment": config.calib_augment,
                        "seed": seeds["calib"][i],
                        "augment_seed": seeds["calib_augment"][i],
                    },
                    "seed": qseed,
                }
                u = make_unit(
                    "quantize", f"quantize/{name}/{i}", params, [train_keys[i]], hints=hints
                )
                units.append(u)
                qkeys.append(u.key)
            configs.append({"name": name, "method": method, "bits": float(bits), "models": qkeys})

    for c in configs:
        u = make_unit(
            "score",
            f"score/{c['name']}",
            {**common, "n_views": config.n_views},
            c["models"],
            hints=hints,
        )
        units.append(u)
        c["score"] = u.key

    fp_score = configs[0]["score"]
    attacks = []
    seeds["bootstrap"] = derive_seed(seed, "bootstrap")
    for c in configs:
        attackers = (
            {"fp_reference": fp_score}
            if c["method"] is None
            else {"fp_reference": fp_score, "adaptive": c["score"]}
        )
        for attacker, ref in attackers.items():
            for attack in config.attacks:
                params = {
                    "attack": attack,
                    "mode": config.attack_mode,
                    "target": c["score"],
                    "reference": ref,
                    "keep": keep_spec,
                    "fprs": list(config.fprs),
                    "n_bootstrap": config.n_bootstrap,
                    # The same bootstrap seed everywhere: CIs of different configs resample alike.
                    "seed": seeds["bootstrap"],
                    "calib": {"size": config.calib_size, "seeds": seeds["calib"]},
                }
                deps = list(dict.fromkeys([c["score"], ref]))
                u = make_unit(
                    "attack",
                    f"attack/{c['name']}/{attacker}/{attack}",
                    params,
                    deps,
                    hints={"threads": config.threads_per_unit},
                )
                units.append(u)
                attacks.append(
                    {"config": c["name"], "attacker": attacker, "attack": attack, "key": u.key}
                )

    context = {
        "universe": uidx,
        "keep": keep,
        "calibration": calib,
        "labels": ds.y_train[uidx].numpy().astype(np.int64),
        "seeds": seeds,
        "train_config": tc_dict,
        "dataset": {
            "name": ds.name,
            "source": getattr(ds, "source", ""),
            "fingerprint": data["fingerprint"],
            "n_train": int(ds.y_train.shape[0]),
            "n_test": int(ds.y_test.shape[0]),
            "num_classes": int(ds.num_classes),
            "image_shape": list(ds.x_train.shape[1:]),
            "universe_size": m,
        },
    }
    return Plan(units, configs, attacks, context)


def pending_units(plan: Plan, store: FileStore) -> tuple[list[Unit], list[Unit], list[str]]:
    """Split the plan into (to run, already done); corrupt artifacts are deleted and rerun.

    Every score and attack unit is an output the run needs; a train or quantize unit runs
    only if a unit that needs it must run (so deleting model artifacts after a finished
    run does not force retraining).
    """
    by_key = {u.key: u for u in plan.units}
    corrupt = []
    state: dict[str, bool] = {}
    for u in plan.units:
        if store.exists(u.key, verify=True):
            state[u.key] = True
        else:
            if store.exists(u.key):  # complete-looking but checksum mismatch
                corrupt.append(u.name)
                store.delete(u.key)
            state[u.key] = False
    needed: set[str] = set()
    stack = [u.key for u in plan.units if u.kind in ("score", "attack") and not state[u.key]]
    while stack:
        k = stack.pop()
        if k in needed:
            continue
        needed.add(k)
        stack.extend(d for d in by_key[k].deps if not state[d])
    todo = [u for u in plan.units if u.key in needed]
    done = [u for u in plan.units if state[u.key]]
    return todo, done, corrupt


# ---------------------------------------------------------------------------------------
# Run-folder identity

#: Membership setup files: written before any unit runs, shared by every configuration.
LAYOUT_FILES = ("universe", "keep", "labels", "calibration")
#: Files that belong to one configuration's results (written once the units have run; if
#: some failed, from the rows that finished, with ``"complete": false``).
RESULT_FILES = ("results.json", "results.csv", "rocs.npz", "report.md", "report.html")
#: Settings that only say how units run; they never change a result.
EXECUTION_SETTINGS = ("jobs", "threads", "out", "store", "device")


def config_hash(config: AuditConfig) -> str:
    """sha256 (32 hex) of every setting that can change a result (execution hints excluded)."""
    return digest({k: v for k, v in config.to_dict().items() if k not in EXECUTION_SETTINGS})


def layout_hash(arrays: dict[str, np.ndarray], data_fingerprint: str | None) -> str:
    """sha256 (32 hex) of the membership setup: data fingerprint + universe/keep/labels/calibration."""
    h = hashlib.sha256(str(data_fingerprint).encode())
    for name in LAYOUT_FILES:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def folder_layout_hash(out: Path) -> str | None:
    """The layout hash of the membership files in a run folder (None if any is missing/unreadable)."""
    man = _read_json(out / "manifest.json")
    fp = (man or {}).get("dataset", {}).get("fingerprint") if isinstance(man, dict) else None
    try:
        arrays = {n: np.load(out / f"{n}.npy", allow_pickle=False) for n in LAYOUT_FILES}
    except (OSError, ValueError):
        return None
    return layout_hash(arrays, fp)


def _setup_differences(old: dict[str, Any], new: AuditConfig) -> list[str]:
    keys = ("dataset", "data_root", "n_models", "universe_size", "calib_size", "seed")
    new_d = new.to_dict()
    return [f"{k} {old.get(k)!r} -> {new_d[k]!r}" for k in keys if old.get(k) != new_d[k]]


def check_run_folder(out: Path, config: AuditConfig, new_layout: str, *, overwrite: bool) -> None:
    """Refuse (ConfigError) a run folder holding another membership setup; with
    ``overwrite`` remove that run's top-level outputs instead (the store is kept)."""
    present = [n for n in LAYOUT_FILES if (out / f"{n}.npy").exists()]
    if not present and not (out / "manifest.json").exists():
        return
    man = _read_json(out / "manifest.json")
    recorded = man.get("layout_hash") if isinstance(man, dict) else None
    old = recorded or folder_layout_hash(out)
    if old == new_layout:
        return
    if not overwrite:
        old_cfg = man.get("config", {}) if isinstance(man, dict) else {}
        diff = _setup_differences(old_cfg if isinstance(old_cfg, dict) else {}, config)
        raise ConfigError(
            f"invalid audit configuration:\n  - out: {str(out)!r} holds a run with another "
            f"membership setup ({', '.join(diff) or 'different data, universe or membership'}); "
            "its results would mix with this run's. Choose another --out, or pass --overwrite "
            "(Python: audit(..., overwrite=True)) to replace that run's outputs (the artifact "
            "store is kept)."
        )
    for name in (*RESULT_FILES, "manifest.json", *(f"{n}.npy" for n in LAYOUT_FILES)):
        (out / name).unlink(missing_ok=True)
    if (out / "scores").is_dir():
        for p in (out / "scores").glob("*.npy"):
            p.unlink()


def check_results_match_folder(run: Path, doc: dict[str, Any]) -> None:
    """Raise ValueError unless results.json was made with this folder's membership and score files."""
    want = doc.get("layout_hash")
    if want is None:
        return  # results.json from before these hashes were recorded
    stale = f"rerun `ptqx run` with the configuration you want (--out {run}) to rebuild it"
    if folder_layout_hash(run) != want:
        raise ValueError(
            f"{run / 'results.json'} was made with another membership setup than "
            f"keep.npy/universe.npy/labels.npy/calibration.npy in {run} "
            f"(a later run with another configuration changed them); {stale}"
        )
    for name, want_sha in (doc.get("score_sha256") or {}).items():
        p = run / "scores" / f"{name}.npy"
        if not p.exists() or _file_sha256(p) != want_sha:
            what = "is missing" if not p.exists() else "is not the score file"
            raise ValueError(
                f"{p} {what} that {run / 'results.json'} was made with (config hash "
                f"{doc.get('config_hash')}); {stale}"
            )


# ---------------------------------------------------------------------------------------
# Manifest


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, Any]:
    import torch

    import ptqx

    v: dict[str, Any] = {
        "ptqx": ptqx.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        from ptqx.ops import STATUS

        v["native_kernels"] = STATUS.how
    except Exception:  # noqa: BLE001  (the manifest must not fail because of the info line)
        v["native_kernels"] = "unknown"
    return v


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class _Manifest:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data
        self._last = 0.0

    def save(self, force: bool = True) -> None:
        # Many tiny units finish per second at the end of a run; rewriting a big JSON for
        # each one would dominate, so intermediate saves are throttled.
        now = time.monotonic()
        if force or now - self._last > 1.0:
            self.data["updated"] = _now()
            atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str))
            self._last = now


# ---------------------------------------------------------------------------------------
# Results


def _summary(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def build_rows(
    plan: Plan, store: FileStore, config: AuditConfig, attacks: list[dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Result rows and ROC curves of ``attacks`` (default: every attack of the plan); each
    one's attack unit and its configuration's score unit must be in the store."""
    attacks = plan.attacks if attacks is None else attacks
    wanted = {a["config"] for a in attacks}
    accs = {
        c["name"]: store.get(c["score"])["test_acc"].numpy()
        for c in plan.configs
        if c["name"] in wanted
    }
    info = {c["name"]: c for c in plan.configs}
    rows, rocs = [], {}
    for a in attacks:
        out = store.get(a["key"])
        c = info[a["config"]]
        acc = accs[a["config"]]
        rows.append(
            {
                "config": a["config"],
                "method": c["method"] or "none",
                "bits": c["bits"],
                "attacker": a["attacker"],
                "attack": a["attack"],
                "mode": config.attack_mode,
                "n_models": config.n_models,
                "n_examples": int(plan.context["keep"].shape[1]),
                "test_acc": _summary(acc),
                "test_acc_per_model": [float(x) for x in acc],
                "metrics": out["metrics"],
                "unit_key": a["key"],
            }
        )
        tag = f"{a['config']}|{a['attacker']}|{a['attack']}"
        rocs[f"{tag}|fpr"] = out["roc_fpr"].numpy()
        rocs[f"{tag}|tpr"] = out["roc_tpr"].numpy()
    return rows, rocs


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys (lists of numbers are dropped: CSV cells stay scalar)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list | tuple):
            continue
        else:
            out[key] = v
    return out


def write_results(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    import csv
    import io

    doc = {"schema": "ptqx.audit.results/1", **meta, "rows": rows}
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1, allow_nan=True))
    flat = [flatten({k: v for k, v in r.items() if k != "test_acc_per_model"}) for r in rows]
    cols: list[str] = []
    for f in flat:
        cols.extend(c for c in f if c not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for f in flat:
        w.writerow(
            {
                k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in f.items()
            }
        )
    atomic_write_text(out / "results.csv", buf.getvalue())


# ---------------------------------------------------------------------------------------
# Entry point


def audit(
    config: AuditConfig,
    *,
    progress: bool = True,
    executor: Executor | None = None,
    on_event: Callable[[Unit, str, dict[str, Any]], None] | None = None,
    report: bool = True,
    overwrite: bool = False,
) -> AuditResults:
    """Run (or resume) a privacy audit of PTQ methods and write the run folder.

    Args:
        config: the audit settings (validated when it was created).
        progress: show tqdm progress bars.
        executor: how to run units; default in-process for ``jobs == 1``, else a local
            process pool with ``config.jobs`` workers.
        on_event: called as ``on_event(unit, event, info)`` for "start", "done",
            "failed", "skipped" (for monitoring; may raise to stop the run).
        report: write report.md / report.html at the end.
        overwrite: replace the outputs of a run with another membership setup (data,
            universe, models, seed, calibration size) found in ``config.out``; without it
            such a folder is refused. Artifacts in the store are never removed.

    Returns:
        :class:`AuditResults` (rows, run folder, manifest).

    Raises:
        ConfigError: the data set cannot be loaded or does not fit the config, or
            ``config.out`` holds a run with another membership setup (before any work).
        AuditError: some units failed (the others finished and are kept; rerun to resume).
            The rows that finished are still written (results.json with ``"complete":
            false`` and the ``missing`` rows named, results.csv, rocs.npz, the report);
            rows that need a failed unit are absent. A rerun that finishes replaces them.
    """
    t_start = time.perf_counter()
    out = Path(config.out)
    ds = _resolve_dataset(config)
    plan = plan_audit(config, ds)
    problems = _quantizer_problems(config, ds, int(plan.context["calibration"].sum(1).min()))
    if problems:
        raise ConfigError("invalid audit configuration:\n  - " + "\n  - ".join(problems))
    store = FileStore(config.store_dir)
    executor = executor or make_executor(jobs=config.jobs)
    ctx = plan.context
    layout = layout_hash(ctx, ctx["dataset"]["fingerprint"])
    check_run_folder(out, config, layout, overwrite=overwrite)
    todo, done, corrupt = pending_units(plan, store)

    out.mkdir(parents=True, exist_ok=True)
    (out / "scores").mkdir(exist_ok=True)
    for name in ("universe", "keep", "labels", "calibration"):
        atomic_save_npy(out / f"{name}.npy", ctx[name])

    names = {u.key: u.name for u in plan.units}
    todo_keys = {u.key for u in todo}
    done_keys = {u.key for u in done}
    units_status = {
        u.name: {
            "kind": u.kind,
            "key": u.key,
            "deps": [names[d] for d in u.deps],
            "status": "pending"
            if u.key in todo_keys
            else ("cached" if u.key in done_keys else "not needed"),
        }
        for u in plan.units
    }
    manifest = _Manifest(
        out / "manifest.json",
        {
            "format": "ptqx.audit.manifest/1",
            "status": "running",
            "created": _now(),
            "command": sys.argv,
            "config": config.to_dict(),
            "config_hash": config_hash(config),
            "layout_hash": layout,
            "train_config": ctx["train_config"],
            "dataset": ctx["dataset"],
            "seeds": ctx["seeds"],
            "versions": _versions(),
            "git_commit": _git_commit(),
            "store": str(config.store_dir),
            "executor": getattr(executor, "name", type(executor).__name__),
            "corrupt_artifacts_recomputed": corrupt,
            "units": units_status,
        },
    )
    manifest.save()

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="unit", desc=f"audit {config.dataset}", dynamic_ncols=True)

    def event(u: Unit, what: str, info: dict[str, Any]) -> None:
        st = units_status[u.name]
        st["status"] = {"start": "running"}.get(what, what)
        if what == "start":
            st["started"] = _now()
            if bar is not None:
                bar.set_postfix_str(u.name, refresh=False)
        else:
            st.update(
                {k: v for k, v in info.items() if k in ("seconds", "error", "n_calib", "n_members")}
            )
            if bar is not None:
                bar.update(1)
        manifest.save(force=what != "done")
        if on_event is not None:
            on_event(u, what, info)

    import torch

    threads_before = torch.get_num_threads()
    try:
        failed = executor.run(todo, str(config.store_dir), event) if todo else {}
    except BaseException:
        manifest.data["status"] = "interrupted"
        manifest.save()
        raise
    finally:
        torch.set_num_threads(threads_before)  # the in-process executor set the unit's count
        if bar is not None:
            bar.close()

    # A failed unit costs only the rows that need it: the configurations that finished are
    # written (and reported, the gaps named) all the same, so a long run that loses one
    # method still yields its other results; the AuditError below says what to rerun.
    # (Without a failure every row is there; were one not, store.get below would say so.)
    have_score = {c["name"] for c in plan.configs if not failed or store.exists(c["score"])}
    found = [
        a
        for a in plan.attacks
        if not failed or (a["config"] in have_score and store.exists(a["key"]))
    ]
    found_keys = {a["key"] for a in found}
    missing = [
        f"{a['config']} / {a['attacker']} / {a['attack']}"
        for a in plan.attacks
        if a["key"] not in found_keys
    ]
    rows: list[dict[str, Any]] = []
    report_error = None
    if found:
        score_sha256 = {}
        for c in plan.configs:
            path = out / "scores" / f"{c['name']}.npy"
            if c["name"] not in have_score:
                # An older run's scores under this name are not this run's: the report
                # would plot them as if they were.
                path.unlink(missing_ok=True)
                continue
            atomic_save_npy(path, store.get(c["score"])["scores"].numpy())
            score_sha256[c["name"]] = _file_sha256(path)
        rows, rocs = build_rows(plan, store, config, found)
        _save_npz(out / "rocs.npz", rocs)
        meta = {
            "dataset": ctx["dataset"],
            "config": config.to_dict(),
            "config_hash": config_hash(config),
            "layout_hash": layout,
            "score_sha256": score_sha256,
            "configs": [
                {"name": c["name"], "method": c["method"], "bits": c["bits"]} for c in plan.configs
            ],
            "attackers": ATTACKERS,
            "complete": not missing,
            "missing": missing,
        }
        write_results(out, rows, meta)
    manifest.data["status"] = "failed" if failed else "complete"
    manifest.data["wall_seconds_last_invocation"] = time.perf_counter() - t_start
    manifest.data["units_run_last_invocation"] = len(todo)
    manifest.save()
    if report and found:
        from .report import write_report

        try:
            write_report(out)
        except Exception as e:
            if not failed:
                raise
            report_error = f"{type(e).__name__}: {e}"  # the failed units are the news

    if failed:
        lines = [f"  - {names[k]}: {v.strip().splitlines()[0]}" for k, v in failed.items()]
        if not found:
            partial = "No configuration finished, so no results were written."
        else:
            partial = (
                f"The {len(found)} result rows that finished are in {out / 'results.json'} "
                f"(marked partial; {len(missing)} missing rows named there"
                + (" and in report.md" if report and report_error is None else "")
                + ")."
                + (f" The report could not be built: {report_error}." if report_error else "")
            )
        raise AuditError(
            f"{len(failed)} of {len(plan.units)} units did not finish:\n"
            + "\n".join(lines[:20])
            + ("\n  ..." if len(lines) > 20 else "")
            + f"\n{partial}"
            + f"\nFinished units are kept in {config.store_dir}; rerun the same command to resume "
            f"(details in {out / 'manifest.json'}).",
            failed,
        )
    return AuditResults(rows=rows, out=out, manifest=manifest.data)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

    from .store import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_results(run: str | os.PathLike) -> dict[str, Any]:
    """A finished run's results.json (see :func:`ptqx.experiment.report.read_results`)."""
    from .report import read_results

    return read_results(Path(run))
