import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kd_helpers.analysis import stats


def preds_from_table(n11, n10, n01, n00):
    """Labels all 0; a is right on the first n11+n10, b on n11 and n01."""
    a = np.array([0] * (n11 + n10) + [1] * (n01 + n00))
    b = np.array([0] * n11 + [1] * n10 + [0] * n01 + [1] * n00)
    return np.zeros(len(a), dtype=int), a, b


def test_mcnemar_exact_branch_by_hand():
    y, a, b = preds_from_table(50, 7, 1, 10)
    r = stats.mcnemar_test(y, a, b)
    assert (r["b"], r["c"], r["exact"]) == (7, 1, True)
    # two-sided exact binomial: 2 * P(X <= 1), X ~ Bin(8, 0.5) = 2 * 9/256
    assert math.isclose(r["p"], 2 * 9 / 256, rel_tol=1e-9)
    assert r["table"].tolist() == [[50, 7], [1, 10]]


def test_mcnemar_chi_square_branch_by_hand():
    y, a, b = preds_from_table(100, 40, 20, 30)
    r = stats.mcnemar_test(y, a, b)
    chi2 = (abs(40 - 20) - 1) ** 2 / (40 + 20)
    assert not r["exact"] and math.isclose(r["statistic"], chi2, rel_tol=1e-9)
    assert math.isclose(r["p"], sps.chi2.sf(chi2, 1), rel_tol=1e-9)
    assert "significant at 0.05: yes" in stats.mcnemar_sentence("A", "B", r)


def test_holm_on_a_small_vector():
    adj, rej = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1 -> max(.04,.06)=.06
    assert np.allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert rej.tolist() == [True, False, False, True]


def test_mean_ci_coverage_sanity():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        x = rng.normal(1.0, 2.0, size=5)
        _, _, lo, hi, _ = stats.mean_ci(x)
        hits += lo <= 1.0 <= hi
    assert 0.92 <= hits / 400 <= 0.98
    m, sd, lo, hi, n = stats.mean_ci([0.9])
    assert n == 1 and math.isnan(lo)


def test_ece_perfect_and_known_miscalibration():
    y = np.array([0, 1, 0, 1])
    assert stats.ece(np.eye(2)[y], y) == 0.0
    # always 0.8 confident in class 0, right half the time: ECE = |0.5 - 0.8| = 0.3
    probs = np.tile([0.8, 0.2], (4, 1))
    assert math.isclose(stats.ece(probs, y), 0.3, rel_tol=1e-9)


def test_agreement_kl_nll_on_fixed_tensors():
    t = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    s = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert math.isclose(stats.agreement(t, s), 2 / 3)
    pt, ps = stats.softmax(t), stats.softmax(s)
    kl = np.mean([(pt[i] * np.log(pt[i] / ps[i])).sum() for i in range(3)])
    assert math.isclose(stats.mean_kl(t, s), kl, rel_tol=1e-9)
    assert stats.mean_kl(t, t) == pytest.approx(0, abs=1e-12)
    assert math.isclose(stats.nll(t, np.array([0, 1, 0])), -np.mean(np.log(pt[[0, 1, 2], [0, 1, 0]])), rel_tol=1e-9)


def test_paired_bootstrap_brackets_the_difference():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 500)
    a = np.where(rng.random(500) < 0.9, y, (y + 1) % 3)
    b = np.where(rng.random(500) < 0.8, y, (y + 1) % 3)
    r = stats.paired_bootstrap(y, a, b, n_boot=500)
    assert r["ci_low"] < r["diff"] < r["ci_high"] and r["ci_low"] > 0


