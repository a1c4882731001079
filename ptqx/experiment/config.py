"""The audit's configuration: one frozen dataclass, validated on creation, saved with every run.

A config is built from keyword arguments (Python API), from a TOML file (``[audit]``
table or top level, plus an optional ``[train]`` table of ``TrainConfig`` overrides and
``[quant_options.<method>]`` tables), or from CLI flags layered over a TOML file. Every
problem found is reported together in one :class:`ConfigError`, before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ptqx.attacks import MIN_MODELS

SUPPORTED_BITS = (8.0, 4.0, 3.0, 2.0, 1.58)
DEFAULT_METHODS = ("rtn", "gptq", "obc", "adaround", "brecq")
DEFAULT_ATTACKS = (
    "lira_online",
    "lira_online_fixed_var",
    "lira_offline",
    "lira_offline_fixed_var",
    "global_threshold",
    "rmia",
    "loss",
)
ATTACK_MODES = ("ptqx", "faithful")
#: Tables a TOML file may hold beside [audit].
TOP_LEVEL_TABLES = ("train", "quant_options", "layer_bits")


class ConfigError(ValueError):
    """A bad audit configuration; the message lists every problem found."""

    @property
    def problems(self) -> list[str]:
        """The listed problems (the message's ``"  - "`` items), or the whole message."""
        _, listed, items = str(self).partition(":\n  - ")
        return items.split("\n  - ") if listed else [str(self)]


def derive_seed(run_seed: int, *parts: Any) -> int:
    """A 31-bit seed derived from the run seed and a unit's identity (stable across runs).

    sha256 of a canonical JSON encoding, so the same (run seed, parts) always gives the
    same seed on every machine and Python version (unlike ``hash()``).
    """
    blob = json.dumps([int(run_seed), *parts], sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "little") & 0x7FFFFFFF


def _freeze(value: Any) -> Any:
    """Mappings -> sorted tuples of pairs, lists -> tuples, so a frozen config is hashable."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze` for pair tuples (used for JSON/TOML round trips)."""
    if (
        isinstance(value, tuple)
        and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value)
        and value
    ):
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _bits_label(bits: float) -> str:
    return f"{bits:g}"


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Everything an audit depends on.

    Attributes:
        dataset: a name in ``ptqx.data.DATASETS`` ("digits", "fashion-mnist", ...).
        data_root: folder (or .npz file) of the data set; None uses the data set's default.
        arch: a name for ``ptqx.models.build_model`` ("small_cnn", "resnet18",
            "package.module:callable").
        n_models: number of models N >= 4 (each trains on a balanced random half of the
            universe; every model is the target in turn).
        universe_size: size M of the membership universe, a seeded random subset of the
            training split; None uses the whole training split.
        train: ``TrainConfig`` field overrides on top of ``TrainConfig.for_dataset(dataset)``.
        methods: PTQ methods (names in the ``ptqx.quantize`` registry).
        bits: weight bit-widths (each in 8, 4, 3, 2, 1.58).
        layer_bits: per-layer bit overrides (module name -> bits), e.g. {"fc": 8}.
        quant_options: per-method keyword options passed to ``ptqx.quantize``.
        calib_size: calibration images per model, drawn from that model's own members
            (capped at its member count; the used examples are recorded).
        calib_augment: apply train-time augmentation to calibration images (protocol).
        n_views: deterministic query views per example shared by all models.
        attacks: names in ``ptqx.attacks.ATTACKS``.
        attack_mode: "ptqx" (corrected formulas) or "faithful" (original code's formulas).
        fprs: false-positive rates at which TPR is reported.
        n_bootstrap: bootstrap resamples for the 95% confidence intervals.
        seed: the run seed; every other seed is derived from it and recorded.
        jobs: worker processes (1 = in-process). Changes results only through the default
            thread count (see ``threads``).
        out: run folder (manifest, scores, results, report).
        store: artifact store folder; None means ``<out>/store``. Several runs may share one.
        device: torch device for training, quantization and scoring.
        threads: torch threads per unit (per worker with ``jobs > 1``); None = cores / jobs.
            Small models run best on one thread per process. Not part of any unit key, yet
            torch splits float reductions by thread count: models trained at another count
            differ in the last bits (scores by ~1e-7 on a tiny run, enough to move
            tied ROC points), so set it explicitly to reproduce a run bit for bit.
    """

    dataset: str = "digits"
    data_root: str | None = None
    arch: str = "small_cnn"
    n_models: int = 16
    universe_size: int | None = None
    train: Any = ()
    methods: tuple[str, ...] = DEFAULT_METHODS
    bits: tuple[float, ...] = (4.0, 2.0, 1.58)
    layer_bits: Any = ()
    quant_options: Any = ()
    calib_size: int = 256
    calib_augment: bool = True
    n_views: int = 2
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    attack_mode: str = "ptqx"
    fprs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    n_bootstrap: int = 200
    seed: int = 0
    jobs: int = 1
    out: str = "runs/audit"
    store: str | None = None
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        # Normalise containers so the config is hashable and its JSON form canonical.
        if isinstance(self.methods, str):
            set_(self, "methods", tuple(m.strip() for m in self.methods.split(",") if m.strip()))
        if isinstance(self.attacks, str):
            set_(self, "attacks", tuple(a.strip() for a in self.attacks.split(",") if a.strip()))
        if isinstance(self.bits, str):
            set_(self, "bits", tuple(b.strip() for b in self.bits.split(",") if b.strip()))
        if isinstance(self.fprs, int | float):
            set_(self, "fprs", (self.fprs,))
        if isinstance(self.bits, int | float):
            set_(self, "bits", (self.bits,))
        set_(self, "methods", tuple(self.methods))
        set_(self, "attacks", tuple(self.attacks))
        set_(
            self,
            "train",
            _freeze(
                dict(self.train) if isinstance(self.train, Mapping) else thaw(self.train) or {}
            ),
        )
        set_(
            self,
            "layer_bits",
            _freeze(
                dict(self.layer_bits)
                if isinstance(self.layer_bits, Mapping)
                else thaw(self.layer_bits) or {}
            ),
        )
        set_(
            self,
            "quant_options",
            _freeze(
                dict(self.quant_options)
                if isinstance(self.quant_options, Mapping)
                else thaw(self.quant_options) or {}
            ),
        )
        if self.data_root is not None:
            set_(self, "data_root", str(self.data_root))
        set_(self, "out", str(self.out))
        if self.store is not None:
            set_(self, "store", str(self.store))
        problems = self._static_problems()
        # Names against the registries too, so one run of a bad config lists everything it
        # can: a check that trips over a value the static checks already reported is moot.
        try:
            problems += self._registry_problems()
        except Exception:  # noqa: BLE001
            if not problems:
                raise
        if problems:
            raise ConfigError("invalid audit configuration:\n  - " + "\n  - ".join(problems))

    # -- validation ---------------------------------------------------------------------
    def _static_problems(self) -> list[str]:
        p: list[str] = []

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(self.dataset, str) or not self.dataset:
            p.append(f"dataset: expected a non-empty name, got {self.dataset!r}")
        if self.data_root is not None and not Path(self.data_root).exists():
            p.append(f"data_root: {self.data_root!r} does not exist")
        if not isinstance(self.arch, str) or not self.arch:
            p.append(f"arch: expected a non-empty name, got {self.arch!r}")
        if not is_int(self.n_models) or self.n_models < MIN_MODELS:
            p.append(
                f"n_models: need an integer >= {MIN_MODELS} (every model is attacked with the "
                f"others as IN and OUT reference models), got {self.n_models!r}"
            )
        if self.universe_size is not None and (
            not is_int(self.universe_size) or self.universe_size < 2
        ):
            p.append(f"universe_size: need an integer >= 2 or None, got {self.universe_size!r}")
        bits: list[float] = []
        for b in self.bits:
            try:
                fb = float(b)
            except (TypeError, ValueError):
                p.append(f"bits: {b!r} is not a number")
                continue
            if not any(math.isclose(fb, s) for s in SUPPORTED_BITS):
                p.append(
                    f"bits: {b!r} out of range; supported: {', '.join(map(_bits_label, SUPPORTED_BITS))}"
                )
            bits.append(fb)
        if not self.bits:
            p.append("bits: need at least one bit-width")
        if len(set(bits)) != len(bits):
            p.append(f"bits: duplicates in {list(self.bits)}")
        object.__setattr__(self, "bits", tuple(bits))
        for name, b in thaw(self.layer_bits).items() if self.layer_bits else ():
            if not isinstance(b, int | float) or not any(
                math.isclose(float(b), s) for s in SUPPORTED_BITS
            ):
                p.append(
                    f"layer_bits[{name!r}]: {b!r} out of range; supported: {', '.join(map(_bits_label, SUPPORTED_BITS))}"
                )
        if not self.methods:
            p.append("methods: need at least one PTQ method")
        if len(set(self.methods)) != len(self.methods):
            p.append(f"methods: duplicates in {list(self.methods)}")
        qo = thaw(self.quant_options) if self.quant_options else {}
        for m, opts in qo.items():
            if m not in self.methods:
                p.append(f"quant_options: method {m!r} is not in methods {list(self.methods)}")
            elif not isinstance(opts, dict):
                p.append(f"quant_options[{m!r}]: expected a table of options, got {opts!r}")
        if not is_int(self.calib_size) or self.calib_size < 1:
            p.append(f"calib_size: need an integer >= 1, got {self.calib_size!r}")
        if not isinstance(self.calib_augment, bool):
            p.append(f"calib_augment: expected true/false, got {self.calib_augment!r}")
        if not is_int(self.n_views) or self.n_views < 1:
            p.append(f"n_views: need an integer >= 1, got {self.n_views!r}")
        if not self.attacks:
            p.append("attacks: need at least one attack")
        if self.attack_mode not in ATTACK_MODES:
            p.append(f"attack_mode: expected one of {list(ATTACK_MODES)}, got {self.attack_mode!r}")
        if not self.fprs or not all(isinstance(f, int | float) and 0 < f < 1 for f in self.fprs):
            p.append(f"fprs: need false-positive rates in (0, 1), got {list(self.fprs)}")
        else:
            object.__setattr__(self, "fprs", tuple(float(f) for f in self.fprs))
        if not is_int(self.n_bootstrap) or self.n_bootstrap < 0:
            p.append(f"n_bootstrap: need an integer >= 0, got {self.n_bootstrap!r}")
        if not is_int(self.seed) or self.seed < 0:
            p.append(f"seed: need an integer >= 0, got {self.seed!r}")
        if self.threads is not None and (not is_int(self.threads) or self.threads < 1):
            p.append(f"threads: need an integer >= 1 or None, got {self.threads!r}")
        if not is_int(self.jobs) or self.jobs < 1:
            p.append(f"jobs: need an integer >= 1, got {self.jobs!r}")
        if not isinstance(self.device, str):
            p.append(f"device: expected a string like 'cpu' or 'cuda', got {self.device!r}")
        else:
            import torch

            try:
                dev = torch.device(self.device)
            except (RuntimeError, ValueError) as e:
                p.append(f"device: {self.device!r} is not a torch device ({e})")
            else:
                if dev.type == "cuda" and not torch.cuda.is_available():
                    p.append(f"device: {self.device!r} requested but no CUDA device is available")
        if not isinstance(self.train, tuple):
            p.append(f"train: expected a table of TrainConfig overrides, got {self.train!r}")
        return p

    def _registry_problems(self) -> list[str]:
        """Names checked against what is installed (the registries), still before any work."""
        p: list[str] = []
        from . import registries

        try:
            datasets = registries.dataset_names()
            if self.dataset not in datasets:
                p.append(
                    f"dataset: unknown {self.dataset!r}; available: {', '.join(sorted(datasets))}"
                )
        except ImportError as e:
            p.append(f"dataset: ptqx.data is not available ({e})")
        try:
            methods = registries.method_names()
            missing = [m for m in self.methods if m not in methods]
            if missing:
                p.append(
                    f"methods: unknown or not installed {missing}; available: {', '.join(sorted(methods)) or '(none)'}"
                )
        except ImportError as e:
            p.append(f"methods: ptqx.quant is not available ({e})")
        else:
            p.extend(self._quant_option_problems())
        try:
            models = registries.model_names()
            if ":" not in self.arch and self.arch not in models:
                p.append(
                    f"arch: unknown {self.arch!r}; available: {', '.join(sorted(models))} "
                    "or 'package.module:callable'"
                )
        except ImportError as e:
            p.append(f"arch: ptqx.models is not available ({e})")
        try:
            attacks = registries.attack_names()
            missing = [a for a in self.attacks if a not in attacks]
            if missing:
                p.append(f"attacks: unknown {missing}; available: {', '.join(sorted(attacks))}")
        except ImportError as e:
            p.append(f"attacks: ptqx.attacks is not available ({e})")
        try:
            registries.train_config(self.dataset, thaw(self.train) if self.train else {})
        except ImportError as e:
            p.append(f"train: ptqx.train is not available ({e})")
        except (TypeError, ValueError) as e:
            p.append(f"train: {e}")
        return p

    def _quant_option_problems(self) -> list[str]:
        """Option names (and the grid options every method shares) checked the way
        ``ptqx.quantize`` checks them, so a typo fails here, not after training."""
        from . import registries

        p: list[str] = []
        for method in self.methods:
            opts = self.quant_options_for(method)
            if not opts:
                continue
            reserved, valid = registries.quantizer_options(method)
            clash = sorted(set(opts) & set(reserved))
            if clash:
                p.append(
                    f"quant_options[{method!r}]: {', '.join(clash)} cannot be an option (set "
                    "by the audit itself: use bits, layer_bits, calib_size)"
                )
            unknown = sorted(set(opts) - set(valid) - set(reserved))
            if unknown:
                p.append(
                    f"quant_options[{method!r}]: unknown option(s) {', '.join(unknown)}; "
                    f"valid: {', '.join(sorted(valid))}"
                )
            bits = sorted({*self.bits, *self.layer_bits_dict().values()}, reverse=True)
            problem = registries.grid_problem(opts, bits)
            if problem:
                p.append(f"quant_options[{method!r}]: {problem}")
        return p

    # -- conversions ----------------------------------------------------------------------
    @property
    def threads_per_unit(self) -> int:
        import os

        return self.threads or max(1, (os.cpu_count() or 1) // self.jobs)

    @property
    def store_dir(self) -> Path:
        return Path(self.store) if self.store is not None else Path(self.out) / "store"

    def train_overrides(self) -> dict[str, Any]:
        return thaw(self.train) if self.train else {}

    def layer_bits_dict(self) -> dict[str, float]:
        return (
            {k: float(v) for k, v in (thaw(self.layer_bits) or {}).items()}
            if self.layer_bits
            else {}
        )

    def quant_options_for(self, method: str) -> dict[str, Any]:
        return dict((thaw(self.quant_options) or {}).get(method, {})) if self.quant_options else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict; ``AuditConfig.from_dict(c.to_dict()) == c``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = self.train_overrides()
        d["layer_bits"] = self.layer_bits_dict()
        d["quant_options"] = thaw(self.quant_options) if self.quant_options else {}
        for k in ("methods", "bits", "attacks", "fprs"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], problems: Sequence[str] = ()) -> AuditConfig:
        """The config of ``data``; every problem at once in one :class:`ConfigError`, with
        ``problems`` found earlier (e.g. in the TOML file's layout) listed first."""
        names = {f.name for f in dataclasses.fields(cls)}
        problems = list(problems)
        unknown = sorted(set(data) - names)
        if unknown:
            problems.append(f"unknown setting(s) {unknown}; known: {', '.join(sorted(names))}")
        try:
            config = cls(**{k: v for k, v in data.items() if k in names})
        except ConfigError as e:
            problems += e.problems
        if problems:
            raise ConfigError("invalid audit configuration:\n  - " + "\n  - ".join(problems))
        return config

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> AuditConfig:
        """Read a TOML file (settings at top level or under ``[audit]``); ``overrides`` win."""
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(
                f"invalid audit configuration:\n  - config file {str(path)!r} does not exist"
            ) from None
        except IsADirectoryError:
            raise ConfigError(
                f"invalid audit configuration:\n  - config file {str(path)!r} is a folder, "
                "not a TOML file"
            ) from None
        except OSError as e:
            raise ConfigError(
                f"invalid audit configuration:\n  - config file {str(path)!r}: cannot read "
                f"({e.strerror or e})"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(
                f"invalid audit configuration:\n  - {path}: not valid TOML ({e})"
            ) from None
        if "audit" in raw:
            if not isinstance(raw["audit"], dict):
                raise ConfigError(
                    f"invalid audit configuration:\n  - {path}: 'audit' must be a table "
                    f"([audit]), got {raw['audit']!r}"
                )
            data = dict(raw["audit"])
            # Beside [audit] only these tables may sit at the top level; anything else
            # (a misspelled [trian], a setting written above [audit]) would be ignored.
            problems = []
            for k, v in raw.items():
                if k == "audit":
                    continue
                if k not in TOP_LEVEL_TABLES:
                    where = "table" if isinstance(v, dict) else "setting"
                    problems.append(
                        f"{path}: top-level {where} {k!r} is not read when the file has an "
                        f"[audit] table (settings go inside [audit]; other tables: "
                        f"{', '.join(f'[{t}]' for t in TOP_LEVEL_TABLES)})"
                    )
                elif k in data:
                    problems.append(f"{path}: {k!r} is given both in [audit] and as [{k}]")
                else:
                    data[k] = v
        else:
            data, problems = dict(raw), []
        for k, v in overrides.items():
            if v is None:
                continue
            # Table settings merge (``--epochs`` keeps the file's other [train] entries).
            if (
                k in ("train", "quant_options", "layer_bits")
                and isinstance(data.get(k), dict)
                and isinstance(v, Mapping)
            ):
                data[k] = {**data[k], **v}
            else:
                data[k] = v
        return cls.from_dict(data, problems)


def config_labels(bits: float) -> str:
    return _bits_label(bits)


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """Settings ``ptqx run`` uses for a data set when no --config is given (flags override).

    Every data set writes to ``runs/<dataset>``. For the small grayscale sets the models
    are tiny, so each unit runs on one torch thread (measured on the shared 2-core
    machine: small convs ran 10-25x slower with 2 threads under load), and AdaRound/BRECQ
    run fewer Adam steps than their "ptqx" preset (2000) so the default audit stays within
    minutes: 100 on digits (8x8 images, ~1.5 s per model), 200 on Fashion-MNIST, whose
    default universe is a 10000-example subset of the training split. Same algorithm,
    same schedule shape (warm-up, beta annealing), fewer steps.

    CIFAR-10/100 and Tiny ImageNet take 1024 calibration images per model, the protocol's
    AdaRound size, for every method (uniform settings): OBC inverts its Hessians undamped,
    and the ResNet-18 ``fc`` (512 inputs, one row per image) is singular below 512 images.
    """
    d: dict[str, Any] = {"dataset": dataset, "out": f"runs/{dataset}"}
    if dataset == "digits":
        d.update(threads=1, quant_options={"adaround": {"iters": 100}, "brecq": {"iters": 100}})
    elif dataset == "fashion-mnist":
        d.update(
            threads=1,
            universe_size=10000,
            quant_options={"adaround": {"iters": 200}, "brecq": {"iters": 200}},
        )
    elif dataset in ("cifar10", "cifar100", "tinyimagenet"):
        d.update(calib_size=1024)
    return d
