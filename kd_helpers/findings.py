"""What the numbers say, in words generated from them: each method against the baseline of the
same network (McNemar per seed and a paired-seed t-test, Holm over the family), its training
cost, and the reference study's value where it has one. Used by the method notebooks, the
report and the README, so a verdict is computed in one place.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .results import load_predictions, training_throughput

# The reference study's published numbers (test accuracy %, test errors), per dataset and run
# of this study. Only rows it reports are here; runs without a row are compared with nothing.
REFERENCE = {
    "mnist": {"teacher": (98.95, 105), "baseline": (98.77, 123), "kd": (98.85, 115), "fitnets": (98.83, 117),
              "rkd_ref": (98.82, 118)},
    "cifar10": {"teacher": (82.54, None), "baseline": (78.09, None)},
}


def baseline_for(df: pd.DataFrame, run: str) -> str | None:
    """The no-KD run of the same network as ``run`` ('baseline' for the usual student,
    'fitnet_baseline' for the thin-deep one, ...); None for a no-KD run itself."""
    rows = df[df.run == run]
    if rows.empty or rows.method.iloc[0] == "ce":
        return None
    same = df[(df.method == "ce") & (df.model == rows.model.iloc[0]) & (df.run != "teacher")].run.unique()
    return sorted(same, key=lambda r: (not r.startswith("baseline") and not r.endswith("baseline"), len(r)))[0] \
        if len(same) else None


def finetuned_with_ce(df: pd.DataFrame, run: str) -> str | None:
    """What a pruned model fine-tuned with KD is compared with (notebook 20): the same source,
    pruned the same way, fine-tuned with CE; None for any other run."""
    rows = df[df.run == run]
    if rows.empty or "prune_source" not in df or pd.isna(rows.prune_source.iloc[0]) or rows.method.iloc[0] == "ce":
        return None
    r = rows.iloc[0]
    same = df[(df.method == "ce") & (df.prune_source == r.prune_source) & (df.prune_kind == r.prune_kind)
              & (df.prune_amount == r.prune_amount)].run.unique()
    return same[0] if len(same) else None


def versus_baselines(df: pd.DataFrame, runs, alpha: float = 0.05, against=baseline_for) -> pd.DataFrame:
    """One row per run in ``runs`` that has a baseline (``against(df, run)``, by default its
    network's no-KD run): accuracies, the per-seed differences with a paired t-test, McNemar on
    every seed both have, Holm over the family, and costs."""
    rows, mc_p, mc_where, preds = [], [], [], {}

    def predictions(d):   # a baseline serves every run of its network: read its file once
        if d not in preds:
            preds[d] = load_predictions(d)
        return preds[d]
    for run in runs:
        base = against(df, run)
        if base is None:
            continue
        a, b = df[df.run == run].set_index("seed"), df[df.run == base].set_index("seed")
        seeds = sorted(a.index.intersection(b.index))
        if not seeds:
            continue
        paired = stats.paired_seed_comparison(df, run, base)
        row = {"run": run, "baseline": base, "seeds": len(seeds), "acc": a.test_acc[seeds].mean(),
               "acc_baseline": b.test_acc[seeds].mean(), "diff": paired["mean_diff"], "diff_ci_low": paired["ci_low"],
               "diff_ci_high": paired["ci_high"], "p_seeds": paired["p_ttest"],
               "time_ratio": a.train_s[seeds].mean() / b.train_s[seeds].mean(),
               "flops_ratio": a.train_flops[seeds].mean() / b.train_flops[seeds].mean(),
               "precision": ", ".join(sorted(set(a.precision[seeds].astype(str))))}
        for s in seeds:
            pa, pb = predictions(a.dir[s]), predictions(b.dir[s])
            m = stats.mcnemar_test(pa["labels"], pa["logits"].argmax(1), pb["logits"].argmax(1))
            mc_p.append(m["p"])
            mc_where.append((len(rows), (m["b"] - m["c"]) > 0))
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    adj, rej = stats.holm(mc_p, alpha)
    out["mcnemar_tests"] = len(mc_p)
    out["mcnemar_better"] = [sum(r and up for (i, up), r in zip(mc_where, rej) if i == k) for k in out.index]
    out["mcnemar_worse"] = [sum(r and not up for (i, up), r in zip(mc_where, rej) if i == k) for k in out.index]
    p_seeds = out.p_seeds.to_numpy(dtype=float)
    ok = ~np.isnan(p_seeds)
    out["p_seeds_holm"] = np.nan
    if ok.any():
        out.loc[ok, "p_seeds_holm"] = stats.holm(p_seeds[ok], alpha)[0]
    out["verdict"] = [_verdict(r) for r in out.itertuples()]
    return out


def _verdict(r) -> str:
    """Better/worse when McNemar (Holm) is significant in that direction on most seeds and the
    mean per-seed difference agrees; otherwise no significant difference."""
    majority = r.seeds // 2 + 1
    if r.mcnemar_better >= majority and r.diff > 0:
        return "better"
    if r.mcnemar_worse >= majority and r.diff < 0:
        return "worse"
    return "no significant difference"


VERDICT_LEGEND = ("`vs baseline`: better/worse when McNemar on the test predictions, Holm-corrected over the runs "
                  "and seeds compared, is significant in that direction on most seeds and the mean difference "
                  "agrees, else n.s.; then on how many seeds McNemar is significant each way, and the paired "
                  "t-test over seeds (Holm)")


def verdict_cell(v) -> str:
    """One run's verdict against its baseline for a table (a ``versus_baselines`` row): both tests,
    so a majority-of-seeds McNemar verdict is never read without the seeds that disagree."""
    base = "" if v.baseline == "baseline" else f" vs {v.baseline}"
    mark = {"better": "better", "worse": "worse"}.get(v.verdict, "n.s.")
    t = "n/a" if np.isnan(v.p_seeds_holm) else f"{v.p_seeds_holm:.2g}"
    return (f"{mark}{base}; McNemar {v.mcnemar_better} better, {v.mcnemar_worse} worse of {v.seeds} seeds; "
            f"paired t p={t}")


def reference_sentence(dataset: str, run: str, acc: float) -> str:
    ref = REFERENCE.get(dataset, {}).get(run)
    if ref is None:
        return ""
    pts = 100 * acc - ref[0]
    errs = f" ({ref[1]} errors)" if ref[1] is not None else ""
    return (f" The reference study reports {ref[0]:.2f}%{errs} for this row; this study's is "
            f"{abs(pts):.2f} points {'above' if pts >= 0 else 'below'} it.")


def describe_plain(df: pd.DataFrame) -> str:
    """Markdown for runs that are not compared with a baseline: accuracy over seeds and the gap to the teacher."""
    g = df.groupby("run").agg(acc=("test_acc", "mean"), n=("test_acc", "size"), model=("model", "first"),
                              params=("params", "mean")).sort_values("acc", ascending=False)
    teacher = g.acc.get("teacher")
    lines = []
    for run, r in g.iterrows():
        gap = f", {100 * (r.acc - teacher):+.2f} points from the teacher" if teacher is not None and run != "teacher" else ""
        ref = reference_sentence(df.dataset.iloc[0], run, r.acc)
        lines.append(f"- **{run}** ({r.model}, {int(r.params):,} parameters, {r.n} seed{'s' if r.n > 1 else ''}): "
                     f"{100 * r.acc:.2f}%{gap}.{ref}")
    return "\n".join(lines)


def describe(vs: pd.DataFrame, dataset: str, alpha: float = 0.05) -> str:
    """Markdown, one paragraph per run of ``versus_baselines``."""
    if vs.empty:
        return "No run here has a baseline to compare with on a common seed: nothing to compare."
    out = []
    for r in vs.itertuples():
        seeds = f"{r.seeds} seed{'s' if r.seeds > 1 else ''}"
        t = (f"paired t-test over seeds p={r.p_seeds:.3g} (Holm {r.p_seeds_holm:.3g})" if not np.isnan(r.p_seeds)
             else "no paired t-test (needs 2 seeds with differing results)")
        word = {"better": "**beats**", "worse": "**is worse than**",
                "no significant difference": "**does not differ significantly from**"}[r.verdict]
        out.append(
            f"- **{r.run}** {word} **{r.baseline}** ({seeds}, {r.precision}): {100 * r.acc:.2f}% vs "
            f"{100 * r.acc_baseline:.2f}% ({100 * r.diff:+.2f} points; {t}). McNemar on the test examples, "
            f"Holm over the {r.mcnemar_tests} tests (runs x seeds) at alpha={alpha}: significantly better on {r.mcnemar_better}, "
            f"worse on {r.mcnemar_worse} of {r.seeds} seed(s). Training cost: {r.time_ratio:.2f}x the baseline's "
            f"time, {r.flops_ratio:.2f}x its FLOPs.{reference_sentence(dataset, r.run, r.acc)}")
    return "\n".join(out)


def per_network(g: pd.DataFrame, cost: str) -> pd.Series:
    """``cost`` of each row's network, the mean over all runs of that network (same architecture
    and parameter count; a structurally pruned copy is another network): one architecture's
    latency timed after different runs differs only by machine noise (other jobs on the cores)."""
    return g.groupby(["model", "params"])[cost].transform("mean")


def pareto_front(g: pd.DataFrame, cost: str) -> list[str]:
    """Runs no other run beats on both accuracy (higher) and ``cost`` (lower), cheapest first, each
    network at its ``per_network`` cost, so that timing noise never puts a method on the front."""
    g = g.assign(**{cost: per_network(g, cost)})
    agg = g.groupby("run").agg(acc=("test_acc", "mean"), cost=(cost, "mean")).sort_values(["cost", "acc"],
                                                                                          ascending=[True, False])
    front, best = [], -1.0
    for run, r in agg.iterrows():
        if r.acc > best:
            front.append(run)
            best = r.acc
    return front


def same_score_on_every_seed(g: pd.DataFrame) -> list[str]:
    """Runs whose seeds all made the same number of test errors (a std of 0.00 that looks like
    one run copied), with how many test images their seeds' predictions disagree on."""
    out = []
    for run, r in g.groupby("run"):
        if len(r) < 2 or r.test_errors.nunique() > 1:
            continue
        preds = [load_predictions(d)["logits"].argmax(1) for d in r.sort_values("seed").dir]
        diff = [int((a != b).sum()) for i, a in enumerate(preds) for b in preds[i + 1:]]
        why = ("so these are distinct runs" if min(diff) else
               "**two seeds predict identically: check that they are not copies of one run**")
        out.append(f"{run} ({int(r.test_errors.iloc[0])} errors on each of {len(r)} seeds; their predictions "
                   f"differ on {min(diff)}-{max(diff)} test images, {why})")
    return out