def test_summaries_and_relative_to_teacher():
    df = pd.DataFrame({"dataset": "d", "run": ["teacher", "s", "s"], "seed": [0, 0, 1],
                       "test_acc": [0.9, 0.8, 0.82], "test_errors": [10, 20, 18],
                       "params": [1000, 100, 100], "latency_ms": [2.0, 0.5, 0.5]})
    s = stats.summarize(df)
    row = s[s.run == "s"].iloc[0]
    assert row.n == 2 and math.isclose(row["mean"], 0.81) and row.ci_low < 0.81 < row.ci_high
    r = stats.relative_to_teacher(df)
    assert r[r.run == "s"].retention_pct.round(4).tolist() == [round(80 / 0.9, 4), round(82 / 0.9, 4)]
    assert r[r.run == "s"].compression.tolist() == [10, 10] and r[r.run == "s"].speedup.tolist() == [4, 4]


def test_versus_reference():
    y, a, b = preds_from_table(100, 40, 5, 30)
    vs = stats.versus_reference(y, {"base": b, "new": a}, "base")
    assert vs.run.tolist() == ["new"] and vs.significant.tolist() == [True]
    # a right on 40 more examples than b, b on 5 more than a, of 175: +20 points, bootstrap CI around it
    assert vs.acc_diff.item() == pytest.approx(35 / 175) and vs.diff_ci_low.item() < 0.2 < vs.diff_ci_high.item()


def test_pareto_front_by_hand_and_one_cost_per_network():
    from kd_helpers.analysis.findings import pareto_front
    g = pd.DataFrame({"run": ["teacher", "baseline", "kd", "dist", "small", "prune_kd"],
                      "model": ["big", "s", "s", "s", "tiny", "s"],
                      "params": [900, 100, 100, 100, 10, 50],   # the pruned copy of s is another network
                      "test_acc": [0.90, 0.80, 0.85, 0.79, 0.70, 0.81],
                      "latency_ms": [9.0, 3.2, 3.1, 2.0, 1.0, 2.5]})   # dist's network timed faster by chance
    # s costs 2.77 ms for all three runs: dist (less accurate) is not on the front because of noise
    assert pareto_front(g, "latency_ms") == ["small", "prune_kd", "kd", "teacher"]


def test_same_score_on_every_seed_says_the_runs_differ(tmp_path):
    from kd_helpers.analysis.findings import same_score_on_every_seed
    from kd_helpers.store.results import write_npz
    y = np.zeros(6, dtype=np.int64)
    preds = {0: [0, 0, 0, 0, 1, 2], 1: [1, 2, 0, 0, 0, 0], 2: [0, 0, 0, 0, 1, 2]}   # 2 errors each
    rows = []
    for s, p in preds.items():
        d = tmp_path / f"seed_{s}"
        d.mkdir()
        write_npz(d / "predictions.npz", {"labels": y, "logits": np.eye(3)[p].astype(np.float16)})
        rows.append({"run": "teacher", "seed": s, "test_errors": 2, "dir": d})
    rows += [{"run": "kd", "seed": s, "test_errors": 2 + s, "dir": None} for s in range(2)]   # differ: skipped
    df = pd.DataFrame(rows)
    assert same_score_on_every_seed(df) == [
        "teacher (2 errors on each of 3 seeds; their predictions differ on 0-4 test images, **two seeds predict "
        "identically: check that they are not copies of one run**)"]
    assert same_score_on_every_seed(df[df.seed < 2]) == [
        "teacher (2 errors on each of 2 seeds; their predictions differ on 4-4 test images, so these are distinct runs)"]


def _ablation_table(role, rows):
    from kd_helpers.analysis.ablation_report import summarise
    return summarise(pd.DataFrame([
        {"role": role, "protocol": p, "study": st, "val_size": v, "n_val": v, "val_acc": va, "test_acc": te,
         "test_acc_last_epoch": te, "seed": 0, "model": "m", "selected_epoch": 20, "precision": "bfloat16",
         "train_s": 60.0} for p, st, v, va, te in rows]))


