"""One run = one spec -> one directory in the results store. Finished runs are reused.

Notebooks call ``train_teacher`` and ``distill`` (any named run of the study or any method of
the loss registry, including the no-KD baseline) and read results with
``kd_helpers.store.results.load_results``. A run's ``config.json`` is its resolved ``RunSpec``:
every hyper-parameter with its default filled in, the concrete precision and augmentation,
the validation split as a count. Nothing downstream resolves a setting again.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .core import evaluate
from .core.data import DataConfig, Dataset, default_augment, load_dataset, resolve_data_config
from .core.lock import RunLock, held
from .core.losses import LOSSES, build_loss, describe_pair, hparams, loss_class
from .core.models import create_model, is_resized, load_resized, network_config
from .store.names import run_name
from .store.presets import VARIANTS, preset, variant
from .store.results import (MANIFEST, DamagedRun, check_run, is_finished, load_run, lost_manifest, read_json, results_root,
                      run_dir, save_run)
from .core.train import TrainConfig, fit, predict, read_checkpoint, remove_checkpoint, seed_everything
from .core.util import atomic_torch_save, environment, precision_label, resolve_precision, setup_threads


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    method: str                      # loss registry name ("ce": teacher / baseline)
    model: str                       # architecture of the trained network
    seed: int = 0
    run: str = ""                    # directory name; defaults to the method name
    teacher: str | None = None       # run name of the teacher to distil from
    teacher_seed: int = 0
    loss: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    start: dict | None = None        # where the weights come from if not a fresh init (see Start)
    teacher_id: dict | None = None   # the teacher's config and weights hashes (filled in by ``run``)
    loss_version: int = 0            # the loss definition's version (filled in by ``resolved``)
    network: dict | None = None      # the architecture's hyper-parameters (filled in by ``resolved``)
    network_version: int = 0         # ``models.network_version`` (filled in by ``resolved``)
    # a tuning trial ({"study": ..., "number": ...}; kd_helpers.tuning): trains on the tuning seed,
    # is evaluated on validation only and keeps no weights; None for every run of a table
    trial: dict | None = None
    # what the run is for: study (a table's row) | ablation | prune | trial | tuned (results.run_kind)
    kind: str = "study"
    # the study run this one stands in for: the variant a tuned run retrains ('kd', 'baseline'), the
    # run an ablation varies ('teacher', 'baseline', 'kd'); None for a study run (it is its own)
    role: str | None = None
    # what an ablation changes against the study's protocol (its row of presets.ABLATION_GRID)
    protocol: dict | None = None

    def resolved(self, data_dir=None, device: torch.device | None = None) -> "RunSpec":
        """The complete config of this run on ``device``: what ``config.json`` records and the
        only thing ``fit``, the teacher cache and the cost accounting read. Idempotent."""
        augment = self.train.augment
        if augment is None:
            augment = default_augment(self.dataset, data_dir)
        train = replace(self.train, seed=self.seed, augment=bool(augment),
                        precision=resolve_precision(self.train.precision, device))
        return replace(self, run=self.run or self.method, loss=hparams(self.method, **self.loss), train=train,
                       data=resolve_data_config(self.dataset, self.data, data_dir),
                       loss_version=loss_class(self.method).version, network=(net := network_config(self.model)),
                       network_version=net["version"])


@dataclass
class Start:
    """Train from prepared weights instead of a fresh initialisation (fine-tuning, pruning).

    ``record`` is stored as the run's ``start`` (part of its identity); ``prepare(model, data)``
    returns the network to train and metrics measured before training (it runs again on
    resume, so it must be deterministic); ``finish(model)`` returns metrics after training."""
    record: dict
    prepare: Callable[[nn.Module, Dataset], tuple[nn.Module, dict]]
    finish: Callable[[nn.Module], dict] = lambda model: {}


def json_roundtrip(obj):
    """What ``obj`` looks like after a trip through config.json (tuples become lists, etc.)."""
    return json.loads(json.dumps(obj, default=str))


# a config written before a setting existed is read with that setting's value then: runs from
# before versioned losses were trained under version 1 of their loss
_DEFAULTS = json_roundtrip({"train": asdict(TrainConfig()), "data": asdict(DataConfig()), "loss_version": 1,
                            "network_version": 1, "trial": None})
# recorded since a later version, and unknowable for older runs: absent is no difference
RECORDED_SINCE = {"network", "kind", "role", "protocol"}


def superseding(key: str) -> bool:
    """Whether a config difference in ``key`` is a newer definition of the loss or the network (or
    the study's newer hyper-parameters): such a run is refused for training (retrain it), and shown
    as published, labelled, where notebooks only read (KD_REUSE_ONLY=1)."""
    return key in ("loss_version", "network_version") or key.startswith(("loss.", "network."))


# settings that change how fast a run trains or is evaluated, not what it learns: a finished
# run is reused whatever they were
EXECUTION_ONLY = {"train.eval_batch_size", "train.channels_last", "train.fused_optimizer", "train.compile",
                  "train.test_curve"}
# reused across a difference, but the difference is reported (and each number's precision is shown)
REUSED_ACROSS = {"train.precision"}


class ConfigMismatch(RuntimeError):
    pass


class TeacherMismatch(RuntimeError):
    """The teacher in the store was not trained for this student (dataset, split or profile)."""


def reuse_only() -> bool:
    """``KD_REUSE_ONLY=1``: this process only reads runs (set for a notebook's kernel by
    ``study.run_study(reuse_only=True)``, i.e. ``--reuse-only``, or by the user)."""
    return os.environ.get("KD_REUSE_ONLY") == "1"


class ReuseOnly(RuntimeError):
    """A run would train while ``KD_REUSE_ONLY=1`` (re-executing published notebooks only reads)."""


def _diff(old: dict, new: dict, prefix="", defaults: dict | None = None) -> list[tuple[str, object, object]]:
    """Differences between two configs. A setting added to the code after ``old`` was written
    is no difference while it keeps its default (the behaviour ``old`` was trained with)."""
    if defaults is None:
        # a loss hyper-parameter added later (e.g. DML's KL weight) is no difference either while
        # it keeps the loss's default, under which the old run's function is the same
        loss_defaults = json_roundtrip(hparams(new["method"])) if new.get("method") in LOSSES else {}
        defaults = {**_DEFAULTS, "loss": loss_defaults}
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, defaults.get(k)), new.get(k)   # absent from old: the value it had then
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.", defaults.get(k) if isinstance(defaults.get(k), dict) else {})
        elif k not in old and not prefix and k in RECORDED_SINCE:
            continue
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def load_model(path, expected_arch: str | None = None, num_classes: int | None = None, in_shape=None):
    """Load a run's ``model.pt``; a checkpoint that does not fit the architecture fails clearly.

    ``num_classes``/``in_shape`` default to what the checkpoint recorded. Structurally pruned
    networks are rebuilt from the architecture and the saved tensor shapes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}. Train that run first (see notebooks/01_teacher).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, garbled, not a checkpoint at all
        raise ValueError(f"Checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:100]}). "
                         f"It is damaged: delete its run directory ({path.parent}) and retrain that run.") from None
    arch = expected_arch or state["arch"]
    num_classes = num_classes or state.get("num_classes", 10)
    in_shape = tuple(in_shape or state.get("in_shape") or (1, 28, 28))
    model = create_model(arch, num_classes, in_shape=in_shape)
    try:
        if state.get("resized") and arch == state["arch"]:
            load_resized(model, state["model"])
        else:
            model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"Checkpoint {path} (saved as '{state.get('arch')}') does not fit architecture "
                         f"'{arch}' with {num_classes} classes and input {in_shape}: {str(e).splitlines()[0]} "
                         f"Check the teacher's run name and model name, or retrain it.") from None
    return model


