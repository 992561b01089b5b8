import json
import os
import shutil

import numpy as np
import pytest

from kd_helpers.experiment import distill, train_teacher
from kd_helpers.analysis import stats
from kd_helpers.publish import compact_logits, publish
from kd_helpers.store.results import DamagedRun, load_predictions, load_results, run_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    train_teacher("mnist5k", "smoke", seeds=[0, 1], results_dir=root, progress=False)
    distill("kd", "mnist5k", "smoke", seeds=[0, 1], results_dir=root, progress=False)
    return root


def test_published_store_reads_like_the_original_and_is_compact(store, tmp_path):
    out = tmp_path / "pub"
    assert len(publish(store, out)) == 4
    a, b = load_results(store), load_results(out)
    cols = ["dataset", "run", "seed", "test_acc", "test_errors", "params", "train_s", "precision"]
    assert a[cols].sort_values(["run", "seed"]).to_numpy().tolist() == b[cols].sort_values(["run", "seed"]).to_numpy().tolist()
    for r in a.itertuples():
        p, q = load_predictions(r.dir), load_predictions(out / "mnist5k" / r.run / f"seed_{r.seed}")
        assert q["logits"].dtype == np.float16 and (p["logits"].argmax(1) == q["logits"].argmax(1)).all()
        assert np.abs(stats.softmax(p["logits"]) - stats.softmax(q["logits"])).max() < 1e-3
        assert abs(stats.nll(p["logits"], p["labels"]) - stats.nll(q["logits"], q["labels"])) < 1e-3
    assert (run_dir(out, "mnist5k", "teacher", 0) / "model.pt").exists()       # the students' teacher keeps its weights
    assert not (run_dir(out, "mnist5k", "teacher", 1) / "model.pt").exists()   # a teacher no student distils from does not
    assert not (run_dir(out, "mnist5k", "kd", 0) / "model.pt").exists()        # students do not
    size = lambda d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    assert size(out) < 0.5 * size(store)
    manifest = json.loads((run_dir(out, "mnist5k", "kd", 1) / "manifest.json").read_text())
    assert manifest["published_from"]["model.pt"]["sha256"]    # the original's identity is kept


def test_compact_logits_are_relative_to_the_top_one_and_floored():
    z = np.array([[1.0, 3.0, -20.0], [5.0, 5.0 - 1e-6, 4.0]], dtype=np.float32)
    c = compact_logits(z)
    assert c.dtype == np.float16
    assert c[0].tolist() == [-2.0, 0.0, -16.0]
    assert c[1].argmax() == 0 and c[1, 1] < 0   # a near-tie keeps its order
    np.testing.assert_allclose(stats.softmax(c), stats.softmax(z), atol=2e-7)


def test_a_store_in_an_older_format_is_republished(store, tmp_path):
    out = tmp_path / "pub"
    publish(store, out)
    m = run_dir(out, "mnist5k", "kd", 0) / "manifest.json"
    old = json.loads(m.read_text())
    old.pop("format")
    m.write_text(json.dumps(old))
    publish(store, out)
    assert json.loads(m.read_text())["format"] == json.loads((run_dir(out, "mnist5k", "kd", 1) / "manifest.json").read_text())["format"]


def test_a_published_run_is_reused_not_retrained(store, tmp_path, monkeypatch):
    from kd_helpers import experiment
    out = tmp_path / "pub"
    publish(store, out)
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("retrained a published run"))
    r = distill("kd", "mnist5k", "smoke", seeds=[1], results_dir=out, progress=False)[0]
    assert r["metrics"]["test_acc"] == load_results(store).query("run == 'kd' and seed == 1").test_acc.item()


def test_republishing_is_idempotent_and_a_damaged_run_is_not_published(store, tmp_path):
    out = tmp_path / "pub"
    publish(store, out)
    stamp = (run_dir(out, "mnist5k", "kd", 0) / "predictions.npz").stat().st_mtime_ns
    publish(store, out)
    assert (run_dir(out, "mnist5k", "kd", 0) / "predictions.npz").stat().st_mtime_ns == stamp
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    (run_dir(copy, "mnist5k", "kd", 0) / "history.csv").write_text("epoch\n1\n")
    with pytest.raises(DamagedRun, match="history.csv"):
        publish(copy, tmp_path / "other")


def test_republishing_repairs_a_damaged_published_run_and_restore_names_one(store, tmp_path):
    from kd_helpers.publish import restore
    out = tmp_path / "pub"
    publish(store, out)
    npz = run_dir(out, "mnist5k", "kd", 0) / "predictions.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])
    with pytest.raises(DamagedRun, match="predictions.npz"):
        restore(out, tmp_path / "fresh")
    publish(store, out)                      # the destination is checked, not only its manifest's origin
    assert npz.read_bytes() == good
    assert len(restore(out, tmp_path / "fresh")) == len(list(out.glob("*/*/seed_*")))
    assert not list((tmp_path / "fresh").rglob(".*.restoring"))


