"""Statistics for comparing runs: the seed-and-image verdict test, seed aggregates, McNemar +
Holm (a per-checkpoint diagnostic), paired bootstrap, the detectable effect, calibration and
teacher-student agreement. Pure functions of arrays / DataFrames."""
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


# ----------------------------------------------------------------- methods: seeds and test images

def _correct(x) -> np.ndarray:
    c = np.asarray(x, dtype=float)
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"Expected per-seed per-image correctness of shape (seeds, images), got {c.shape}.")
    return c


def variance_components(x) -> dict:
    """Two-way random-effects decomposition of a (seeds, images) matrix ``x`` of per-image
    differences between two methods (or of one method's correctness).

    ``x[s, i] = mu + seed_s + image_i + residual_si``: ``var_seed`` is the training randomness (a
    seed that is better on every image), ``var_image`` which images the test set happened to draw
    (the same images serve every seed, so this part is invisible in the spread over seeds),
    ``var_resid`` the seed-by-image rest (what McNemar sees on one checkpoint pair). Estimated
    from the mean squares (ANOVA without replication), each floored at 0; with one seed only the
    images' total variance is known (``var_image``, ``var_seed = nan``)."""
    x = _correct(x)
    n, big_n = x.shape
    col = x.mean(0)
    if n == 1:
        return {"n": 1, "N": big_n, "var_seed": float("nan"), "var_image": float(col.var(ddof=1)) if big_n > 1 else 0.0,
                "var_resid": 0.0}
    row, grand = x.mean(1), x.mean()
    ms_seed = big_n * row.var(ddof=1)
    ms_image = n * col.var(ddof=1) if big_n > 1 else 0.0
    resid = x - row[:, None] - col[None, :] + grand
    ms_resid = float((resid ** 2).sum() / max((n - 1) * (big_n - 1), 1))
    return {"n": n, "N": big_n, "var_seed": max((ms_seed - ms_resid) / big_n, 0.0),
            "var_image": max((ms_image - ms_resid) / n, 0.0), "var_resid": ms_resid}


def standard_error(var_seed: float, var_image: float, var_resid: float, n: int, big_n: int) -> tuple[float, float]:
    """SE of the grand mean of an (n seeds, N images) design, ``var_seed/n + var_image/N +
    var_resid/(nN)``, and its Satterthwaite degrees of freedom (at least n-1: with the seed part
    dominant it is t on n-1 df, with the image part dominant close to normal)."""
    if n < 2:
        return float(np.sqrt(var_image / big_n)), float("inf")
    ms_s, ms_i, ms_e = var_resid + big_n * var_seed, var_resid + n * var_image, var_resid
    se2 = (ms_s + ms_i - ms_e) / (n * big_n)
    den = ms_s ** 2 / (n - 1) + ms_i ** 2 / max(big_n - 1, 1) + ms_e ** 2 / max((n - 1) * (big_n - 1), 1)
    df = (ms_s + ms_i - ms_e) ** 2 / den if den > 0 else float("inf")
    return float(np.sqrt(max(se2, 0.0))), float(max(df, n - 1))


def accuracy_ci(correct, level: float = 0.95) -> dict:
    """A method's accuracy over seeds with a CI that counts seeds and test images
    (``variance_components`` of its correctness, ``standard_error``)."""
    c = _correct(correct)
    v = variance_components(c)
    se, df = standard_error(v["var_seed"], v["var_image"], v["var_resid"], v["n"], v["N"])
    q = float(sps.t.ppf(0.5 + level / 2, df))
    m = float(c.mean())
    return {"mean": m, "se": se, "df": df, "ci_low": m - q * se, "ci_high": m + q * se, "n_seeds": v["n"],
            "n_images": v["N"]}


