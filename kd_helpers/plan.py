"""Which runs each notebook trains: the one list that the notebooks train from
(``plan.train``) and that the study runner lists and hands to its executors (``plan.jobs``).

A notebook's runs follow from its parameters (the runner reads the defaults of the notebooks'
``parameters`` cells, as papermill would run them). Runs come in dependency levels:

- 0: needs nothing: teachers, no-KD students, the protocol ablation;
- 1: needs the teacher (every distillation method); local workers start such a run as soon as
  its own teacher is finished (``Job.needs``), not when the whole of level 0 is;
- 2: needs the distilled students: distill-then-prune prunes the best of them (chosen on
  validation accuracy), so its runs are only known once level 1 has finished; likewise the
  tuned configurations' seeds, known once their tuning (level 0/1, ``kd_helpers.tuning``) is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import ablation, tuning
from .experiment import RunSpec, lock_path, run, spec_for
from .core.lock import held
from .core.losses import hparams, loss_class
from .store.names import run_name
from .store.params import declared, resolved
from .store.presets import TUNED_TEACHER, TUNING_SEED, preset, tuning_budget, variant
from .prune_sweep import prune_and_finetune, pruned_name
from .store.results import best_run, is_finished, load_results, results_root, run_dir


@dataclass(frozen=True)
class Job:
    """One training run of the study, picklable (executors send it to worker processes)."""
    notebook: str
    run: str                     # the run's directory name
    dataset: str
    profile: str
    seed: int
    spec: RunSpec | None = None  # None for a pruning run (its spec needs the trained source)
    prune: tuple | None = None   # (source, pruning, amount, finetune, epochs)
    tune: str | None = None      # the variant whose tuning trials this job runs (spec: its as-published run)
    phase: int | None = None     # the level of a run planned from earlier results (tuned seeds: 2)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.dataset, self.run, self.seed

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.run}/{self.seed}"

    @property
    def level(self) -> int:
        if self.phase is not None:
            return self.phase
        if self.prune:
            return 2
        return 1 if loss_class(self.spec.method).requires_teacher else 0

    def dir(self, results_dir=None):
        return run_dir(results_root(results_dir, self.profile), self.dataset, self.run, self.seed)

    def finished(self, results_dir=None) -> bool:
        if self.tune:
            return tuning.finished(results_root(results_dir, self.profile), self.dataset, self.tune, self.profile)
        return is_finished(self.dir(results_dir))

    def running(self, results_dir=None) -> bool:
        """Whether a live worker holds it (for a tuning job: whether its study has begun)."""
        if self.tune:
            return tuning.journal_path(results_root(results_dir, self.profile), self.dataset, self.tune).exists()
        return held(lock_path(self.dir(results_dir))) is not None

    def needs(self, results_dir=None):
        """The run directory this run distils from (its teacher at its seed), or None."""
        if self.spec is None or not self.spec.teacher or not loss_class(self.spec.method).requires_teacher:
            return None
        return run_dir(results_root(results_dir, self.profile), self.dataset, self.spec.teacher, self.spec.teacher_seed)

    def __call__(self, results_dir=None, data_dir=None, *, progress: bool = True, wait: bool = True) -> dict:
        if self.tune:
            return tuning.tune(self.dataset, self.tune, self.profile, results_dir, data_dir, progress=progress)
        if self.prune:
            source, pruning, amount, finetune, epochs = self.prune
            return prune_and_finetune(source, pruning, amount, finetune, dataset=self.dataset, profile=self.profile,
                                      seeds=[self.seed], epochs=epochs, results_dir=results_dir,
                                      data_dir=data_dir, wait=wait)[0]
        return run(self.spec, results_dir, data_dir, profile=self.profile, progress=progress, wait=wait)


def _runs(name, p, seeds="seeds", **kw) -> list[Job]:
    """Jobs of one ``distill(name, ...)`` call, one per seed of parameter ``seeds``. A no-KD
    variant that trains the baseline's own network (a pair study has one student) is the baseline."""
    out = []
    student = preset(p["dataset"], p["profile"]).student
    for s in p[seeds]:
        spec = spec_for(name, p["dataset"], p["profile"], s, **kw)
        if spec.method == "ce" and name not in ("baseline", "teacher") and spec.model == student and "model" not in kw:
            continue
        out.append(Job(p["notebook"], spec.run, p["dataset"], p["profile"], s, spec))
    return out


