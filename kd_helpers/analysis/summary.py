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


def compact_table(df: pd.DataFrame, dataset: str, vs: pd.DataFrame | None = None,
                  rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Method | seeds | accuracy % [95% CI] | difference to its baseline [95% CI] | verdict | reference %
    (``rows``: the runs to show, by default the as-published table's)."""
    g = study_rows(df, dataset) if rows is None else rows
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


def tuned_rows(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The runs of ``dataset``'s tuned table, named by the variant each retrains (its ``role``);
    the tuned study's teacher (no role) is distilled from, not compared."""
    g = of_kind(df[df.dataset == dataset], "tuned")
    return g[g.role.notna()].assign(run=lambda t: t.role)


def by_variant(tuned_vs: pd.DataFrame, df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """A ``versus_baselines`` frame of tuned runs with runs and baselines named by their variants."""
    g = of_kind(df[df.dataset == dataset], "tuned")
    name = dict(zip(g.run, g.role))
    return tuned_vs.assign(run=tuned_vs.run.map(name), baseline=tuned_vs.baseline.map(name))


def tuning_moves(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per variant with both tables: its as-published and tuned mean test accuracy (%) and what
    tuning changed (points), largest move first."""
    tuned = accuracy_summary(tuned_rows(df, dataset)).set_index("run")["mean"]
    published = accuracy_summary(study_rows(df, dataset)).set_index("run")["mean"]
    out = pd.DataFrame({"published": 100 * published, "tuned": 100 * tuned}).dropna()
    return out.assign(moved=out.tuned - out.published).sort_values("moved", ascending=False)


def tuned_table(df: pd.DataFrame, dataset: str, tuned_vs: pd.DataFrame) -> pd.DataFrame:
    """``compact_table`` of the tuned runs (``tuned_vs``: their comparisons, named by variant), with
    each variant's as-published accuracy and what tuning changed."""
    t = compact_table(df, dataset, tuned_vs, rows=tuned_rows(df, dataset)).drop(columns="reference %")
    moves = tuning_moves(df, dataset)
    t["as published %"] = [f"{moves.published[m]:.2f}" if m in moves.index else "" for m in t.method]
    t["tuning changed (points)"] = [f"{moves.moved[m]:+.2f}" if m in moves.index else "" for m in t.method]
    return t


def all_comparisons(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``comparisons`` of every dataset of ``df``: computed once, shared by the abstract, the tables
    and the figure (each ``versus_baselines`` reads every run's predictions)."""
    return {d: comparisons(df, d) for d in sorted(set(df.dataset))}


def _name(dataset: str) -> str:
    return "CIFAR-10" if dataset == "cifar10" else "MNIST"


def verdict_sentence(v: pd.DataFrame, dataset: str) -> str:
    """'On MNIST, `a` beats its baseline by ... [CI]; ..., and the other k show no significant difference.'"""
    better, worse = v[v.verdict == "better"], v[v.verdict == "worse"]
    said = [f"`{r.run}` beats its baseline by {100 * r.diff:+.2f} points "
            f"[{100 * r.diff_ci_low:+.2f}, {100 * r.diff_ci_high:+.2f}]" for r in better.itertuples()]
    said += [f"`{r.run}` is worse than its baseline by {-100 * r.diff:.2f} points [{100 * r.diff_ci_low:+.2f}, "
             f"{100 * r.diff_ci_high:+.2f}]" for r in worse.itertuples()]
    rest = len(v) - len(better) - len(worse)
    return (f"On {_name(dataset)}, {'; '.join(said) if said else 'no method differs significantly from its baseline'}"
            f"{f', and the other {rest} show no significant difference' if said and rest else ''}.")


def detection_sentence(blocks: dict[str, pd.DataFrame], seeds: str = "these seeds") -> str:
    """What the test could detect with 80% power, per dataset (empty if nothing was judged)."""
    found = [(d, detectable(v)) for d, v in blocks.items() if not v.empty]
    said = [f"{100 * dd['mde']:.2f} points on {_name(d)}" for d, dd in found if dd]
    return (f"With {seeds} the test detects, with 80% power, differences of about {' and '.join(said)}: "
            f"smaller effects can exist unseen.") if said else ""


def tuning_sentence(df: pd.DataFrame, dataset: str, tuned_vs: pd.DataFrame, published_vs: pd.DataFrame) -> str:
    """What tuning changed on ``dataset`` (``tuning_moves``: the range and the largest moves), and
    the verdicts that differ between the tuned and the as-published table."""
    moved = tuning_moves(df, dataset).moved
    if moved.empty:
        return ""
    seeds = [g.groupby("run").seed.nunique().max() for g in (tuned_rows(df, dataset), study_rows(df, dataset))]
    top = ", ".join(f"`{v}` {d:+.2f}" for v, d in moved.head(3).items())
    out = (f"On {_name(dataset)}, tuning moved each variant's mean accuracy by {moved.min():+.2f} to {moved.max():+.2f} "
           f"points against its as-published runs (most: {top}; means over {seeds[0]} and {seeds[1]} seeds, each "
           f"with its own seed noise)")
    was = published_vs.set_index("run").verdict if not published_vs.empty else pd.Series(dtype=object)
    now = tuned_vs.set_index("run").verdict if not tuned_vs.empty else pd.Series(dtype=object)
    changed = [f"`{v}`: {was[v]} as published, {now[v]} tuned" for v in now.index if v in was and was[v] != now[v]]
    return out + (f"; verdicts it changed: {'; '.join(changed)}." if changed else "; it changed no verdict.")


def abstract(df: pd.DataFrame, tuning_status: list[str] | None = None,
             vs: dict[str, pd.DataFrame] | None = None, tuned: dict[str, dict] | None = None) -> str:
    """4-8 sentences: what was compared on what, the verdicts with their sizes, what the design
    could not detect, how close the reference numbers came, and where the tuning stands.

    ``tuned``: per dataset whose tuned table is complete, ``{"vs": its comparisons (named by
    variant), "trials": the trial budget per variant, "seeds": the tuned seeds}``; the abstract then
    leads with it and reports the literature-default rows after it, as published."""
    main = [d for d in MAIN if d in set(df.dataset)]
    if not main:
        return "No main study (MNIST, CIFAR-10) is in the store yet."
    tuned = {d: t for d, t in (tuned or {}).items() if d in main}
    rows = pd.concat([study_rows(df, d) for d in main])
    compared = sorted({r for d in main for r in rows[rows.dataset == d].run.unique()
                       if baseline_for(rows[rows.dataset == d], r) is not None})
    methods = sorted(set(rows[rows.run.isin(compared)].method))
    seeds = sorted({int(n) for d in main for n in study_rows(df, d).groupby("run").seed.nunique()})
    per_run = '-'.join(map(str, (seeds[0], seeds[-1]))) if len(seeds) > 1 else seeds[0]
    out = [f"This study compares {len(compared)} distillation runs of {len(methods)} KD methods "
           f"({', '.join(f'`{m}`' for m in methods)}) with a no-KD student of the same network on "
           f"{' and '.join(d.upper() if d == 'mnist' else 'CIFAR-10' for d in main)}, "
           f"{per_run} seeds per run at the "
           f"literature hyper-parameters, judging each method by a test that counts seed-to-seed and test-image "
           f"variance (Holm over the methods of a dataset)."]
    if tuned:
        budget = "; ".join(f"{_name(d)}: {t['trials']} trials per variant, then {t['seeds']} seeds"
                           for d, t in tuned.items())
        out = [f"This study compares KD methods with a no-KD student of the same network, every method and "
               f"baseline tuned with the same budget on validation (Optuna; {budget}), judging each method by a "
               f"test that counts seed-to-seed and test-image variance (Holm over the methods of a dataset)."]
        out += [verdict_sentence(t["vs"], d) for d, t in tuned.items()]
        out.append(detection_sentence({d: t["vs"] for d, t in tuned.items()}, "the tuned seeds"))
        out += [tuning_sentence(df, d, t["vs"], vs[d] if vs and d in vs else comparisons(df, d))
                for d, t in tuned.items()]
        out.append(f"At the literature hyper-parameters (as published: {len(compared)} distillation runs of "
                   f"{len(methods)} methods, {per_run} seeds per run):")
    given = vs or {}
    blocks = {d: given[d] if d in given else comparisons(df, d) for d in main}
    out += [verdict_sentence(v, d) for d, v in blocks.items() if not v.empty]
    detect = detection_sentence(blocks)
    if detect:
        out.append(detect)
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
