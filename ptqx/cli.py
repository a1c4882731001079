"""Command line: argument parsing only; the work lives in the library."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "ptqx: audit post-training quantization (RTN, GPTQ, OBC, AdaRound, BRECQ) with "
    "membership-inference attacks. `ptqx run` trains models, quantizes them and attacks "
    "every configuration; `ptqx report` rebuilds a run's report; `ptqx info` shows which "
    "kernels are native."
)


def _cmd_info(args: argparse.Namespace) -> int:
    from ptqx.ops.info import describe

    print(describe())
    return 0


def _csv(kind):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if kind is str:
            return tuple(items)
        try:
            return tuple(kind(t) for t in items)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers separated by commas, got {text!r}"
            ) from None

    return parse


def _bool(text: str) -> bool:
    # Unlike argparse's type=bool, "false" is False.
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# CLI flag -> AuditConfig field.
_FLAGS = {
    "dataset": "dataset",
    "data_root": "data_root",
    "arch": "arch",
    "models": "n_models",
    "universe": "universe_size",
    "methods": "methods",
    "bits": "bits",
    "attacks": "attacks",
    "attack_mode": "attack_mode",
    "calib_size": "calib_size",
    "calib_augment": "calib_augment",
    "views": "n_views",
    "fprs": "fprs",
    "bootstrap": "n_bootstrap",
    "seed": "seed",
    "jobs": "jobs",
    "out": "out",
    "store": "store",
    "device": "device",
    "threads": "threads",
}


def _cmd_run(args: argparse.Namespace) -> int:
    from ptqx.experiment import AuditConfig, AuditError, ConfigError, audit
    from ptqx.experiment.config import DEFAULT_METHODS, dataset_defaults

    settings = {
        field: getattr(args, flag)
        for flag, field in _FLAGS.items()
        if getattr(args, flag) is not None
    }
    if args.epochs is not None:
        settings["train"] = {"epochs": args.epochs}
    try:
        if args.config:
            config = AuditConfig.from_toml(args.config, **settings)
        else:
            base = dataset_defaults(settings.get("dataset", "digits"))
            if "train" in settings:
                settings["train"] = {**base.get("train", {}), **settings["train"]}
            merged = {**base, **settings}
            methods = merged.get("methods", DEFAULT_METHODS)
            # Built-in per-method defaults only for the methods this run uses.
            merged["quant_options"] = {
                m: o for m, o in merged.get("quant_options", {}).items() if m in methods
            }
            config = AuditConfig(**merged)
    except ConfigError as e:
        print(f"ptqx run: {e}", file=sys.stderr)
        return 2
    executor = None
    if args.backend is not None or args.address is not None:
        executor = _make_executor(args, config)
        if executor is None:
            return 2
    try:
        results = audit(
            config,
            progress=not args.no_progress,
            report=not args.no_report,
            executor=executor,
            overwrite=args.overwrite,
        )
    except ConfigError as e:
        print(f"ptqx run: {e}", file=sys.stderr)
        return 2
    except AuditError as e:
        print(f"ptqx run: {e}", file=sys.stderr)
        print(f"ptqx run: to retry the failed units: {_rerun_command()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C is the ordinary way to stop a long run: say how to resume, not a traceback.
        print(
            f"\nptqx run: interrupted; finished units are kept in {config.store_dir}. "
            f"To resume: {_rerun_command()}",
            file=sys.stderr,
        )
        return 130
    print(
        f"ptqx run: {len(results.rows)} result rows in {results.out}/results.json; report: {results.out}/report.html"
    )
    return 0


def _make_executor(args: argparse.Namespace, config):
    """The executor --backend/--address ask for, or None after printing why it cannot run."""
    from ptqx.experiment import make_executor

    backend = args.backend or ("ray" if args.address is not None else None)
    if args.address is not None and backend != "ray":
        print("ptqx run: --address needs --backend ray", file=sys.stderr)
        return None
    options = {}
    if backend == "ray":
        options = {"address": args.address}
        if args.gpus_per_unit is not None:
            options["gpus_per_unit"] = args.gpus_per_unit
        # On Ray a unit's threads are the CPUs its task reserves (default 1).
        if getattr(config, "threads", None):
            options["cpus_per_unit"] = config.threads
    try:
        return make_executor(jobs=config.jobs, backend=backend, **options)
    except (ImportError, ValueError) as e:  # ImportError: the engine is not installed
        print(f"ptqx run: {e}", file=sys.stderr)
        return None


def _rerun_command() -> str:
    import shlex

    return shlex.join(["ptqx", *sys.argv[1:]]) if sys.argv[1:] else "the same ptqx run command"


def _cmd_report(args: argparse.Namespace) -> int:
    from ptqx.experiment import write_report
    from ptqx.experiment.report import ReportError

    try:
        md, html = write_report(args.run)
    except (FileNotFoundError, ReportError) as e:
        print(f"ptqx report: {e}", file=sys.stderr)
        return 2
    print(f"ptqx report: wrote {md} and {html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptqx", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="which kernel serves each op, and versions")
    info.set_defaults(func=_cmd_info)

    run = sub.add_parser(
        "run",
        help="run (or resume) a privacy audit of PTQ methods",
        description="Train N models on balanced halves of the data, quantize each with every "
        "method and bit-width, attack every configuration with membership inference "
        "(each model the target in turn), and write a run folder with results and a report. "
        "Rerunning the same command resumes; flags override the --config file.",
    )
    run.add_argument(
        "--config",
        help="TOML file with AuditConfig settings ([audit], [train], [quant_options.<method>])",
    )
    run.add_argument(
        "--dataset", help="digits (default), fashion-mnist, cifar10, cifar100, tinyimagenet, npz"
    )
    run.add_argument("--data-root", dest="data_root", help="data folder (or .npz file)")
    run.add_argument("--arch", help="small_cnn, resnet18 or package.module:callable")
    run.add_argument("--models", type=int, help="number of models N >= 4 (default 16)")
    run.add_argument(
        "--universe", type=int, help="membership universe size M (default: whole train split)"
    )
    run.add_argument(
        "--epochs", type=int, help="training epochs (overrides the data set's default)"
    )
    run.add_argument(
        "--methods", type=_csv(str), help="comma-separated, e.g. rtn,gptq,obc,adaround,brecq"
    )
    run.add_argument("--bits", type=_csv(float), help="comma-separated, e.g. 4,2,1.58")
    run.add_argument(
        "--attacks", type=_csv(str), help="comma-separated attack names (default: all)"
    )
    run.add_argument("--attack-mode", dest="attack_mode", choices=("ptqx", "faithful"))
    run.add_argument(
        "--calib-size", dest="calib_size", type=int, help="calibration images per model"
    )
    run.add_argument("--calib-augment", dest="calib_augment", type=_bool, help="true/false")
    run.add_argument("--views", type=int, help="query views per example (default 2)")
    run.add_argument(
        "--fprs", type=_csv(float), help="comma-separated FPRs (default 1e-4,1e-3,1e-2)"
    )
    run.add_argument("--bootstrap", type=int, help="bootstrap resamples for CIs (default 200)")
    run.add_argument("--seed", type=int, help="run seed (every other seed derives from it)")
    run.add_argument("--jobs", type=int, help="worker processes (default 1: in-process)")
    run.add_argument(
        "--backend",
        choices=("inprocess", "processes", "ray"),
        help="how units run: inprocess (default for --jobs 1), processes (local pool, default "
        "for --jobs N > 1) or ray (one Ray task per unit; pip install 'ptqx[ray]')",
    )
    run.add_argument(
        "--address",
        help="Ray cluster to use with --backend ray: auto (the one `ray start` began here) or "
        "HOST:PORT (default: $RAY_ADDRESS if set, else a local Ray instance for this run)",
    )
    run.add_argument(
        "--gpus-per-unit",
        dest="gpus_per_unit",
        type=float,
        help="GPU share each unit reserves with --backend ray --device cuda (default 0.25: "
        "four small models per GPU)",
    )
    run.add_argument("--out", help="run folder (default runs/<dataset>)")
    run.add_argument("--store", help="artifact store folder (default <out>/store; may be shared)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="if --out holds a run with another membership setup (data, universe, models, "
        "seed, calibration size), replace its outputs instead of refusing (the store is kept)",
    )
    run.add_argument("--device", help="cpu (default) or cuda")
    run.add_argument(
        "--threads", type=int, help="torch threads per unit/worker (default: cores / jobs)"
    )
    run.add_argument(
        "--no-progress", dest="no_progress", action="store_true", help="no progress bars"
    )
    run.add_argument(
        "--no-report", dest="no_report", action="store_true", help="skip report.md/html"
    )
    run.set_defaults(func=_cmd_run)

    rep = sub.add_parser("report", help="rebuild report.md and report.html from a run folder")
    rep.add_argument("run", help="run folder (contains results.json)")
    rep.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
