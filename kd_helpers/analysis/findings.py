"""What the numbers say, in words generated from them: each method against the baseline of the
same network (McNemar per seed and a paired-seed t-test, Holm over the family), its training
cost, and the reference study's value where it has one. Used by the method notebooks, the
report and the README, so a verdict is computed in one place.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from ..store.results import load_predictions, of_kind, training_throughput

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


def correct(p: dict) -> np.ndarray:
    """Per-image correctness (0/1) of one run's stored predictions."""
    return (p["logits"].argmax(1) == p["labels"]).astype(float)


def _correctness(pa: dict, pb: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two runs' predictions, after checking they label the same images."""
    if len(pa["labels"]) != len(pb["labels"]) or not np.array_equal(pa["labels"], pb["labels"]):
        raise ValueError(f"{where}: the two runs were tested on different labels ({len(pa['labels'])} vs "
                         f"{len(pb['labels'])} images): they cannot be paired. Retrain one of them on the same split.")
    return correct(pa), correct(pb)


MIN_SEEDS = 3   # fewer paired seeds: differences are reported, the method is not judged


def versus_baselines(df: pd.DataFrame, runs, alpha: float = 0.05, against=baseline_for) -> pd.DataFrame:
    """One row per run in ``runs`` that has a baseline (``against(df, run)``, by default its
    network's no-KD run): accuracies, the seed-and-image test of the difference over the seeds
    both have (``stats.seed_image_test``; Holm over the runs judged, i.e. with ``MIN_SEEDS`` or
    more), the verdict, McNemar on every seed as a per-checkpoint diagnostic (Holm over runs x
    seeds), and costs."""
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
        ca, cb, seed_diffs, mc_vars = [], [], [], []
        for s in seeds:
            ra, rb = _correctness(predictions(a.dir[s]), predictions(b.dir[s]), f"{run} vs {base}, seed {s}")
            ca.append(ra)
            cb.append(rb)
            m = stats.mcnemar_test(np.ones_like(ra), ra, rb)
            n_img = len(ra)
            seed_diffs.append(float(ra.mean() - rb.mean()))
            mc_vars.append(((m["b"] + m["c"]) / n_img - ((m["b"] - m["c"]) / n_img) ** 2) / n_img)
            mc_p.append(m["p"])
            mc_where.append((len(rows), (m["b"] - m["c"]) > 0))
        row = {"run": run, "baseline": base, "seeds": len(seeds), "acc": a.test_acc[seeds].mean(),
               "acc_baseline": b.test_acc[seeds].mean(), "diff": float(np.mean(seed_diffs)),
               "diff_ci_low": np.nan, "diff_ci_high": np.nan, "p": np.nan, "p_improve": np.nan,
               "var_seed": np.nan, "var_image": np.nan, "var_resid": np.nan, "n_images": len(ca[0]),
               "seed_diffs": seed_diffs, "mcnemar_vars": mc_vars,
               "time_ratio": a.train_s[seeds].mean() / b.train_s[seeds].mean(),
               "flops_ratio": a.train_flops[seeds].mean() / b.train_flops[seeds].mean(),
               "precision": ", ".join(sorted(set(a.precision[seeds].astype(str))))}
        if len(seeds) >= 2:
            t = stats.seed_image_test(np.stack(ca), np.stack(cb))
            row.update(diff_ci_low=t["ci_low"], diff_ci_high=t["ci_high"], p=t["p"], p_improve=t["p_improve"],
                       var_seed=t["var_seed"], var_image=t["var_image"], var_resid=t["var_resid"])
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    adj, rej = stats.holm(mc_p, alpha)
    out["mcnemar_tests"] = len(mc_p)
    out["mcnemar_better"] = [sum(r and up for (i, up), r in zip(mc_where, rej) if i == k) for k in out.index]
    out["mcnemar_worse"] = [sum(r and not up for (i, up), r in zip(mc_where, rej) if i == k) for k in out.index]
    judged = (out.seeds >= MIN_SEEDS).to_numpy() & out.p.notna().to_numpy()
    out["judged"] = judged
    out["p_holm"] = np.nan
    if judged.any():
        out.loc[judged, "p_holm"] = stats.holm(out.p[judged].to_numpy(dtype=float), alpha)[0]
    out["family"] = int(judged.sum())
    out["verdict"] = [_verdict(r, alpha) for r in out.itertuples()]
    return out


def _verdict(r, alpha: float) -> str:
    """Better/worse when the seed-and-image test (Holm over the family) is significant; not
    judged with fewer than ``MIN_SEEDS`` paired seeds."""
    if not r.judged:
        return "not judged"
    if r.p_holm < alpha:
        return "better" if r.diff > 0 else "worse"
    return "no significant difference"


VERDICT_LEGEND = ("`vs baseline`: the method against the no-KD run of its network by the seed-and-image test (paired "
                  "over seeds on the same test images; SE² = seed variance / seeds + test-image variance / images + "
                  "seed-by-image variance / (seeds x images), t on its Satterthwaite df, at least seeds - 1; Holm over "
                  "the dataset's methods): better/worse when significant at 0.05, n.s. "
                  "otherwise, not judged with fewer than 3 seeds; the difference in points with its 95% CI (seed and "
                  "test-image variance); then McNemar per seed, a diagnostic of single checkpoints (seeds significant "
                  "each way, Holm over runs x seeds)")


def verdict_cell(v: pd.Series) -> str:
    """One run's verdict against its baseline for a table (a ``versus_baselines`` row)."""
    base = "" if v.baseline == "baseline" else f" vs {v.baseline}"
    mark = {"better": "better", "worse": "worse", "not judged": f"not judged ({v.seeds} seed{'s' if v.seeds > 1 else ''})"
            }.get(v.verdict, "n.s.")
    ci = "" if np.isnan(v.diff_ci_low) else f" [{100 * v.diff_ci_low:+.2f}, {100 * v.diff_ci_high:+.2f}]"
    p = "" if np.isnan(v.p_holm) else f", p={v.p_holm:.2g}"
    return (f"{mark}{base}: {100 * v['diff']:+.2f}{ci}{p}; McNemar per seed {v.mcnemar_better} better, "
            f"{v.mcnemar_worse} worse of {v.seeds}")


def detectable(vs: pd.DataFrame, alpha: float = 0.05, target_power: float = 0.8) -> dict | None:
    """What the dataset's design can detect: the variance components pooled (mean) over its
    compared methods, the smallest difference the seed-and-image test finds with 80% power after
    Holm over the family, and the seeds per method that 0.5 and 1.0 points would need."""
    ok = vs[vs.var_seed.notna()] if len(vs) else vs
    if ok.empty:
        return None
    comp = {k: float(ok[k].mean()) for k in ("var_seed", "var_image", "var_resid")}
    n, n_images, tests = int(ok.seeds.median()), int(ok.n_images.iloc[0]), max(int(ok.judged.sum()), 1)
    return {"seeds": n, "images": n_images, "tests": tests, "sd_seed": float(np.sqrt(comp["var_seed"])),
            "mde": stats.detectable_effect(*comp.values(), n, n_images, tests, alpha, target_power),
            **{f"seeds_for_{k}": stats.seeds_needed(e, *comp.values(), n_images, tests, alpha, target_power)
               for k, e in (("0.5", 0.005), ("1.0", 0.01))}}


def detectable_line(vs: pd.DataFrame, alpha: float = 0.05) -> str:
    d = detectable(vs, alpha)
    if d is None:
        return ""
    need = lambda k: (f"{d[k]} seeds" if d[k] is not None else f"more than 200 seeds (the {d['images']:,} test images "
                                                                  "alone are too few)")
    return (f"- What this design can detect: with {d['seeds']} seeds per method and {d['images']:,} test images, the "
            f"seed-and-image test finds a difference of **{100 * d['mde']:.2f} points** with 80% power after Holm "
            f"over {d['tests']} method{'s' if d['tests'] != 1 else ''} (variance components pooled over the methods "
            f"compared; the seed-to-seed SD of a difference is {100 * d['sd_seed']:.2f} points); "
            f"0.5 points would need {need('seeds_for_0.5')}, 1.0 point {need('seeds_for_1.0')} per method. "
            f"Smaller true differences can exist unseen: n.s. is not \"no effect\".")


def one_training(table: pd.DataFrame, what: str = "this table") -> tuple[str, str]:
    """The one training-code fingerprint (``util.code_fingerprint``) and the one training
    precision of a table's runs, or an error naming what differs and its runs: a table compares
    methods only when one code trained them all in one precision (bf16 and fp32 runs of one
    configuration differ, and a machine's precision must not pass for a method's effect)."""
    codes = table.training_code.fillna("not recorded")
    if codes.nunique() != 1 or codes.iloc[0] == "not recorded":
        raise ValueError(f"{what} mixes training code ({_runs_by(table, codes)}). Retrain the runs of the other "
                         f"code (or the ones that recorded none) with the code of the rest before publishing it.")
    if table.precision.nunique() != 1:
        raise ValueError(f"{what} mixes training precision ({_runs_by(table, table.precision)}). Retrain the runs "
                         f"of the other precision in the rest's (KD_PRECISION=..., or the spec's precision) "
                         f"before publishing it.")
    return codes.iloc[0], table.precision.iloc[0]


def _runs_by(table: pd.DataFrame, key: pd.Series) -> str:
    return "; ".join(f"{k}: {', '.join(sorted(set(g.run)))}" for k, g in table.assign(key=key.values).groupby("key"))


def mcnemar_overdispersion(vs: pd.DataFrame) -> dict:
    """How much the per-seed differences spread beyond McNemar's model (``stats.overdispersion``)."""
    if vs.empty:
        return {"ratio": float("nan"), "df": 0, "p": float("nan")}
    return stats.overdispersion(list(vs.seed_diffs), list(vs.mcnemar_vars))


def mcnemar_note(vs_by_dataset: dict[str, pd.DataFrame]) -> str:
    """Why per-seed McNemar over-claims where it does, in the study's own numbers: per dataset,
    how much more the per-seed differences to the baseline vary than McNemar's model of one
    checkpoint pair (test images the only randomness) allows."""
    lines = []
    for ds, vs in vs_by_dataset.items():
        o = mcnemar_overdispersion(vs)
        if not o["df"]:
            lines.append(f"- **{ds}**: no method with 2 or more seeds, nothing to measure.")
            continue
        verdict = ("far more than McNemar allows: each seed's McNemar test sees one draw of the training "
                   "randomness and calls it an effect of the method, so per-seed McNemar over-claims here"
                   if o["p"] < 0.05 and o["ratio"] > 1 else
                   "no more than McNemar's test-image noise explains: here per-seed McNemar and the "
                   "method-level test tell a similar story")
        lines.append(f"- **{ds}**: the per-seed differences to the baseline vary {o['ratio']:.2f}x as much as "
                     f"McNemar's model of one checkpoint pair allows (pooled over the methods, {o['df']} df, "
                     f"chi-square p={o['p']:.2g}): {verdict}.")
    return "\n".join(lines)


def accuracy_summary(df: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per dataset and run: mean and std of the accuracy over seeds, and a CI that counts seeds
    and test images (``stats.accuracy_ci`` on the runs' predictions)."""
    rows = []
    for (ds, run), g in df.groupby(["dataset", "run"], sort=False):
        ci = stats.accuracy_ci(np.stack([correct(load_predictions(d)) for d in g.sort_values("seed").dir]), level)
        rows.append({"dataset": ds, "run": run, "mean": ci["mean"], "std": g.test_acc.std() if len(g) > 1 else np.nan,
                     "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": len(g)})
    return pd.DataFrame(rows)


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


def _test_text(r) -> str:
    if r.verdict == "not judged":
        return (f"{r.seeds} seed{'s' if r.seeds > 1 else ''}: a difference, not a verdict on the method (the study "
                f"judges a method from {MIN_SEEDS} seeds)")
    return (f"95% CI [{100 * r.diff_ci_low:+.2f}, {100 * r.diff_ci_high:+.2f}], seed-and-image test p={r.p:.3g}, "
            f"Holm over {r.family}: {r.p_holm:.3g}; P(improvement) {r.p_improve:.2f}")


def verdicts_text(vs: pd.DataFrame, dataset: str, alpha: float = 0.05) -> str:
    """Markdown, one paragraph per run of ``versus_baselines``."""
    if vs.empty:
        return "No run here has a baseline to compare with on a common seed: nothing to compare."
    out = []
    for r in vs.itertuples():
        seeds = f"{r.seeds} seed{'s' if r.seeds > 1 else ''}"
        word = {"better": "**beats**", "worse": "**is worse than**", "not judged": "**is not judged against**",
                "no significant difference": "**does not differ significantly from**"}[r.verdict]
        out.append(
            f"- **{r.run}** {word} **{r.baseline}** ({seeds}, {r.precision}): {100 * r.acc:.2f}% vs "
            f"{100 * r.acc_baseline:.2f}% ({100 * r.diff:+.2f} points; {_test_text(r)}). McNemar per seed, a "
            f"diagnostic of single checkpoints (Holm over the {r.mcnemar_tests} tests, runs x seeds, alpha={alpha}): "
            f"significantly better on {r.mcnemar_better}, worse on {r.mcnemar_worse} of {r.seeds} seed(s). Training "
            f"cost: {r.time_ratio:.2f}x the baseline's time, {r.flops_ratio:.2f}x its FLOPs."
            f"{reference_sentence(dataset, r.run, r.acc)}")
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
    extra = [(label, of_kind(every, kind)) for label, kind in
             (("the protocol ablation", "ablation"), ("distill-then-prune", "prune"), ("the tuned study", "tuned"))]
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
    pruned = of_kind(df, "prune")
    kd = sorted(pruned[pruned.method != "ce"].run.unique())
    vs = versus_baselines(df, kd, alpha, against=finetuned_with_ce)
    return vs if len(vs) else pd.DataFrame(columns=["run", "baseline", "seeds", "verdict", "diff"])


def pruning_sentence(vs: pd.DataFrame, alpha: float = 0.05) -> str:
    """Distill-then-prune in one line: how often KD fine-tuning beats CE fine-tuning."""
    if vs.empty:
        return ("- Distill-then-prune (20_pruning): no pruned model has been fine-tuned both with KD and with CE "
                "on a common seed: nothing to compare.")
    n = vs.verdict.value_counts()
    return (f"- Distill-then-prune (20_pruning): each pruned student fine-tuned with KD against the same pruned "
            f"student fine-tuned with CE (seed-and-image test, Holm over {int(vs.family.iloc[0])} pruned models, "
            f"alpha={alpha}): better in {n.get('better', 0)}, worse in {n.get('worse', 0)}, no significant "
            f"difference in {n.get('no significant difference', 0)}"
            + (f", not judged (fewer than {MIN_SEEDS} seeds) in {n['not judged']}" if n.get("not judged") else "")
            + f" of {len(vs)} pruned models; mean differences {100 * vs['diff'].min():+.2f} to {100 * vs['diff'].max():+.2f} points. "
            f"McNemar, the test of one checkpoint pair, is significant on {int(vs.mcnemar_better.sum())} (KD better) "
            f"and {int(vs.mcnemar_worse.sum())} (KD worse) of {int(vs.seeds.sum())} model pairs.")


def pruning_report(vs: pd.DataFrame, dataset: str, alpha: float = 0.05) -> str:
    """20_pruning's verdict: the one-line summary, then a paragraph per pruned model."""
    return pruning_sentence(vs, alpha) + ("\n" + verdicts_text(vs, dataset, alpha) if len(vs) else "")


def mcnemar_line(vs: pd.DataFrame) -> list[str]:
    """The per-checkpoint McNemar diagnostic next to the verdicts, naming the runs where it is
    significant on most seeds but the method-level test is not: McNemar counts the test images
    only, so on its own it would call these methods better or worse."""
    majority = vs.seeds // 2 + 1
    strong = vs[((vs.mcnemar_better >= majority) & (vs["diff"] > 0)) | ((vs.mcnemar_worse >= majority) & (vs["diff"] < 0))]
    alone = strong[~strong.verdict.isin(["better", "worse"])]
    if alone.empty:
        return []
    return ["- McNemar per seed (a test of single checkpoints: test images the only randomness) is significant in "
            "the direction of the difference on most seeds for " + ", ".join(f"**{r}**" for r in alone.run)
            + ", which the method-level test does not confirm: their seeds disagree more than one checkpoint's "
              "test images can show (30_statistics)."]


def study_findings(df: pd.DataFrame, alpha: float = 0.05, vs: dict[str, pd.DataFrame] | None = None) -> str:
    """The report's opening: per dataset, which methods beat their baseline (with the evidence
    and effect sizes), the accuracy/size and accuracy/latency trade-off, the distance to the
    reference study, whether KD helps after pruning, and what the runs cost. Generated from
    ``df``; nothing typed by hand. ``vs``: the verdicts per dataset where the caller has them
    (``summary.all_comparisons``: the README computes each dataset's once for every block)."""
    everything, df = df, of_kind(df, "study")   # the tuned comparison is tuning_report's
    parts = []
    for ds in sorted(df.dataset.unique()):
        g, every = df[df.dataset == ds], everything[everything.dataset == ds]
        runs = [r for r in g.run.unique() if r != "teacher"]
        vs_ds = (vs or {}).get(ds)
        vs_ds = versus_baselines(g, runs, alpha) if vs_ds is None else vs_ds
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
        if not vs_ds.empty:
            fam = int(vs_ds.family.iloc[0])
            for verdict, word in (("better", "Beat their no-KD baseline"), ("worse", "Worse than their baseline"),
                                  ("no significant difference", "No significant difference"),
                                  ("not judged", f"Not judged (fewer than {MIN_SEEDS} seeds)")):
                sel = vs_ds[vs_ds.verdict == verdict].sort_values("diff", ascending=False)
                if (verdict == "not judged" and sel.empty) or (verdict != "not judged" and not fam):
                    continue   # nothing of that kind; a study judging nothing says only what it compared
                items = ", ".join(f"**{r.run}** ({100 * r.diff:+.2f} points, 95% CI "
                                  f"[{100 * r.diff_ci_low:+.2f}, {100 * r.diff_ci_high:+.2f}])" if not np.isnan(r.diff_ci_low)
                                  else f"**{r.run}** ({100 * r.diff:+.2f} points, {r.seeds} seed)" for r in sel.itertuples())
                test = ("" if verdict == "not judged" else
                        f" (seed-and-image test, Holm over {fam} method{'s' if fam != 1 else ''}, alpha={alpha})")
                lines.append(f"- {word}{test}: {items or 'none'}.")
            lines += mcnemar_line(vs_ds)
            line = detectable_line(vs_ds, alpha)
            if line:
                lines.append(line)
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
        prune = of_kind(every, "prune")
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