def seed_image_test(correct_a, correct_b, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Method a against method b over the seeds both have, on the same test images.

    ``correct_a``/``correct_b``: (seeds, images) 0/1 correctness, row k of each from seed k (the
    pairing). The mean difference D has the standard error of ``standard_error`` from the
    ``variance_components`` of the per-image differences (seed, test-image and residual
    variance), tested with t on its Satterthwaite df (at least n-1): a method-level test, where
    McNemar on one pair of checkpoints counts the residual only. Also a two-level bootstrap (seeds
    resampled, then images, the same images for both methods and all seeds), its percentile CI,
    and the probability of improvement ``P(D* > 0)`` over the bootstrap. Needs 2 or more seeds."""
    a, b = _correct(correct_a), _correct(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"Both methods need the same seeds and images: shapes {a.shape} and {b.shape}.")
    n, big_n = a.shape
    if n < 2:
        raise ValueError("The seed-and-image test needs at least 2 paired seeds (1 gives no seed variance).")
    d = a - b
    diff = float(d.mean())
    v = variance_components(d)
    se, df = standard_error(v["var_seed"], v["var_image"], v["var_resid"], n, big_n)
    q = float(sps.t.ppf(0.5 + level / 2, df))
    t = diff / se if se > 0 else (0.0 if diff == 0 else np.sign(diff) * np.inf)
    p = float(2 * sps.t.sf(abs(t), df)) if se > 0 else (1.0 if diff == 0 else 0.0)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n, size=(n_boot, n))
    images = rng.integers(0, big_n, size=(n_boot, big_n))
    per_image = np.stack([d[s].mean(0) for s in seeds])              # seeds resampled, per image
    boots = np.take_along_axis(per_image, images, 1).mean(1)         # then images, shared by both
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": diff, "se": se, "t": float(t), "df": df, "p": p, "ci_low": diff - q * se,
            "ci_high": diff + q * se, "boot_ci_low": float(lo), "boot_ci_high": float(hi),
            "p_improve": float((boots > 0).mean()), "n_seeds": n, "n_images": big_n,
            "var_seed": v["var_seed"], "var_image": v["var_image"], "var_resid": v["var_resid"]}


def power(effect: float, se: float, df: int, alpha: float) -> float:
    """Power of the two-sided t test (df) at level ``alpha`` to detect ``effect`` with standard error ``se``."""
    if se <= 0:
        return 1.0 if effect else alpha
    crit, ncp = sps.t.ppf(1 - alpha / 2, df), effect / se
    # the far tail is negligible, and scipy returns NaN for it at large non-centrality
    return float(sps.nct.sf(crit, df, abs(ncp)) + np.nan_to_num(sps.nct.cdf(-crit, df, abs(ncp))))


def detectable_effect(var_seed: float, var_image: float, var_resid: float, n_seeds: int, n_images: int,
                      tests: int = 1, alpha: float = 0.05, target_power: float = 0.8) -> float:
    """The smallest difference the seed-and-image test detects with ``target_power`` at
    ``alpha / tests`` (Holm's first step, the level a family of ``tests`` must pass), given the
    variance components and the design (seeds, test images)."""
    from scipy.optimize import brentq
    if n_seeds < 2:
        return float("inf")
    se, df = standard_error(var_seed, var_image, var_resid, n_seeds, n_images)
    if se == 0:
        return 0.0
    level = alpha / max(tests, 1)
    return float(brentq(lambda e: power(e, se, df, level) - target_power, 0.0, 1000 * se + 1.0))


def seeds_needed(effect: float, var_seed: float, var_image: float, var_resid: float, n_images: int, tests: int = 1,
                 alpha: float = 0.05, target_power: float = 0.8, most: int = 200) -> int | None:
    """Paired seeds per method for ``detectable_effect`` to reach ``effect``; None when even
    ``most`` seeds do not (the test-image component alone is then too large)."""
    for n in range(2, most + 1):
        if detectable_effect(var_seed, var_image, var_resid, n, n_images, tests, alpha, target_power) <= effect:
            return n
    return None


def overdispersion(per_seed_diffs: list, mcnemar_vars: list) -> dict:
    """How much more the per-seed differences of several runs spread than McNemar's model of
    one checkpoint pair allows (test images the only randomness).

    ``per_seed_diffs``: per run, its per-seed accuracy differences to its baseline;
    ``mcnemar_vars``: per run, per seed, the variance of that difference under McNemar's
    model, ``((b + c) / N - ((b - c) / N)^2) / N``. Pooled ratio ``sum (n-1) s^2 / sum (n-1) mean(v)``
    with a chi-square test of ``sum (n-1) s^2 / mean(v)`` on ``sum (n-1)`` df."""
    stat, df, num, den = 0.0, 0, 0.0, 0.0
    for d, v in zip(per_seed_diffs, mcnemar_vars):
        d, v = np.asarray(d, float), np.asarray(v, float)
        if len(d) < 2 or v.mean() <= 0:
            continue
        s2 = d.var(ddof=1)
        stat += (len(d) - 1) * s2 / v.mean()
        df += len(d) - 1
        num += (len(d) - 1) * s2
        den += (len(d) - 1) * v.mean()
    if not df:
        return {"ratio": float("nan"), "df": 0, "p": float("nan")}
    return {"ratio": num / den, "df": df, "p": float(sps.chi2.sf(stat, df))}


# ----------------------------------------------------------------- paired per-sample tests

def mcnemar_test(y, pred_a, pred_b, exact_below: int = 25) -> dict:
    """McNemar's test from per-sample predictions of two classifiers on the same examples:
    whether one trained checkpoint beats another (e.g. a pruned model fine-tuned two ways), with
    the test images the only randomness. Not a test of methods: see ``seed_image_test``.

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
