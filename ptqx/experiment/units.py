"""Work units: plain, picklable descriptions of one piece of the audit, and their runners.

A :class:`Unit` names its kind, its parameters (JSON values only), the keys of the units
it depends on, and execution hints that do not change its result (device, batch size,
data location, threads). Its key is the sha256 of (kind, kind version, parameters,
upstream keys), so it changes exactly when something the unit depends on changes.

:func:`run_unit` is the one entry point every executor calls (in-process, a process
pool, or a distributed engine's task): it loads the unit's inputs from the store,
computes, writes the output atomically under the unit's key and returns a small summary.
Nothing but keys and paths crosses process boundaries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from .store import ArtifactCorrupt, FileStore

# Bump a kind's version when its computation changes meaning: its keys (and everything
# downstream) change, so old artifacts are never reused for the new semantics.
# attack 2: reference sets leave out one model of the other side with the target, and
# the pooled sd is unbiased (attack 1's sets leaked membership through their sizes).
# attack 3: metrics add tpr@t_le, resolution, per-target spread and bootstrap replicates.
UNIT_VERSIONS = {"train": 1, "quantize": 1, "score": 1, "attack": 3}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(obj: Any) -> str:
    """sha256 hex (32 chars) of a JSON-ready object in canonical form."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:32]


def content_key(kind: str, params: dict[str, Any], deps: Sequence[str]) -> str:
    """sha256 hex (32 chars) of everything a unit's result depends on."""
    return digest(
        {"kind": kind, "version": UNIT_VERSIONS[kind], "params": params, "deps": list(deps)}
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Unit:
    """One schedulable piece of work.

    Attributes:
        kind: "train" | "quantize" | "score" | "attack" (a key of :data:`UNIT_KINDS`).
        name: human-readable label, e.g. "quantize/obc-2b/3".
        key: content key (see :func:`content_key`), also the artifact's key in the store.
        params: JSON values the result depends on (hashed into ``key``).
        deps: keys of the units whose artifacts this unit reads (hashed into ``key``).
        hints: execution settings that do not change the result (not hashed): device,
            batch size, data root, torch threads.
        resources: what a scheduler should reserve, e.g. {"num_cpus": 1, "num_gpus": 0}.
    """

    kind: str
    name: str
    key: str
    params: dict[str, Any]
    deps: tuple[str, ...]
    hints: dict[str, Any] = dataclasses.field(default_factory=dict)
    resources: dict[str, float] = dataclasses.field(default_factory=dict)


def make_unit(
    kind: str,
    name: str,
    params: dict[str, Any],
    deps: Sequence[str] = (),
    *,
    hints=None,
    resources=None,
) -> Unit:
    if kind not in UNIT_KINDS:
        raise ValueError(f"kind: unknown unit kind {kind!r}; known: {sorted(UNIT_KINDS)}")
    deps = tuple(deps)
    return Unit(
        kind,
        name,
        content_key(kind, params, deps),
        params,
        deps,
        dict(hints or {}),
        dict(resources or {"num_cpus": 1}),
    )


# ----------------------------------------------------------------------------------------
# Shared, deterministic context (recomputed in each worker process, cached there).


def universe_indices(n_train: int, size: int | None, seed: int) -> np.ndarray:
    """Positions of the membership universe in the training split (sorted int64 [M])."""
    if size is None or size >= n_train:
        return np.arange(n_train, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_train, size=size, replace=False)).astype(np.int64)