def test_ablation_chooses_on_the_studys_validation_split_and_says_what_stays_unexplained():
    from kd_helpers.analysis.ablation_report import interpretation
    rows = [  # protocol, study, val_size, val_acc, test_acc
        ("reference", False, 6000, 0.980, 0.9815), ("study's", True, 6000, 0.985, 0.9874),
        ("smaller split", False, 1200, 0.990, 0.9880),   # its higher val_acc is on another (smaller) set
        ("jitter", False, 6000, 0.9855, 0.9891)]
    t = _ablation_table("teacher", rows)
    assert t["best on validation"].tolist() == [False, False, False, True]
    text = interpretation(t, "mnist")   # reference teacher 98.95%: 0.80 short as run, the study closes 0.59
    # 0.05 points on 6,000 images: two standard errors are 2 * sqrt(.985 * .015 / 6000) = 0.31 points
    assert ("validation picks *jitter* (98.55% validation), 0.05 points ahead of the study's protocol (*study's*) "
            "on 6,000 validation images: within their noise (two standard errors, 0.31 points), so the study keeps "
            "its protocol.") in text
    assert ("**Not reproduced:** the reference protocol as run here is 0.80 points short of the reference's number "
            "and the study's protocol closes 0.59 of them. The row closest to the reference on test is *jitter* "
            "(98.91%; reported, never chosen: the test set chooses nothing), so 0.04 points remain unexplained by "
            "this ablation (not varied: the max-norm weight constraint") in text
    clear = interpretation(_ablation_table("teacher", [r if r[0] != "jitter" else (*r[:3], 0.992, 0.9900) for r in rows]),
                     "mnist")
    assert "beyond their noise (two standard errors, 0.31 points): the study's protocol is not" in clear
    assert "so the ablation's rows account for the whole gap." in clear   # 99.00% >= 98.95%
    above = interpretation(t.assign(test_acc=t.test_acc + 0.005), "mnist")   # the study 99.24% > 98.95% > 98.65% as run
    assert "Not reproduced" not in above
    assert ("The reference protocol as run here is 0.30 points short of the reference's number, so that number is "
            "matched by the study's changes, not reproduced under the protocol as published") in above
    assert "short of" not in interpretation(t.assign(test_acc=t.test_acc + 0.01), "mnist")   # 99.15% as run: reproduced


def test_the_kd_rows_of_the_ablation_name_what_they_did_not_vary():
    from kd_helpers.analysis.ablation_report import interpretation
    from kd_helpers.store.names import run_name
    rows = [("reference", False, 6000, 0.980, 0.9830), ("study's", True, 6000, 0.984, 0.9834),
            ("T=4", False, 6000, 0.986, 0.9850)]
    text = interpretation(_ablation_table("kd", rows), "mnist")   # reference KD 98.85%: 0.55 short as run
    assert "**vanilla KD student**: validation picks *T=4*" in text and "within their noise" in text
    assert ("0.55 points short of the reference's number and the study's protocol closes 0.04 of them. The row "
            "closest to the reference on test is *T=4* (98.50%; reported, never chosen: the test set chooses "
            "nothing), so 0.35 points remain unexplained by this ablation (not varied: the teacher it distils "
            "from") in text
    assert run_name("kd", {"loss": {"T": 4.0}, "model": "m"}, "ablation") == "ablation_kd__T=4__model=m"


def test_the_ablation_says_when_the_studys_protocol_widens_the_gap_and_what_kd_gains_under_each_protocol():
    from kd_helpers.analysis.ablation_report import interpretation
    kd = _ablation_table("kd", [("ref", False, 6000, 0.985, 0.9862), ("ours", True, 6000, 0.982, 0.9828)])
    base = _ablation_table("baseline", [("ref", False, 6000, 0.980, 0.9820), ("ours", True, 6000, 0.987, 0.9862)])
    text = interpretation(pd.concat([base, kd], ignore_index=True), "mnist")
    assert "the reference protocol as run here is 0.23 points short of the reference's number and the study's " \
           "protocol widens it by 0.34 points." in text
    assert ("- **KD against the no-KD student** (test, 1 seed per row, reported): under the reference protocol, 98.62% "
            "against 98.20% (+0.42 points); under the study's protocol, 98.28% against 98.62% (-0.34 points).") in text


