"""Run the whole study: execute the notebooks in order with papermill.

    python -m kd_helpers.study --profile {smoke,quick,paper} [--datasets ...] [--seeds ...]
                               [--executor {inline,local,slurm} --jobs N] [--plan]

Executed copies go to ``reports/<profile>/<dataset>/`` (per-dataset notebooks) and
``reports/<profile>/`` (statistics and report). Runs finished earlier are reused, so an
interrupted study resumes where it stopped. With ``--executor local`` or ``slurm`` the runs of
the plan (``kd_helpers.plan``) are trained first as parallel jobs (``kd_helpers.executors``);
the notebooks then only reuse them. ``--plan`` lists the runs and their state, and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .core.data import DatasetDamagedError, DatasetNotFoundError, load_dataset
from .store.presets import PAIRS, PROFILES, family, preset
from .executors import EXECUTORS, run_plan
from .plan import STEPS, StudyPlan, study_jobs
from . import tuning
from .store.results import finished_runs, is_finished, read_json, results_root
from .core.util import REPO_ROOT, atomic_write_json, cpu_model, git_commit, physical_cores, precision_label

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


DEFAULTS = {  # profile -> datasets, seeds
    "smoke": (["mnist5k"], [0]),
    "quick": (["mnist5k", "cifar10?"], [0, 1, 2]),   # "?": only if its files are found (never downloaded)
    "paper": (["mnist", "cifar10"], [0, 1, 2]),
}


class NotebookFailed(RuntimeError):
    pass


def available(dataset: str, data_dir, log=print) -> bool:
    """Whether an optional dataset can be read; a damaged one is skipped with the reason."""
    try:
        load_dataset(dataset, data_dir, preset(dataset, "smoke").data, download=False)
        return True
    except DatasetNotFoundError:
        return False
    except DatasetDamagedError as e:
        log(f"skipping {dataset}: {e}")
        return False


def _kernel_manager(env: dict[str, str] | None = None):
    """A kernel manager whose kernels talk over IPC sockets in one temp directory (over TCP,
    ipykernel warns on every start that the channel is unencrypted: 16 warnings per study) and
    start with ``env`` added to this process's environment (this process's own is left alone)."""
    import tempfile
    import uuid

    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            sockets = Path(tempfile.gettempdir()) / f"kd-study-kernels-{os.getuid()}"
            sockets.mkdir(mode=0o700, exist_ok=True)
            self.transport, self.ip = "ipc", str(sockets / f"kernel-{uuid.uuid4().hex[:12]}")

        async def _async_pre_start_kernel(self, **kw):
            kw["env"] = {**kw.get("env", os.environ), **(env or {})}
            return await super()._async_pre_start_kernel(**kw)
    return IPCKernelManager


def execute(nb: str, out: Path, params: dict, log=print, env: dict[str, str] | None = None) -> float:
    """Execute notebook ``nb`` with ``params`` into ``out`` (its kernel's environment: this
    process's plus ``env``); return the seconds it took."""
    import papermill as pm
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{nb}.ipynb"), str(out), parameters=params,
                            cwd=str(NOTEBOOK_DIR), progress_bar=False, kernel_name="python3",
                            kernel_manager_class=_kernel_manager(env))
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(f"Notebook {nb} failed ({params.get('dataset', 'all datasets')}): "
                             f"{e.ename}: {e.evalue}\n  Executed copy with the traceback: {out}") from None
    dt = time.perf_counter() - t0
    strip_machine_paths(out)
    log(f"  {nb:<22} {params.get('dataset', ''):<12} {dt:7.1f}s  -> {out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out}")
    return dt