def _save_model(model, path, arch, in_shape, num_classes):
    resized = is_resized(model, create_model(arch, num_classes, in_shape=in_shape))
    atomic_torch_save({"arch": arch, "model": model.state_dict(), "resized": resized, "in_shape": list(in_shape),
                       "num_classes": num_classes}, path)


def _reuse(out: Path, config: dict) -> dict:
    """The finished run in ``out`` (already checked against its manifest) if it was trained with
    ``config`` (up to execution-only settings)."""
    diff = [d for d in _diff(read_json(out / "config.json"), config) if d[0] not in EXECUTION_ONLY]
    superseded = []
    if reuse_only():
        # re-executing published notebooks: a run trained under an earlier loss definition (or the
        # study's earlier hyper-parameters) is shown as published, labelled, until it is retrained
        superseded = [d for d in diff if superseding(d[0])]
    blocking = [d for d in diff if d[0] not in REUSED_ACROSS and d not in superseded]
    if blocking:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in blocking)
        raise ConfigMismatch(f"{out} holds a finished run with a different config ({shown}). "
                             f"Pass force=True to retrain, or use another results_dir.")
    for k, a, b in diff:
        if (k, a, b) not in superseded:
            warnings.warn(f"Reusing {out} trained with {k}={a!r} (this machine would use {b!r}); "
                          f"its numbers are reported as {a}-trained.", stacklevel=3)
    run = load_run(out, verify=False)
    run["superseded"] = [f"{k}={a!r} (now {b!r})" for k, a, b in superseded]
    return run


