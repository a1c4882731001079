"""report.md and a self-contained report.html, rebuilt from a run folder alone.

Reads results.json, rocs.npz, keep.npy, scores/*.npy and manifest.json; never the store,
so ``ptqx report RUN`` works on a copied run folder. Figures are matplotlib PNGs embedded
as base64; without matplotlib the report says so and still has every table.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ptqx.attacks.metrics import false_positives_allowed, paired_difference

from .store import atomic_write_text

PRIMARY_ATTACKS = ("lira_online", "lira_offline", "global_threshold")


class ReportError(ValueError):
    """A run folder whose results cannot be reported (damaged, empty or mixed files)."""


# -- metric access (results.json rows) -----------------------------------------------------


def metric(row: dict[str, Any], name: str) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of a metric in a results row (NaN where absent).

    ``name`` is a key of ``ptqx.attacks.evaluate``'s output ("auc", "balanced_accuracy",
    "f1", "tpr@0.001_le" (largest TPR with FPR <= 0.001, the reported reading),
    "tpr@0.001" (last ROC vertex below the FPR, the original code's reading),
    "tpr@0.001_interp" (interpolated)) or "subset:<name>@<fpr>" (the fraction of that
    subset flagged at the FPR threshold). A TPR at an FPR the sample cannot resolve is NaN.
    """
    m = row["metrics"]
    if name.startswith("subset:"):
        sub, fpr = name[len("subset:") :].split("@")
        entry, key = m["subsets"][sub], f"rate@{float(fpr):g}"
        value, ci = entry[key], entry.get("ci", {}).get(key)
    else:
        if "@" in name:
            head, _, tail = name.partition("@")
            level, sep, suffix = tail.partition("_")
            name = f"{head}@{float(level):g}{sep}{suffix}"
        value, ci = m[name], m.get("ci", {}).get(name)
    nan = math.nan
    value = nan if value is None else float(value)
    if not ci:
        return value, nan, nan
    lo, hi = ci
    return value, nan if lo is None else float(lo), nan if hi is None else float(hi)


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if v != 0 and abs(v) < 10 ** -(digits - 1):
        return f"{v:.1e}"
    return f"{v:.{digits}f}"


