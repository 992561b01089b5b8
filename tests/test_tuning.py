"""Tuning (kd_helpers.tuning): the same budget per variant, trial 0 = the as-published values,
the test set never read, pruning through fit's on_epoch, a dead worker's trial taken up again,
tuned runs on reported seeds only, and the journals travelling with the published store."""
import json
import re
from dataclasses import replace

import optuna
import pytest

from kd_helpers import plan, publish, tuning

from kd_helpers.analysis import tuning_report
from kd_helpers.core.data import Dataset
from kd_helpers.core.util import resolve_precision
from kd_helpers.experiment import train_teacher
from kd_helpers.store.presets import SEARCH_SPACE, SHARED_SPACE, TUNED, TUNING_SEED, tuning_budget
from kd_helpers.store.results import check_run, finished_runs, load_results, read_json, run_dir

DS, PROFILE = "mnist5k", "smoke"


@pytest.fixture()
def store(tmp_path):
    """The study's teacher (as published) and the tuned study's own (what its KD runs distil from)."""
    from kd_helpers.experiment import run
    train_teacher(DS, PROFILE, results_dir=tmp_path, progress=False)
    run(tuning.teacher_spec(DS, PROFILE), tmp_path, profile=PROFILE, progress=False)
    return tmp_path


def test_every_range_holds_its_literature_value_or_moves_only_a_zero():
    for name in TUNED:
        for ds in ("mnist", "cifar10"):
            if name in tuning.variants(ds):
                lit, first = tuning.literature(name, ds, "paper"), tuning.first_trial(name, ds, "paper")
                moved = {k for k in lit if lit[k] != first[k]}
                assert all(lit[k] == 0 for k in moved), (name, ds, moved)
    assert {m for m in SEARCH_SPACE} >= {tuning.variant(v).method for v in TUNED}
    assert tuning_budget("mnist", "paper") == (20, 10) and tuning_budget("cifar10", "paper") == (12, 8)
    assert "at" not in tuning.variants("mnist") and "at" in tuning.variants("cifar10")


def test_a_study_spends_its_budget_starting_from_the_published_values(store, monkeypatch):
    seen = []
    batches = Dataset.batches

    def spy(self, split="train", *a, **k):
        seen.append((split, len(self.y[split])))
        return batches(self, split, *a, **k)
    monkeypatch.setattr(Dataset, "batches", spy)
    study = tuning.tune(DS, "kd", PROFILE, store)
    trials = study.get_trials()
    n = tuning_budget(DS, PROFILE)[0]
    assert len(trials) == n and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[0].params == tuning.first_trial("kd", DS, PROFILE)
    assert set(trials[0].params) == set(SHARED_SPACE) | set(SEARCH_SPACE["kd"])
    # the test split of a trial's data is empty and never iterated
    assert seen and all(n_images == 0 for split, n_images in seen if split == "test")
    assert not [s for s, n_images in seen if s == "test" and n_images]
    for t in trials:
        d = run_dir(store, DS, f"tune_kd__trial={t.number:03d}", TUNING_SEED)
        m, cfg = read_json(d / "metrics.json"), read_json(d / "config.json")
        assert t.value == m["val_acc"] and not any(k.startswith("test") for k in m)
        assert cfg["trial"] == {"study": f"{DS}/kd", "number": t.number} and cfg["train"]["test_curve"] is False
        assert not (d / "model.pt").exists()
    assert tuning.finished(store, DS, "kd", PROFILE)
    assert tuning.tune(DS, "kd", PROFILE, store).get_trials() == trials   # spent: nothing more runs
    # trials stay out of every table; they are read with trials=True
    assert not load_results(store, PROFILE).run.str.startswith("tune_").any()
    assert load_results(store, PROFILE, trials=True).run.str.startswith("tune_kd").sum() == n


def test_the_pruner_stops_a_trial_through_on_epoch(store, monkeypatch):
    make = tuning.trial_spec
    monkeypatch.setattr(tuning, "trial_spec", lambda *a: replace(make(*a), train=replace(make(*a).train, epochs=3)))
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    study = tuning.tune(DS, "baseline", PROFILE, store)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.PRUNED] * tuning_budget(DS, PROFILE)[0]
    assert all(len(t.intermediate_values) == 1 for t in study.get_trials())   # stopped after its first epoch
    d = run_dir(store, DS, "tune_baseline__trial=000", TUNING_SEED)
    assert read_json(d / "metrics.json")["stopped_early"] and read_json(d / "metrics.json")["epochs_trained"] == 1
    assert tuning_report.trials_summary(DS, PROFILE, store).loc["baseline", "pruned"] == tuning_budget(DS, PROFILE)[0]


