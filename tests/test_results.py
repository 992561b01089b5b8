import json

import pandas as pd
import pytest

from kd_helpers import experiment
from kd_helpers.experiment import ConfigMismatch, RunSpec, distill, load_model, run, train_teacher
from kd_helpers.store.results import load_histories, load_results, run_dir
from kd_helpers.core.util import atomic_write_json


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        atomic_write_json(p, {"a": Boom()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]  # no temp files left behind


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    train_teacher("mnist5k", "smoke", results_dir=root)
    return root


def test_run_directory_contents_and_tidy_frame(store):
    distill("kd", "mnist5k", "smoke", seeds=[0, 1], results_dir=store)
    d = run_dir(store, "mnist5k", "kd", 1)
    for f in ("config.json", "env.json", "metrics.json", "history.csv", "predictions.npz", "model.pt"):
        assert (d / f).exists(), f
    assert not (d / "checkpoint.pt").exists()
    env = json.loads((d / "env.json").read_text())
    assert "torch" in env["packages"] and "git_commit" in env
    df = load_results(store)
    assert {"teacher", "kd"} <= set(df.run) and {"test_acc", "params", "flops", "latency_ms", "wall_s"} <= set(df.columns)
    assert len(load_histories(store)) == len(df)  # smoke: one epoch each


def test_finished_run_is_reused_not_retrained(store, monkeypatch):
    distill("baseline", "mnist5k", "smoke", results_dir=store)
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("retrained a finished run"))
    r = distill("baseline", "mnist5k", "smoke", results_dir=store)
    assert r[0]["metrics"]["test_acc"] >= 0
    # how a run is evaluated does not change what it learned: still reused, config kept as trained
    r = distill("baseline", "mnist5k", "smoke", results_dir=store, eval_batch_size=7)
    assert r[0]["config"]["train"]["eval_batch_size"] != 7


def test_changed_config_is_not_overwritten_silently(store):
    distill("baseline", "mnist5k", "smoke", results_dir=store)
    with pytest.raises(ConfigMismatch, match="lr: 0.001 -> 0.01"):
        distill("baseline", "mnist5k", "smoke", results_dir=store, lr=0.01)


def test_teacher_that_does_not_fit_the_architecture(store):
    path = run_dir(store, "mnist5k", "teacher", 0) / "model.pt"
    with pytest.raises(ValueError, match="does not fit architecture 'mlp_student'"):
        load_model(path, expected_arch="mlp_student", in_shape=(1, 28, 28))


def test_missing_teacher_says_which_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_teacher"):
        distill("kd", "mnist5k", "smoke", results_dir=tmp_path)


def test_unknown_method(tmp_path):
    with pytest.raises(ValueError, match="Available: .*srd_dist"):
        run(RunSpec("mnist5k", "kd2", "mlp_student"), tmp_path)


def test_test_logits_refuses_runs_on_different_test_examples(store, tmp_path):
    import shutil

    import numpy as np

    from kd_helpers.store.results import test_logits
    distill("baseline", "mnist5k", "smoke", results_dir=store)
    df = load_results(store)
    y, logits = test_logits(df, "mnist5k", seed=0)
    assert {"teacher", "baseline"} <= set(logits) and len(y) == 128
    # a run evaluated on another test subset (another data config) cannot be paired with the rest
    odd = df[df.run == "baseline"].iloc[0]
    copy = tmp_path / "odd"
    shutil.copytree(odd.dir, copy)
    np.savez_compressed(copy / "predictions.npz", labels=np.zeros(5, dtype=int), logits=np.zeros((5, 10)))
    bad = pd.concat([df, pd.DataFrame([{**odd.to_dict(), "run": "odd", "dir": str(copy)}])])
    with pytest.raises(ValueError, match="and 'odd' of mnist5k .* different test examples"):
        test_logits(bad, "mnist5k", seed=0)


def test_test_logits_takes_the_teacher_seed_the_students_name(tmp_path):
    from kd_helpers.store.results import test_logits
    train_teacher("mnist5k", "smoke", seeds=[1], results_dir=tmp_path)
    from dataclasses import replace
    run(replace(experiment.spec_for("kd", "mnist5k", "smoke", seed=2), teacher_seed=1), tmp_path)
    y, logits = test_logits(load_results(tmp_path), "mnist5k", seed=2)
    assert set(logits) == {"kd", "teacher"}   # the teacher is seed 1, not an assumed seed 0


def test_training_throughput_counts_training_time_only(tmp_path):
    import numpy as np

    from kd_helpers.store.results import save_run, training_throughput

    def fake(run, method, model, seed, epochs):
        cfg = {"dataset": "d", "run": run, "method": method, "model": model, "seed": seed,
               "kind": "prune" if run.startswith("prune") else "study"}
        # each epoch: 12 s in all, of which 2 s evaluate
        history = [{"epoch": e + 1, "time_s": 12.0, "eval_s": 2.0} for e in range(epochs)]
        save_run(run_dir(tmp_path, "d", run, seed), config=cfg, env={"threads": 2}, history=history,
                 labels=np.zeros(2, int), logits=np.zeros((2, 2), np.float32), extra_logits={},
                 metrics={"n_train": 1000, "params": 10, "test_acc": 0.5, "precision": "float32"})
    fake("baseline", "ce", "small", 0, 3)   # 3000 images / 30 s
    fake("baseline", "ce", "small", 1, 1)   # 1000 images / 10 s
    fake("kd", "kd", "small", 0, 3)         # a KD run: not a network's own throughput
    fake("prune_x", "ce", "small", 0, 3)    # pruned: not the network either
    tp = training_throughput(load_results(tmp_path))
    assert tp[["model", "images_per_s", "threads"]].to_dict("records") == [
        {"model": "small", "images_per_s": 100.0, "threads": 2}]


