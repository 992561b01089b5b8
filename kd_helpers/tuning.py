"""Every method tuned with the same budget on validation (Optuna), then retrained on the table's seeds.

One Optuna study per (dataset, variant): the shared training knobs (``presets.SHARED_SPACE``)
plus the method's own hyper-parameters (``presets.SEARCH_SPACE``), ``presets.TRIALS`` trials
for every variant of a dataset, the study's literature values first. A trial is a run of the
store like any other (``RunSpec.trial`` set): it trains on ``presets.TUNING_SEED``, which no
reported run uses, selects its epoch on validation as every run does, and its objective is the
selected weights' validation accuracy. It never sees the test set (``experiment.without_test``).

Sampler: TPE (Bergstra et al. 2011), seeded per trial number, the first third of the budget
random. Pruner: the median rule on the per-epoch validation accuracy after the first quarter of
the epochs (``fit``'s ``on_epoch``). Storage: Optuna's journal file in the results store
(``<store>/_tuning/<dataset>/<variant>.journal``), which works on a shared filesystem, so local
workers and SLURM tasks tune one study together: each takes the next trial under the study's
lock, trains it under the run's lock, and a trial whose worker died is taken up again and resumes
from its last epoch checkpoint. With one worker the trials are reproducible; with several, the
order in which their results arrive changes what TPE proposes next.

Precision: a trial trains in the precision its machine resolves ``auto`` to (bf16 where the CPU
has AMX/AVX512-BF16, else fp32), so a study whose trials ran on different machines mixes them
(``tuning_report.trials_summary`` counts them; trials only choose the configuration). The tuned
seeds, whose comparison is the table, all train in one precision, its tuned teacher's
(``table_precision``), on whatever machine they run: a table never carries a machine's precision
as a method's effect (``findings.one_training`` refuses one that mixes them). Where that
precision would be emulated (bf16 without native support), the plan leaves them to another machine.
"""
from __future__ import annotations

import os
import warnings
import time
import zlib
from dataclasses import replace
from pathlib import Path

# optuna imports tqdm.auto, which warns in a notebook kernel without ipywidgets (with this
# machine's site-packages path in the executed notebook); its progress bars are not used here
warnings.filterwarnings("ignore", message="IProgress not found")
import optuna  # noqa: E402

from .experiment import RunSpec, lock_path, run, spec_for
from .core.lock import Busy, RunLock, held
from .store.names import run_name
from .store.presets import (SEARCH_SPACE, SHARED_SPACE, TUNED_TEACHER, TUNING_SEED, Range, tuned_variants, tuning_budget,
                             variant)
from .store.results import dataset_dir, is_finished, load_run, results_root, run_dir
from .core.train import NonFiniteLoss
from .core.util import cpu_has_native_bf16, device_default, precision_label, resolve_precision

ORPHAN_GRACE_S = 120.0   # a trial asked this long ago whose run nobody holds lost its worker


variants = tuned_variants


def space(name: str) -> dict[str, Range]:
    """Variant ``name``'s search space: the shared knobs, then its method's own."""
    return {**SHARED_SPACE, **SEARCH_SPACE[variant(name).method]}


def literature(name: str, dataset: str, profile: str) -> dict:
    """The values the as-published study trained ``name`` with."""
    spec = spec_for(name, dataset, profile)
    return {k: getattr(spec.train, k) if k in SHARED_SPACE else spec.loss[k] for k in space(name)}


def first_trial(name: str, dataset: str, profile: str) -> dict:
    """Trial 0 of every study: the as-published values, each brought into its range. Only a 0
    outside a log range moves (to the range's floor): the protocol's weight decay 0 becomes 1e-6,
    FitNets' stage-2 hint weight 0 becomes 0.5."""
    return {k: min(max(v, space(name)[k].low), space(name)[k].high) for k, v in literature(name, dataset, profile).items()}


def journal_path(root, dataset: str, name: str) -> Path:
    return Path(root) / "_tuning" / dataset_dir(".", dataset).name / f"{name}.journal"


