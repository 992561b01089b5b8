import json
import importlib.util
from pathlib import Path

import pytest

from kd_helpers.experiment import distill, train_teacher
from kd_helpers.report import (END, START, TEND, TSTART, compare_stores, provenance, results_table, update_readme,
                               update_readme_timings)
from kd_helpers.store.results import load_results
from kd_helpers.study import record_timings

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def test_benchmark_tiny_mode_numbers_are_consistent(capsys):
    spec = importlib.util.spec_from_file_location("throughput", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--tiny"])
    out = capsys.readouterr().out
    rows = {r["scenario"]: r for r in res["rows"]}
    assert set(rows) == {"CIFAR-10 baseline student", "CIFAR-10 KD student, no aug", "CIFAR-10 KD student, crop+flip",
                         "MNIST KD student"}
    for r in res["rows"]:
        assert r["usual_img_s"] > 0 and r["ours_img_s"] > 0
        assert r["ratio"] == pytest.approx(r["ours_img_s"] / r["usual_img_s"])   # speed-up = ours / usual
        if res.get("amp"):
            assert r["ratio_amp"] == pytest.approx(r["ours_amp_img_s"] / r["usual_img_s"])
        # the printed table says what the numbers say (rounded as printed)
        line = next(ln for ln in out.splitlines() if ln.startswith(f"| {r['scenario']} |"))
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert float(cells[1]) == pytest.approx(r["usual_img_s"], abs=0.5)
        assert float(cells[2]) == pytest.approx(r["ours_img_s"], abs=0.5)
        assert float(cells[3].rstrip("x")) == pytest.approx(r["ratio"], abs=0.005)
    # the epoch-cost ratio is the baseline's speed over KD's (both in images/s)
    assert res["kd_over_baseline_epoch_cost"] == pytest.approx(
        rows["CIFAR-10 baseline student"]["ours_img_s"] / rows["CIFAR-10 KD student, no aug"]["ours_img_s"])
    assert res["teacher_fraction_of_matmul"] == pytest.approx(res["teacher_train_gflops"] / res["matmul_gflops"])
    assert 0 < res["teacher_fraction_of_matmul"] < 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    train_teacher("mnist5k", "smoke", results_dir=root)
    distill("kd", "mnist5k", "smoke", seeds=[0, 1], results_dir=root)
    return root


def test_results_table_reference_format(store):
    t = results_table(load_results(store), "mnist5k")
    assert list(t.columns[:8]) == ["Model", "Arch", "Seeds", "Errors", "Accuracy", "95% CI", "Params", "Latency (ms)"]
    assert t.set_index("Model").loc["kd", "Seeds"] == 2 and "±" in t.set_index("Model").loc["kd", "Accuracy"]


def test_results_table_latency_is_the_networks_not_the_runs(store):
    df = load_results(store)
    df.loc[(df.run == "kd") & (df.seed == 0), "latency_ms"] = 1.0   # timed while another job ran
    df.loc[(df.run == "kd") & (df.seed == 1), "latency_ms"] = 3.0
    df.loc[df.run == "teacher", "latency_ms"] = 7.0
    t = results_table(df, "mnist5k").set_index("Model")["Latency (ms)"]
    assert t.to_dict() == {"teacher": "7.000", "kd": "2.000"}


def test_update_readme_rewrites_only_the_marked_section(store, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{START}\nold\n{END}\n\nafter\n")
    update_readme("smoke", store, readme)
    text = readme.read_text()
    assert "old" not in text and text.startswith("# title\n\nbefore") and text.endswith("after\n")
    assert "| kd " in text and "mnist5k" in text and "--update-readme" in text
    assert "training precision:" in text and "commit" in text


def test_the_cost_block_sums_the_runs_own_training_time_per_notebook(store, tmp_path):
    """Not the time a re-execution took: each run's recorded train_s, summed per study and the
    notebook whose plan lists it (teacher: 01_teacher, kd: 03_vanilla_kd)."""
    doc = tmp_path / "results.md"
    doc.write_text(f"intro\n{TSTART}\nold\n{TEND}\n{START}\nkept\n{END}\n")
    update_readme_timings("smoke", readme=doc, results_dir=store)
    text = doc.read_text()
    assert "old" not in text and "kept" in text and "own training time" in text
    rows = {r[1]: r for r in ([c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
                              if line.startswith("| mnist5k"))}
    df = load_results(store)
    for nb, runs in (("01_teacher", ["teacher"]), ("03_vanilla_kd", ["kd"])):
        g = df[df.run.isin(runs)]
        assert rows[nb][2] == str(len(g)) and float(rows[nb][3]) == round(g.train_s.sum() / 3600, 2)
    assert rows["**total**"][2] == str(len(df))
    assert list(rows)[:2] == ["01_teacher", "03_vanilla_kd"]   # study order


def test_provenance_counts_precisions_and_old_runs_count_as_fp32(store):
    df = load_results(store)
    prec = df.precision.iloc[0]
    assert prec in ("fp32", "bf16") and f"{prec} (3 runs)" in provenance(df)   # the config's vocabulary
    assert "fp32 (3 runs)" in provenance(df.drop(columns="precision"))  # runs from before the field


def test_precision_has_one_vocabulary_old_records_included(store, tmp_path):
    """Runs that recorded torch's dtype names (``bfloat16``) or nothing read as the config's
    ``bf16`` / ``fp32``, in load_results and in the histories."""
    import shutil
    from kd_helpers.store.results import load_histories, write_manifest
    from kd_helpers.core.util import precision_label
    assert [precision_label(v) for v in ("bfloat16", "float16", "float32", None, float("nan"), "bf16")] == \
        ["bf16", "fp16", "fp32", "fp32", "fp32", "bf16"]
    old = tmp_path / "old"
    shutil.copytree(store, old)
    run = next(p.parent for p in old.rglob("metrics.json"))
    m = json.loads((run / "metrics.json").read_text())
    m["precision"] = "bfloat16"
    (run / "metrics.json").write_text(json.dumps(m))
    import pandas as pd
    pd.read_csv(run / "history.csv").assign(precision="bfloat16").to_csv(run / "history.csv", index=False)
    write_manifest(run)   # as the run recorded itself then
    df = load_results(old)
    assert set(df.precision) <= {"fp32", "bf16"} and "bf16" in set(df.precision)
    h = load_histories(old)
    assert set(h.precision) <= {"fp32", "bf16"} and "bf16" in set(h.precision)


def test_provenance_counts_runs_per_commit_and_names_unrecorded_ones(store, tmp_path):
    import shutil

    from kd_helpers.store.results import write_manifest
    copy = tmp_path / "s"
    shutil.copytree(store, copy)
    envs = sorted(copy.glob("*/*/seed_*/env.json"))
    for f, c in zip(envs, ["0123456789abcdef", "0123456789abcdef-dirty", None]):
        f.write_text(json.dumps({**json.loads(f.read_text()), "git_commit": c}))
        write_manifest(f.parent)   # an edited record, re-signed: the run stays intact
    from kd_helpers.core.util import TRAINING_CODE_FINGERPRINT
    text = provenance(load_results(copy))
    assert "commits: 0123456 (1), 0123456-dirty (1), not recorded (1);" in text
    # every run of this store was trained by the code under test: one fingerprint, all three runs
    assert text.endswith(f"training-code fingerprint (`util.code_fingerprint`): {TRAINING_CODE_FINGERPRINT} (3)")


def test_compare_stores_pairs_the_same_runs(store):
    a = load_results(store)
    b = a.assign(test_acc=a.test_acc - 0.01, train_s=a.train_s / 2)
    t = compare_stores(a, b.iloc[1:], "fp32", "bf16")
    assert len(t) == 2  # only runs present in both
    assert (t["Δ (points)"] == -1.0).all() and (t["Speed-up"] == 2.0).all()



def test_parallel_benchmark_writes_its_ratio_into_its_readme(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("parallel", BENCH.parent / "parallel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text("x\n<!-- parallel:start -->\nold\n<!-- parallel:end -->\n")
    monkeypatch.setattr(mod, "inline", lambda pairs, seeds, root: 30.0)
    monkeypatch.setattr(mod, "local", lambda pairs, seeds, root, jobs: 20.0)
    mod.main(["--only", "03_vanilla_kd", "--update-readme", "--json", str(tmp_path / "r.json")])
    text = (tmp_path / "README.md").read_text()
    assert "**1.50x**" in text and "| 30 s | 20 s |" in text and "old" not in text


def test_verdict_cell_shows_the_difference_its_interval_and_the_mcnemar_diagnostic():
    import pandas as pd

    from kd_helpers.analysis.findings import verdict_cell
    v = pd.Series(dict(baseline="baseline", verdict="better", diff=0.0123, diff_ci_low=0.004, diff_ci_high=0.0206,
                       p_holm=0.012, mcnemar_better=2, mcnemar_worse=0, seeds=3))
    assert verdict_cell(v) == "better: +1.23 [+0.40, +2.06], p=0.012; McNemar per seed 2 better, 0 worse of 3"
    # two seeds: an interval, no verdict (and no p: the method is not judged)
    v = pd.Series(dict(baseline="fitnet_baseline", verdict="not judged", diff=-0.002, diff_ci_low=-0.01,
                       diff_ci_high=0.006, p_holm=float("nan"), mcnemar_better=1, mcnemar_worse=1, seeds=2))
    assert verdict_cell(v) == ("not judged (2 seeds) vs fitnet_baseline: -0.20 [-1.00, +0.60]; McNemar per seed "
                               "1 better, 1 worse of 2")


def test_dropout_benchmark_tiny_mode_prints_what_it_measured(capsys):
    spec = importlib.util.spec_from_file_location("dropout_bench", BENCH.with_name("dropout.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--tiny"])
    out = capsys.readouterr().out
    for name, (old, new, none) in res["steps"].items():
        cells = [c.strip() for c in next(ln for ln in out.splitlines() if ln.startswith(f"| {name} |")).split("|")[1:-1]]
        assert float(cells[1].replace(",", "")) == pytest.approx(old, abs=0.5)
        assert float(cells[3].rstrip("x")) == pytest.approx(new / old, abs=0.005)      # ratio = fast / nn.Dropout
        assert float(cells[5].rstrip("x")) == pytest.approx(none / old, abs=0.005)     # the no-dropout ceiling
    t, r = res["trial"].values()
    assert f"| trial / reported run | {t / r:.2f}x |" in out
