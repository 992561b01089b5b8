"""Train the study's runs as parallel jobs, level by level of the plan (``kd_helpers.plan``):

- ``inline`` (default): nothing here; the notebooks train their runs one after another.
- ``local``: N worker processes on this machine (submitit's local executor), cores / N threads
  each. Every worker walks the plan in order and takes whichever run no one holds and whose
  teacher is finished (the per-run lock of ``experiment.run``), so the N workers share the work
  without a queue and no worker idles at a level barrier; pruning runs come last.
- ``slurm``: one SLURM job array per level through submitit (one task per run, at most
  ``--jobs`` at once), partition/time/GPU options passed through. A preempted or timed-out
  task is requeued by submitit and resumes from its last epoch checkpoint.

Afterwards the runner executes the notebooks as usual; they find every run finished and reuse it.
Job logs: ``<results_dir>/_jobs/`` (``<job id>_<task>_log.out/.err``).
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import submitit

from .experiment import lock_path
from .core.lock import Busy, held
from .plan import Job
from .store.results import is_finished, results_root
from .core.util import physical_cores, setup_threads, threads_wanted

EXECUTORS = ("inline", "local", "slurm")
LEVELS = (0, 1, 2)


def work(jobs: list[Job], results_dir=None, data_dir=None, threads: int | None = None, poll_s: float = 0.5) -> dict:
    """One local worker: train every unfinished run of ``jobs`` whose teacher is finished and that
    no other worker holds, in order; come back to the others until they are finished; return
    ``{run label: traceback or reason}`` of the failures."""
    if threads:   # this worker's share of the cores; later setup_threads() calls keep it
        setup_threads(threads)
    pending, failed = list(jobs), {}
    while pending:
        progressed = False
        for job in list(pending):
            dep = job.needs(results_dir)
            if dep is not None and not is_finished(dep):
                if held(lock_path(dep)) or any(j.dir(results_dir) == dep for j in pending):
                    continue   # its teacher is being trained (or is still to come here)
                failed[job.label] = f"its teacher {dep} is not finished and no one is training it (it failed?)"
                print(f"FAILED {job.label}: {failed[job.label]}", file=sys.stderr, flush=True)
            elif not job.finished(results_dir):
                try:
                    job(results_dir, data_dir, progress=False, wait=False)
                except Busy:
                    continue
                except Exception:  # noqa: BLE001 - one failed run must not stop the others; reported
                    failed[job.label] = traceback.format_exc()
                    # the worker's log (<job>_log.err) keeps the whole traceback
                    print(f"FAILED {job.label}:\n{failed[job.label]}", file=sys.stderr, flush=True)
            pending.remove(job)
            progressed = True
        if pending and not progressed:
            time.sleep(poll_s)
    return failed


def work_levels(plan_level: Callable[[int], list[Job]], results_dir=None, data_dir=None,
                threads: int | None = None) -> dict:
    """One local worker for the whole plan, one process start and one data load per worker:
    teachers, baselines and distilled students together (a student starts once its own teacher
    is finished), then the pruning runs, which are planned from the finished students."""
    failed = work(plan_level(0) + plan_level(1), results_dir, data_dir, threads)
    return failed or work(plan_level(2), results_dir, data_dir, threads)


class RunTask(submitit.helpers.Checkpointable):
    """One SLURM array task = one run. On preemption or timeout submitit calls ``checkpoint``:
    the task releases its run's lock and is requeued with the same arguments; ``fit`` then resumes
    from the run's last epoch checkpoint."""

    def __call__(self, job: Job, results_dir=None, data_dir=None) -> str:
        job(results_dir, data_dir, progress=False, wait=True)
        return job.label

    def checkpoint(self, job: Job, results_dir=None, data_dir=None):
        lock = lock_path(job.dir(results_dir))
        owner = held(lock)
        if owner and owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid():
            lock.unlink(missing_ok=True)
        return super().checkpoint(job, results_dir, data_dir)


def make_executor(executor: str, folder, jobs: int, slurm: dict | None = None) -> submitit.AutoExecutor:
    """submitit's AutoExecutor for ``local`` or ``slurm`` with the study's defaults; ``slurm``
    holds extra options (``slurm_partition``, ``timeout_min``, ``gpus_per_node``, ...)."""
    if executor not in ("local", "slurm"):
        raise ValueError(f"Unknown executor '{executor}'. Available: {', '.join(EXECUTORS)}")
    ex = submitit.AutoExecutor(folder=str(folder), cluster=executor)
    if executor == "local":
        ex.update_parameters(timeout_min=7 * 24 * 60, name="kd-study")
    else:
        opts = {"timeout_min": 12 * 60, "cpus_per_task": 4, "slurm_array_parallelism": jobs, "name": "kd-study",
                **(slurm or {})}
        ex.update_parameters(**opts)
    return ex