def strip_machine_paths(path: Path) -> None:
    """papermill records the absolute input/output paths in the notebook's metadata: keep them
    relative to the repository, so a committed executed notebook names no machine's directories
    (and its injected cell keeps one id, so a re-execution's diff shows only what changed)."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            p = Path(meta[key])
            meta[key] = str(p.relative_to(REPO_ROOT)) if p.is_absolute() and p.is_relative_to(REPO_ROOT) else p.name
    # injected paths inside the repository: relative to notebooks/, where the notebooks run
    def rel(text: str) -> str:
        return text.replace(f"{REPO_ROOT}/", "../")
    meta["parameters"] = {k: rel(v) if isinstance(v, str) else v for k, v in meta.get("parameters", {}).items()}
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = rel(cell.source)
            cell.id = "injected-parameters"   # papermill draws a random id: re-executions would differ in it
    nbformat.write(nb, path)


def run_study(profile: str, datasets=None, seeds=None, data_dir=None, results_dir=None, reports_dir=None,
              only=None, log=print, executor: str = "inline", jobs: int = 1, slurm: dict | None = None,
              list_only: bool = False, pairs=None, show_spec: bool = False, reuse_only: bool = False) -> dict:
    """Execute the study's notebooks (``only``: these) on each dataset in order, after training
    their runs with ``executor``; ``reuse_only``: the notebooks only read runs (one that would
    train fails: re-executing published notebooks). Returns the timings recorded."""
    known = [s.notebook for s in STEPS]
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise ValueError(f"No notebook {', '.join(map(repr, unknown))} in the study. Notebooks: {', '.join(known)}.")
    # the notebooks run in notebooks/: a relative directory means one relative to the caller
    data_dir, results_dir = (str(Path(d).resolve()) if d else None for d in (data_dir, results_dir))
    default_ds, default_seeds = DEFAULTS[profile]
    seeds = list(seeds or default_seeds)
    # the notebooks' own rules, before anything trains (not after the plan's runs did)
    from .store.params import RULES
    if (problem := RULES["seeds"](seeds)):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: seeds must be {problem}")
    if reuse_only and executor != "inline":
        raise ValueError(f"--reuse-only with --executor {executor}: the executor's workers train; re-execute "
                         f"with the default --executor inline")
    if executor != "inline" and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"--jobs {jobs}: the number of parallel workers must be 1 or more")
    wanted = list(datasets or default_ds)
    if pairs:   # a study per (dataset, teacher -> student pair): cifar100@wrn_40_2-wrn_16_2, ...
        unknown_pairs = sorted(set(pairs) - set(PAIRS))
        if unknown_pairs:
            raise ValueError(f"Unknown pair(s) {', '.join(unknown_pairs)}. Pairs: {', '.join(PAIRS)}.")
        wanted = [f"{ds}@{p}" for ds in wanted for p in pairs]
    chosen = []
    for ds in wanted:
        if ds.endswith("?"):
            if available(ds[:-1], data_dir, log):
                chosen.append(ds[:-1])
            else:
                log(f"skipping {ds[:-1]}: its files are not in the data dir (set KD_DATA_DIR to include it)")
        else:
            chosen.append(ds)
    reports = Path(reports_dir or REPO_ROOT / "reports" / profile)
    # executed notebooks keep one line per epoch, not progress-bar redraws
    kernel_env = {"KD_PROGRESS": "0", **({"KD_REUSE_ONLY": "1"} if reuse_only else {})}
    common = {"profile": profile, "seeds": seeds, "data_dir": data_dir, "results_dir": results_dir}
    steps = [s for s in STEPS if not only or s.notebook in only]
    root = results_root(results_dir, profile)
    commit = git_commit() or "?"
    meta = {"commit": commit[:7] + ("-dirty" if commit.endswith("-dirty") else ""),
            "machine": f"{cpu_model()}, {physical_cores()} cores"}
    timings = {}

    def timed(key, nb, out, params):
        before, started = set(finished_runs(root)), time.strftime("%Y-%m-%d %H:%M")
        seconds = execute(nb, out, params, log, kernel_env)
        new = set(finished_runs(root)) - before
        precisions = sorted({precision_label(read_json(d / "metrics.json").get("precision")) for d in new})
        timings[key] = {"s": seconds, "trained_runs": len(new), "precision": ", ".join(precisions),
                        "started": started, **meta}
        record_timings(reports / "timings.json", profile, seeds, {key: timings[key]})  # kept if a later step fails

    pairs = [(s.notebook, ds) for s in steps if s.per_dataset for ds in chosen if family(ds) in s.families]
    if list_only:
        return show_plan(pairs, profile, seeds, results_dir, data_dir, log, show_spec)
    log(f"kd-study: profile={profile} datasets={chosen} seeds={seeds} executor={executor}")
    for nb, ds in pairs:
        if nb == "14_tuning" and (note := tuning.precision_note(root, ds)):
            log(note)
    if executor != "inline":
        failed = run_plan(StudyPlan(tuple(pairs), profile, tuple(seeds), results_dir, data_dir),
                          executor, jobs, results_dir, data_dir, slurm=slurm, log=log)
        if failed:
            raise NotebookFailed(f"{len(failed)} runs failed; their logs: " + ", ".join(sorted(set(failed.values()))))
    for step in steps:
        if not step.per_dataset:
            timed(step.notebook, step.notebook, reports / f"{step.notebook}.ipynb", {**common, "datasets": chosen})
            continue
        for ds in chosen:
            if family(ds) not in step.families:
                log(f"  {step.notebook:<22} {ds:<12} skipped: {step.why_not}")
                continue
            timed(f"{ds}/{step.notebook}", step.notebook, reports / ds / f"{step.notebook}.ipynb",
                  {**common, "dataset": ds})
    log(f"done in {sum(t['s'] for t in timings.values()) / 60:.1f} min; executed notebooks in {reports}")
    return timings


def show_plan(pairs, profile, seeds, results_dir, data_dir, log=print, show_spec: bool = False) -> dict:
    """List the study's runs by level with their state (finished / running / to train); with
    ``show_spec`` each run's resolved config too (what its config.json will say), before anything trains."""
    from .executors import LEVELS, counts
    out = {}
    for level in LEVELS:
        todo = study_jobs(pairs, profile, seeds, results_dir, data_dir, level=level)
        c = counts(todo, results_dir, set())
        out[level] = c
        log(f"level {level}: {len(todo)} runs ({', '.join(f'{v} {k}' for k, v in c.items() if k != 'failed')})"
            + (" + the pruning runs, planned once the students are trained" if level == 2 else ""))
        for j in todo:
            log(f"  {j.notebook:<20} {j.dataset:<10} {j.run:<40} seed {j.seed}"
                f"{'  finished' if j.finished(results_dir) else ''}")
            if show_spec and j.spec is not None:
                from dataclasses import asdict

                from .experiment import json_roundtrip
                what = "tuning study, trial 0 (later trials vary the search space)" if j.tune else "config"
                log(f"    {what}: {json.dumps(json_roundtrip(asdict(j.spec.resolved(data_dir))), sort_keys=True)}")
    return out


