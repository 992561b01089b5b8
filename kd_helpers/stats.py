"""Statistics for comparing runs: seed aggregates, McNemar + Holm, paired bootstrap,
calibration and teacher-student agreement. Pure functions of arrays / DataFrames."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests


# ----------------------------------------------------------------- over seeds

def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """Mean, std (ddof=1), and a Student-t confidence interval of the mean."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    m = float(v.mean()) if n else float("nan")
    if n < 2:
        return m, float("nan"), float("nan"), float("nan"), n
    sd = float(v.std(ddof=1))
    h = float(sps.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    return m, sd, m - h, m + h, n


def summarize(df: pd.DataFrame, by=("dataset", "run"), metric: str = "test_acc", level: float = 0.95) -> pd.DataFrame:
    """Per group: mean, std, n and a ``level`` CI of ``metric`` over seeds (and mean error count)."""
    rows = []
    for keys, g in df.groupby(list(by), sort=False):
        m, sd, lo, hi, n = mean_ci(g[metric], level)
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        row.update({"mean": m, "std": sd, "ci_low": lo, "ci_high": hi, "n": n})
        if "test_errors" in g:
            row["errors_mean"] = float(g["test_errors"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_seed_comparison(df: pd.DataFrame, run_a: str, run_b: str, metric: str = "test_acc") -> dict:
    """Per-seed differences a - b over seeds both runs have, with a paired t-test."""
    a = df[df.run == run_a].set_index("seed")[metric]
    b = df[df.run == run_b].set_index("seed")[metric]
    common = a.index.intersection(b.index)
    d = (a[common] - b[common]).to_numpy()
    m, sd, lo, hi, n = mean_ci(d)
    p = float(sps.ttest_rel(a[common], b[common]).pvalue) if n >= 2 and sd > 0 else float("nan")
    return {"a": run_a, "b": run_b, "n_seeds": n, "mean_diff": m, "ci_low": lo, "ci_high": hi, "p_ttest": p,
            "diffs": d.tolist()}


# ----------------------------------------------------------------- paired per-sample tests

def mcnemar_test(y, pred_a, pred_b, exact_below: int = 25) -> dict:
    """McNemar's test from per-sample predictions of two classifiers on the same examples.

    b = a right & b wrong, c = a wrong & b right. Exact binomial test when ``b + c < exact_below``,
    else the continuity-corrected chi-square (statsmodels).
    """
    y, pa, pb = (np.asarray(v) for v in (y, pred_a, pred_b))
    ra, rb = pa == y, pb == y
    table = np.array([[np.sum(ra & rb), np.sum(ra & ~rb)], [np.sum(~ra & rb), np.sum(~ra & ~rb)]])
    b, c = int(table[0, 1]), int(table[1, 0])
    exact = (b + c) < exact_below
    res = mcnemar(table, exact=exact, correction=True)
    return {"b": b, "c": c, "table": table, "statistic": float(res.statistic), "p": float(res.pvalue),
            "exact": exact}


def holm(pvalues, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm-Bonferroni adjusted p-values and rejections."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p, p.astype(bool)
    reject, adj, _, _ = multipletests(p, alpha=alpha, method="holm")
    return adj, reject


def pairwise_mcnemar(y, preds: dict[str, np.ndarray], alpha: float = 0.05) -> pd.DataFrame:
    """All pairs: b, c, raw and Holm-adjusted p, significance. One row per pair."""
    rows = [{"a": a, "b_name": b, **{k: v for k, v in mcnemar_test(y, preds[a], preds[b]).items() if k != "table"}}
            for a, b in combinations(preds, 2)]
    df = pd.DataFrame(rows)
    if len(df):
        df["p_holm"], df["significant"] = holm(df.p, alpha)
    return df.rename(columns={"b_name": "other"})


def pvalue_matrix(pairs: pd.DataFrame, names: list[str], col: str = "p_holm") -> pd.DataFrame:
    m = pd.DataFrame(np.nan, index=names, columns=names)
    for r in pairs.itertuples():
        m.loc[r.a, r.other] = m.loc[r.other, r.a] = getattr(r, col)
    return m


def mcnemar_sentence(name_a: str, name_b: str, res: dict, alpha: float = 0.05, p_key: str = "p") -> str:
    p = res[p_key]
    return (f"{name_a} vs {name_b}: b={res['b']}, c={res['c']}, p={p:.3g} "
            f"({'exact' if res['exact'] else 'chi-square'}), significant at {alpha}: {'yes' if p < alpha else 'no'}")


def paired_bootstrap(y, pred_a, pred_b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Accuracy difference a - b with a percentile CI from resampling test examples jointly."""
    y, pa, pb = (np.asarray(v) for v in (y, pred_a, pred_b))
    d = (pa == y).astype(float) - (pb == y).astype(float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)}


# ----------------------------------------------------------------- calibration and agreement

def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def ece(probs, y, n_bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width confidence bins of |acc - conf| * share."""
    probs, y = np.asarray(probs), np.asarray(y)
    conf, pred = probs.max(1), probs.argmax(1)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(total)


def reliability(probs, y, n_bins: int = 15) -> pd.DataFrame:
    probs, y = np.asarray(probs), np.asarray(y)
    conf, pred = probs.max(1), probs.argmax(1)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    rows = [{"bin": b, "confidence": conf[bins == b].mean(), "accuracy": (pred[bins == b] == y[bins == b]).mean(),
             "count": int((bins == b).sum())} for b in range(n_bins) if (bins == b).any()]
    return pd.DataFrame(rows)


def nll(logits, y) -> float:
    p = softmax(logits)
    return float(-np.log(np.clip(p[np.arange(len(y)), np.asarray(y)], 1e-12, None)).mean())


def agreement(t_logits, s_logits) -> float:
    """Share of examples where teacher and student predict the same class (top-1)."""
    return float((np.asarray(t_logits).argmax(1) == np.asarray(s_logits).argmax(1)).mean())


def mean_kl(t_logits, s_logits) -> float:
    """Mean KL(teacher || student) of the softmax outputs at T=1."""
    pt, ps = softmax(t_logits), softmax(s_logits)
    return float((pt * (np.log(np.clip(pt, 1e-12, None)) - np.log(np.clip(ps, 1e-12, None)))).sum(1).mean())


def relative_to_teacher(df: pd.DataFrame, teacher_run: str = "teacher") -> pd.DataFrame:
    """Add retention (% of teacher accuracy), compression (teacher/student params) and speed-up
    (teacher/student single-sample latency) per dataset, using the mean teacher over seeds."""
    out = []
    for ds, g in df.groupby("dataset", sort=False):
        t = g[g.run == teacher_run]
        if t.empty:
            out.append(g)
            continue
        g = g.assign(retention_pct=100 * g.test_acc / t.test_acc.mean(),
                     compression=t.params.mean() / g.params,
                     speedup=t.latency_ms.mean() / g.latency_ms)
        out.append(g)
    return pd.concat(out, ignore_index=True) if out else df


def calibration_table(y, logits: dict[str, np.ndarray], teacher: str | None = "teacher", n_bins: int = 15) -> pd.DataFrame:
    """Per run: accuracy, ECE, NLL, and (if the teacher is present) agreement and KL(teacher||run)."""
    rows = []
    for name, z in logits.items():
        row = {"run": name, "accuracy": float((np.asarray(z).argmax(1) == y).mean()),
               "ece": ece(softmax(z), y, n_bins), "nll": nll(z, y)}
        if teacher in logits and name != teacher:
            row.update(agreement=agreement(logits[teacher], z), kl_from_teacher=mean_kl(logits[teacher], z))
        rows.append(row)
    return pd.DataFrame(rows)


def versus_reference(y, preds: dict[str, np.ndarray], reference: str, alpha: float = 0.05,
                     n_boot: int = 2000) -> pd.DataFrame:
    """Every run against ``reference`` on the same test examples: McNemar (Holm over the family),
    and a paired-bootstrap CI of the accuracy difference."""
    rows = []
    for name, p in preds.items():
        if name == reference:
            continue
        m = mcnemar_test(y, p, preds[reference])
        bs = paired_bootstrap(y, p, preds[reference], n_boot=n_boot)
        rows.append({"run": name, "vs": reference, "b": m["b"], "c": m["c"], "p": m["p"], "exact": m["exact"],
                     "acc_diff": bs["diff"], "diff_ci_low": bs["ci_low"], "diff_ci_high": bs["ci_high"]})
    df = pd.DataFrame(rows)
    if len(df):
        df["p_holm"], df["significant"] = holm(df.p, alpha)
    return df