def _with_ci(t: tuple[float, float, float], digits: int = 3) -> str:
    v, lo, hi = t
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{_fmt(v, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"
    return _fmt(v, digits)


def _safe(row, name):
    try:
        return metric(row, name)
    except (KeyError, TypeError, ValueError, AttributeError):
        return (math.nan, math.nan, math.nan)


# A TPR resting on fewer false positives than this is marked: its percentile CI covers
# far less than 95% at one false positive (module docstring of ptqx.attacks.metrics).
FEW_FP = 10
# Below this many targets a pooled interval can be too narrow (metrics module docstring).
FEW_TARGETS = 32


def _n_fp(row: dict[str, Any], fpr: float) -> int | None:
    """False positives a TPR at ``fpr`` rests on (pooled non-member pairs x fpr), if known."""
    n = row.get("metrics", {}).get("n_nonmembers")
    return None if n is None else false_positives_allowed(fpr, n)


def _resolved(row: dict[str, Any], fpr: float) -> bool:
    n_fp = _n_fp(row, fpr)
    return n_fp is None or n_fp >= 1


def _tpr_cell(row: dict[str, Any] | None, fpr: float, reading: str = "_le") -> str:
    """TPR at ``fpr`` with its CI; "n/r" where no false positive fits under the level."""
    if row is None:
        return "missing"
    if not _resolved(row, fpr):
        return "n/r"
    n_fp = _n_fp(row, fpr)
    cell = _with_ci(_safe(row, f"tpr@{fpr}{reading}"), 4)
    return cell + (" †" if n_fp is not None and n_fp < FEW_FP and cell != "-" else "")


def _paired(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> str:
    """``a - b`` with a paired bootstrap CI (both rows resampled alike), or why not."""
    if a is None or b is None:
        return "missing"
    if key.startswith("tpr@") and not _resolved(a, float(key[4:].partition("_")[0])):
        return "n/r"
    try:
        d = paired_difference(a["metrics"], b["metrics"], key)
    except (ValueError, KeyError, TypeError):
        return "not paired"
    return _with_ci((d["diff"], *d["ci"]), 4)


def _per_target_cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None:
        return "missing"
    pt = (row.get("metrics", {}).get("per_target") or {}).get(key)
    if not pt or pt.get("mean") is None or not math.isfinite(pt["mean"]):
        # NaN: some target's own non-members (about n_nonmembers / N) cannot resolve the level.
        return "n/r" if pt and key.startswith("tpr@") else "-"
    return f"{_fmt(pt['mean'], 4)} ± {_fmt(pt['std'], 4)}"


# -- tables ----------------------------------------------------------------------------------


def _primary_attack(rows: list[dict[str, Any]]) -> str:
    present = {r["attack"] for r in rows}
    for a in PRIMARY_ATTACKS:
        if a in present:
            return a
    return rows[0]["attack"]


def _main_fpr(doc: dict[str, Any]) -> float:
    """0.001 (the paper's level) if configured and resolved, else the smallest resolved level."""
    fprs = doc.get("config", {}).get("fprs", [1e-3])
    ok = sorted(f for f in fprs if all(_resolved(r, f) for r in doc["rows"]))
    if any(math.isclose(f, 1e-3) for f in ok):
        return 1e-3
    return ok[0] if ok else fprs[0]


def _find(rows, config, attack, attacker):
    return next(
        (
            r
            for r in rows
            if r["config"] == config and r["attack"] == attack and r["attacker"] == attacker
        ),
        None,
    )


def missing_rows(doc: dict[str, Any]) -> list[str]:
    """Names ("config / attacker / attack") of the results the config asks for but lacks."""
    rows = doc["rows"]
    attacks = doc.get("config", {}).get("attacks") or list(dict.fromkeys(r["attack"] for r in rows))
    present = {(r["config"], r["attacker"], r["attack"]) for r in rows}
    out = []
    for c in doc["configs"]:
        attackers = ("fp_reference",) if c.get("method") is None else ("fp_reference", "adaptive")
        for attacker in attackers:
            out += [
                f"{c['name']} / {attacker} / {a}"
                for a in attacks
                if (c["name"], attacker, a) not in present
            ]
    return out


def summary_table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per configuration: accuracy and the primary attack's numbers for both attackers."""
    rows = doc["rows"]
    attack, fpr = _primary_attack(rows), _main_fpr(doc)
    key = f"tpr@{fpr:g}_le"
    head = [
        "config",
        "test acc % (mean ± std)",
        "AUC (FP ref)",
        f"TPR@{fpr:g} (FP ref)",
        f"Δ TPR@{fpr:g} vs fp32 (FP ref, paired)",
        f"TPR@{fpr:g} (adaptive)",
        f"Δ TPR@{fpr:g} vs fp32 (adaptive, paired)",
        f"TPR@{fpr:g} per target (FP ref, mean ± std)",
        f"TPR@{fpr:g} calib. members",
        f"TPR@{fpr:g} other members",
    ]
    base = _find(rows, "fp32", attack, "fp_reference")
    body = []
    for c in doc["configs"]:
        fp = _find(rows, c["name"], attack, "fp_reference")
        is_fp = c.get("method") is None
        ad = fp if is_fp else _find(rows, c["name"], attack, "adaptive")
        # Accuracy is the configuration's, whichever of its rows survived.
        some = next((r for r in (fp, ad, *rows) if r and r["config"] == c["name"]), None)
        if some is None:
            acc_cell = "missing"
        else:
            acc = some["test_acc"]
            acc_cell = f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}"
        body.append(
            [
                c["name"],
                acc_cell,
                _with_ci(_safe(fp, "auc")) if fp else "missing",
                _tpr_cell(fp, fpr),
                "(reference)" if is_fp else _paired(fp, base, key),
                "(same as FP ref)" if is_fp else _tpr_cell(ad, fpr),
                "(reference)" if is_fp else _paired(ad, base, key),
                _per_target_cell(fp, key),
                _subset_cell(fp, "calibration_members", fpr),
                _subset_cell(fp, "other_members", fpr),
            ]
        )
    return head, body


def _subset_cell(row: dict[str, Any] | None, name: str, fpr: float) -> str:
    if row is None:
        return "missing"
    if not _resolved(row, fpr):
        return "n/r"
    return _with_ci(_safe(row, f"subset:{name}@{fpr}"), 4)


def full_table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    fprs = doc.get("config", {}).get("fprs", [1e-3])
    head = [
        "config",
        "attacker",
        "attack",
        "AUC",
        "bal. acc",
        *[f"TPR@{f:g}" for f in fprs],
        *[f"TPR@{f:g} (Quant-MIA: last vertex < FPR)" for f in fprs],
        "CI replicates dropped",
    ]
    body = []
    for r in doc["rows"]:
        dropped = (r.get("metrics", {}).get("ci_dropped") or {}).values()
        body.append(
            [
                r["config"],
                r["attacker"],
                r["attack"],
                _with_ci(_safe(r, "auc")),
                _with_ci(_safe(r, "balanced_accuracy")),
                *[_tpr_cell(r, f) for f in fprs],
                *[_fmt(_safe(r, f"tpr@{f}")[0], 4) if _resolved(r, f) else "n/r" for f in fprs],
                str(max(dropped, default=0)),
            ]
        )
    return head, body


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _html_table(head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


# -- figures ---------------------------------------------------------------------------------


def _figures(run: Path, doc: dict[str, Any]) -> dict[str, bytes]:
    """name -> PNG bytes; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    attack, fpr_main = _primary_attack(rows), _main_fpr(doc)
    configs = doc["configs"]
    methods = [m for m in dict.fromkeys(c["method"] for c in configs) if m is not None]
    bits = sorted({c["bits"] for c in configs if c["method"] is not None}, reverse=True)
    colors = {b: plt.cm.viridis(i / max(1, len(bits) - 1) * 0.85) for i, b in enumerate(bits)}
    figs: dict[str, bytes] = {}
    rocs = np.load(run / "rocs.npz") if (run / "rocs.npz").exists() else None

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    def curve(cfg, attacker):
        tag = f"{cfg}|{attacker}|{attack}"
        if rocs is None or f"{tag}|fpr" not in rocs:
            return None
        return rocs[f"{tag}|fpr"], rocs[f"{tag}|tpr"]

    if rocs is not None and methods:
        n = len(methods)
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
        # The smallest FPR above 0: the plot shows nothing the sample cannot resolve.
        n_neg = rows[0].get("metrics", {}).get("n_nonmembers") or (
            rows[0]["n_models"] * rows[0]["n_examples"] // 2
        )
        floor = 1.0 / max(1, n_neg)
        for ax, method in zip(axes[0], methods, strict=True):
            fp = curve("fp32", "fp_reference")
            if fp is not None:
                ax.plot(
                    np.maximum(fp[0], floor),
                    np.maximum(fp[1], floor),
                    color="black",
                    lw=1.5,
                    label="fp32",
                )
            for b in bits:
                name = f"{method}-{b:g}b"
                for attacker, ls in (("fp_reference", "-"), ("adaptive", "--")):
                    c = curve(name, attacker)
                    if c is not None:
                        label = f"{b:g} bit" + (" (adaptive)" if attacker == "adaptive" else "")
                        ax.plot(
                            np.maximum(c[0], floor),
                            np.maximum(c[1], floor),
                            ls,
                            color=colors[b],
                            lw=1.2,
                            label=label,
                        )
            ax.plot([floor, 1], [floor, 1], ":", color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(floor, 1)
            ax.set_ylim(floor, 1)
            ax.set_title(f"{method}: {attack}")
            ax.set_xlabel("false positive rate")
        axes[0][0].set_ylabel("true positive rate")
        axes[0][-1].legend(fontsize=7, loc="lower right")
        figs["roc"] = png(fig)

    # Privacy-utility trade-off.
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True, squeeze=False)
    markers = "osD^vP*X"
    for ax, attacker in zip(axes[0], ("fp_reference", "adaptive"), strict=True):
        for r in rows:
            if r["attack"] != attack:
                continue
            is_fp = r["config"] == "fp32"
            if not is_fp and r["attacker"] != attacker:
                continue
            if not _resolved(r, fpr_main):
                continue
            v, lo, hi = _safe(r, f"tpr@{fpr_main}_le")
            acc = r["test_acc"]
            yerr = None
            if math.isfinite(lo) and math.isfinite(hi):
                yerr = [[max(0.0, v - lo)], [max(0.0, hi - v)]]
            if is_fp:
                kw = {"color": "black", "marker": "*", "ms": 11, "label": "fp32"}
            else:
                mi = methods.index(r["method"]) if r["method"] in methods else 0
                kw = {
                    "color": colors.get(r["bits"], "C0"),
                    "marker": markers[mi % len(markers)],
                    "ms": 6,
                    "label": f"{r['method']} {r['bits']:g}b",
                }
            ax.errorbar(
                100 * acc["mean"],
                v,
                xerr=100 * acc["std"],
                yerr=yerr,
                capsize=2,
                lw=0.8,
                ls="none",
                **kw,
            )
        ax.set_title(
            "FP reference models (paper)"
            if attacker == "fp_reference"
            else "adaptive (quantized references)"
        )
        ax.set_xlabel("test accuracy (%)")
        ax.set_yscale("symlog", linthresh=1e-3)
    axes[0][0].set_ylabel(f"TPR @ {fpr_main:g} FPR ({attack})")
    handles, labels = axes[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    if uniq:
        axes[0][1].legend(uniq.values(), uniq.keys(), fontsize=7, loc="best", ncol=2)
        figs["tradeoff"] = png(fig)
    else:
        plt.close(fig)  # no point at a resolved FPR: the tables say "n/r"

    # Score histograms (view 0, pooled over models), members vs non-members.
    keep = np.load(run / "keep.npy")
    have = [c for c in configs if (run / "scores" / f"{c['name']}.npy").exists()]
    if have:
        ncols = min(4, len(have))
        nrows = math.ceil(len(have) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False)
        for ax, c in zip(axes.flat, have, strict=False):
            s = np.load(run / "scores" / f"{c['name']}.npy")[:, :, 0]
            finite = np.isfinite(s)
            lo, hi = np.percentile(s[finite], [0.5, 99.5]) if finite.any() else (0, 1)
            bins = np.linspace(lo, hi, 60)
            ax.hist(
                np.clip(s[keep & finite], lo, hi),
                bins=bins,
                alpha=0.55,
                density=True,
                label="members",
            )
            ax.hist(
                np.clip(s[~keep & finite], lo, hi),
                bins=bins,
                alpha=0.55,
                density=True,
                label="non-members",
            )
            ax.set_title(c["name"], fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(have) :]:
            ax.axis("off")
        axes[0][0].legend(fontsize=7)
        fig.supxlabel("logit-scaled confidence (view 0)")
        figs["histograms"] = png(fig)
    return figs


CAPTIONS = {
    "roc": "ROC curves (log-log) of the primary attack, one panel per method, bit-widths overlaid; "
    "solid: full-precision reference models, dashed: adaptive attacker with quantized references.",
    "tradeoff": "Privacy-utility trade-off: TPR at the main FPR (95% bootstrap CI) vs test accuracy "
    "(mean ± std over models).",
    "histograms": "Score distributions of members and non-members (view 0, all models pooled).",
}


# -- writer ------------------------------------------------------------------------------------


def _notes(doc: dict[str, Any], attack: str) -> list[str]:
    """How to read the tables, with this run's numbers; the gaps of a partial run, named."""
    rows, cfg = doc["rows"], doc.get("config", {})
    fprs, fpr = cfg.get("fprs", [1e-3]), _main_fpr(doc)
    m0 = rows[0].get("metrics", {})
    n_neg, n_bs = m0.get("n_nonmembers"), int(m0.get("n_bootstrap") or 0)
    out = []
    if n_neg:
        n_fp = {f: false_positives_allowed(f, n_neg) for f in fprs}
        unres = [f for f in fprs if n_fp[f] < 1]
        few = [f for f in fprs if 1 <= n_fp[f] < FEW_FP]
        text = (
            f"TPR@FPR: the largest TPR of a threshold whose FPR is at most that level, on the "
            f"ROC pooled over all {m0.get('n_targets')} targets x {m0.get('n_examples')} "
            f"examples (no interpolation). With {n_neg} non-member pairs the FPR resolution "
            f"is {1 / n_neg:.1e}; "
            + ", ".join(
                f"TPR@{f:g} rests on {n_fp[f]} false positives" for f in fprs if f not in unres
            )
            + "."
        )
        if unres:
            text += (
                f" 'n/r' (not resolved) at {', '.join(f'{f:g}' for f in unres)}: no false "
                f"positive fits below that level, so any number would be the TPR at FPR 0."
            )
        if few:
            text += (
                f" †: fewer than {FEW_FP} false positives (at {', '.join(f'{f:g}' for f in few)}); "
                f"the value and its interval are unreliable."
            )
        if any(math.isclose(f, 1e-3) for f in fprs) and not math.isclose(fpr, 1e-3):
            text += f" The paper's level 0.001 is not resolved here; the summary uses {fpr:g}."
        out.append(text)
    if n_bs > 0:
        k = sum(1 for c in doc["configs"] if c.get("method") is not None)
        out.append(
            f"[low, high]: 95% percentile bootstrap intervals over {n_bs} resamples of targets "
            f"and examples together; this two-way bootstrap is usually conservative (nominal "
            f"95% intervals covered 97-100% on synthetic data with a known truth). 'Δ vs fp32': "
            f"the configuration's TPR minus fp32's, with the interval of that difference over "
            f"the same resamples for both (paired). An interval that excludes 0 marks a "
            f"difference at the 95% level for that single comparison; the summary makes "
            f"{2 * k} such comparisons without a multiplicity correction."
        )
        n_t = m0.get("n_targets") or 0
        if n_t < FEW_TARGETS:
            out.append(
                f"Only {n_t} targets: when the targets' statistics are shifted against each "
                f"other (compare the per-target spread), the pooled ROC is biased and its "
                f"intervals cover less than 95% (simulated with a target offset as large as the "
                f"noise: 52-56% with 4 targets, 85-87% with 16, 96-100% with 64)."
            )
    else:
        out.append("No bootstrap (n_bootstrap = 0): no intervals and no paired differences.")
    out.append(
        f"test acc: mean ± sample std over the {cfg.get('n_models')} models of each "
        f"configuration. 'per target': mean ± sample std over the targets of each target's "
        f"own TPR (the paper's number is a mean over targets): how much one trained model "
        f"varies, which the pooled interval does not show ('n/r' where one target's own "
        f"non-members cannot resolve the level). 'calib. members' / 'other "
        f"members': the fraction of each target's calibration images / other training images "
        f"flagged at the threshold of the last ROC vertex with FPR below the level."
    )
    dropped = []
    for r in rows:
        d = max((r.get("metrics", {}).get("ci_dropped") or {}).values(), default=0)
        if d:
            dropped.append(f"{r['config']} / {r['attacker']} / {r['attack']} ({d} of {n_bs})")
    if dropped:
        out.append(
            "Bootstrap resamples without a member or a non-member, left out of the intervals: "
            + "; ".join(dropped)
            + "."
        )
    old = [r for r in rows if "per_target" not in r.get("metrics", {})]
    if old:
        out.append(
            f"{len(old)} result rows were made by an older ptqx that did not record the "
            f"TPR@FPR<=level reading, per-target spread or bootstrap replicates: their cells "
            f"show '-'."
        )
    gaps = missing_rows(doc)
    if gaps:
        out.append(
            f"Missing results ({len(gaps)}; 'missing' in the tables): " + "; ".join(gaps) + "."
        )
    return out


def write_report(run: str | Path) -> tuple[Path, Path]:
    """(Re)build report.md and report.html in a run folder from its files."""
    run = Path(run)
    doc = read_results(run)
    try:
        manifest = json.loads((run / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    if not isinstance(manifest, dict) or (
        manifest.get("config_hash") is not None
        and doc.get("config_hash") is not None
        and manifest["config_hash"] != doc["config_hash"]
    ):
        # The last invocation ran another configuration and did not finish: its versions
        # and timings do not describe these results.
        manifest = {}
    try:
        return _write_report(run, doc, manifest)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise ReportError(
            f"{run / 'results.json'}: malformed results ({type(e).__name__}: {e}); rerun "
            f"`ptqx run` (--out {run}) to rebuild it"
        ) from None


def read_results(run: Path) -> dict[str, Any]:
    """results.json of a finished run, checked to belong with the folder's other files.

    Raises:
        FileNotFoundError: no results.json.
        ReportError: not valid JSON, no result rows, or made with another membership
            setup / other score files than the folder now holds.
    """
    res = run / "results.json"
    if not res.exists():
        raise FileNotFoundError(f"{res}: no results.json (is {run} a finished ptqx run folder?)")
    try:
        doc = json.loads(res.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(
            f"{res}: not readable JSON ({e}); the file is damaged or truncated, rerun "
            f"`ptqx run` (--out {run}) to rebuild it"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ReportError(f"{res}: not a ptqx results file (no 'rows' list)")
    if not doc["rows"]:
        raise ReportError(f"{res}: has no result rows; nothing to report")
    if not isinstance(doc.get("configs"), list):
        raise ReportError(f"{res}: not a ptqx results file (no 'configs' list)")
    from .audit import check_results_match_folder

    try:
        check_results_match_folder(run, doc)
    except ValueError as e:
        raise ReportError(str(e)) from None
    return doc


def _write_report(run: Path, doc: dict[str, Any], manifest: dict[str, Any]) -> tuple[Path, Path]:
    cfg = doc.get("config", {})
    ds = doc.get("dataset", {})
    attack = _primary_attack(doc["rows"])
    facts = [
        (
            "dataset",
            f"{ds.get('name')} (universe M = {ds.get('universe_size')}, test {ds.get('n_test')})",
        ),
        (
            "models",
            f"N = {cfg.get('n_models')} ({cfg.get('arch')}), every model the target in turn (leave-one-out, equal-size IN/OUT reference sets)",
        ),
        (
            "methods x bits",
            f"{', '.join(cfg.get('methods', []))} x {', '.join(f'{b:g}' for b in cfg.get('bits', []))}",
        ),
        ("attack mode", str(cfg.get("attack_mode"))),
        ("primary attack", attack),
        (
            "calibration",
            f"{cfg.get('calib_size')} member images per model (augment: {cfg.get('calib_augment')})",
        ),
        ("seed", str(cfg.get("seed"))),
        (
            "bootstrap",
            f"{cfg.get('n_bootstrap')} resamples of targets and examples together (95% "
            f"percentile CI, seed {doc['rows'][0].get('metrics', {}).get('seed')})"
            if cfg.get("n_bootstrap")
            else "none (no intervals)",
        ),
        ("git commit", str(manifest.get("git_commit"))),
        (
            "ptqx / torch",
            f"{manifest.get('versions', {}).get('ptqx')} / {manifest.get('versions', {}).get('torch')}",
        ),
    ]
    if manifest.get("wall_seconds_last_invocation") is not None:
        facts.append(
            ("wall time (last invocation)", f"{manifest['wall_seconds_last_invocation']:.1f} s")
        )
    s_head, s_body = summary_table(doc)
    f_head, f_body = full_table(doc)
    try:
        figs = _figures(run, doc)
        fig_note = None
    except ImportError as e:
        figs, fig_note = {}, f"matplotlib is not installed ({e}); the report has tables only."

    md = [f"# ptqx privacy audit: {ds.get('name')}", ""]
    md += [f"- **{k}**: {v}" for k, v in facts]
    md += ["", f"## Summary ({attack})", "", _md_table(s_head, s_body), ""]
    if fig_note:
        md += [f"_{fig_note}_", ""]
    else:
        md += ["Figures are in report.html.", ""]
    notes = _notes(doc, attack)
    md += [*(line for n in notes for line in (n, "")), ""]
    md += ["## All attacks", "", _md_table(f_head, f_body), ""]
    md_path = run / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>ptqx audit: {html.escape(str(ds.get('name')))}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%}"
        "figcaption{font-size:13px;color:#444}</style></head><body>",
        f"<h1>ptqx privacy audit: {html.escape(str(ds.get('name')))}</h1><ul>",
        *[f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in facts],
        "</ul>",
        f"<h2>Summary ({html.escape(attack)})</h2>",
        _html_table(s_head, s_body),
        *[f"<p>{html.escape(n)}</p>" for n in notes],
    ]
    if fig_note:
        parts.append(f"<p><i>{html.escape(fig_note)}</i></p>")
    for name in ("roc", "tradeoff", "histograms"):
        if name in figs:
            b64 = base64.b64encode(figs[name]).decode()
            parts.append(
                f"<figure><img alt='{name}' src='data:image/png;base64,{b64}'><figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
            )
    parts += ["<h2>All attacks</h2>", _html_table(f_head, f_body), "</body></html>"]
    html_path = run / "report.html"
    atomic_write_text(html_path, "\n".join(parts))
    return md_path, html_path