def calibration_positions(keep_row: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Universe positions of one model's calibration images: a seeded sample of its members."""
    members = np.flatnonzero(keep_row)
    rng = np.random.default_rng(seed)
    take = min(int(size), members.size)
    return np.sort(rng.choice(members, size=take, replace=False)).astype(np.int64)


@lru_cache(maxsize=4)
def _load_dataset(name: str, root: str | None):
    from ptqx.data import load_dataset

    return load_dataset(name, root=root)


def dataset_fingerprint(ds) -> str:
    """sha256 of the data set's arrays: keys follow the data's content, not its path."""
    h = hashlib.sha256()
    for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        t = t.contiguous()
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(memoryview(t.numpy()).cast("B"))  # tobytes() would copy the whole set
    return h.hexdigest()[:32]


def context_dataset(unit: Unit):
    """(Dataset, universe positions int64 [M]) for a unit's ``params["data"]``."""
    spec = unit.params["data"]
    ds = _load_dataset(spec["name"], unit.hints.get("data_root"))
    idx = universe_indices(int(ds.y_train.shape[0]), spec["universe_size"], spec["universe_seed"])
    return ds, idx


@lru_cache(maxsize=4)
def _keep(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    from ptqx.train import balanced_keep

    keep = np.asarray(balanced_keep(n_models, n_examples, seed=seed), dtype=bool)
    keep.setflags(write=False)
    return keep


def context_keep(unit: Unit, n_examples: int) -> np.ndarray:
    spec = unit.params["keep"]
    return _keep(int(spec["n_models"]), int(n_examples), int(spec["seed"]))


def _build(unit: Unit, ds) -> torch.nn.Module:
    from .registries import build_model

    return build_model(
        unit.params["arch"],
        num_classes=ds.num_classes,
        in_channels=ds.in_channels,
        image_size=ds.image_size,
    )


def _match_structure(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Make a freshly built model match a quantizer's output state dict.

    Quantizers may fold BatchNorm into the preceding conv (the BN becomes Identity and
    the conv gains a bias); rebuilding that structure from the state dict's keys keeps
    artifacts free of pickled modules.
    """
    keys = set(state)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and not any(
            k.startswith(name + ".") for k in keys
        ):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, torch.nn.Identity())
        elif (
            isinstance(mod, torch.nn.Conv2d | torch.nn.Linear)
            and mod.bias is None
            and f"{name}.bias" in keys
        ):
            mod.bias = torch.nn.Parameter(torch.zeros_like(state[f"{name}.bias"]))


def _load_model(unit: Unit, ds, payload: dict[str, Any], device: str) -> torch.nn.Module:
    model = _build(unit, ds)
    _match_structure(model, payload["state_dict"])
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------
# Runners. Each takes the unit and its inputs {dep key: payload} and returns (payload, meta).


def _run_train(unit: Unit, inputs: dict[str, Any]):
    from ptqx.train import TrainConfig, train_model

    ds, uidx = context_dataset(unit)
    keep = context_keep(unit, uidx.size)
    i = unit.params["model_index"]
    members = uidx[keep[i]]
    cfg = TrainConfig(**unit.params["train"])
    device = unit.hints.get("device", "cpu")
    # The initial weights come from the global RNG: seed it from the unit's seed so a model
    # is the same whichever process trains it and whatever ran before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(unit.params["seed"])
        model = _build(unit, ds)
    model = train_model(model, ds, members, cfg, seed=unit.params["seed"], device=device)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"state_dict": state}, {"n_members": int(members.size)}


def _run_quantize(unit: Unit, inputs: dict[str, Any]):
    import ptqx.quant  # noqa: F401  (registers every available method)
    from ptqx.quant import quantize

    ds, uidx = context_dataset(unit)
    keep = context_keep(unit, uidx.size)
    p = unit.params
    i = p["model_index"]
    device = unit.hints.get("device", "cpu")
    model = _load_model(unit, ds, inputs[unit.deps[0]], device)
    calib = p["calib"]
    pos = calibration_positions(keep[i], calib["size"], calib["seed"])
    x = ds.x_train[torch.from_numpy(uidx[pos])]
    if calib["augment"]:
        x = ds.augment(x, torch.Generator().manual_seed(calib["augment_seed"]))
    x = ds.normalize(x).to(device)
    with torch.random.fork_rng(devices=[]):
        # Methods with their own randomness (batch order) draw from a seeded global RNG.
        torch.manual_seed(p["seed"])
        q = quantize(
            model,
            method=p["method"],
            bits=p["bits"],
            calib=x,
            layer_bits=p["layer_bits"] or None,
            **p["options"],
        )
    state = {k: v.detach().cpu() for k, v in q.state_dict().items()}
    return {"state_dict": state, "calib_positions": torch.from_numpy(pos)}, {
        "n_calib": int(pos.size)
    }


def _score_batch(n_models: int, image_elems: int) -> int:
    # Keep one batch's first activation map across all models to ~64 MB of float32.
    return int(max(16, min(2048, (1 << 24) // max(1, n_models * image_elems * 4))))


def _run_score(unit: Unit, inputs: dict[str, Any]):
    from ptqx.models import to_inference_form
    from ptqx.ops import logit_scores

    from .registries import batched_logits

    ds, uidx = context_dataset(unit)
    device = unit.hints.get("device", "cpu")
    # BN folded + channels_last: the same function up to float rounding, 1.3-1.55x faster.
    models = [to_inference_form(_load_model(unit, ds, inputs[k], device)) for k in unit.deps]
    cl = torch.channels_last
    n = len(models)
    n_views = unit.params["n_views"]
    xs = ds.x_train[torch.from_numpy(uidx)]
    ys = ds.y_train[torch.from_numpy(uidx)]
    m = int(ys.shape[0])
    bs = int(unit.hints.get("batch_size") or _score_batch(n, int(xs[0].numel())))
    scores = torch.empty(n, m, n_views, dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, m, bs):
            views = ds.views(xs[s : s + bs], n_views)  # uint8 [V, B, C, H, W], shared by all models
            yb = ys[s : s + bs].to(device)
            for v in range(n_views):
                xv = ds.normalize(views[v]).to(device).contiguous(memory_format=cl)
                logits = batched_logits(models, xv)  # [N, B, K]
                scores[:, s : s + bs, v] = logit_scores(logits, yb.expand(n, -1).contiguous()).cpu()
        correct = torch.zeros(n, dtype=torch.float64)
        for s in range(0, int(ds.y_test.shape[0]), bs):
            xt = ds.normalize(ds.x_test[s : s + bs]).to(device).contiguous(memory_format=cl)
            logits = batched_logits(models, xt)
            correct += (logits.argmax(-1).cpu() == ds.y_test[s : s + bs]).sum(1).to(torch.float64)
    acc = correct / max(1, int(ds.y_test.shape[0]))
    return {"scores": scores, "test_acc": acc}, {"n_models": n, "n_examples": m}


def _run_attack(unit: Unit, inputs: dict[str, Any]):
    from ptqx.attacks import attack_statistic, evaluate, roc_curve

    p = unit.params
    target = inputs[p["target"]]["scores"].numpy()
    ref = inputs[p["reference"]]["scores"].numpy()
    n, m, _ = target.shape
    keep = _keep(int(p["keep"]["n_models"]), m, int(p["keep"]["seed"])).copy()
    stat = np.asarray(
        attack_statistic(p["attack"], target, ref, keep, mode=p["mode"]), dtype=np.float64
    )
    calib = np.zeros_like(keep)
    for i, seed in enumerate(p["calib"]["seeds"]):
        calib[i, calibration_positions(keep[i], p["calib"]["size"], seed)] = True
    subsets = {"calibration_members": calib, "other_members": keep & ~calib, "non_members": ~keep}
    metrics = evaluate(
        stat,
        keep,
        fprs=tuple(p["fprs"]),
        n_bootstrap=p["n_bootstrap"],
        seed=p["seed"],
        subsets=subsets,
    )
    fpr, tpr = _roc(roc_curve, stat, keep)
    return {"metrics": _jsonable(metrics), "roc_fpr": fpr, "roc_tpr": tpr}, {}


def _roc(roc_curve: Callable, stat: np.ndarray, keep: np.ndarray, points: int = 400):
    """Pooled ROC thinned to ~``points`` log-spaced vertices (plots need hundreds, not 10^5)."""
    fpr, tpr, _ = roc_curve(stat, keep, max_points=points)
    return np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray | torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/Inf; null means "not defined"
    return obj


UNIT_KINDS: dict[str, Callable[[Unit, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]] = {
    "train": _run_train,
    "quantize": _run_quantize,
    "score": _run_score,
    "attack": _run_attack,
}


def run_unit(unit: Unit, store_root: str) -> dict[str, Any]:
    """Execute one unit: load inputs, compute, write its artifact. Returns a summary.

    Safe to call in any process (it only needs the unit and the store's location) and
    idempotent (a second call rewrites identical content under the same key).

    Raises:
        ArtifactCorrupt / ArtifactMissing: an input is unusable (the caller recomputes it).
    """
    threads = unit.hints.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    store = FileStore(store_root)
    t0 = time.perf_counter()
    inputs = {k: store.get(k) for k in dict.fromkeys(unit.deps)}
    payload, meta = UNIT_KINDS[unit.kind](unit, inputs)
    seconds = time.perf_counter() - t0
    store.put(
        unit.key,
        payload,
        meta={
            "kind": unit.kind,
            "name": unit.name,
            "params": unit.params,
            "deps": list(unit.deps),
            "seconds": seconds,
            **meta,
        },
    )
    return {"key": unit.key, "seconds": seconds, **meta}


__all__ = ["ArtifactCorrupt", "UNIT_KINDS", "Unit", "content_key", "make_unit", "run_unit"]