def test_restore_continues_a_study_on_a_fresh_clone_without_retraining(store, tmp_path, monkeypatch):
    """Published runs copied back into an empty results dir: students are reused, new seeds train
    against the published teacher, and a published student can be a pruning source."""
    from kd_helpers import experiment
    from kd_helpers.prune_sweep import pruning_start
    from kd_helpers.publish import restore
    pub, fresh = tmp_path / "pub", tmp_path / "fresh"
    publish(store, pub)
    (fresh / "mnist5k" / "kd" / "seed_0").mkdir(parents=True)          # an unfinished attempt is replaced
    assert len(restore(pub, fresh)) == len(list(pub.glob("*/*/seed_*")))
    assert restore(pub, fresh) == []                                   # idempotent
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("retrained a published run"))
    distill("kd", "mnist5k", "smoke", seeds=[0, 1], results_dir=fresh, progress=False)
    start = pruning_start(run_dir(fresh, "mnist5k", "kd", 0), "kd", "structured", 0.5)
    original = json.loads((run_dir(store, "mnist5k", "kd", 0) / "manifest.json").read_text())["model.pt"]["sha256"]
    assert start.record["from_model_sha256"] == original


def test_a_pair_teacher_is_published_without_weights_and_its_students_still_reused(store, tmp_path, monkeypatch):
    """The pairs' teachers stay out of the store (size); a student recorded against the original
    weights is reused, and a new one that needs them fails with what to do, not a KeyError."""
    from kd_helpers import experiment, publish as pub_mod
    from kd_helpers.store.results import read_json
    pair = tmp_path / "pair"
    shutil.copytree(store / "mnist5k", pair / "mnist5k@mlp_teacher-mlp_student")
    shutil.copytree(store / "mnist5k", pair / "mnist5k")
    assert pub_mod.distilled_from(pair) == {run_dir(pair, "mnist5k", "teacher", 0)}
    # the tuned study's teacher keeps its weights before any trial distils from it (a fresh clone's
    # KD trials need them; the baselines' trials, told first, do not)
    shutil.copytree(run_dir(pair, "mnist5k", "teacher", 0), run_dir(pair, "mnist5k", "tuned_teacher", 0))
    assert run_dir(pair, "mnist5k", "tuned_teacher", 0) in pub_mod.distilled_from(pair)
    out = tmp_path / "pub"
    publish(store, out)
    teacher = run_dir(out, "mnist5k", "teacher", 0)
    monkeypatch.setattr(pub_mod, "distilled_from", lambda root: set())   # as a pair teacher is now published
    publish(store, out)
    assert not (teacher / "model.pt").exists()                            # republished without its weights
    assert read_json(teacher / "manifest.json")["published_from"]["model.pt"]["sha256"]
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("retrained a published run"))
    assert len(distill("kd", "mnist5k", "smoke", seeds=[0, 1], results_dir=out, progress=False)) == 2
    with pytest.raises(FileNotFoundError, match="published without them.*retrain it"):
        distill("kd", "mnist5k", "smoke", seeds=[2], results_dir=out, progress=False)


def test_figures_rerun_on_a_published_store_trains_nothing(store, tmp_path, monkeypatch):
    """Only notebooks whose runs are all finished re-execute (here 00_data; the KD notebook lacks
    its baseline), into a scratch dir; a run that would train under KD_REUSE_ONLY is refused."""
    from kd_helpers.experiment import ReuseOnly
    from kd_helpers.report import complete_notebooks, rerun_figures
    out = tmp_path / "pub"
    publish(store, out)
    assert "03_vanilla_kd" not in complete_notebooks("mnist5k", "smoke", [0, 1], out)
    ran = rerun_figures("smoke", out, log=lambda *a: None)
    assert "00_data" in ran["mnist5k"] and "03_vanilla_kd" not in ran["mnist5k"]
    figs = tmp_path / "figures"   # KD_FIGURES_DIR (conftest)
    assert (figs / "mnist5k_00_samples.png").exists() and not (figs / "mnist5k_00_samples.svg").exists()
    assert not (tmp_path / "reports").exists() and sorted(p.name for p in out.iterdir()) == ["mnist5k"]
    monkeypatch.setenv("KD_REUSE_ONLY", "1")
    assert distill("kd", "mnist5k", "smoke", seeds=[0], results_dir=out, progress=False)   # finished: read
    with pytest.raises(ReuseOnly, match="KD_REUSE_ONLY=1 forbids training"):
        distill("baseline", "mnist5k", "smoke", seeds=[0], results_dir=out, progress=False)


def test_reuse_only_reaches_the_notebooks_kernel_and_leaves_this_process_alone(store, tmp_path, monkeypatch):
    """``run_study(reuse_only=True)`` passes the switch to the kernels it starts: a notebook that
    would train (03_vanilla_kd lacks its baseline in the published store) fails; the caller's
    environment is not changed."""
    from kd_helpers.study import NotebookFailed, run_study
    monkeypatch.delenv("KD_REUSE_ONLY", raising=False)
    out = tmp_path / "pub"
    publish(store, out)
    with pytest.raises(NotebookFailed, match="ReuseOnly"):
        run_study("smoke", datasets=["mnist5k"], seeds=[0], results_dir=out, reports_dir=tmp_path / "rep",
                  only=["03_vanilla_kd"], log=lambda *a: None, reuse_only=True)
    assert "KD_REUSE_ONLY" not in os.environ
    with pytest.raises(ValueError, match="--reuse-only with --executor local"):
        run_study("smoke", results_dir=out, only=["03_vanilla_kd"], executor="local", reuse_only=True)


def test_publishing_a_restored_store_back_rewrites_nothing(store, tmp_path):
    from kd_helpers.publish import restore
    out = tmp_path / "pub"
    publish(store, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    restore(out, tmp_path / "fresh")          # a fresh clone continues the study ...
    publish(tmp_path / "fresh", out)          # ... and publishes its new runs beside the old ones
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