def _precisions(runs: pd.DataFrame) -> str:
    return ", ".join(sorted(set(runs.precision.astype(str))))


def _compute(table: pd.DataFrame, every: pd.DataFrame) -> str:
    """What the study's runs cost: the table's runs, then the ablation's and the pruning's, then all."""
    hours = lambda x: x.train_s.sum() / 3600
    extra = [(label, every[every.run.str.startswith(prefix)]) for label, prefix in
             (("the protocol ablation", "ablation_"), ("distill-then-prune", "prune_"))]
    more = "".join(f"; {label}: {len(x)} runs, {hours(x):.2f} h" for label, x in extra if len(x))
    total = f"; in all {len(every)} runs, {hours(every):.2f} h, {every.train_flops.sum():.2e} training FLOPs" if more else ""
    return (f"- Compute (training time as recorded, {_precisions(every)}): the table's "
            f"{len(table)} runs {hours(table):.2f} h, {table.train_flops.sum():.2e} training FLOPs{more}{total}.")


def study_compute(every: pd.DataFrame) -> str:
    """The whole store's training cost, summed over its runs as each recorded it, then per study."""
    per = every.groupby("dataset").agg(n=("train_s", "size"), s=("train_s", "sum"))
    parts = ", ".join(f"{ds} {int(r.n)} run{'' if int(r.n) == 1 else 's'} {r.s / 3600:.2f} h"
                      for ds, r in per.iterrows())
    return (f"**Compute, the whole study** (training time as each run recorded it, summed; "
            f"{_precisions(every)}): {len(every)} runs, "
            f"{every.train_s.sum() / 3600:.2f} h, {every.train_flops.sum():.2e} training FLOPs ({parts}).")