def record_timings(path: Path, profile: str, seeds, timings: dict) -> dict:
    """Merge this invocation's per-notebook timings into ``timings.json``; total them per dataset.

    ``timings`` maps ``<dataset>/<notebook>`` (or ``<notebook>``) to seconds or to a record
    ``{"s", "trained_runs", "precision", "commit", "machine", "started"}``. Separate invocations
    (``--datasets mnist``, then ``--datasets cifar10``) add up; a re-run replaces a notebook's
    time unless it trained nothing while the recorded one did (re-executing a finished study
    only reuses runs, which says nothing about what training costs).
    """
    old = load_timings(path)
    # an invocation on other seeds (a one-seed proof beside a 3-seed study) adds its records; it
    # must not wipe the others: every record names its seeds
    records = old["notebooks"] if old.get("profile") == profile else {}
    for t in records.values():
        t.setdefault("seeds", old.get("seeds"))
    for key, t in timings.items():
        t = {**(t if isinstance(t, dict) else {"s": float(t)}), "seeds": list(seeds)}
        kept = records.get(key, {})
        if t.get("trained_runs") == 0 and kept.get("trained_runs", 0) > 0:
            continue
        records[key] = t
    per_ds: dict[str, float] = {}
    for key, t in records.items():
        ds = key.split("/")[0] if "/" in key else "all datasets"
        per_ds[ds] = per_ds.get(ds, 0.0) + t["s"]
    every_seed = sorted({int(x) for t in records.values() for x in (t.get("seeds") or [])})
    out = {"profile": profile, "seeds": every_seed, "notebooks": records, "per_dataset_s": per_ds,
           "total_s": sum(per_ds.values())}
    atomic_write_json(path, out)
    return out


def load_timings(path: Path) -> dict:
    """``timings.json`` with every notebook as a record (files from before the records held seconds)."""
    t = read_json(path) if Path(path).exists() else {}
    t["notebooks"] = {**{k: {"s": v} for k, v in t.pop("seconds", {}).items()}, **t.get("notebooks", {})}
    return t


def parse_options(pairs) -> dict:
    """``KEY=VALUE`` strings to submitit parameters (values read as JSON where they parse)."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"--slurm option {p!r} is not KEY=VALUE (e.g. slurm_partition=gpu)")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="quick")
    ap.add_argument("--datasets", nargs="+", help="default: the profile's datasets")
    ap.add_argument("--seeds", nargs="+", type=int, help="default: the profile's seeds")
    ap.add_argument("--data-dir", default=None, help="default: $KD_DATA_DIR or ./data")
    ap.add_argument("--results-dir", default=None, help="default: $KD_RESULTS_DIR or results/<profile>")
    ap.add_argument("--reports-dir", default=None, help="default: reports/<profile>")
    ap.add_argument("--only", nargs="+", help="run only these notebooks (e.g. 03_vanilla_kd)")
    ap.add_argument("--executor", choices=EXECUTORS, default="inline",
                    help="inline: the notebooks train (default); local: --jobs worker processes; slurm: job arrays")
    ap.add_argument("--jobs", type=int, default=2, help="local workers, or SLURM tasks at once (default 2)")
    ap.add_argument("--slurm", nargs="+", default=[], metavar="KEY=VALUE",
                    help="submitit options, e.g. slurm_partition=gpu timeout_min=600 gpus_per_node=1 "
                         "cpus_per_task=8 slurm_additional_parameters='{\"account\": \"abc\"}'")
    ap.add_argument("--pairs", nargs="+", metavar="TEACHER-STUDENT",
                    help=f"study these teacher-student pairs on each dataset instead of the MLP/CNN family "
                         f"({', '.join(PAIRS)})")
    ap.add_argument("--plan", action="store_true", help="list the study's runs and their state, then exit")
    ap.add_argument("--show-spec", action="store_true", help="with --plan: each run's resolved config too")
    ap.add_argument("--reuse-only", action="store_true",
                    help="the notebooks only read finished runs; one that would train fails (re-executing "
                         "published notebooks on the published store)")
    args = ap.parse_args(argv)
    try:
        run_study(args.profile, args.datasets, args.seeds, args.data_dir, args.results_dir, args.reports_dir,
                  args.only, executor=args.executor, jobs=args.jobs, slurm=parse_options(args.slurm),
                  list_only=args.plan, pairs=args.pairs, show_spec=args.show_spec, reuse_only=args.reuse_only)
    except ValueError as e:
        ap.error(str(e))
    except NotebookFailed as e:
        print(f"\nSTUDY STOPPED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