def run(spec: RunSpec, results_dir=None, data_dir=None, *, force: bool = False, progress: bool = True,
        profile: str | None = None, start: Start | None = None, wait: bool = True,
        on_epoch: Callable[[dict], bool] | None = None) -> dict:
    """Train, evaluate and store one run; return ``load_run`` of its directory.

    A finished run with the same config is returned as is. A finished run with a different
    config is never overwritten silently: pass ``force=True`` or use another results dir.
    While another process trains the same run, ``run`` waits for it and reuses its result
    (``wait=False``: raise ``lock.Busy`` instead). ``on_epoch``: see ``train.fit`` (a tuning
    trial's pruner).
    """
    setup_threads()   # before the data is loaded: everything a run computes uses the same threads
    if start is not None:
        spec = replace(spec, start=start.record)
    spec = spec.resolved(data_dir)
    root = results_root(results_dir, profile)
    teacher_dir = None
    if loss_class(spec.method).requires_teacher:
        teacher_dir, teacher_id = _teacher(root, spec, profile, data_dir)
        spec = replace(spec, teacher_id=teacher_id)
    out = run_dir(root, spec.dataset, spec.run, spec.seed)
    config = json_roundtrip(asdict(spec))
    if not force and (done := _finished(out, config, root, spec)):
        return done
    if reuse_only():
        raise ReuseOnly(f"Run {out} is not finished in {root} (or was trained with another config), and "
                        f"KD_REUSE_ONLY=1 forbids training it here: this re-execution only reads runs. Train it "
                        f"first (python -m kd_helpers.study --profile {profile or '<profile>'} ...), or unset "
                        f"KD_REUSE_ONLY.")
    if spec.start and start is None:
        raise ValueError(f"Run '{spec.run}' starts from {spec.start}: pass the matching Start "
                         f"(e.g. through kd_helpers.prune_sweep), not only its record.")
    # one trainer per run, whichever process (worker, notebook, SLURM task) asks
    with RunLock(lock_path(out), wait=wait) as lock:
        if not force and (done := _finished(out, config, root, spec)):   # finished while we waited
            return done
        if force and out.exists():
            shutil.rmtree(out)

        def epoch_end(row):   # an owner whose lock was broken stops at the end of its epoch
            lock.check()
            return on_epoch(row) if on_epoch is not None else False
        return _train(spec, out, config, root, teacher_dir, data_dir, progress, start, epoch_end, lock)


def lock_path(out: Path) -> Path:
    """The lock of run directory ``out`` (beside it: the directory itself may be deleted)."""
    return out.with_name(out.name + ".lock")


def _finished(out: Path, config: dict, root: Path, spec: RunSpec) -> dict | None:
    """The finished run in ``out`` if it is intact (checked against the config); a damaged
    student run is removed (and retrained by the caller), a damaged teacher refused."""
    lost = lost_manifest(out)
    if not is_finished(out) and not lost:
        return None
    problems = [lost] if lost else check_run(out)
    if not problems:
        # a kill between the manifest and the clean-up leaves a checkpoint (and a dead owner's lock)
        remove_checkpoint(out / "checkpoint.pt")
        if lock_path(out).exists() and not held(lock_path(out)):
            lock_path(out).unlink(missing_ok=True)
        return _announce(_reuse(out, config), root, trained=False)
    if spec.run == "teacher":
        raise DamagedRun(out, problems + [f"a damaged teacher is not retrained automatically (its students depend "
                                          f"on it): delete {out} and rerun notebooks/01_teacher; the students "
                                          f"then retrain too, since each records its teacher's weights hash"])
    warnings.warn(f"Run {out} is damaged ({'; '.join(problems)}); retraining it.", stacklevel=3)
    shutil.rmtree(out)
    return None