def test_a_trial_whose_worker_died_is_taken_up_with_its_values(store, monkeypatch):
    monkeypatch.setattr(tuning, "ORPHAN_GRACE_S", 0.0)
    root = store
    study, t = tuning._next(root, DS, "dml", PROFILE, tuning_budget(DS, PROFILE)[0])   # asked, never trained
    assert t.state == optuna.trial.TrialState.RUNNING and t.number == 0
    done = tuning.tune(DS, "dml", PROFILE, store).get_trials()
    assert done[0].state == optuna.trial.TrialState.COMPLETE and done[0].params == t.params
    assert len(done) == tuning_budget(DS, PROFILE)[0]


def test_tuned_runs_are_planned_once_tuning_is_finished_and_never_on_the_tuning_seed(store, monkeypatch):
    params = {"dataset": DS, "profile": PROFILE, "results_dir": str(store)}
    jobs = plan.jobs("14_tuning", params)
    assert [j.run for j in jobs] == ["tuned_teacher"] + [f"tune_{v}" for v in tuning.variants(DS)]
    # KD studies wait for the tuned study's teacher, not the as-published one (older training code)
    kd = next(j for j in jobs if j.run == "tune_kd")
    assert kd.level == 1 and kd.needs(store) == run_dir(store, DS, "tuned_teacher", 0)
    assert jobs[0].level == 0 and jobs[0].spec.kind == "tuned" and jobs[0].spec.model == \
        plan.spec_for("teacher", DS, PROFILE).model
    tuning.tune(DS, "baseline", PROFILE, store)
    tuned = [j for j in plan.jobs("14_tuning", params) if j.spec.kind == "tuned" and j.level == 2]
    assert [(j.run, j.seed, j.level) for j in tuned] == [("tuned_baseline", 0, 2)]
    best = tuning.best_params(store, DS, "baseline", PROFILE)
    assert tuned[0].spec.train.lr == best["lr"] and tuned[0].spec.train.weight_decay == best["weight_decay"]
    assert tuned[0].spec.train.test_curve and tuned[0].spec.trial is None
    with pytest.raises(ValueError, match="tuning seed"):
        tuning.tuned_spec("baseline", DS, PROFILE, TUNING_SEED, best)
    # the table's seeds train in its tuned teacher's precision, whatever this machine's is
    here = resolve_precision("auto")
    assert tuned[0].spec.train.precision == tuning.table_precision(store, DS) == here
    assert tuning.precision_note(store, DS) is None
    other = "fp32" if here != "fp32" else "bf16"
    metrics = run_dir(store, DS, "tuned_teacher", 0) / "metrics.json"
    teacher_in = lambda p: metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "precision": p}))
    seeds_planned = lambda: [j for j in plan.jobs("14_tuning", params) if j.spec.kind == "tuned" and j.level == 2]
    monkeypatch.delenv("KD_PRECISION", raising=False)
    teacher_in(other)   # the teacher trained on a machine of the other kind, where it is native here too
    monkeypatch.setattr(tuning, "cpu_has_native_bf16", lambda: True)
    tuned = seeds_planned()
    assert tuned[0].spec.train.precision == other and tuned[0].spec.resolved().train.precision == other
    assert tuning.precision_note(store, DS).startswith(f"{DS}: its tuned table trains in {other} (its tuned teacher's")
    # a bf16 table on a CPU without native bf16 (emulated, 12-14x slower): the seeds wait for another
    # machine and the study's log says so, unless KD_PRECISION=bf16 asks for them here
    teacher_in("bf16")
    monkeypatch.setattr(tuning, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(tuning, "resolve_precision", lambda p, device=None: "fp32")
    assert seeds_planned() == []
    assert "its tuned seeds are left to a CPU with AMX/AVX512-BF16" in tuning.precision_note(store, DS)
    monkeypatch.setenv("KD_PRECISION", "bf16")
    assert [j.spec.train.precision for j in seeds_planned()] == ["bf16"]


def test_the_reading_says_when_trials_trained_in_two_precisions():
    import pandas as pd
    trials = pd.DataFrame({"trials": [12, 4], "pruned": [8, 0], "failed": [0, 0], "gain on val (pts)": [0.0, 0.1],
                           "precision": ["bf16 12", "bf16 2, fp32 2"]},
                          index=pd.Index(["baseline", "fitnet_baseline"], name="variant"))
    text = tuning_report.interpretation(trials, pd.DataFrame(), "cifar10")
    assert "Trials trained in bf16 and fp32 (their machines'; within one study: `fitnet_baseline`)" in text
    assert "1 study has not used its whole budget yet." in text
    one = tuning_report.interpretation(trials.assign(precision=["bf16 12", "bf16 4"]), pd.DataFrame(), "cifar10")
    assert "Trials trained in" not in one


def test_published_trials_keep_no_predictions_and_the_journals_travel(store, tmp_path_factory):
    tuning.tune(DS, "baseline", PROFILE, store)
    to = tmp_path_factory.mktemp("published")
    publish.publish(store, to)
    trials = [d for d in finished_runs(to) if d.parent.name.startswith("tune_")]
    assert trials and all(not (d / "predictions.npz").exists() and not check_run(d) for d in trials)
    assert (to / "_tuning" / DS / "baseline.journal").read_bytes() == (store / "_tuning" / DS / "baseline.journal").read_bytes()
    assert len(load_results(to, PROFILE, trials=True)) == len(load_results(store, PROFILE, trials=True))
    fresh = tmp_path_factory.mktemp("fresh")
    publish.restore(to, fresh)
    assert tuning.finished(fresh, DS, "baseline", PROFILE)
    summary = tuning_report.trials_summary(DS, PROFILE, fresh)
    assert summary.loc["baseline", "trials"] == tuning_budget(DS, PROFILE)[0]
    assert summary.loc["baseline", "precision"] == f"{resolve_precision('auto')} {tuning_budget(DS, PROFILE)[0]}"


def test_a_tuned_table_that_mixes_training_code_is_refused(store, monkeypatch):
    from kd_helpers.experiment import run
    real_budget = tuning_budget(DS, PROFILE)
    assert tuning_report.tuned_vs_published(DS, PROFILE, store).empty   # only the tuned teacher: no table yet
    for name in ("baseline", "kd"):
        tuning.tune(DS, name, PROFILE, store)
        best = tuning.best_params(store, DS, name, PROFILE)
        run(tuning.tuned_spec(name, DS, PROFILE, 0, best), store, profile=PROFILE, progress=False)
    line = tuning_report.status_line(DS, PROFILE, store)
    assert "teacher trained" in line and "tuned configurations retrained: 2 of" in line   # the teacher is no configuration
    table = tuning_report.tuned_vs_published(DS, PROFILE, store)
    assert list(table.index) == ["baseline", "kd"]     # one code: the table is made; its teacher is no row
    kd = read_json(run_dir(store, DS, "tuned_kd", 0) / "config.json")
    assert (kd["teacher"], kd["kind"], kd["role"]) == ("tuned_teacher", "tuned", "kd")

    # the README leads with a tuned table only once it is complete (every variant on every tuned seed)
    from kd_helpers import report
    from kd_helpers.analysis import summary
    from kd_helpers.store import presets
    monkeypatch.setattr(summary, "MAIN", (DS,))
    assert not tuning_report.complete(DS, PROFILE, store)          # 2 of the profile's variants
    monkeypatch.setattr(presets, "tuned_variants", lambda d: ("baseline", "kd"))
    monkeypatch.setattr(presets, "tuning_budget", lambda d, p: (real_budget[0], 1))
    assert tuning_report.complete(DS, PROFILE, store)
    from kd_helpers.experiment import spec_for
    for name in ("baseline", "kd"):   # their as-published runs, for what tuning changed
        run(spec_for(name, DS, PROFILE, 0), store, profile=PROFILE, progress=False)
    block = report.summary_block(load_results(store, PROFILE), store, PROFILE)
    assert block.index("**MNIST, every method tuned** (%d trials per variant" % real_budget[0]) \
        < block.index("**MNIST, as published**")
    assert "every method and baseline tuned with the same budget on validation (Optuna; MNIST: " in block
    assert "is under way" not in block                                # the status line is for unfinished tables
    tuned_md = block.split("**MNIST, every method tuned**")[1].split("**MNIST, as published**")[0]
    assert "| kd " in tuned_md and "tuned_" not in tuned_md and "tuning changed (points)" in tuned_md
    # what tuning changed, per variant in the table (signed, as computed) and in one sentence of the abstract
    df = load_results(store, PROFILE)
    moved = summary.tuned_table(df, DS, tuning_report.leads(df, PROFILE, store)[DS]["vs"])
    assert all(re.fullmatch(r"[+-]\d+\.\d\d", c) for c in moved["tuning changed (points)"])
    assert f"| {moved['tuning changed (points)'].iloc[0]} " in tuned_md
    assert "On MNIST, tuning moved each variant's mean accuracy by " in block
    real = tuning_report.load_results
    mixed = lambda *a, **k: real(*a, **k).assign(training_code=lambda d: [f"code{i % 2}" for i in range(len(d))])
    monkeypatch.setattr(tuning_report, "load_results", mixed)
    with pytest.raises(ValueError, match="tuned table mixes training code"):
        tuning_report.tuned_vs_published(DS, PROFILE, store)