def _study_lock(root, dataset: str, name: str) -> RunLock:
    """Held while a worker settles, takes up or asks for a trial (Optuna's journal lock guards
    single writes; taking the next trial is a read and a write)."""
    path = journal_path(root, dataset, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return RunLock(path.with_name(f"{name}.study.lock"))   # not ".journal.lock": Optuna's own lock file


def _split(params: dict) -> tuple[dict, dict]:
    """(loss hyper-parameters, TrainConfig overrides) of a trial's parameters."""
    return ({k: v for k, v in params.items() if k not in SHARED_SPACE},
            {k: v for k, v in params.items() if k in SHARED_SPACE})


def trial_spec(name: str, dataset: str, profile: str, number: int, params: dict) -> RunSpec:
    loss, train = _split(params)
    spec = spec_for(name, dataset, profile, TUNING_SEED, loss=loss, test_curve=False, teacher=TUNED_TEACHER, **train)
    return replace(spec, run=run_name(name, {"trial": f"{number:03d}"}, "trial"), trial={"study": f"{dataset}/{name}", "number": number},
                   kind="trial")


def tuned_spec(name: str, dataset: str, profile: str, seed: int, params: dict, precision: str = "auto") -> RunSpec:
    """``name`` retrained on reported seed ``seed`` with its study's best parameters, in
    ``precision`` (the study runner passes ``table_precision``)."""
    if seed == TUNING_SEED:
        raise ValueError(f"Seed {TUNING_SEED} is the tuning seed: a tuned configuration is reported on other seeds.")
    loss, train = _split(params)
    return replace(spec_for(name, dataset, profile, seed, loss=loss, teacher=TUNED_TEACHER, precision=precision, **train),
                   run=run_name(name, kind="tuned"), kind="tuned", role=name)


def table_precision(root, dataset: str) -> str:
    """The precision ``dataset``'s tuned table trains in: the one its tuned teacher (seed 0)
    recorded, so that a table trained across machines is one precision; ``auto`` (this
    machine's) before the teacher is trained."""
    teacher = run_dir(root, dataset, TUNED_TEACHER, 0)
    if not is_finished(teacher):
        return "auto"
    return precision_label(load_run(teacher, verify=False)["metrics"].get("precision"))


def emulated_here(precision: str) -> bool:
    """Whether ``precision`` runs emulated on this machine: bf16 on a CPU without AMX/AVX512-BF16
    (a CIFAR-10 student's training step took 12-14x as long as in fp32 on an AVX2 EPYC,
    2026-12-07), unless ``KD_PRECISION=bf16`` asks for it anyway."""
    return (precision == "bf16" and device_default().type == "cpu" and not cpu_has_native_bf16()
            and os.environ.get("KD_PRECISION") != "bf16")


def precision_note(root, dataset: str) -> str | None:
    """A line for the study's log where this machine would train ``dataset``'s tuned seeds in
    another precision than its table's, else None. Where the table's would be emulated here
    (``emulated_here``) the plan leaves the tuned seeds to another machine."""
    table, here = table_precision(root, dataset), resolve_precision("auto")
    if table in ("auto", here):
        return None
    line = (f"{dataset}: its tuned table trains in {table} (its tuned teacher's precision); this machine's is {here}")
    if emulated_here(table):
        return (line + f": {table} would be emulated here, so its tuned seeds are left to a CPU with AMX/AVX512-BF16 "
                f"or a GPU (KD_PRECISION=bf16 trains them here anyway, about 12-14x slower); its trials train here in {here}.")
    return line + f": its tuned seeds train in {table} here."


def teacher_spec(dataset: str, profile: str, seed: int = 0) -> RunSpec:
    """The tuned study's teacher (``presets.TUNED_TEACHER``) on ``seed``: trials and tuned runs
    distil from its seed 0."""
    return spec_for(TUNED_TEACHER, dataset, profile, seed)


def _sampler(study: str, n_trials: int, number: int) -> optuna.samplers.BaseSampler:
    # a fresh sampler per trial, seeded by the study's name and the trial's number: a worker
    # process cannot keep one random stream across trials that other processes ask for, and two
    # studies must not draw the same values
    seed = zlib.crc32(f"{study}#{number}".encode())
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, n_trials // 3))


def _pruner(n_trials: int, epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, n_trials // 4), n_warmup_steps=max(1, epochs // 4))


def open_study(root, dataset: str, name: str, profile: str) -> optuna.Study:
    """The (dataset, variant) study in the store, created on first use."""
    path = journal_path(root, dataset, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    n = tuning_budget(dataset, profile)[0]
    epochs = spec_for(name, dataset, profile).train.epochs
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=storage, study_name=f"{dataset}/{name}", direction="maximize",
                               load_if_exists=True, sampler=_sampler(f"{dataset}/{name}", n, 0), pruner=_pruner(n, epochs))


def load_study(root, dataset: str, name: str) -> optuna.Study | None:
    """A study as stored (None if it was never started), for reading."""
    path = journal_path(root, dataset, name)
    if not path.exists():
        return None
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=f"{dataset}/{name}", storage=storage)


_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def _finished(study: optuna.Study | None, dataset: str, profile: str) -> bool:
    n = tuning_budget(dataset, profile)[0]
    return study is not None and sum(t.state in _DONE for t in study.get_trials(deepcopy=False)) >= n


def finished(root, dataset: str, name: str, profile: str) -> bool:
    """Whether the study has its whole budget of trials told (complete, pruned or failed)."""
    return _finished(load_study(root, dataset, name), dataset, profile)


def best_params(root, dataset: str, name: str, profile: str) -> dict | None:
    """The best complete trial's parameters once the study is finished, else None."""
    study = load_study(root, dataset, name)
    return dict(study.best_trial.params) if _finished(study, dataset, profile) else None


def _tell_from_run(study: optuna.Study, t: optuna.trial.FrozenTrial, out: Path) -> None:
    """Tell the journal what the trial's finished run recorded (its worker may have died between)."""
    m = load_run(out, verify=False)["metrics"]
    if m.get("stopped_early"):
        study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(t.number, m["val_acc"])


def _next(root, dataset, name, profile, n) -> tuple[optuna.Study, optuna.trial.FrozenTrial] | None:
    """Under the study's lock: settle trials whose run finished, take up a trial whose worker
    died, or ask for a new one while the budget lasts; None when nothing is left to train here."""
    with _study_lock(root, dataset, name):
        trials = (study := open_study(root, dataset, name, profile)).get_trials(deepcopy=False)
        if not trials:
            study.enqueue_trial(first_trial(name, dataset, profile))   # trial 0: the as-published values
            trials = study.get_trials(deepcopy=False)
        now = time.time()
        for t in trials:
            if t.state != optuna.trial.TrialState.RUNNING:
                continue
            out = run_dir(root, dataset, f"tune_{name}__trial={t.number:03d}", TUNING_SEED)
            if is_finished(out):
                _tell_from_run(study, t, out)
            elif not held(lock_path(out)) and now - t.datetime_start.timestamp() > ORPHAN_GRACE_S:
                return study, t
        if len(trials) >= n and not any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            return None
        study.sampler = _sampler(f"{dataset}/{name}", n, len(trials))   # seeded by the trial's number
        trial = study.ask({k: _distribution(r) for k, r in space(name).items()})
        return study, study.get_trials(deepcopy=False)[trial.number]


def _distribution(r: Range) -> optuna.distributions.BaseDistribution:
    if r.integer:
        return optuna.distributions.IntDistribution(int(r.low), int(r.high), log=r.log)
    return optuna.distributions.FloatDistribution(r.low, r.high, log=r.log)


def tune(dataset: str, name: str, profile: str = "quick", results_dir=None, data_dir=None, *,
         progress: bool = False) -> optuna.Study:
    """Run trials of the (dataset, variant) study until its budget is spent; other workers may
    run trials of the same study at the same time. Returns the study."""
    root = results_root(results_dir, profile)
    n = tuning_budget(dataset, profile)[0]
    while (picked := _next(root, dataset, name, profile, n)) is not None:
        study, t = picked
        spec = trial_spec(name, dataset, profile, t.number, t.params)
        trial = optuna.Trial(study, t._trial_id)

        def report(row, trial=trial):
            trial.report(row["val_acc"], row["epoch"])
            return trial.should_prune()
        try:
            r = run(spec, results_dir, data_dir, profile=profile, progress=progress, wait=False, on_epoch=report)
        except Busy:
            continue             # another worker took this trial up first
        except NonFiniteLoss as e:   # a diverging configuration is a result of the search, not a crash
            with _study_lock(root, dataset, name):
                trial.set_user_attr("failed", str(e).splitlines()[0][:300])
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            continue
        with _study_lock(root, dataset, name):
            if study.get_trials(deepcopy=False)[t.number].state == optuna.trial.TrialState.RUNNING:
                _tell_from_run(study, t, r["dir"])
    return load_study(root, dataset, name)


def space_table(dataset: str, profile: str):
    """The search spaces of ``dataset``'s tuning: the shared knobs once, then each variant's own
    hyper-parameters; range, scale, the as-published value, trial 0's value and the range's source."""
    import pandas as pd
    rows = []
    for name in variants(dataset):
        lit, first = literature(name, dataset, profile), first_trial(name, dataset, profile)
        own = SEARCH_SPACE[variant(name).method]
        for k, r in (space(name) if name == "baseline" else own).items():
            rows.append({"variant": "every variant" if k in SHARED_SPACE else name, "parameter": k, "low": r.low,
                         "high": r.high, "scale": "log" if r.log else "integer" if r.integer else "linear",
                         "as published": lit[k], "trial 0": first[k], "source": r.source})
    return pd.DataFrame(rows).set_index(["variant", "parameter"])