def _threads(n) -> str:
    return "" if pd.isna(n) else f" ({int(n)} thread{'s' if int(n) != 1 else ''})"


def pruning_verdicts(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Every pruned model fine-tuned with KD against its CE-fine-tuned twin (one dataset)."""
    kd = sorted(df[df.run.str.startswith("prune_") & (df.method != "ce")].run.unique())
    vs = versus_baselines(df, kd, alpha, against=finetuned_with_ce)
    return vs if len(vs) else pd.DataFrame(columns=["run", "baseline", "seeds", "verdict", "diff"])


def pruning_sentence(vs: pd.DataFrame, alpha: float = 0.05) -> str:
    """Distill-then-prune in one line: how often KD fine-tuning beats CE fine-tuning."""
    if vs.empty:
        return ("- Distill-then-prune (20_pruning): no pruned model has been fine-tuned both with KD and with CE "
                "on a common seed: nothing to compare.")
    n = vs.verdict.value_counts()
    return (f"- Distill-then-prune (20_pruning): a pruned student fine-tuned with KD against the same pruned "
            f"student fine-tuned with CE (McNemar per seed, Holm over {int(vs.mcnemar_tests.iloc[0])} tests, "
            f"alpha={alpha}): better in {n.get('better', 0)}, worse in {n.get('worse', 0)}, no significant "
            f"difference in {n.get('no significant difference', 0)} of {len(vs)} pruned models; mean differences "
            f"{100 * vs['diff'].min():+.2f} to {100 * vs['diff'].max():+.2f} points.")


def pruning_report(vs: pd.DataFrame, dataset: str, alpha: float = 0.05) -> str:
    """20_pruning's verdict: the one-line summary, then a paragraph per pruned model."""
    return pruning_sentence(vs, alpha) + ("\n" + describe(vs, dataset, alpha) if len(vs) else "")


def paired_line(vs: pd.DataFrame, alpha: float) -> list[str]:
    """The paired t-test over seeds next to the McNemar verdicts, naming the verdicts it does not
    confirm: McNemar judges each seed's test examples, the paired test whether a difference
    stands out from the seed-to-seed spread, so a reader sees which claims rest on one of them only."""
    ok = vs[vs.p_seeds_holm.notna()]
    if ok.empty:
        return []
    sig = ok[ok.p_seeds_holm < alpha].sort_values("diff", ascending=False)
    line = (f"- Paired t-test over seeds (Holm over {len(ok)} runs, alpha={alpha}): significant for "
            + (", ".join(f"**{r.run}** ({100 * r.diff:+.2f} points, p={r.p_seeds_holm:.2g})" for r in sig.itertuples())
               or "no run"))
    alone = ok[(ok.verdict != "no significant difference") & (ok.p_seeds_holm >= alpha)]
    if len(alone):
        line += ("; it does not confirm the McNemar verdicts of " + ", ".join(f"**{r}**" for r in alone.run)
                 + f" (with {int(alone.seeds.min())} seeds and Holm over {len(ok)} runs the paired test has little "
                   "power: these verdicts rest on McNemar alone)")
    return [line + "."]


def study_findings(df: pd.DataFrame, alpha: float = 0.05) -> str:
    """The report's opening: per dataset, which methods beat their baseline (with the evidence
    and effect sizes), the accuracy/size and accuracy/latency trade-off, the distance to the
    reference study, whether KD helps after pruning, and what the runs cost. Generated from
    ``df``; nothing typed by hand."""
    everything, df = df, df[~df.run.str.startswith(("prune_", "ablation_"))]
    parts = []
    for ds in sorted(df.dataset.unique()):
        g, every = df[df.dataset == ds], everything[everything.dataset == ds]
        runs = [r for r in g.run.unique() if r != "teacher"]
        vs = versus_baselines(g, runs, alpha)
        n = g.groupby("run").seed.nunique()
        seeds = f"{n.min()} seed(s) per run" if n.min() == n.max() else f"{n.min()}-{n.max()} seeds per run (column Seeds)"
        acc = g.groupby("run").test_acc.mean()
        head = f"### {ds}\n{seeds}; test accuracy of each run's best-validation epoch."
        if "teacher" in acc and "baseline" in acc:
            head += f" Teacher {100 * acc['teacher']:.2f}%, no-KD student {100 * acc['baseline']:.2f}%."
            if acc["teacher"] <= acc["baseline"]:
                head += (" **The teacher is no more accurate than the student trained alone**: the methods "
                         "here distil from a weaker or equal network, which limits what they can gain.")
        lines = [head]
        if not vs.empty:
            for verdict, word in (("better", "Beat their no-KD baseline"), ("worse", "Worse than their baseline"),
                                  ("no significant difference", "No significant difference")):
                sel = vs[vs.verdict == verdict].sort_values("diff", ascending=False)
                items = ", ".join(f"**{r.run}** ({100 * r.diff:+.2f} points, 95% CI over seeds "
                                  f"[{100 * r.diff_ci_low:+.2f}, {100 * r.diff_ci_high:+.2f}])" if r.seeds > 1
                                  else f"**{r.run}** ({100 * r.diff:+.2f} points)" for r in sel.itertuples())
                lines.append(f"- {word} (McNemar per seed, Holm over {int(vs.mcnemar_tests.iloc[0])} tests, "
                             f"alpha={alpha}): {items or 'none'}.")
            lines += paired_line(vs, alpha)
        for cost, label in (("params", "parameters"), ("latency_ms", "single-image CPU latency")):
            if cost in g:
                lines.append(f"- Best accuracy for its {label} (Pareto front, cheapest first): "
                             + ", ".join(f"{r} ({100 * acc[r]:.2f}%)" for r in pareto_front(g, cost)) + ".")
        same = same_score_on_every_seed(g)
        if same:
            lines.append("- Same accuracy on every seed: " + "; ".join(same) + ".")
        refs = [f"{r} {100 * acc[r]:.2f}% vs {REFERENCE[ds][r][0]:.2f}%" for r in REFERENCE.get(ds, {}) if r in acc]
        if refs:
            lines.append("- Against the reference study's table (this study vs reference; where the gaps come from: the "
                         "protocol ablation, appendix of 01_teacher): " + "; ".join(refs) + ".")
        prune = every[every.run.str.startswith("prune_")]
        if len(prune):
            lines.append(pruning_sentence(pruning_verdicts(every, alpha), alpha))
        lines.append(_compute(g, every))
        tp = training_throughput(g)
        if len(tp):
            lines.append("- Training throughput of each network (its no-KD runs; training images/s, per-epoch "
                         "evaluation excluded, on the threads each run had; a lower bound where other jobs shared "
                         "the cores): " + ", ".join(f"{r.model} {r.images_per_s:,.0f}{_threads(r.threads)}"
                                     for r in tp.itertuples()) + ".")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) if parts else "No finished runs."
