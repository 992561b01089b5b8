"""One run = one spec -> one directory in the results store. Finished runs are reused.

Notebooks call ``train_teacher``, ``distill`` (any method from the loss registry, including
the no-KD baseline ``ce``) and read results with ``kd_helpers.results.load_results``.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import evaluate
from .data import DataConfig, load_dataset
from .losses import LOSSES, build_loss, describe_pair
from .models import create_model
from .presets import preset
from .results import is_finished, load_run, read_json, results_root, run_dir, save_run
from .train import TrainConfig, fit, predict, seed_everything
from .util import atomic_torch_save, environment


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
    init_from: str | None = None     # start from another run's weights (pruning, fine-tuning)
    prune: dict | None = None        # see kd_helpers.prune

    def resolved(self) -> "RunSpec":
        return replace(self, run=self.run or self.method, train=replace(self.train, seed=self.seed))


# settings that change how fast a run is evaluated, not what it learns: a finished run is
# reused whatever they were
EXECUTION_ONLY = {"train.eval_batch_size"}


class ConfigMismatch(RuntimeError):
    pass


def _diff(old: dict, new: dict, prefix="") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def load_model(path, expected_arch: str | None = None, num_classes: int | None = None, in_shape=None):
    """Load a run's ``model.pt``; a checkpoint that does not fit the architecture fails clearly.

    ``num_classes``/``in_shape`` default to what the checkpoint recorded."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}. Train that run first (see notebooks/01_teacher).")
    state = torch.load(path, map_location="cpu", weights_only=False)
    arch = expected_arch or state["arch"]
    if state.get("pruned") and expected_arch in (None, state["arch"]):
        return state["module"]  # structured pruning changed the layer shapes: the saved module is authoritative
    num_classes = num_classes or state.get("num_classes", 10)
    in_shape = tuple(in_shape or state.get("in_shape") or (1, 28, 28))
    model = create_model(arch, num_classes, in_shape=in_shape)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"Checkpoint {path} (saved as '{state.get('arch')}') does not fit architecture "
                         f"'{arch}' with {num_classes} classes and input {in_shape}: {str(e).splitlines()[0]} "
                         f"Check the teacher's run name and model name, or retrain it.") from None
    return model


def _save_model(model, path, arch, in_shape, num_classes, pruned: bool = False):
    blob = {"arch": arch, "model": model.state_dict(), "pruned": pruned, "in_shape": list(in_shape),
            "num_classes": num_classes}
    if pruned:
        blob["module"] = model
    atomic_torch_save(blob, path)


def run(spec: RunSpec, results_dir=None, data_dir=None, *, force: bool = False, progress: bool = True,
        profile: str | None = None) -> dict:
    """Train, evaluate and store one run; return ``load_run`` of its directory.

    A finished run with the same config is returned as is. A finished run with a different
    config is never overwritten silently: pass ``force=True`` or use another results dir.
    """
    spec = spec.resolved()
    if spec.method not in LOSSES:
        raise ValueError(f"Unknown method '{spec.method}'. Available: {', '.join(sorted(LOSSES))}")
    root = results_root(results_dir, profile)
    out = run_dir(root, spec.dataset, spec.run, spec.seed)
    config = asdict(spec)
    if is_finished(out) and not force:
        diff = [d for d in _diff(read_json(out / "config.json"), json_roundtrip(config))
                if d.split(":")[0] not in EXECUTION_ONLY]
        if not diff:
            return load_run(out)
        raise ConfigMismatch(f"{out} holds a finished run with a different config "
                             f"({'; '.join(diff)}). Pass force=True to retrain, "
                             f"or use another results_dir.")
    if force and out.exists():
        shutil.rmtree(out)

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    data = load_dataset(spec.dataset, data_dir, spec.data)
    in_shape, ncls = data.input_shape, data.num_classes
    seed_everything(spec.seed)
    make = lambda: create_model(spec.model, ncls, in_shape=in_shape)
    model = make()
    if spec.init_from:
        init = run_dir(root, spec.dataset, spec.init_from, spec.seed)
        model = load_model(init / "model.pt", num_classes=ncls, in_shape=in_shape)

    teacher, teacher_dir = None, None
    if LOSSES[spec.method].requires_teacher:
        if not spec.teacher:
            raise ValueError(f"Method '{spec.method}' needs a teacher: set RunSpec.teacher to the teacher's "
                             f"run name (e.g. 'teacher').")
        teacher_dir = run_dir(root, spec.dataset, spec.teacher, spec.teacher_seed)
        if not is_finished(teacher_dir):
            raise FileNotFoundError(f"Teacher run '{spec.teacher}' (seed {spec.teacher_seed}) is not finished in "
                                    f"{teacher_dir}. Run notebooks/01_teacher.ipynb (or kd_helpers.experiment."
                                    f"train_teacher) with the same dataset, profile and results_dir first.")
        teacher = load_model(teacher_dir / "model.pt", num_classes=ncls, in_shape=in_shape)

    pruning = None
    if spec.prune:
        from .prune import apply_pruning
        pruning = apply_pruning(model, spec.prune, data, in_shape)
        pruning.metrics["prune_source"] = spec.init_from

    pair = describe_pair(model, teacher, in_shape, ncls, make_student=make)
    loss_fn = build_loss(spec.method, pair, **spec.loss)
    history = fit(model, loss_fn, data, spec.train, teacher=teacher, checkpoint=out / "checkpoint.pt",
                  cache_dir=teacher_dir, progress=progress, desc=f"{spec.dataset}/{spec.run}/s{spec.seed}")
    if pruning is not None:
        pruning.finalize(model)

    model.cpu().float()
    logits, extras = predict(model, data, "test", spec.train.eval_batch_size, loss_fn.cpu())
    val_logits, _ = predict(model, data, "val", spec.train.eval_batch_size)
    y, y_val = data.y["test"], data.y["val"]
    metrics = {"test_acc": evaluate.accuracy(logits, y), "test_errors": evaluate.error_count(logits, y),
               "n_test": len(y), "input_shape": list(in_shape),
               "val_acc": evaluate.accuracy(val_logits, y_val) if len(y_val) else None,
               "best_val_epoch": int(max(history, key=lambda r: r["val_acc"])["epoch"]),
               **{f"test_acc_{k}": evaluate.accuracy(z, y) for k, z in extras.items()},
               **evaluate.describe(model, in_shape), **(pruning.metrics if pruning else {})}
    metrics.update(_costs(spec, model, teacher, loss_fn, data, history, in_shape,
                          time.perf_counter() - t_wall, time.process_time() - t_cpu))
    _save_model(model, out / "model.pt", spec.model, in_shape, ncls, pruned=bool(pruning and pruning.structural))
    save_run(out, config=config, env=environment(), history=history, labels=y.numpy(),
             logits=logits.numpy(), extra_logits={k: z.numpy() for k, z in extras.items()}, metrics=metrics)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return load_run(out)


