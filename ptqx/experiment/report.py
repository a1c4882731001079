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

from .store import atomic_write_text

PRIMARY_ATTACKS = ("lira_online", "lira_offline", "global_threshold")


class ReportError(ValueError):
    """A run folder whose results cannot be reported (damaged, empty or mixed files)."""


# -- metric access (results.json rows) -----------------------------------------------------


def metric(row: dict[str, Any], name: str) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of a metric in a results row (NaN where absent).

    ``name`` is a key of ``ptqx.attacks.evaluate``'s output ("auc", "balanced_accuracy",
    "f1", "tpr@0.001" (last ROC vertex below the FPR, the original code's reading),
    "tpr@0.001_interp" (interpolated)) or "subset:<name>@<fpr>" (the fraction of that
    subset flagged at the FPR threshold).
    """
    m = row["metrics"]
    if name.startswith("subset:"):
        sub, fpr = name[len("subset:") :].split("@")
        entry, key = m["subsets"][sub], f"rate@{float(fpr):g}"
        value, ci = entry[key], entry.get("ci", {}).get(key)
    else:
        if "@" in name:
            head, _, tail = name.partition("@")
            suffix = "_interp" if tail.endswith("_interp") else ""
            name = f"{head}@{float(tail.removesuffix('_interp')):g}{suffix}"
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
    except (KeyError, TypeError, ValueError):
        return (math.nan, math.nan, math.nan)


# -- tables ----------------------------------------------------------------------------------


def _primary_attack(rows: list[dict[str, Any]]) -> str:
    present = {r["attack"] for r in rows}
    for a in PRIMARY_ATTACKS:
        if a in present:
            return a
    return rows[0]["attack"]


def _main_fpr(doc: dict[str, Any]) -> float:
    fprs = doc.get("config", {}).get("fprs", [1e-3])
    return 1e-3 if any(math.isclose(f, 1e-3) for f in fprs) else fprs[0]


def summary_table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per configuration: accuracy and the primary attack's numbers for both attackers."""
    rows = doc["rows"]
    attack, fpr = _primary_attack(rows), _main_fpr(doc)
    head = [
        "config",
        "test acc (mean ± std)",
        "AUC (FP ref)",
        f"TPR@{fpr:g} (FP ref)",
        f"TPR@{fpr:g} (adaptive)",
        f"TPR@{fpr:g} calib. members",
        f"TPR@{fpr:g} other members",
    ]
    body = []
    for c in doc["configs"]:
        fp = next(
            (
                r
                for r in rows
                if r["config"] == c["name"]
                and r["attack"] == attack
                and r["attacker"] == "fp_reference"
            ),
            None,
        )
        ad = next(
            (
                r
                for r in rows
                if r["config"] == c["name"]
                and r["attack"] == attack
                and r["attacker"] == "adaptive"
            ),
            None,
        )
        if fp is None:
            continue
        acc = fp["test_acc"]
        body.append(
            [
                c["name"],
                f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}",
                _with_ci(_safe(fp, "auc")),
                _with_ci(_safe(fp, f"tpr@{fpr}_interp"), 4),
                _with_ci(_safe(ad, f"tpr@{fpr}_interp"), 4) if ad else "(same as FP ref)",
                _with_ci(_safe(fp, f"subset:calibration_members@{fpr}"), 4),
                _with_ci(_safe(fp, f"subset:other_members@{fpr}"), 4),
            ]
        )
    return head, body


def full_table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    fprs = doc.get("config", {}).get("fprs", [1e-3])
    head = [
        "config",
        "attacker",
        "attack",
        "AUC",
        "bal. acc",
        *[f"TPR@{f:g}" for f in fprs],
        *[f"TPR@{f:g} (last vertex)" for f in fprs],
    ]
    body = []
    for r in doc["rows"]:
        body.append(
            [
                r["config"],
                r["attacker"],
                r["attack"],
                _with_ci(_safe(r, "auc")),
                _with_ci(_safe(r, "balanced_accuracy")),
                *[_with_ci(_safe(r, f"tpr@{f}_interp"), 4) for f in fprs],
                *[_fmt(_safe(r, f"tpr@{f}")[0], 4) for f in fprs],
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
        floor = 1.0 / max(1, doc["rows"][0]["n_models"] * doc["rows"][0]["n_examples"] // 2)
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
            v, lo, hi = _safe(r, f"tpr@{fpr_main}_interp")
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
    axes[0][1].legend(uniq.values(), uniq.keys(), fontsize=7, loc="best", ncol=2)
    figs["tradeoff"] = png(fig)

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
        ("bootstrap", f"{cfg.get('n_bootstrap')} resamples (95% CI)"),
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
    md += [
        "TPR values are read on the pooled ROC by interpolation, with 95% bootstrap CIs; the "
        "original code's reading (last ROC vertex below the FPR) is in the table below. "
        "'calib. members' / 'other members': the fraction of each target's calibration images / "
        "other training images flagged at the FPR threshold.",
        "",
    ]
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