def _train(spec: RunSpec, out: Path, config: dict, root: Path, teacher_dir, data_dir, progress: bool,
           start: Start | None, on_epoch=None, lock: RunLock | None = None) -> dict:
    _check_resume(out / "checkpoint.pt", config)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    data = load_dataset(spec.dataset, data_dir, spec.data)
    if spec.trial is not None:
        if spec.train.test_curve:
            raise ValueError(f"Tuning trial {out} would read the test set every epoch: set train.test_curve=False.")
        data = without_test(data)   # a tuning trial must not be able to read the test set at all
    in_shape, ncls = data.input_shape, data.num_classes
    seed_everything(spec.seed)
    make = lambda: create_model(spec.model, ncls, in_shape=in_shape)
    model = make()
    before = {}
    if start is not None:
        model, before = start.prepare(model, data)
    if teacher_dir and not (teacher_dir / "model.pt").exists():
        raise FileNotFoundError(f"Teacher run {teacher_dir} has no weights: it was published without them (a "
                                f"published store keeps only the main studies' seed-0 teachers), so new students "
                                f"cannot distil from it. Delete {teacher_dir} and retrain it (notebooks/01_teacher, "
                                f"or kd_helpers.study --only 01_teacher).")
    teacher = load_model(teacher_dir / "model.pt", num_classes=ncls, in_shape=in_shape) if teacher_dir else None

    pair = describe_pair(model, teacher, in_shape, ncls, make_student=make)
    loss_fn = build_loss(spec.method, pair, **spec.loss)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOG, "a") as logf:   # the per-epoch log lives with the run, not in the notebook
        history = fit(model, loss_fn, data, spec.train, teacher=teacher, checkpoint=out / "checkpoint.pt",
                      cache_dir=teacher_dir, progress=progress, desc=f"{spec.dataset}/{spec.run}/s{spec.seed}",
                      meta=config, log=lambda line: print(line, file=logf, flush=True), on_epoch=on_epoch)
    if lock is not None:
        lock.check()   # the results are written only by the lock's owner
    if spec.trial is not None:
        return _save_trial(spec, out, config, root, model, data, history, t_wall, t_cpu)
    after = start.finish(model) if start is not None else {}

    model.cpu().float()
    logits, extras = predict(model, data, "test", spec.train.eval_batch_size, loss_fn.cpu())
    val_logits, _ = predict(model, data, "val", spec.train.eval_batch_size)
    y, y_val = data.y["test"], data.y["val"]
    metrics = {"test_acc": evaluate.accuracy(logits, y), "test_errors": evaluate.error_count(logits, y),
               "n_test": len(y), "n_train": len(data.y["train"]), "n_val": len(y_val),
               "input_shape": list(in_shape),
               "val_acc": evaluate.accuracy(val_logits, y_val) if len(y_val) else None,
               # the stored model is the best-validation epoch's; the last epoch's accuracy is its
               # per-epoch curve value (training precision), for the ablation of epoch selection
               "selected_epoch": int(next(r["epoch"] for r in history if r["selected"])),
               "test_acc_last_epoch": history[-1].get("test_acc"), "epochs_trained": len(history),
               **{f"test_acc_{k}": evaluate.accuracy(z, y) for k, z in extras.items()},
               **evaluate.describe(model, in_shape), **before, **after}
    metrics.update(_costs(spec, model, teacher, data, history, in_shape,
                          time.perf_counter() - t_wall, time.process_time() - t_cpu))
    _save_model(model, out / "model.pt", spec.model, in_shape, ncls)
    save_run(out, config=config, env=environment(), history=history, labels=y.numpy(),
             logits=logits.numpy(), extra_logits={k: z.numpy() for k, z in extras.items()}, metrics=metrics)
    remove_checkpoint(out / "checkpoint.pt")
    return _announce(load_run(out, verify=False), root, trained=True)   # just written


def without_test(data: Dataset) -> Dataset:
    """``data`` with an empty test split (what a tuning trial trains and selects on)."""
    return replace(data, x={**data.x, "test": data.x["test"][:0]}, y={**data.y, "test": data.y["test"][:0]})


