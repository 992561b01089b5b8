"""One naming scheme for every kind of run (kd_helpers.store.names), runs that record what they
are, and the migration of a store written before they did (kd_helpers.migrate)."""
import numpy as np
import pytest

from kd_helpers import ablation, tuning
from kd_helpers.experiment import spec_for
from kd_helpers.migrate import migrate
from kd_helpers.prune_sweep import pruned_name
from kd_helpers.store.names import PREFIX, run_name
from kd_helpers.store.presets import ABLATION_GRID
from kd_helpers.store.results import LegacyStore, load_results, run_dir, save_run, verify_run


def test_every_kind_of_run_is_named_by_one_scheme():
    """The builders of all five kinds give ``<kind prefix><base>[__key=value, sorted]``."""
    study = spec_for("dkd", "mnist", "paper", loss={"beta": 4.0, "T": 2.0})
    abl = [s for _, _, s, study_row in ablation.specs("mnist", "paper", 0) if not study_row]
    trial = tuning.trial_spec("kd", "mnist", "paper", 7, {"T": 2.0, "alpha": 0.5, "lr": 1e-3})
    tuned = tuning.tuned_spec("kd", "mnist", "paper", 1, {"T": 2.0, "alpha": 0.5, "lr": 1e-3})
    assert study.run == run_name("dkd", {"T": 2.0, "beta": 4.0}) == "dkd__T=2__beta=4"
    assert trial.run == "tune_kd__trial=007" and tuned.run == "tuned_kd"
    assert pruned_name("srd_dist", "structured", 0.5, "kd") == "prune_srd_dist__amount=0.5__finetune=kd__pruning=structured"
    for spec in [study, trial, tuned, *abl]:
        assert spec.run.startswith(PREFIX[spec.kind]), spec
        settings = spec.run.split("__")[1:]
        assert settings == sorted(settings) and all("=" in s for s in settings), spec.run
    # an ablation run records the study run it varies and its grid row; the name only spells them
    (row,) = [s for s in abl if s.run == "ablation_kd__T=4"]
    assert (row.kind, row.role, row.protocol) == ("ablation", "kd", {"loss": {"T": 4.0}})
    assert {s.role for s in abl} == {role for _, role, changes in ABLATION_GRID["mlp"] if changes}
    assert tuned.role == "kd" and study.role is None
    with pytest.raises(ValueError, match="Unknown run kind 'pruned'"):
        run_name("kd", kind="pruned")


def _legacy_run(root, run, extra=None):
    """A finished run as code before recorded kinds wrote it (no kind, the old prune name)."""
    cfg = {"dataset": "mnist", "run": run, "method": "ce", "model": "mlp_student", "seed": 0, **(extra or {})}
    save_run(run_dir(root, "mnist", run, 0), config=cfg, env={}, history=[{"epoch": 1, "time_s": 1.0}],
             labels=np.zeros(2, int), logits=np.zeros((2, 10), np.float32), extra_logits={},
             metrics={"test_acc": 0.5, "val_acc": 0.5, "n_val": 6000})


def test_a_store_from_before_recorded_kinds_is_refused_until_migrated(tmp_path):
    _legacy_run(tmp_path, "baseline")
    _legacy_run(tmp_path, "ablation_teacher__schedule=constant")
    _legacy_run(tmp_path, "prune_struct_50_ce_baseline",
                {"start": {"from": "baseline", "prune": {"kind": "structured", "amount": 0.5}}})
    with pytest.raises(LegacyStore, match="python -m kd_helpers.migrate"):
        load_results(tmp_path)   # never read as study runs by mistake

    assert migrate(tmp_path, "paper", log=lambda *_: None) == {"ablation": 1, "prune": 1}
    df = load_results(tmp_path).set_index("run")
    new = "prune_baseline__amount=0.5__finetune=ce__pruning=structured"
    assert dict(df.kind) == {"baseline": "study", "ablation_teacher__schedule=constant": "ablation", new: "prune"}
    abl = df.loc["ablation_teacher__schedule=constant"]
    assert abl.role == "teacher" and abl.protocol == {"schedule": "constant"}
    assert not (tmp_path / "mnist" / "prune_struct_50_ce_baseline").exists()
    for d in df.dir:
        verify_run(d)   # the manifests follow the rewritten configs
    assert migrate(tmp_path, "paper", log=lambda *_: None) == {"ablation": 0, "prune": 0}   # once is enough


def test_the_migration_refuses_what_it_cannot_place(tmp_path):
    _legacy_run(tmp_path, "ablation_teacher__lr=9")   # no grid row trains it
    with pytest.raises(ValueError, match="no row of the 'paper' profile's ablation grid trains run"):
        migrate(tmp_path, "paper", log=lambda *_: None)
    other = tmp_path / "other"
    _legacy_run(other, "prune_struct_50_ce_baseline", {"start": {"from": "kd"}})   # the name and the record disagree
    with pytest.raises(ValueError, match="the name says it was pruned from 'baseline'"):
        migrate(other, "paper", log=lambda *_: None)
