"""Fault injection: kills, damaged files, changed configs, wrong teachers, bad data and parameters,
a full disk. Each fault is either survived with identical results or refused with a message
that names the file or setting and says what to do (README: "What survives what")."""
import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_helpers import experiment

from kd_helpers.core import util
from kd_helpers.core.data import DatasetDamagedError, load_dataset
from kd_helpers.experiment import ConfigMismatch, TeacherMismatch, distill, train_teacher
from kd_helpers.store.params import ParameterError, check_parameters, declared
from kd_helpers.store.results import MANIFEST, DamagedRun, load_results, run_dir
from kd_helpers.study import run_study
from kd_helpers.core.teacher_cache import TeacherOutputs
from conftest import tiny_dataset

REPO = Path(__file__).resolve().parents[1]
# fp32 on the CPU: bit-identical results are the claim; 4,000 mnist5k images, ~1 s per epoch
TRAIN = dict(precision="fp32", epochs=4, batch_size=64)


def train_script(root: Path, **kw) -> str:
    return textwrap.dedent(f"""
        from kd_helpers.experiment import distill
        distill("baseline", "mnist5k", "quick", results_dir={str(root)!r}, progress=False, **{kw!r})
    """)


def kill_at(root: Path, kill_when) -> Path:
    """Start training in a subprocess (same threads as this process: same bits) and SIGKILL it
    when ``kill_when(run_dir)`` is true."""
    d = run_dir(root, "mnist5k", "baseline", 0)
    proc = subprocess.Popen([sys.executable, "-c", train_script(root, **TRAIN)], cwd=REPO)
    t0 = time.time()
    while not kill_when(d):
        assert proc.poll() is None, "training ended before the kill point"
        assert time.time() - t0 < 120, "kill point never reached"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (d / MANIFEST).exists()
    return d