def _save_trial(spec: RunSpec, out: Path, config: dict, root: Path, model, data, history, t_wall, t_cpu) -> dict:
    """A tuning trial's record: its objective (the best epoch's validation accuracy, the study's
    model selection), its per-epoch history and its validation predictions; no weights (nothing
    trains from a trial) and nothing measured on the test set."""
    model.cpu().float()
    val_logits, _ = predict(model, data, "val", spec.train.eval_batch_size)
    y_val = data.y["val"]
    sel = next(r for r in history if r["selected"])
    metrics = {"val_acc": evaluate.accuracy(val_logits, y_val), "val_acc_best_epoch": sel["val_acc"],
               "selected_epoch": int(sel["epoch"]), "epochs_trained": len(history),
               "stopped_early": len(history) < spec.train.epochs, "n_val": len(y_val),
               "n_train": len(data.y["train"]), "predictions": "val",
               "wall_s": time.perf_counter() - t_wall, "cpu_s": time.process_time() - t_cpu,
               "train_s": float(sum(r["time_s"] for r in history)),
               "precision": precision_label(history[-1].get("precision"))}
    save_run(out, config=config, env=environment(), history=history, labels=y_val.numpy(),
             logits=val_logits.numpy(), extra_logits={}, metrics=metrics)
    remove_checkpoint(out / "checkpoint.pt")
    r = load_run(out, verify=False)
    rel = out.relative_to(root) if out.is_relative_to(root) else out.name
    print(f"trained {rel}: validation {100 * sel['val_acc']:.2f}% (epoch {sel['epoch']} of {len(history)}"
          f"{', stopped by the pruner' if metrics['stopped_early'] else ''}), {metrics['train_s']:.0f} s")
    return r


LOG = "train.log"


def _announce(r: dict, root: Path, trained: bool) -> dict:
    """One line per run for the notebook: trained or reused, time, accuracy, where its log is
    (relative to the results store: no machine paths in executed notebooks)."""
    m, rel = r["metrics"], r["dir"].relative_to(root) if r["dir"].is_relative_to(root) else r["dir"].name
    print(f"{'trained' if trained else 'reused '} {rel}: test {100 * m['test_acc']:.2f}% (epoch "
          f"{m.get('selected_epoch', '?')} of {m.get('epochs_trained', '?')}, best on validation), "
          f"{m.get('train_s', float('nan')):.0f} s training in {m.get('precision')}; log: {rel}/{LOG}")
    if r.get("superseded"):
        print(f"        as published, trained under an earlier definition: {', '.join(r['superseded'])}")
    return r


# the study's teacher runs (checked against their profile's protocol before a student distils)
TEACHERS = {name for name, v in VARIANTS.items() if v.role == "teacher"}


def _teacher(root: Path, spec: RunSpec, profile: str | None, data_dir) -> tuple[Path, dict]:
    """The teacher's directory and identity, after checking it is intact and was trained for this
    student: same dataset and split, and (for the study's teacher) the profile's teacher protocol."""
    if not spec.teacher:
        raise ValueError(f"Method '{spec.method}' needs a teacher: set RunSpec.teacher to the teacher's "
                         f"run name (e.g. 'teacher').")
    tdir = run_dir(root, spec.dataset, spec.teacher, spec.teacher_seed)
    if not is_finished(tdir):
        raise FileNotFoundError(f"Teacher run '{spec.teacher}' (seed {spec.teacher_seed}) is not finished in "
                                f"{tdir}. Run notebooks/01_teacher.ipynb (or kd_helpers.experiment."
                                f"train_teacher) with the same dataset, profile and results_dir first.")
    problems = check_run(tdir)
    if problems:
        raise DamagedRun(tdir, problems + [f"delete {tdir} and rerun notebooks/01_teacher (students distilled "
                                           f"from it are retrained then)"])
    tcfg = read_json(tdir / "config.json")
    wrong = []
    if tcfg.get("dataset") != spec.dataset:
        wrong.append(f"it was trained on dataset {tcfg.get('dataset')!r}, not {spec.dataset!r}")
    if tcfg.get("data") != json_roundtrip(asdict(spec.data)):
        wrong.append(f"its data split is {tcfg.get('data')}, this student's is {json_roundtrip(asdict(spec.data))}")
    if profile and spec.teacher in TEACHERS and not wrong:
        want = json_roundtrip(asdict(spec_for(spec.teacher, spec.dataset, profile, spec.teacher_seed).resolved(data_dir)))
        reading = reuse_only()   # a published teacher is shown as published
        wrong += [f"{k} is {a!r}, the '{profile}' profile's teacher has {b!r}" for k, a, b in _diff(tcfg, want)
                  if k not in EXECUTION_ONLY | REUSED_ACROSS and not (reading and superseding(k))]
    if wrong:
        raise TeacherMismatch(f"Teacher run {tdir} was not trained for this student: {'; '.join(wrong)}. Train the "
                              f"teacher for dataset '{spec.dataset}' and this profile (notebooks/01_teacher), or keep "
                              f"each profile in a results_dir of its own.")
    manifest = read_json(tdir / MANIFEST)
    # a teacher published without weights keeps its original's identity: its students are still reused
    weights = manifest.get("model.pt") or manifest.get("published_from", {}).get("model.pt")
    return tdir, {"run": spec.teacher, "seed": spec.teacher_seed, "config_sha256": manifest["config.json"]["sha256"],
                  "model_sha256": weights["sha256"]}