def test_a_pruned_model_fine_tuned_with_kd_is_compared_with_its_ce_twin_only():
    from kd_helpers.analysis.findings import finetuned_with_ce
    rows = [("prune_struct_50_kd_srd", "kd", "srd", "structured", 0.5), ("prune_struct_50_ce_srd", "ce", "srd", "structured", 0.5),
            ("prune_struct_70_ce_srd", "ce", "srd", "structured", 0.7), ("prune_unstru_50_ce_srd", "ce", "srd", "unstructured", 0.5),
            ("prune_struct_50_ce_baseline", "ce", "baseline", "structured", 0.5), ("kd", "kd", None, None, None)]
    df = pd.DataFrame(rows, columns=["run", "method", "prune_source", "prune_kind", "prune_amount"])
    assert finetuned_with_ce(df, "prune_struct_50_kd_srd") == "prune_struct_50_ce_srd"
    assert finetuned_with_ce(df, "prune_struct_50_ce_srd") is None and finetuned_with_ce(df, "kd") is None


def test_the_ablation_is_read_from_finished_runs_and_only_complete_roles_are_summarised():
    """Rows are found by what the runs record (kind, role, protocol), not by their names: the
    names here are arbitrary, and a study run named like an ablation row is not one."""
    from kd_helpers.ablation import specs
    from kd_helpers.analysis.ablation_report import from_results, summary_line
    rows = []
    for i, (label, role, spec, study) in enumerate(specs("mnist", "paper", 0)):
        if role == "teacher" or (role == "baseline" and study):   # the baseline's other rows are missing
            rows.append({"dataset": "mnist", "run": spec.run if study else f"x{i}", "seed": 0, "kind": spec.kind,
                         "role": spec.role, "protocol": spec.protocol, "model": spec.model, "val_size": 6000,
                         "val_acc": 0.98 + i / 1000,
                         "test_acc": 0.9815 if i == 0 else 0.9874 if study else 0.983, "test_acc_last_epoch": 0.98,
                         "selected_epoch": 20, "precision": "bfloat16", "train_s": 60.0, "n_val": 6000})
    decoy = {**rows[0], "run": rows[0]["run"], "kind": "study", "role": None, "protocol": None, "test_acc": 0.5}
    t = from_results(pd.DataFrame(rows + [decoy]), "mnist")
    assert set(t.role) == {"teacher"} and t.study.sum() == 1
    assert summary_line(t, "mnist") == (
        "- Protocol ablation (01_teacher appendix; test accuracy, 1 seed per row, reported and never chosen): "
        "teacher 98.15% under the reference's protocol as run here, 98.74% under the study's (reference 98.95%).")
    assert summary_line(from_results(pd.DataFrame(rows).iloc[:0], "mnist"), "mnist") == ""


def test_the_mcnemar_line_names_the_checkpoint_verdicts_the_method_test_does_not_confirm():
    from kd_helpers.analysis.findings import mcnemar_line
    vs = pd.DataFrame({"run": ["a", "b", "c", "d"], "diff": [0.02, 0.01, -0.015, 0.01],
                       "verdict": ["better", "no significant difference", "no significant difference", "not judged"],
                       "seeds": [3, 3, 3, 1], "mcnemar_better": [3, 2, 0, 1], "mcnemar_worse": [0, 0, 2, 0]})
    (line,) = mcnemar_line(vs)
    # a is confirmed by the method-level test; b, c and the one-seed d rest on McNemar alone
    assert "for **b**, **c**, **d**, which the method-level test does not confirm" in line and "**a**" not in line
    assert mcnemar_line(vs.assign(mcnemar_better=0, mcnemar_worse=0)) == []


def test_the_whole_studys_compute_is_the_sum_of_its_runs():
    from kd_helpers.analysis.findings import study_compute
    every = pd.DataFrame({"dataset": ["a", "a", "b"], "train_s": [3600.0, 1800.0, 7200.0],
                          "train_flops": [1e12, 1e12, 2e12], "precision": ["bfloat16", "bfloat16", "float32"]})
    line = study_compute(every)
    assert "(training time as each run recorded it, summed; bfloat16, float32): 3 runs, 3.50 h, 4.00e+12" in line
    assert "(a 2 runs 1.50 h, b 1 run 2.00 h)" in line