def counts(jobs: list[Job], results_dir, failed: set) -> dict:
    """How many of ``jobs`` are queued / running (a live lock) / finished / failed."""
    c = {"queued": 0, "running": 0, "finished": 0, "failed": 0}
    for j in jobs:
        c["failed" if j.label in failed else "finished" if j.finished(results_dir) else "running"
          if j.running(results_dir) else "queued"] += 1
    return c


def run_level(todo: list[Job], executor: str, n: int, results_dir=None, data_dir=None, folder=None,
              slurm: dict | None = None, log=print, every_s: float = 30.0, plan_level=None) -> dict:
    """Train with ``n`` local workers (each walks every level of ``plan_level`` itself; ``todo``
    is what progress is shown of) or ``todo`` as a SLURM array; report progress every
    ``every_s``; return ``{run: log path}`` of the failed runs."""
    folder = Path(folder or results_root(results_dir, todo[0].profile) / "_jobs")
    ex = make_executor(executor, folder, n, slurm)
    if executor == "local":
        threads = threads_wanted() if os.environ.get("KD_THREADS") else max(physical_cores() // n, 1)
        futures = [ex.submit(work_levels, plan_level, results_dir, data_dir, threads) for _ in range(n)]
    else:
        futures = ex.map_array(RunTask(), todo, [results_dir] * len(todo), [data_dir] * len(todo))
    failed: dict[str, str] = {}
    why: dict[str, str] = {}    # run -> the last line of its error
    last, shown = 0.0, None
    while True:
        done = [f for f in futures if f.done()]
        for f in done:
            try:
                out = f.result()
                for key, error in (out if isinstance(out, dict) else {}).items():
                    failed[key], why[key] = str(f.paths.stderr), last_line(error)
            except Exception as e:  # noqa: BLE001 - a crashed job: its runs are whatever is not finished
                idx = futures.index(f)
                key = todo[idx].label if executor == "slurm" else f"worker {idx}"
                failed[key], why[key] = str(f.paths.stderr), last_line(str(e))
        if len(done) == len(futures) or time.monotonic() - last >= every_s:
            c = counts(todo, results_dir, set(failed))
            if c != shown or time.monotonic() - last >= 20 * every_s:   # a line per change
                log(f"  {time.strftime('%H:%M')} runs: " + ", ".join(f"{v} {k}" for k, v in c.items()))
                shown, last = c, time.monotonic()
        if len(done) == len(futures):
            break
        time.sleep(1.0)
    if executor == "local" and failed and all(k.startswith("worker ") for k in failed) and \
            all(j.finished(results_dir) for j in todo):
        # a worker killed after the last run finished failed nothing: every run is there
        log(f"  {len(failed)} worker(s) ended abnormally ({'; '.join(why.values())}), but every run finished")
        failed = {}
    for key, path in failed.items():
        log(f"  FAILED {key}: {why.get(key, '?')} (log {path})")
    return failed


def last_line(error: str) -> str:
    """What went wrong, from a traceback: the first line of its final exception (a message's
    later lines are in the log), or a plain message's first line."""
    lines = str(error).rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    rest = lines[frames[-1] + 1:] if frames else lines
    message = [line for line in rest if line.strip() and not line.startswith(" ")]
    return (message or [line.strip() for line in rest if line.strip()] or ["no message"])[0][:300]


def run_plan(plan_level: Callable[[int], list[Job]], executor: str, n: int, results_dir=None, data_dir=None,
             folder=None, slurm: dict | None = None, log=print) -> dict:
    """Train every level of the plan in turn (``plan_level(level)`` is asked again for each
    level: pruning runs exist only once the students are trained); return the failures."""
    if executor == "local":   # one set of workers walks every level (no process start per level)
        todo = [j for level in LEVELS for j in plan_level(level) if not j.finished(results_dir)]
        if not todo:
            return {}
        log(f"{len(todo)} runs planned (pruning runs are added once the students are trained) on {n} local workers")
        return run_level(todo, executor, n, results_dir, data_dir, folder, slurm, log, plan_level=plan_level)
    failed = {}
    for level in LEVELS:
        todo = [j for j in plan_level(level) if not j.finished(results_dir)]
        if not todo:
            continue
        log(f"level {level}: {len(todo)} runs as a SLURM array ({n} at once)")
        failed |= run_level(todo, executor, n, results_dir, data_dir, folder, slurm, log)
        if failed:
            log("stopping: later levels depend on the failed runs")
            break
    return failed