def killed_then_resumed(root: Path, kill_when) -> dict:
    kill_at(root, kill_when)
    return distill("baseline", "mnist5k", "quick", results_dir=root, progress=False, **TRAIN)[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    return distill("baseline", "mnist5k", "quick", results_dir=root, progress=False, **TRAIN)[0]


def same_run(a, b):
    for k in ("test_acc", "test_errors", "val_acc", "params"):
        assert a["metrics"][k] == b["metrics"][k], k
    assert a["history"].train_loss.tolist() == b["history"].train_loss.tolist()
    assert np.array_equal(np.load(a["dir"] / "predictions.npz")["logits"], np.load(b["dir"] / "predictions.npz")["logits"])


def epochs_done(n):
    def when(d):
        try:
            return torch.load(d / "checkpoint.pt", weights_only=True)["epoch"] + 1 >= n
        except Exception:  # noqa: BLE001 - not written yet, or mid-rename
            return False
    return when


@pytest.mark.parametrize("point", ["after epoch 1", "mid-epoch 3"])
def test_sigkill_then_resume_gives_identical_results(tmp_path, uninterrupted, point):
    when = {"after epoch 1": epochs_done(1),
            "mid-epoch 3": lambda d: epochs_done(2)(d) and (time.sleep(0.4) or True)}[point]
    same_run(killed_then_resumed(tmp_path, when), uninterrupted)


def test_killed_between_the_files_of_the_final_save(tmp_path, uninterrupted, monkeypatch):
    import kd_helpers.store.results as results
    monkeypatch.setattr(results, "write_manifest", lambda path: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
    with pytest.raises(KeyboardInterrupt):
        distill("baseline", "mnist5k", "quick", results_dir=tmp_path, progress=False, **TRAIN)
    monkeypatch.undo()
    d = run_dir(tmp_path, "mnist5k", "baseline", 0)
    assert (d / "metrics.json").exists() and not (d / MANIFEST).exists() and (d / "checkpoint.pt").exists()
    same_run(distill("baseline", "mnist5k", "quick", results_dir=tmp_path, progress=False, **TRAIN)[0], uninterrupted)


def test_resume_under_a_changed_config_is_refused(tmp_path):
    kill_at(tmp_path, epochs_done(2))
    with pytest.raises(ConfigMismatch, match=r"epochs trained under another config \(train.epochs: 4 -> 3"):
        distill("baseline", "mnist5k", "quick", results_dir=tmp_path, progress=False, **{**TRAIN, "epochs": 3})
    with pytest.raises(ConfigMismatch, match="train.lr: 0.001 -> 0.01"):
        distill("baseline", "mnist5k", "quick", results_dir=tmp_path, progress=False, **{**TRAIN, "lr": 0.01})
    # force=True starts over on request, under the new config
    r = experiment.run(experiment.spec_for("baseline", "mnist5k", "quick", **{**TRAIN, "epochs": 3}), tmp_path,
                       profile="quick", force=True, progress=False)
    assert r["history"].epoch.tolist() == [1, 2, 3] and r["config"]["train"]["epochs"] == 3


# ------------------------------------------------------------------ damaged files of a finished run

@pytest.fixture()
def store(tmp_path):
    train_teacher("mnist5k", "smoke", results_dir=tmp_path, progress=False)
    distill("kd", "mnist5k", "smoke", results_dir=tmp_path, progress=False)
    return tmp_path


def damage(path: Path, how: str):
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: max(len(path.read_bytes()) // 2, 1)])
    elif how == "garble":
        b = bytearray(path.read_bytes())
        b[len(b) // 2] ^= 0xFF
        path.write_bytes(bytes(b))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "delete":
        path.unlink()


FILES = ["config.json", "env.json", "history.csv", "predictions.npz", "metrics.json", "model.pt"]


@pytest.mark.parametrize("how", ["truncate", "garble", "empty", "delete"])
@pytest.mark.parametrize("name", FILES)
def test_a_damaged_student_run_is_named_and_retrained(store, name, how):
    d = run_dir(store, "mnist5k", "kd", 0)
    good = json.loads((d / "metrics.json").read_text())["test_acc"]
    damage(d / name, how)
    if name != "model.pt":  # tables read everything but the weights; a damaged run is skipped, not fatal
        with pytest.warns(UserWarning, match=f"Skipping damaged run .*kd.*{name}"):
            df = load_results(store)
        assert "kd" not in set(df.run) and "teacher" in set(df.run) and df.attrs["damaged"] == [str(d)]
    with pytest.warns(UserWarning, match=f"damaged .*{name}.*retraining it"):
        r = distill("kd", "mnist5k", "smoke", results_dir=store, progress=False)[0]
    assert r["metrics"]["test_acc"] == good     # retrained to the same result (same seed, fp32 or same bf16 kernels)


@pytest.mark.parametrize("name", ["model.pt", "config.json"])
def test_a_damaged_teacher_is_refused_with_what_to_do(store, name):
    damage(run_dir(store, "mnist5k", "teacher", 0) / name, "garble")
    with pytest.raises(DamagedRun, match=f"{name}.*delete .*teacher.*01_teacher"):
        distill("dkd", "mnist5k", "smoke", results_dir=store, progress=False)
    with pytest.raises(DamagedRun, match="not retrained automatically"):
        train_teacher("mnist5k", "smoke", results_dir=store, progress=False)


def test_a_damaged_checkpoint_starts_over(tmp_path, uninterrupted):
    d = run_dir(tmp_path, "mnist5k", "baseline", 0)
    d.mkdir(parents=True)
    (d / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.warns(UserWarning, match="checkpoint.pt is damaged .*starts over"):
        r = distill("baseline", "mnist5k", "quick", results_dir=tmp_path, progress=False, **TRAIN)[0]
    same_run(r, uninterrupted)


def test_a_bit_flipped_in_a_checkpoint_is_caught_before_resuming(tmp_path, uninterrupted):
    kill_at(tmp_path, epochs_done(2))
    ckpt = run_dir(tmp_path, "mnist5k", "baseline", 0) / "checkpoint.pt"
    b = bytearray(ckpt.read_bytes())
    b[len(b) // 2] ^= 0x01      # inside the weights: torch.load would read it without complaint
    ckpt.write_bytes(bytes(b))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    with pytest.warns(UserWarning, match="checkpoint.pt is damaged .*sha256.*starts over"):
        r = distill("baseline", "mnist5k", "quick", results_dir=tmp_path, progress=False, **TRAIN)[0]
    same_run(r, uninterrupted)


def test_a_checkpoint_and_its_checksum_from_consecutive_epochs_still_resume(tmp_path):
    from kd_helpers.core.train import read_checkpoint, save_checkpoint
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 0}, path)
    old = path.read_bytes()
    save_checkpoint({"epoch": 1}, path)
    path.write_bytes(old)    # killed after the checksum file of epoch 2 was written, before its checkpoint
    assert read_checkpoint(path) == {"epoch": 0}


def test_a_split_that_leaves_nothing_to_train_on_is_named(tmp_path):
    image_tree(tmp_path, ["cat", "dog"], ["cat", "dog"])     # 4 training images
    with pytest.raises(ValueError, match="has 4 training images, and the validation split takes 64.*larger tree"):
        load_dataset(f"imagefolder:{tmp_path}", config=experiment.DataConfig(val_size=64))


def test_dml_peers_are_bounded():
    from kd_helpers.core.losses import build_loss
    from kd_helpers.core.losses.base import Pair
    with pytest.raises(ValueError, match="peers=1000000000 is outside 1..8"):
        build_loss("dml", Pair(4, [(8,)], make_student=lambda: torch.nn.Linear(2, 2)), peers=1_000_000_000)
    with pytest.raises(ParameterError, match="peers must be a finite number in \\[1, 8\\]"):
        check_parameters({**declared("08_dml"), "peers": 1_000_000_000}, "08_dml")


def test_a_damaged_teacher_cache_is_recomputed(tmp_path):
    from kd_helpers.core.models import create_model
    data = tiny_dataset()
    teacher = create_model("mlp_student", 4, in_shape=(1, 8, 8)).eval()
    first = TeacherOutputs(teacher, data, feats=False, cached=True, cache_dir=tmp_path)
    path = first.path
    for how in ("garble", "truncate", "empty"):
        damage(path, how)
        with pytest.warns(UserWarning, match="Teacher-output cache .* damaged"):
            again = TeacherOutputs(teacher, data, feats=False, cached=True, cache_dir=tmp_path)
        assert torch.equal(again.cache[0], first.cache[0])
        assert TeacherOutputs._read(path) is not None   # rewritten intact


def test_leftover_temp_files_are_cleaned_on_the_next_write_and_only_a_dead_writers(tmp_path):
    import platform
    target = tmp_path / "metrics.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = platform.node().replace(".", "_")
    stale = tmp_path / f".metrics.json.{host}-{dead.pid}.abc123.tmp"          # a killed writer's
    live = tmp_path / f".metrics.json.{host}-1.abc123.tmp"                    # a live writer's (pid 1)
    remote = tmp_path / f".metrics.json.other_node-{dead.pid}.abc123.tmp"     # another host's
    for f in (stale, live, remote):
        f.write_bytes(b"x" * 1000)
    util.atomic_write_json(target, {"a": 1})
    assert not stale.exists() and live.exists() and remote.exists() and json.loads(target.read_text()) == {"a": 1}


# ------------------------------------------------------------------ wrong teachers

def test_a_teacher_from_another_profile_is_refused(tmp_path):
    train_teacher("mnist5k", "smoke", results_dir=tmp_path, progress=False)
    with pytest.raises(TeacherMismatch, match="data split .*limit_train.: 256"):
        distill("kd", "mnist5k", "quick", results_dir=tmp_path, progress=False)


def test_a_teacher_from_another_dataset_is_refused(tmp_path):
    train_teacher("mnist5k", "smoke", results_dir=tmp_path, progress=False)
    shutil.copytree(run_dir(tmp_path, "mnist5k", "teacher", 0), run_dir(tmp_path, "digits", "teacher", 0))
    with pytest.raises(TeacherMismatch, match="trained on dataset 'mnist5k', not 'digits'"):
        distill("kd", "digits", "smoke", results_dir=tmp_path, progress=False)


def test_a_student_records_its_teacher_and_a_retrained_teacher_is_noticed(store):
    cfg = json.loads((run_dir(store, "mnist5k", "kd", 0) / "config.json").read_text())
    manifest = json.loads((run_dir(store, "mnist5k", "teacher", 0) / MANIFEST).read_text())
    assert cfg["teacher_id"]["model_sha256"] == manifest["model.pt"]["sha256"]
    assert cfg["teacher_id"]["config_sha256"] == manifest["config.json"]["sha256"]
    # the teacher retrained elsewhere (same config, other weights, an intact store): its students are not reused
    from kd_helpers.store.results import write_manifest
    tdir = run_dir(store, "mnist5k", "teacher", 0)
    blob = torch.load(tdir / "model.pt", weights_only=True)
    blob["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in blob["model"].items()}
    torch.save(blob, tdir / "model.pt")
    write_manifest(tdir)
    with pytest.raises(ConfigMismatch, match="teacher_id.model_sha256"):
        distill("kd", "mnist5k", "smoke", results_dir=store, progress=False)


# ------------------------------------------------------------------ bad data files

@pytest.fixture()
def mnist_dir(tmp_path):
    """A tiny MNIST-format tree (4 images) with correct headers."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def idx(name, arr):
        head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(head + arr.astype(np.uint8).tobytes())
    imgs, labels = np.zeros((4, 28, 28)), np.array([0, 1, 2, 3])
    for split in ("train", "t10k"):
        idx(f"{split}-images-idx3-ubyte", imgs)
        idx(f"{split}-labels-idx1-ubyte", labels)
    return tmp_path


@pytest.mark.parametrize("how,match", [("truncate", "damaged: .*(EOF|Compressed file ended)"),
                                       ("garble", "damaged"), ("notgzip", "damaged: BadGzipFile"),
                                       ("official", "differ from the official")])
def test_damaged_mnist_files_are_named(mnist_dir, how, match):
    from kd_helpers.core import data
    f = mnist_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    if how == "notgzip":
        f.write_bytes(b"garbage" * 10)
    elif how == "garble":   # a flipped bit in the compressed data (the gzip header's file name would not matter)
        b = bytearray(f.read_bytes())
        b[-10] ^= 0x01
        f.write_bytes(bytes(b))
    elif how != "official":
        damage(f, how)
    with pytest.raises(DatasetDamagedError, match=match) as e:
        if how == "official":   # well-formed files that are not MNIST's
            load_dataset("mnist", mnist_dir, download=False)
        else:
            data._read_idx(f)
    assert "train-" in str(e.value) and "Replace it" in str(e.value)


def test_idx_size_that_disagrees_with_its_header_is_named(mnist_dir):
    from kd_helpers.core import data
    f = mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetDamagedError, match="t10k-images.*bytes, but its header says"):
        data._read_idx(f)


def cifar_tree(root: Path, n: int = 10):
    import pickle
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"data": np.zeros((n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (base / name).write_bytes(pickle.dumps(d))
    return base


@pytest.mark.parametrize("how", ["truncate", "garble", "empty"])
def test_damaged_cifar_pickles_are_named_and_the_study_skips_optional_data(tmp_path, how):
    base = cifar_tree(tmp_path)
    damage(base / "data_batch_3", how)
    with pytest.raises(DatasetDamagedError, match="data_batch_3|cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download=False)
    log = []
    from kd_helpers.study import available
    assert available("cifar10", tmp_path, log.append) is False and "skipping cifar10" in log[0]


def test_cifar_with_wrong_counts_is_named(tmp_path):
    cifar_tree(tmp_path, n=10)   # well-formed batches, but 50 images instead of 50,000
    with pytest.raises(DatasetDamagedError, match="50 training and 10 test images"):
        load_dataset("cifar10", tmp_path, download=False)


def image_tree(root: Path, train_classes, test_classes, test_dir="test"):
    from PIL import Image
    for split, classes in (("train", train_classes), (test_dir, test_classes)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 10 * k + i, dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_imagefolder_labels_come_from_the_training_tree(tmp_path):
    image_tree(tmp_path, ["cat", "dog", "frog"], ["cat", "frog"], test_dir="val")   # val/ is the test split
    d = load_dataset(f"imagefolder:{tmp_path}", config=experiment.DataConfig(val_size=0))
    assert d.classes == ["cat", "dog", "frog"]
    assert d.y["test"].tolist() == [0, 0, 2, 2]      # frog stays 2 though the test tree has no dog


def test_imagefolder_test_class_missing_from_train_is_named(tmp_path):
    image_tree(tmp_path, ["cat", "dog"], ["cat", "frog"])
    with pytest.raises(DatasetDamagedError, match="class folder.*frog.*train"):
        load_dataset(f"imagefolder:{tmp_path}", config=experiment.DataConfig(val_size=0))


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_a_damaged_image_in_a_tree_is_named(tmp_path, how):
    from PIL import Image
    image_tree(tmp_path, ["cat", "dog"], ["cat", "dog"])
    bad = tmp_path / "train" / "dog" / "1.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 2] if how == "truncate" else b"not an image" + data[12:])
    with pytest.raises(DatasetDamagedError, match=r"train/dog/1\.jpg cannot be read as an image"):
        load_dataset(f"imagefolder:{tmp_path}", config=experiment.DataConfig(val_size=0))


# ------------------------------------------------------------------ bad parameters and names

@pytest.mark.parametrize("given,match", [
    (dict(epochs="abc"), "has no parameter 'epochs'. Its parameters: dataset, profile"),
    (dict(T=-5), "T=-5 is not accepted; T must be a finite number in \\(0, inf\\]"),
    (dict(T="abc"), "T='abc' is not accepted; T must be a number or None"),
    (dict(alpha=1.5), "alpha must be a finite number in \\[0, 1\\]"),
    (dict(seeds=[0, -1]), "seeds must be a non-empty list of non-negative integers"),
    (dict(profile="fast"), "profile must be one of 'smoke', 'quick', 'paper'"),
    (dict(dataset="imagenet"), "dataset must be one of mnist"),
])
def test_notebook_parameters_are_validated(given, match):
    ns = {**declared("03_vanilla_kd"), **given, "In": [], "get_ipython": print, "np": np}
    with pytest.raises(ParameterError, match=match):
        check_parameters(ns, "03_vanilla_kd")
    assert check_parameters({**declared("03_vanilla_kd"), "T": 4.0}, "03_vanilla_kd")["T"] == 4.0


def test_every_notebook_parameter_has_a_rule_and_its_default_passes():
    from kd_helpers.plan import STEPS
    for step in STEPS:
        check_parameters(declared(step.notebook), step.notebook)


@pytest.mark.parametrize("notebook, given, match", [
    ("13_dkd", {"warmup": -1}, "warmup=-1 .* a finite number in \\[0, inf\\]"),   # integer default: integers >= 0
    ("13_dkd", {"warmup": 1.5}, "warmup=1.5 .* an integer"),
    ("10_dist", {"gamma": -0.5}, "gamma=-0.5"),                                   # float default: numbers >= 0
    ("05_rkd", {"w_a": float("nan")}, "w_a=nan"),
])
def test_loss_hyper_parameters_get_their_rule_from_the_loss_signature(notebook, given, match):
    from kd_helpers.store.params import RULES, loss_rule
    name = next(iter(given))
    assert name not in RULES and loss_rule(name) is not None
    with pytest.raises(ParameterError, match=match):
        check_parameters({**declared(notebook), **given}, notebook)
    assert loss_rule("hint_layer") is None and loss_rule("no_such_name") is None   # no numeric default: RULES


def test_a_bad_parameter_stops_the_notebook_at_the_top(tmp_path):
    from kd_helpers.study import NotebookFailed, execute
    with pytest.raises(NotebookFailed, match="ParameterError.*T=-5"):
        execute("03_vanilla_kd", tmp_path / "out.ipynb", {"profile": "smoke", "dataset": "mnist5k", "T": -5,
                                                          "results_dir": str(tmp_path)}, log=lambda *_: None)
    assert not (tmp_path / "mnist5k").exists()   # nothing trained


def test_unknown_notebook_and_method_names(tmp_path):
    with pytest.raises(ValueError, match="No notebook '99_nope' in the study. Notebooks: 00_data"):
        run_study("smoke", only=["99_nope"], results_dir=str(tmp_path), reports_dir=str(tmp_path), log=lambda *_: None)
    res = subprocess.run([sys.executable, "-m", "kd_helpers.study", "--only", "99_nope"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "99_nope" in res.stderr
    with pytest.raises(ValueError, match="Unknown run 'kdx'"):
        distill("kdx", "mnist5k", "smoke", results_dir=tmp_path)


# ------------------------------------------------------------------ full disk

@pytest.mark.parametrize("wrapped", [False, True])
def test_a_full_disk_is_said_plainly_with_the_path(tmp_path, wrapped):
    def write(f):
        err = OSError(errno.ENOSPC, "No space left on device")
        if wrapped:  # torch.save reports it as a RuntimeError from its zip writer, ENOSPC in the chain
            try:
                raise err
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        raise err
    target = tmp_path / "run" / "model.pt"
    with pytest.raises(util.DiskFull, match=f"No space left on device while writing {target}"):
        util._atomic(target, write)
    assert list((tmp_path / "run").iterdir()) == []   # no half-written temp file left


def test_a_run_without_its_manifest_is_damaged_not_gone(store):
    teacher = run_dir(store, "mnist5k", "teacher", 0)
    (teacher / MANIFEST).unlink()
    with pytest.raises(DamagedRun, match="no manifest.json"):
        train_teacher("mnist5k", "smoke", results_dir=store, progress=False)
    student = run_dir(store, "mnist5k", "kd", 0)
    (student / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="Skipping damaged run .*kd.*no manifest.json"):
        df = load_results(store, "smoke")
    assert str(student) in df.attrs["damaged"] and str(teacher) in df.attrs["damaged"]


def test_the_readme_is_never_generated_from_a_damaged_store(store, tmp_path):
    from kd_helpers import report
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{report.START}\nold\n{report.END}\n")
    npz = run_dir(store, "mnist5k", "kd", 0) / "predictions.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(report.DamagedStore, match="1 damaged run.*kd/seed_0.*Nothing was generated"):
        report.update_readme("smoke", store, readme)
    assert "old" in readme.read_text()
    report.update_readme("smoke", store, readme, allow_damaged=True)
    assert "Generated without 1 damaged run" in readme.read_text() and "kd/seed_0" in readme.read_text()


@pytest.mark.parametrize("kw,match", [
    (dict(seeds=[-1], executor="local"), "--seeds -1: seeds must be a non-empty list of non-negative integers"),
    (dict(executor="local", jobs=0), "--jobs 0: the number of parallel workers must be 1 or more"),
    (dict(executor="local", jobs=-2), "--jobs -2"),
])
def test_the_runner_refuses_bad_arguments_before_training(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run_study("smoke", results_dir=str(tmp_path / "r"), reports_dir=str(tmp_path / "rep"), **kw)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_a_bad_kd_threads_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("KD_THREADS", value)
    with pytest.raises(ValueError, match=f"KD_THREADS='{value}' is not a positive integer"):
        util.threads_wanted()


def test_an_infinite_temperature_is_refused_by_the_rule():
    with pytest.raises(ParameterError, match="T=inf is not accepted; T must be a finite number"):
        check_parameters({**declared("03_vanilla_kd"), "T": float("inf")}, "03_vanilla_kd")


def test_two_image_trees_never_share_a_store_directory():
    a, b = run_dir("/s", "imagefolder:/x/a_b", "kd", 0), run_dir("/s", "imagefolder:/x/a/b", "kd", 0)
    assert a != b and a.parent.parent.name.startswith("imagefolder__x_a_b-")
    assert run_dir("/s", "cifar10@resnet56-resnet20", "kd", 0).parent.parent.name == "cifar10@resnet56-resnet20"


def test_a_kill_between_the_manifest_and_the_clean_up_leaves_nothing_behind_for_good(store):
    from kd_helpers.experiment import lock_path
    d = run_dir(store, "mnist5k", "kd", 0)
    (d / "checkpoint.pt").write_bytes(b"x" * 1000)                       # the clean-up never ran
    lock_path(d).write_text(json.dumps({"host": "vm-gone", "pid": 1}))    # nor did the lock's release
    old = time.time() - 3600
    os.utime(lock_path(d), (old, old))
    distill("kd", "mnist5k", "smoke", results_dir=store, progress=False)  # reused, and tidied
    assert not (d / "checkpoint.pt").exists() and not lock_path(d).exists()


def test_train_log_is_in_the_manifest_and_checked(store):
    from kd_helpers.store.results import check_run
    d = run_dir(store, "mnist5k", "kd", 0)
    assert "train.log" in json.loads((d / MANIFEST).read_text())
    with open(d / "train.log", "a") as f:
        f.write("edited\n")
    assert any("train.log" in p for p in check_run(d))