# ----------------------------------------------------------------- the seed-and-image verdict test
def _flips(rng, n_images, better, worse, base_correct=0.8):
    """One seed's pair of correctness rows: ``better`` images only a gets right, ``worse`` only b."""
    a = (rng.random(n_images) < base_correct).astype(float)
    b = a.copy()
    idx = rng.permutation(n_images)
    b[idx[:better]], a[idx[:better]] = 0, 1
    a[idx[better:better + worse]], b[idx[better:better + worse]] = 0, 1
    return a, b


def test_seed_image_test_by_hand():
    a = np.array([[1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]], float)
    b = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [0, 1, 0, 1]], float)
    d = a - b          # per-seed means .25 .25 .25; per-image means 1/3 1/3 1/3 0
    n, big_n = d.shape
    row, col = d.mean(1), d.mean(0)
    ms_s, ms_i = big_n * row.var(ddof=1), n * col.var(ddof=1)
    ms_e = ((d - row[:, None] - col[None, :] + d.mean()) ** 2).sum() / ((n - 1) * (big_n - 1))
    var_s, var_i = max((ms_s - ms_e) / big_n, 0), max((ms_i - ms_e) / n, 0)
    r = stats.seed_image_test(a, b)
    assert r["diff"] == pytest.approx(0.25)
    assert (r["var_seed"], r["var_image"], r["var_resid"]) == pytest.approx((var_s, var_i, ms_e))
    se2 = var_s / n + var_i / big_n + ms_e / (n * big_n)
    assert r["se"] == pytest.approx(np.sqrt(se2))
    # Satterthwaite df of the mean squares the components imply, at least n - 1
    es, ei = ms_e + big_n * var_s, ms_e + n * var_i
    df = (es + ei - ms_e) ** 2 / (es ** 2 / (n - 1) + ei ** 2 / (big_n - 1) + ms_e ** 2 / ((n - 1) * (big_n - 1)))
    assert r["df"] == pytest.approx(max(df, n - 1))
    assert r["p"] == pytest.approx(2 * sps.t.sf(0.25 / np.sqrt(se2), r["df"]))
    assert r["ci_low"] == pytest.approx(0.25 - sps.t.ppf(0.975, r["df"]) * np.sqrt(se2))
    assert 0 <= r["p_improve"] <= 1 and r["boot_ci_low"] <= 0.25 <= r["boot_ci_high"]
    with pytest.raises(ValueError, match="at least 2 paired seeds"):
        stats.seed_image_test(a[:1], b[:1])
    with pytest.raises(ValueError, match="same seeds and images"):
        stats.seed_image_test(a, b[:2])


def test_variance_components_recover_a_simulated_design():
    rng = np.random.default_rng(3)
    n, big_n = 40, 4000
    x = rng.normal(0, 0.3, (n, 1)) + rng.normal(0, 2.0, (1, big_n)) + rng.normal(0, 1.0, (n, big_n))
    v = stats.variance_components(x)
    assert v["var_seed"] == pytest.approx(0.09, rel=0.5)
    assert v["var_image"] == pytest.approx(4.0, rel=0.1) and v["var_resid"] == pytest.approx(1.0, rel=0.05)


def test_mcnemar_significant_on_every_seed_but_the_seed_spread_makes_the_method_ns():
    rng = np.random.default_rng(0)
    rows = [_flips(rng, 2000, k, 0) for k in (20, 100, 180)]     # +1, +5, +9 points
    a, b = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
    assert all(stats.mcnemar_test(np.ones(2000), ra, rb)["p"] < 0.001 for ra, rb in rows)
    r = stats.seed_image_test(a, b)
    assert r["diff"] == pytest.approx(0.05) and r["p"] > 0.05
    assert r["ci_low"] < 0 < r["ci_high"]