def _check_resume(ckpt: Path, config: dict) -> None:
    """An unfinished run resumes only under the config its checkpoint was trained with."""
    state = read_checkpoint(ckpt)
    if state is None:
        return
    old = state.get("meta")
    diff = [d for d in _diff(old, config) if d[0] not in EXECUTION_ONLY] if old is not None else [("config", "?", "")]
    if diff:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff)
        raise ConfigMismatch(f"{ckpt} holds {len(state['history'])} epochs trained under another config ({shown}). "
                             f"Resuming would mix the two. Pass force=True to start this run over, or restore the "
                             f"settings it was started with.")


def _costs(spec: RunSpec, model, teacher, data, history, in_shape, wall, cpu) -> dict:
    """Wall/CPU time and training FLOPs (backward ~ 2x forward), with the teacher's share."""
    n, epochs = len(data.y["train"]), len(history)
    s_flops = evaluate.flops(model, in_shape) * 3 * n * epochs
    t_flops = 0
    if teacher is not None:
        cached = spec.train.cache_teacher and not spec.train.augment
        t_flops = evaluate.flops(teacher, in_shape) * n * (1 if cached else epochs)
    return {"wall_s": wall, "cpu_s": cpu, "train_s": float(sum(r["time_s"] for r in history)),
            "train_flops": s_flops + t_flops, "teacher_flops": t_flops,
            "precision": precision_label(history[-1].get("precision")) if history else None}


# ---------------------------------------------------------------- the study's runs by name

def derive_name(base: str, hp: dict, defaults: dict, model: str | None = None) -> str:
    """``base`` plus every hyper-parameter that differs from the study's value, e.g.
    ``dkd__beta=4``, and ``model`` when the run trains another network than usual
    (``store.names.run_name``)."""
    changed = {k: v for k, v in hp.items() if k not in defaults or defaults[k] != v}
    return run_name(base, {**changed, **({"model": model} if model else {})})


def spec_for(name: str, dataset: str, profile: str = "quick", seed: int = 0, *, model: str | None = None,
             loss: dict | None = None, teacher: str = "teacher", **train_kw) -> RunSpec:
    """The spec of the study's run ``name`` (a named run such as 'baseline' or 'fitnets_1stage',
    or a method): the one place where run names are derived from non-default settings.

    ``model``: an architecture or a role of the preset ('student_mod'); ``loss``: overrides of
    the study's hyper-parameters (None values keep them); ``train_kw``: TrainConfig overrides
    (not part of the name: a changed one is refused for a finished run, see ``run``)."""
    p = preset(dataset, profile)
    v = variant(name)
    usual = p.models[v.role]
    arch = p.models.get(model, model) if model else usual
    defaults = hparams(v.method, **{**p.loss.get(v.method, {}), **v.loss})
    hp = hparams(v.method, **{**defaults, **{k: x for k, x in (loss or {}).items() if x is not None}})
    train = p.teacher_train if v.role == "teacher" else p.train
    train = replace(train, **train_kw) if train_kw else train
    return RunSpec(dataset, v.method, arch, seed=seed, run=derive_name(name, hp, defaults, arch if arch != usual else None),
                   teacher=teacher if loss_class(v.method).requires_teacher else None, loss=hp, train=train,
                   data=p.data, kind=v.kind)


def train_teacher(dataset: str, profile: str = "quick", seeds=(0,), results_dir=None, data_dir=None,
                  **train_kw) -> list[dict]:
    """Train (or reuse) the dataset's teacher with plain cross-entropy; run name 'teacher'."""
    return distill("teacher", dataset, profile, seeds, results_dir=results_dir, data_dir=data_dir, **train_kw)


def distill(name: str, dataset: str, profile: str = "quick", seeds=(0,), *, model: str | None = None,
            loss: dict | None = None, results_dir=None, data_dir=None, progress: bool = True,
            **train_kw) -> list[dict]:
    """Train (or reuse) the study's run ``name`` for each seed (see ``spec_for``)."""
    return [run(spec_for(name, dataset, profile, s, model=model, loss=loss, **train_kw), results_dir, data_dir,
                profile=profile, progress=progress) for s in seeds]
