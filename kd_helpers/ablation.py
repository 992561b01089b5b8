"""Why the reference protocol fell short: a small ablation of the teacher's and the student's
training protocol, and on MNIST (where the reference reports it) of vanilla KD's
(notebooks/01_teacher, appendix).

Each row changes one thing against the study's protocol and trains the teacher (or the no-KD
student) once per seed. The protocol is chosen on **validation** accuracy only; the test
accuracy of the selected (best-validation) epoch and of the last epoch are shown beside it.
A row with another validation split (more training images, a smaller validation set) is
reported but never chosen: accuracies on different validation sets do not compare.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from .analysis.ablation_report import interpretation, summarise   # noqa: F401 - the notebook's reading
from .experiment import RunSpec, run, spec_for
from .store.names import run_name
from .store.presets import ABLATION_GRID, family


def _val_size(data, scale: float):
    """The study's validation split scaled (a count stays a count, a fraction a fraction)."""
    return max(1, round(data.val_size * scale)) if data.val_size >= 1 else round(data.val_size * scale, 6)


def specs(dataset: str, profile: str, seed: int) -> list[tuple[str, str, RunSpec, bool]]:
    """The grid's runs for one seed: (label, role, spec, is the study's own run). An ablation run
    records its role and its row's changes; it is named by the values they give on this profile."""
    out = []
    for label, role, protocol in ABLATION_GRID.get(family(dataset), []):   # no grid for the residual pairs
        changes = protocol
        train = {k: v for k, v in changes.items() if k not in ("model", "loss", "val_scale", "epochs_scale")}
        spec = spec_for(role, dataset, profile, seed, model=changes.get("model"), loss=changes.get("loss"), **train)
        if "epochs_scale" in changes:   # named by the count it gives: epochs=60 on the paper profile
            changes = {"epochs": spec.train.epochs * changes["epochs_scale"]}
            spec = replace(spec, train=replace(spec.train, **changes))
        if "val_scale" in changes:   # named by the split it gives: val_size=1000 on full MNIST
            changes = {"val_size": _val_size(spec.data, changes["val_scale"])}
            spec = replace(spec, data=replace(spec.data, **changes))
        if changes:   # a run of its own; the study's protocol is the study's own run, reused
            spec = replace(spec, run=run_name(role, changes, "ablation"), kind="ablation", role=role,
                           protocol=protocol)
        out.append((label, role, spec, not changes))
    return out


def protocol_ablation(dataset: str, profile: str = "quick", seeds=(0,), *, results_dir=None, data_dir=None,
                      progress: bool = False) -> pd.DataFrame:
    """Train (or reuse) every row of the dataset family's grid; one row per protocol, mean over seeds."""
    rows = []
    for s in seeds:
        for label, role, spec, study in specs(dataset, profile, s):
            r = run(spec, results_dir, data_dir, profile=profile, progress=progress)
            m = r["metrics"]
            rows.append({"protocol": label, "role": role, "run": spec.run, "seed": s, "model": spec.model,
                         "val_acc": m["val_acc"], "test_acc": m["test_acc"],
                         "test_acc_last_epoch": m["test_acc_last_epoch"], "selected_epoch": m["selected_epoch"],
                         "precision": m["precision"], "train_s": m["train_s"], "study": study,
                         "val_size": spec.data.val_size, "n_val": m["n_val"]})
    return summarise(pd.DataFrame(rows))