def _method(method: str, *extra: str):
    """A method notebook: the baseline, vanilla KD as the common reference, then the method
    with the notebook's hyper-parameters (every parameter named like one of the loss's)."""
    def jobs(p):
        loss = {k: p[k] for k in hparams(method) if k in p}
        return (_runs("baseline", p) + sum((_runs(e, p) for e in extra), [])
                + _runs(method, p, loss=loss))
    return jobs


def _teacher(p):
    """The teacher on every seed (its accuracy is a mean over seeds like every number of the
    study; students distil from ``teacher_seeds``), then the protocol ablation's runs."""
    out = _runs("teacher", {**p, "all": sorted(set(p["teacher_seeds"]) | set(p["seeds"]))}, "all")
    if p.get("ablation"):
        for s in p["teacher_seeds"]:
            for _label, _role, spec, _study in ablation.specs(p["dataset"], p["profile"], s):
                out.append(Job(p["notebook"], spec.run, p["dataset"], p["profile"], s, spec))
    return out


def _fitnets(p):
    return (_runs("baseline", p) + _runs("kd", p) + _runs("fitnet_baseline", p)
            + _runs("fitnets", p, loss={"stage1_frac": p["stage1_frac"]})
            + _runs("fitnets_1stage", p, loss={"beta": p["beta_one_stage"]}))


def _rkd(p):
    return (_runs("baseline", p) + _runs("kd", p) + _runs("rkd", p, loss={"w_d": p["w_d"], "w_a": p["w_a"]})
            + _runs("rkd_ref", p))


def _pruning(p):
    """The two pruning sources (baseline and KD, then every pruned + fine-tuned run of the best
    distilled student and of the baseline); the latter only once the students are trained."""
    out = _runs("baseline", p, "prune_seeds") + _runs("kd", p, "prune_seeds")
    df = load_results(p["results_dir"], p["profile"])
    try:
        best = best_run(df, p["dataset"], model=preset(p["dataset"], p["profile"]).student) if len(df) else None
    except ValueError:
        best = None
    if best is None:
        return out      # no distilled student yet: level 2 is planned after level 1
    epochs = p["finetune_epochs"] or preset(p["dataset"], p["profile"]).prune_epochs
    for source in (best, "baseline"):
        for pruning in p["kinds"]:
            for amount in p["amounts"]:
                for ft in p["finetune"]:
                    for s in p["prune_seeds"]:
                        out.append(Job(p["notebook"], pruned_name(source, pruning, amount, ft), p["dataset"], p["profile"],
                                       s, prune=(source, pruning, amount, ft, epochs)))
    return out


def _tuning(p):
    """A study per variant (its trials), then each finished study's best configuration on the
    tuned seeds (``tuned_seeds``: None is the profile's budget, presets.TUNED_SEEDS) in the
    table's precision (``tuning.table_precision``), left out where it would be emulated."""
    root = results_root(p["results_dir"], p["profile"])
    n_seeds = tuning_budget(p["dataset"], p["profile"])[1]
    seeds = p["tuned_seeds"] or list(range(n_seeds))
    out = []
    if any(loss_class(variant(v).method).requires_teacher for v in tuning.variants(p["dataset"])):
        spec = tuning.teacher_spec(p["dataset"], p["profile"])
        out.append(Job(p["notebook"], spec.run, p["dataset"], p["profile"], spec.seed, spec))
    for name in tuning.variants(p["dataset"]):
        spec = spec_for(name, p["dataset"], p["profile"], teacher=TUNED_TEACHER)   # trial 0's; needs its teacher
        out.append(Job(p["notebook"], run_name(name, kind="trial"), p["dataset"], p["profile"], TUNING_SEED, spec, tune=name))
    precision = tuning.table_precision(root, p["dataset"])   # one for the whole table, whichever machine
    for name in tuning.variants(p["dataset"]):
        best = tuning.best_params(root, p["dataset"], name, p["profile"])
        if best is not None and not tuning.emulated_here(precision):   # else another machine's (study's log says)
            out += [Job(p["notebook"], run_name(name, kind="tuned"), p["dataset"], p["profile"], s,
                        tuning.tuned_spec(name, p["dataset"], p["profile"], s, best, precision), phase=2)
                    for s in seeds]
    return out


@dataclass(frozen=True)
class Step:
    """One notebook of the study, in the order the study runs them: the runs it trains (a
    function of its resolved parameters, ``results_dir`` included; None: it trains nothing) and
    the model families (``presets.family``) it applies to, with the reason it skips the others."""
    notebook: str
    runs: Callable[[dict], list[Job]] | None = None
    per_dataset: bool = True
    families: tuple[str, ...] = ("mlp", "cnn", "pair")
    why_not: str = ""


