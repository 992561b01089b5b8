"""The answer on one screen (README, 31_report): a generated abstract, one compact table per main
dataset and the main figure, a forest plot of every method's difference to its own no-KD baseline.

Reads the store only (``findings`` does the statistics); nothing here is typed by hand.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .findings import REFERENCE, accuracy_summary, baseline_for, detectable, versus_baselines
from ..store.results import of_kind

MAIN = ("mnist", "cifar10")
_VERDICT_COLOUR = {"better": "#1a7f37", "worse": "#cf222e", "no significant difference": "#57606a",
                   "not judged": "#afb8c1"}


def study_rows(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The rows of ``dataset``'s as-published table: its study runs (no ablation, pruning, tuning)."""
    return of_kind(df[df.dataset == dataset], "study")


def comparisons(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """``findings.versus_baselines`` of every method of the dataset's as-published table."""
    g = study_rows(df, dataset)
    return versus_baselines(g, [r for r in g.run.unique() if baseline_for(g, r) is not None])


def compact_table(df: pd.DataFrame, dataset: str, vs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Method | seeds | accuracy % [95% CI] | difference to its baseline [95% CI] | verdict | reference %."""
    g = study_rows(df, dataset)
    vs = comparisons(df, dataset) if vs is None else vs
    acc = accuracy_summary(g).set_index("run")
    by_run = vs.set_index("run") if not vs.empty else pd.DataFrame()
    ref = REFERENCE.get(dataset, {})
    rows = []
    for run in acc.sort_values("mean", ascending=False).index:
        a = acc.loc[run]
        row = {"method": run, "seeds": int(a.n),
               "accuracy %": f"{100 * a['mean']:.2f} [{100 * a.ci_low:.2f}, {100 * a.ci_high:.2f}]"}
        if run in by_run.index:
            v = by_run.loc[run]
            ci = "" if np.isnan(v.diff_ci_low) else f" [{100 * v.diff_ci_low:+.2f}, {100 * v.diff_ci_high:+.2f}]"
            row["vs its baseline (points)"] = f"{100 * v['diff']:+.2f}{ci}" + (
                "" if v.baseline == "baseline" else f" vs {v.baseline}")
            row["verdict"] = {"no significant difference": "n.s."}.get(v.verdict, v.verdict)
        else:
            row["vs its baseline (points)"], row["verdict"] = "", ""
        row["reference %"] = f"{ref[run][0]:.2f}" if run in ref else ""
        rows.append(row)
    return pd.DataFrame(rows)


def all_comparisons(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``comparisons`` of every dataset of ``df``: computed once, shared by the abstract, the tables
    and the figure (each ``versus_baselines`` reads every run's predictions)."""
    return {d: comparisons(df, d) for d in sorted(set(df.dataset))}


def abstract(df: pd.DataFrame, tuning_status: list[str] | None = None,
             vs: dict[str, pd.DataFrame] | None = None) -> str:
    """4-6 sentences: what was compared on what, the verdicts with their sizes, what the design
    could not detect, how close the reference numbers came, and where the tuning stands."""
    main = [d for d in MAIN if d in set(df.dataset)]
    if not main:
        return "No main study (MNIST, CIFAR-10) is in the store yet."
    rows = pd.concat([study_rows(df, d) for d in main])
    compared = sorted({r for d in main for r in rows[rows.dataset == d].run.unique()
                       if baseline_for(rows[rows.dataset == d], r) is not None})
    methods = sorted(set(rows[rows.run.isin(compared)].method))
    seeds = sorted({int(n) for d in main for n in study_rows(df, d).groupby("run").seed.nunique()})
    out = [f"This study compares {len(compared)} distillation runs of {len(methods)} KD methods "
           f"({', '.join(f'`{m}`' for m in methods)}) with a no-KD student of the same network on "
           f"{' and '.join(d.upper() if d == 'mnist' else 'CIFAR-10' for d in main)}, "
           f"{'-'.join(map(str, (seeds[0], seeds[-1]))) if len(seeds) > 1 else seeds[0]} seeds per run at the "
           f"literature hyper-parameters, judging each method by a test that counts seed-to-seed and test-image "
           f"variance (Holm over the methods of a dataset)."]
    given = vs or {}
    detect = []
    for d in main:
        v = given[d] if d in given else comparisons(df, d)
        if v.empty:
            continue
        better = v[v.verdict == "better"]
        worse = v[v.verdict == "worse"]
        name = "CIFAR-10" if d == "cifar10" else "MNIST"
        said = [f"`{r.run}` beats its baseline by {100 * r.diff:+.2f} points "
                f"[{100 * r.diff_ci_low:+.2f}, {100 * r.diff_ci_high:+.2f}]" for r in better.itertuples()]
        said += [f"`{r.run}` is worse than its baseline by {-100 * r.diff:.2f} points [{100 * r.diff_ci_low:+.2f}, "
                 f"{100 * r.diff_ci_high:+.2f}]" for r in worse.itertuples()]
        rest = len(v) - len(better) - len(worse)
        out.append(f"On {name}, {'; '.join(said) if said else 'no method differs significantly from its baseline'}"
                   f"{f', and the other {rest} show no significant difference' if said and rest else ''}.")
        dd = detectable(v)
        if dd:
            detect.append(f"{100 * dd['mde']:.2f} points on {name}")
    if detect:
        out.append(f"With these seeds the test detects, with 80% power, differences of about {' and '.join(detect)}: "
                   f"smaller effects can exist unseen.")
    gaps = []
    for d in main:
        for run, (ref, _) in REFERENCE.get(d, {}).items():
            g = study_rows(df, d)
            if run in set(g.run):
                gaps.append(abs(100 * g[g.run == run].test_acc.mean() - ref))
    if gaps:
        out.append(f"The {len(gaps)} accuracies the reference study reports are matched within "
                   f"{min(gaps):.2f}-{max(gaps):.2f} points (median {np.median(gaps):.2f}).")
    if tuning_status:
        out.append("Every method tuned with the same budget on validation (Optuna) is under way: "
                   + " ".join(tuning_status))
    return " ".join(out)


def forest(df: pd.DataFrame, tuned: dict[str, pd.DataFrame] | None = None, datasets=MAIN,
           vs: dict[str, pd.DataFrame] | None = None):
    """Per dataset, every method's difference to its own no-KD baseline with the seed-and-image
    test's 95% interval, coloured by verdict; tuned rows (``tuned[dataset]``, a
    ``versus_baselines`` frame with the ``role`` each tuned run records) beside the as-published
    ones once they exist."""
    vs = vs or {}
    blocks = {d: vs[d] if d in vs else comparisons(df, d) for d in datasets if d in set(df.dataset)}
    blocks = {d: vs for d, vs in blocks.items() if not vs.empty}
    panels = list(blocks)
    if not panels:
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "No method has been compared with its baseline yet.", ha="center", va="center")
        return fig
    height = max(len(v) for v in blocks.values()) if blocks else 1
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 0.36 * height + 1.8), squeeze=False)
    for ax, d in zip(axes[0], panels):
        vs = blocks[d].sort_values("diff")
        y = np.arange(len(vs))
        sets = [("as published", vs, 0.0, "o")]
        if tuned and d in tuned and not tuned[d].empty:
            t = tuned[d].assign(run=tuned[d].role).set_index("run").reindex(vs.run)   # the variant it tunes
            sets = [("as published", vs, 0.17, "o"), ("tuned", t.reset_index(), -0.17, "D")]
        for label, rows, dy, marker in sets:
            for i, r in enumerate(rows.itertuples()):
                if pd.isna(r.diff):
                    continue
                c = _VERDICT_COLOUR.get(r.verdict, "#57606a")
                lo, hi = (r.diff_ci_low, r.diff_ci_high) if not pd.isna(r.diff_ci_low) else (r.diff, r.diff)
                ax.plot([100 * lo, 100 * hi], [i + dy] * 2, color=c, lw=2)
                ax.plot(100 * r.diff, i + dy, marker, color=c, ms=6, mfc=c if label == "as published" else "white")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [r.replace("__model=", " @") + ("" if b == "baseline" else " *") for r, b in zip(vs.run, vs.baseline)])
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.set_xlabel("accuracy minus its baseline's (points)")
        ax.set_title("CIFAR-10" if d == "cifar10" else d.upper() if d == "mnist" else d)
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2, label=k) for k, c in _VERDICT_COLOUR.items()]
    if tuned and any(not v.empty for v in tuned.values()):
        handles += [plt.Line2D([], [], color="black", marker="D", mfc="white", lw=0, label="tuned (hollow)")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Each method against the no-KD student of its network (* a network of its own): difference "
                 "and 95% CI, seed-and-image test, Holm", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig
