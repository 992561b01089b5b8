"""A run's config is complete and resolved once; run names derive from non-default settings in one place."""
import json
import warnings

import pytest

from kd_helpers import experiment
from kd_helpers.experiment import ConfigMismatch, RunSpec, derive_name, distill, run, spec_for, train_teacher
from kd_helpers.core.losses import LOSSES, hparams
from kd_helpers.report import results_table
from kd_helpers.store.results import load_results, run_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("config")
    train_teacher("mnist5k", "smoke", results_dir=root, progress=False)
    return root


def config_of(r):
    return json.loads((r["dir"] / "config.json").read_text())


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_every_loss_hyper_parameter_is_in_the_spec(method):
    spec = spec_for(method, "mnist5k", "smoke")
    assert set(spec.loss) == set(hparams(method))   # every default written out, none left implicit
    assert spec.run == method


def test_python_and_notebook_calls_agree_on_dkd():
    # the notebook passes None for "the study's value"; Python passes nothing: same run, same config
    nb = spec_for("dkd", "mnist5k", "quick", loss=dict(alpha=None, beta=None, T=None, warmup=None))
    py = spec_for("dkd", "mnist5k", "quick")
    assert nb == py and py.loss["warmup"] == 2 and py.run == "dkd"


def test_non_default_values_get_their_own_run_name():
    assert spec_for("dkd", "mnist5k", "quick", loss={"beta": 4}).run == "dkd__beta=4"
    assert spec_for("dist", "mnist5k", "quick", loss={"beta": 1.0, "tau": 2.0}).run == "dist__beta=1__tau=2"
    assert spec_for("kd", "mnist5k", "quick", loss={"T": 20.0}).run == "kd"            # the MLP family's value
    assert spec_for("kd", "cifar10", "quick", loss={"T": 20.0}).run == "kd__T=20"      # not the CNN family's
    assert spec_for("fitnets_1stage", "mnist5k", "quick").run == "fitnets_1stage"
    assert spec_for("fitnets_1stage", "mnist5k", "quick", loss={"beta": 2.0}).run == "fitnets_1stage__beta=2"
    assert spec_for("kd", "mnist5k", "quick", model="student_mod").run == "kd__model=mlp_student_mod"
    assert derive_name("x", {"a": 1, "b": 0.5}, {"a": 1, "b": 0.25}) == "x__b=0.5"


def test_unknown_names_are_clear():
    with pytest.raises(ValueError, match="Unknown run 'kdx'.*baseline.*dkd"):
        spec_for("kdx", "mnist5k", "smoke")
    with pytest.raises(TypeError, match="no hyper-parameter 'betta'.*accepts: alpha, beta, T, warmup"):
        spec_for("dkd", "mnist5k", "smoke", loss={"betta": 4})


def test_resolved_config_is_concrete_and_idempotent():
    spec = RunSpec("mnist5k", "kd", "mlp_student", seed=3, teacher="teacher")
    r = spec.resolved()
    assert r.train.precision in ("fp32", "bf16", "fp16") and r.train.augment is False and r.train.seed == 3
    assert r.data.val_size == 400 and isinstance(r.data.val_size, int)   # 10% of mnist5k's 4,000 training images
    assert r.loss == hparams("kd") and r.run == "kd"
    assert r.resolved() == r


def test_config_json_alone_says_how_the_run_was_trained(store):
    r = distill("dkd", "mnist5k", "smoke", results_dir=store, progress=False)[0]
    cfg = config_of(r)
    assert cfg["loss"] == {"alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup": 2}
    assert cfg["train"]["precision"] in ("fp32", "bf16") and cfg["train"]["precision"] != "auto"
    assert cfg["train"]["augment"] is False and cfg["data"]["val_size"] == 64
    # the history says the same precision the config does
    assert r["history"].precision.iloc[0] == cfg["train"]["precision"]   # one vocabulary


@pytest.mark.parametrize("setting", [dict(channels_last=False), dict(fused_optimizer=False), dict(compile=True),
                                     dict(eval_batch_size=7)])
def test_speed_only_settings_never_block_reuse(store, monkeypatch, setting):
    distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("retrained a finished run"))
    r = distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False, **setting)[0]
    key, value = next(iter(setting.items()))
    assert config_of(r)["train"][key] != value     # the config says how it was actually trained


def test_a_run_from_another_precision_is_reused_and_shown(store, monkeypatch):
    first = distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)[0]
    trained = config_of(first)["train"]["precision"]
    other = "fp32" if trained != "fp32" else "bf16"
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("retrained a finished run"))
    with pytest.warns(UserWarning, match=f"train.precision='{trained}'"):
        distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False, precision=other)
    table = results_table(load_results(store), "mnist5k").set_index("Model")
    assert table.loc["baseline", "Precision"] == trained