# The study, one line per notebook: adding a method = one loss file, one notebook, one line here.
STEPS: tuple[Step, ...] = (
    Step("00_data"),
    Step("01_teacher", _teacher),
    Step("02_student_baseline",
         lambda p: _runs("baseline", p) + _runs("baseline_mod", p) + _runs("fitnet_baseline", p),
         families=("mlp", "cnn"),
         why_not="its variants (modified student, thin-deep FitNet) belong to the MLP/CNN family; "
                 "a pair's baseline is in every method notebook"),
    Step("03_vanilla_kd", _method("kd")),
    Step("04_fitnets", _fitnets),
    Step("05_rkd", _rkd),
    Step("06_feature_kd", _method("feature_kd", "kd")),
    Step("07_at", _method("at", "kd"), families=("cnn", "pair"),
         why_not="AT needs spatial feature maps; MLP features are vectors"),
    Step("08_dml", _method("dml", "kd")),
    Step("09_byot", _method("byot", "kd")),
    Step("10_dist", _method("dist", "kd")),
    Step("11_srd", _method("srd", "kd")),
    Step("12_srd_dist", _method("srd_dist", "kd", "srd")),
    Step("13_dkd", _method("dkd", "kd")),
    Step("14_tuning", _tuning, families=("mlp", "cnn"),
         why_not="the tuned comparison is the main study's (a residual pair's 240-epoch protocol is a GPU's)"),
    Step("20_pruning", _pruning),
    Step("30_statistics", per_dataset=False),
    Step("31_report", per_dataset=False),
)


def step(notebook: str) -> Step:
    """The study's entry for ``notebook``; a name not in ``STEPS`` is an error naming the known ones."""
    for s in STEPS:
        if s.notebook == notebook:
            return s
    raise ValueError(f"No notebook {notebook!r} in the study (kd_helpers/plan.py STEPS): add its line there. "
                     f"Notebooks: {', '.join(s.notebook for s in STEPS)}.")


def jobs(notebook: str, params: dict, results_dir=None) -> list[Job]:
    """The runs ``notebook`` trains with ``params`` (missing ones: its parameters cell's defaults)."""
    make = step(notebook).runs
    if make is None:
        return []
    p = resolved({**declared(notebook), **params, "notebook": notebook})
    listed = make({**p, "results_dir": results_dir or p.get("results_dir")})
    unique: dict[tuple, Job] = {}
    for j in listed:
        unique.setdefault(j.key, j)   # the ablation lists the study's own teacher again
    return list(unique.values())


def train(notebook: str, params: dict, *, progress: bool = True) -> list[list[dict]]:
    """Train (or reuse) a notebook's runs in order; one list per run name (its seeds), as
    ``distill`` returns them. Pruning runs are planned after their sources are trained."""
    p = {**declared(notebook), **params}
    done: dict[str, list[dict]] = {}
    planned = jobs(notebook, p)
    seen = set()
    while planned:
        for job in planned:
            seen.add(job.key)
            done.setdefault(job.run, []).append(job(p.get("results_dir"), p.get("data_dir"), progress=progress))
        planned = [j for j in jobs(notebook, p) if j.key not in seen]
    return list(done.values())


def study_jobs(steps, profile: str, seeds, results_dir=None, data_dir=None, level: int | None = None) -> list[Job]:
    """Every run of the study's ``(notebook, dataset)`` steps, without repeats (the baseline is
    listed by several notebooks), in study order; ``level``: only that dependency level."""
    out, seen = [], set()
    for nb, ds in steps:
        for job in jobs(nb, {"dataset": ds, "profile": profile, "seeds": list(seeds),
                             "results_dir": results_dir, "data_dir": data_dir}, results_dir):
            if job.key not in seen and (level is None or job.level == level):
                seen.add(job.key)
                out.append(job)
    return out


@dataclass(frozen=True)
class StudyPlan:
    """``study_jobs`` of fixed steps as a picklable callable of the level (workers re-plan each
    level themselves: the pruning runs are known only once the students are trained)."""
    steps: tuple
    profile: str
    seeds: tuple
    results_dir: str | None = None
    data_dir: str | None = None

    def __call__(self, level: int) -> list[Job]:
        return study_jobs(self.steps, self.profile, self.seeds, self.results_dir, self.data_dir, level=level)


__all__ = ["Job", "STEPS", "Step", "StudyPlan", "jobs", "step", "train", "study_jobs"]