def test_mcnemar_ns_on_every_seed_but_the_method_difference_is_significant():
    rng = np.random.default_rng(1)
    rows = [_flips(rng, 10000, 215, 185) for _ in range(10)]      # +0.3 points on every seed, other images
    a, b = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
    assert all(stats.mcnemar_test(np.ones(10000), ra, rb)["p"] > 0.1 for ra, rb in rows)
    r = stats.seed_image_test(a, b)
    assert r["diff"] == pytest.approx(0.003) and r["p"] < 0.01 and r["ci_low"] > 0 and r["p_improve"] > 0.99


def test_accuracy_ci_counts_test_images_even_when_every_seed_agrees():
    rng = np.random.default_rng(2)
    row = (rng.random(10000) < 0.99).astype(float)
    c = np.stack([row, row, row])      # three identical seeds: zero seed variance
    r = stats.accuracy_ci(c)
    # only the test images vary: the CI is test sampling's, about +-0.2 points at 99% of 10,000
    half = sps.norm.ppf(0.975) * np.sqrt(row.var(ddof=1) / 10000)
    assert r["ci_high"] - r["mean"] == pytest.approx(half, rel=0.01) and 0.0015 < half < 0.0025
    one = stats.accuracy_ci(c[:1])     # one seed: test images only, normal
    assert one["ci_high"] - one["mean"] == pytest.approx(half, rel=1e-6)


def test_detectable_effect_and_seeds_needed():
    # seed variance 1e-4 (1 point SD), image 0.01, residual 0.02 on 10,000 images
    comp = (1e-4, 0.01, 0.02)
    small = stats.detectable_effect(*comp, 3, 10000, tests=1)
    big = stats.detectable_effect(*comp, 3, 10000, tests=13)
    assert 0 < small < big
    # the power at the detectable effect is the target
    se, df = stats.standard_error(*comp, 3, 10000)
    assert stats.power(big, se, df, 0.05 / 13) == pytest.approx(0.8, abs=1e-6)
    # seeds needed: the smallest n that reaches the effect, more for a smaller effect; None if unreachable
    n1, n05 = stats.seeds_needed(0.01, *comp, 10000, tests=13), stats.seeds_needed(0.005, *comp, 10000, tests=13)
    assert n1 < n05
    assert stats.detectable_effect(*comp, n1, 10000, 13) <= 0.01 < stats.detectable_effect(*comp, n1 - 1, 10000, 13)
    assert stats.seeds_needed(0.0001, 0.0, 0.5, 0.0, 100) is None


def test_overdispersion_against_mcnemars_model():
    v = [[1e-6] * 3, [1e-6] * 3]
    calm = stats.overdispersion([[0.001, 0.0, -0.001], [0.0, 0.001, 0.0]], v)
    wild = stats.overdispersion([[0.01, -0.01, 0.02], [0.0, 0.02, -0.02]], v)
    assert calm["df"] == 4 and calm["ratio"] < 1.5 and calm["p"] > 0.05
    assert wild["ratio"] > 100 and wild["p"] < 1e-6


def test_the_forest_plot_puts_tuned_rows_beside_the_published_ones():
    from kd_helpers.analysis import summary
    vs = pd.DataFrame({"run": ["kd", "dkd"], "baseline": "baseline", "diff": [0.01, -0.02], "diff_ci_low": [0.0, -0.03],
                       "diff_ci_high": [0.02, -0.01], "verdict": ["better", "worse"]})
    tuned = vs.assign(run=["r1", "r2"], role=["kd", "dkd"], diff=[0.015, 0.0], verdict="no significant difference")
    orig = summary.comparisons
    try:
        summary.comparisons = lambda df, d: vs
        fig = summary.forest(pd.DataFrame({"dataset": ["mnist"]}), {"mnist": tuned}, datasets=("mnist",))
    finally:
        summary.comparisons = orig
    ax = fig.axes[0]
    markers = [l for l in ax.lines if l.get_marker() in ("o", "D")]
    assert sorted(l.get_marker() for l in markers) == ["D", "D", "o", "o"]          # two rows per method
    assert sorted(round(float(x), 1) for l in markers for x in l.get_xdata()) == [-2.0, 0.0, 1.0, 1.5]