def _costs(spec, model, teacher, loss_fn, data, history, in_shape, wall, cpu) -> dict:
    """Wall/CPU time and training FLOPs (backward ~ 2x forward), with the teacher's share."""
    n, epochs = len(data.y["train"]), len(history)
    s_flops = evaluate.flops(model, in_shape) * 3 * n * epochs
    t_flops = 0
    if teacher is not None:
        cached = spec.train.cache_teacher and not (data.augment if spec.train.augment is None else spec.train.augment)
        t_flops = evaluate.flops(teacher, in_shape) * n * (1 if cached else epochs)
    return {"wall_s": wall, "cpu_s": cpu, "train_s": float(sum(r["time_s"] for r in history)),
            "train_flops": s_flops + t_flops, "teacher_flops": t_flops,
            "precision": history[-1].get("precision", "float32") if history else None}


def json_roundtrip(obj):
    """What ``obj`` looks like after a trip through config.json (tuples become lists, etc.)."""
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------- notebook-level helpers

def _spec(dataset, profile, method, seed, *, model=None, run=None, teacher="teacher", loss=None, **train_kw):
    p = preset(dataset, profile)
    hp = {**p.loss.get(method, {}), **{k: v for k, v in (loss or {}).items() if v is not None}}
    train = replace(p.train, **train_kw) if train_kw else p.train
    return RunSpec(dataset, method, model or p.student, seed=seed, run=run or method,
                   teacher=teacher if LOSSES[method].requires_teacher else None, loss=hp, train=train, data=p.data)


def train_teacher(dataset: str, profile: str = "quick", seeds=(0,), results_dir=None, data_dir=None,
                  **train_kw) -> list[dict]:
    """Train (or reuse) the dataset's teacher with plain cross-entropy; run name 'teacher'."""
    p = preset(dataset, profile)
    train = replace(p.teacher_train, **train_kw) if train_kw else p.teacher_train
    return [run(RunSpec(dataset, "ce", p.teacher, seed=s, run="teacher", train=train, data=p.data),
                results_dir, data_dir, profile=profile) for s in seeds]


def distill(method: str, dataset: str, profile: str = "quick", seeds=(0,), *, model: str | None = None,
            run_name: str | None = None, loss: dict | None = None, results_dir=None, data_dir=None,
            **train_kw) -> list[dict]:
    """Train (or reuse) a student with ``method`` for each seed.

    ``model`` is an architecture name or a role of the dataset's preset ('fitnet', 'student_mod');
    default: the preset's student. ``loss`` overrides the preset's hyper-parameters (None keeps them).
    """
    p = preset(dataset, profile)
    arch = p.models.get(model or "student", model)
    return [run(_spec(dataset, profile, method, s, model=arch, run=run_name, loss=loss, **train_kw),
                results_dir, data_dir, profile=profile) for s in seeds]