def test_a_changed_hyper_parameter_is_refused_under_the_same_name(store):
    distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)
    with pytest.raises(ConfigMismatch, match="lr: 0.001 -> 0.01"):
        distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False, lr=0.01)
    spec = spec_for("dkd", "mnist5k", "smoke", loss={"beta": 4})   # but a loss value gets its own directory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = run(spec, store, progress=False)
    assert r["dir"] == run_dir(store, "mnist5k", "dkd__beta=4", 0)


def test_config_records_the_network_and_the_loss_version(store):
    r = distill("dkd", "mnist5k", "smoke", results_dir=store, progress=False)[0]
    cfg = config_of(r)
    assert cfg["loss_version"] == LOSSES["dkd"].version
    net = cfg["network"]
    # the student's dropout, input dropout, widths and BatchNorm: two networks under one name differ here
    assert net["class"] == "MLP" and net["hidden"] == [800, 800]
    assert net["dropout"] == 0.3 and net["in_dropout"] == 0.1 and net["norm"] is False
    assert len(net["structure_sha256"]) == 16
    # and the run's records carry the fingerprint of the training code that ran it
    from kd_helpers.core.util import TRAINING_CODE_FINGERPRINT
    assert json.loads((r["dir"] / "env.json").read_text())["training_code"] == TRAINING_CODE_FINGERPRINT
    df = load_results(store)
    assert df[df.run == "dkd"].training_code.tolist() == [TRAINING_CODE_FINGERPRINT]


def test_a_changed_loss_definition_is_a_different_run(store, monkeypatch, capsys):
    distill("kd", "mnist5k", "smoke", results_dir=store, progress=False)
    monkeypatch.setattr(LOSSES["kd"], "version", LOSSES["kd"].version + 1)
    with pytest.raises(ConfigMismatch, match="loss_version: 1 -> 2"):
        distill("kd", "mnist5k", "smoke", results_dir=store, progress=False)
    # re-executing a published notebook shows the run as published, with the difference named
    # (relative to the store: no machine path in an executed notebook)
    monkeypatch.setenv("KD_REUSE_ONLY", "1")
    capsys.readouterr()
    r = distill("kd", "mnist5k", "smoke", results_dir=store, progress=False)[0]
    assert r["superseded"] == ["loss_version=1 (now 2)"]
    out = capsys.readouterr().out
    assert "trained under an earlier definition: loss_version=1 (now 2)" in out and str(store) not in out


def test_a_run_from_before_versioned_losses_counts_as_version_1(store, monkeypatch, request):
    r = distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)[0]
    path = r["dir"] / "config.json"
    original = path.read_text()
    cfg = json.loads(original)
    monkeypatch.setattr(experiment, "check_run", lambda *a, **k: [])   # the edits are not damage here
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("retrained a finished run"))
    del cfg["loss_version"], cfg["network"]
    path.write_text(json.dumps(cfg))
    request.addfinalizer(lambda: path.write_text(original))   # the store is shared by the module
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)
    monkeypatch.setattr(LOSSES["ce"], "version", 2)
    with pytest.raises(ConfigMismatch, match="loss_version: 1 -> 2"):
        distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)


def test_a_run_trained_with_nn_dropout_is_not_reused_as_one_with_the_fast_dropout(store, monkeypatch, request):
    r = distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)[0]   # mlp_student: dropout
    path = r["dir"] / "config.json"
    original = path.read_text()
    cfg = json.loads(original)
    assert cfg["network_version"] == 2
    del cfg["network_version"], cfg["network"]          # as written before the fast dropout
    monkeypatch.setattr(experiment, "check_run", lambda *a, **k: [])
    path.write_text(json.dumps(cfg))
    request.addfinalizer(lambda: path.write_text(original))
    with pytest.raises(ConfigMismatch, match="network_version: 1 -> 2"):
        distill("baseline", "mnist5k", "smoke", results_dir=store, progress=False)


def test_every_dataset_has_its_study_entry_and_families_come_from_it():
    """presets.STUDY_DATA names each loadable dataset's family and validation split (no name
    matching); an unknown name is refused with what to add."""
    from kd_helpers.core.data import DATASET_NAMES
    from kd_helpers.store.presets import STUDY_DATA, family, preset
    assert set(STUDY_DATA) == set(DATASET_NAMES)
    assert [family(d) for d in ("mnist", "fashion_mnist", "cifar10", "imagefolder64:/x", "cifar100@resnet56-resnet20")] \
        == ["mlp", "mlp", "cnn", "cnn", "pair"]
    assert preset("cifar10", "paper").data.val_size == STUDY_DATA["cifar10"].val_size == 5000
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'.*presets.py STUDY_DATA"):
        family("imagenet")