def test_a_run_records_the_commit_its_process_loaded_not_head_when_it_finishes(monkeypatch):
    from kd_helpers.core import util
    monkeypatch.setattr(util, "git_commit", lambda: "0" * 40)   # a commit made while a worker trains
    assert util.environment()["git_commit"] == util.LOADED_COMMIT != "0" * 40


def test_only_an_edit_of_the_code_makes_a_commit_dirty(monkeypatch, tmp_path):
    import subprocess
    from kd_helpers.core import util
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,
                                    check=True, capture_output=True)
    (tmp_path / "kd_helpers").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "kd_helpers" / "fit.py").write_text("x = 1\n")
    (tmp_path / "reports" / "table.md").write_text("| a |\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.setattr(util, "REPO_ROOT", tmp_path)
    head = util.git_commit()
    assert len(head) == 40
    (tmp_path / "reports" / "table.md").write_text("| b |\n")   # a regenerated report: the study's output
    assert util.git_commit() == head
    (tmp_path / "kd_helpers" / "fit.py").write_text("x = 2\n")   # the code that trains a run
    assert util.git_commit() == head + "-dirty"


def test_the_training_code_fingerprint_ignores_documentation_and_sees_code(tmp_path):
    from kd_helpers.core.util import code_fingerprint
    (tmp_path / "losses").mkdir()
    src = 'def f(x):\n    """Doc."""\n    return x + 1  # why\n'
    (tmp_path / "losses" / "a.py").write_text(src)
    (tmp_path / "train.py").write_text('"""Module doc."""\nSTEP = 1\n')
    parts = ("losses", "train.py")
    base = code_fingerprint(tmp_path, parts)
    (tmp_path / "losses" / "a.py").write_text(src.replace("Doc.", "Another doc.").replace("# why", "# because"))
    assert code_fingerprint(tmp_path, parts) == base
    (tmp_path / "losses" / "a.py").write_text(src.replace("x + 1", "x + 2"))
    assert code_fingerprint(tmp_path, parts) != base



def test_a_change_waiting_for_the_training_code_freeze_still_applies():
    """``patches/`` holds tested changes to the training code that wait until a table is trained
    (patches/README.md); one that no longer applies to main would be lost work, found too late."""
    import shutil
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    waiting = sorted((root / "patches").glob("*.patch"))
    listed = (root / "patches" / "README.md").read_text()
    for patch in waiting:
        assert f"`{patch.name}`" in listed, f"{patch.name} is not listed in patches/README.md with when to apply it"
        done = subprocess.run(["git", "apply", "--check", str(patch)], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, f"{patch.name} no longer applies: {done.stderr}"

def test_a_table_of_runs_from_two_training_codes_or_precisions_is_refused():
    import pandas as pd

    from kd_helpers.analysis.findings import one_training
    one = pd.DataFrame({"run": ["baseline", "kd"], "training_code": ["abc", "abc"], "precision": ["bf16", "bf16"]})
    assert one_training(one) == ("abc", "bf16")
    mixed = one.assign(training_code=["abc", "def"])
    with pytest.raises(ValueError, match="mixes training code .*abc: baseline; def: kd"):
        one_training(mixed, "the tuned mnist table")
    with pytest.raises(ValueError, match="not recorded: baseline"):
        one_training(one.assign(training_code=[None, "abc"]))
    # one code, but kd trained on a machine without native bf16: its precision came with the machine
    with pytest.raises(ValueError, match="the tuned cifar10 table mixes training precision .*bf16: baseline; fp32: kd"):
        one_training(one.assign(precision=["bf16", "fp32"]), "the tuned cifar10 table")


def test_run_kinds_select_rows_by_what_runs_are_not_by_their_names():
    """``of_kind`` reads the recorded kind, never the name; a table without kinds is refused."""
    import pandas as pd
    from kd_helpers.store.results import not_of_kind, of_kind
    df = pd.DataFrame({"run": ["kd", "prune_struct_50_kd_kd", "ablation_x", "tuned_kd", "odd_name"],
                       "kind": ["study", "prune", "ablation", "tuned", "prune"]})
    assert of_kind(df, "prune").run.tolist() == ["prune_struct_50_kd_kd", "odd_name"]   # the record decides
    assert not_of_kind(df, "prune", "ablation").run.tolist() == ["kd", "tuned_kd"]
    with pytest.raises(ValueError, match="no 'kind' column"):
        of_kind(df.drop(columns="kind"), "study")
    with pytest.raises(ValueError, match="Unknown run kind.*'pruned'"):
        of_kind(df, "pruned")


def test_one_parser_for_study_names():
    """``<dataset>@<pair>``: one parser (presets.study_parts), which load_results exposes as columns."""
    from kd_helpers.store.presets import split_study, study_parts
    assert study_parts("cifar100@wrn_40_2-wrn_16_2") == ("cifar100", "wrn_40_2-wrn_16_2")
    assert study_parts("mnist") == ("mnist", None)
    assert study_parts("imagefolder:/data/a@b") == ("imagefolder:/data/a@b", None)   # an "@" in a tree's path
    with pytest.raises(ValueError, match="Unknown teacher-student pair 'x-y'"):
        split_study("cifar10@x-y")
