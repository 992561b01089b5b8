"""The plan, the per-run lock and the executors (#17): the plan lists what the notebooks train;
N local workers give the same store as inline; two processes never train one run twice; a
killed worker's run is completed by the next invocation; the SLURM path through submitit's mock."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kd_helpers import executors, plan
from kd_helpers.experiment import lock_path, train_teacher
from kd_helpers.core.lock import Busy, RunLock, held
from kd_helpers.store.results import finished_runs, is_finished, load_results, run_dir
from kd_helpers.study import execute, run_study

REPO = Path(__file__).resolve().parents[1]
SMOKE = {"dataset": "mnist5k", "profile": "smoke", "seeds": [0]}


def stored(root) -> set[tuple]:
    return {(d.parts[-3], d.parts[-2], int(d.parts[-1].split("_")[1])) for d in finished_runs(root)}


def planned(root, pairs, seeds=(0,)) -> set[tuple]:
    return {j.key for level in executors.LEVELS
            for j in plan.study_jobs(pairs, "smoke", seeds, str(root), level=level)}


@pytest.fixture(scope="module")
def teacher_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    train_teacher("mnist5k", "smoke", results_dir=root)
    return root


@pytest.fixture(scope="module")
def fp32_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher32")
    os.environ["KD_PRECISION"] = "fp32"
    try:
        train_teacher("mnist5k", "smoke", results_dir=root)
    finally:
        del os.environ["KD_PRECISION"]
    return root


def copy_store(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


# ------------------------------------------------------------------ the plan

def test_plan_lists_exactly_the_runs_the_notebooks_train(tmp_path, teacher_store):
    root = copy_store(teacher_store, tmp_path / "r")
    small = {"amounts": [0.5], "kinds": ["structured"], "finetune": ["kd"]}
    for nb in ("12_srd_dist", "20_pruning"):
        execute(nb, tmp_path / f"{nb}.ipynb", {**SMOKE, "results_dir": str(root), **(small if nb == "20_pruning" else {})},
                log=lambda *_: None)
    listed = {("mnist5k", "teacher", 0)}
    for nb in ("12_srd_dist", "20_pruning"):
        listed |= {j.key for j in plan.jobs(nb, {**SMOKE, **(small if nb == "20_pruning" else {})}, str(root))}
    assert stored(root) == listed
    # 20_pruning's level-2 runs: the best distilled student (on validation) and the baseline, pruned
    pruned = {k[1] for k in listed if k[1].startswith("prune_")}
    assert len(pruned) == 2 and "prune_baseline__amount=0.5__finetune=kd__pruning=structured" in pruned


def test_plan_covers_every_method_notebook_and_levels_follow_dependencies():
    for nb in (s.notebook for s in plan.STEPS if s.runs):
        ds = "cifar10" if nb == "07_at" else "mnist5k"
        jobs = plan.jobs(nb, {**SMOKE, "dataset": ds}, "/nonexistent")
        assert jobs, nb
        assert len({j.key for j in jobs}) == len(jobs), f"{nb} lists a run twice"
        for j in jobs:
            assert j.level == (1 if j.spec is not None and j.spec.teacher else 0 if j.spec is not None else 2)


def test_a_notebook_missing_from_the_study_is_an_error_not_an_empty_plan():
    assert plan.jobs("30_statistics", SMOKE) == []          # in the study, trains nothing
    with pytest.raises(ValueError, match="No notebook '15_crd' in the study .*plan.py STEPS.*13_dkd"):
        plan.jobs("15_crd", SMOKE)


def test_notebook_parameters_reach_the_plan():
    runs = {j.run for j in plan.jobs("13_dkd", {**SMOKE, "beta": 4.0})}
    assert "dkd__beta=4" in runs and "dkd" not in runs
    assert not any(j.run.startswith("ablation_") for j in plan.jobs("01_teacher", {**SMOKE, "ablation": False}))


# ------------------------------------------------------------------ the lock

def test_lock_excludes_breaks_stale_owners_and_reports_the_holder(tmp_path):
    path = tmp_path / "seed_0.lock"
    with RunLock(path):
        assert held(path)["pid"] == os.getpid()
        with pytest.raises(Busy, match="held by"):
            RunLock(path, wait=False).acquire()
    assert not path.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))   # a SIGKILLed worker's lock
    assert held(path) is None
    with RunLock(path, wait=False):
        assert held(path)["pid"] == os.getpid()
    path.write_text(json.dumps({"host": "another-node", "pid": 1}))
    assert held(path) is not None                     # another node's heartbeat is fresh
    old = time.time() - 3600
    os.utime(path, (old, old))                         # ... and then stops: the node died
    assert held(path) is None
    with RunLock(path, wait=False):
        pass


RACE = textwrap.dedent("""
    import sys
    from kd_helpers.experiment import distill
    r = distill("kd", "mnist5k", "smoke", results_dir=sys.argv[1], progress=False, epochs=3)[0]
    print(r["metrics"]["test_acc"])
""")


def test_two_processes_racing_for_one_run_train_it_once(tmp_path, teacher_store):
    root = copy_store(teacher_store, tmp_path / "r")
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(root)], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    said = "".join(outs)
    assert said.count("trained ") == 1 and said.count("reused ") == 1, said
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1       # the same result for both
    log = (run_dir(root, "mnist5k", "kd", 0) / "train.log").read_text()
    assert log.count("epoch 1:") == 1 and not lock_path(run_dir(root, "mnist5k", "kd", 0)).exists()


# ------------------------------------------------------------------ executors

def test_local_workers_give_the_store_inline_gives(tmp_path, fp32_teacher, monkeypatch):
    monkeypatch.setenv("KD_THREADS", "1")   # the same threads everywhere, in fp32: the same bits
    monkeypatch.setenv("KD_PRECISION", "fp32")
    only = ["03_vanilla_kd"]   # baseline (level 0), kd (level 1): both levels, one notebook
    kw = dict(datasets=["mnist5k"], seeds=[0], only=only, log=lambda *_: None)
    inline = copy_store(fp32_teacher, tmp_path / "inline")
    run_study("smoke", results_dir=str(inline), reports_dir=str(tmp_path / "rep_i"), **kw)
    local = copy_store(fp32_teacher, tmp_path / "local")
    lines = []
    run_study("smoke", results_dir=str(local), reports_dir=str(tmp_path / "rep_l"), executor="local", jobs=2,
              **{**kw, "log": lines.append})
    assert stored(local) == stored(inline) == planned(local, [(nb, "mnist5k") for nb in only]) | {("mnist5k", "teacher", 0)}
    assert any("0 queued, 0 running" in line and "0 failed" in line for line in lines), lines
    a, b = (load_results(r).set_index(["run", "seed"]).sort_index() for r in (inline, local))
    for col in ("test_acc", "val_acc", "test_errors", "selected_epoch"):
        assert a[col].equals(b[col]), col
    differ = [str(d.relative_to(inline)) for d in finished_runs(inline)
              if not np.array_equal(np.load(d / "predictions.npz")["logits"],
                                    np.load(local / d.relative_to(inline) / "predictions.npz")["logits"])]
    assert not differ
    # the notebooks of the local invocation trained nothing: every run came from the workers
    t = json.loads((tmp_path / "rep_l" / "timings.json").read_text())["notebooks"]
    assert all(v["trained_runs"] == 0 for v in t.values())
    assert list((local / "_jobs").glob("*_log.err"))


def test_a_student_starts_once_its_teacher_is_finished_not_after_its_level(tmp_path, teacher_store):
    """Another worker holds the baseline (level 0): this worker trains KD (level 1, its teacher is
    finished) meanwhile instead of idling at a level barrier, then the baseline once released."""
    import threading
    root = copy_store(teacher_store, tmp_path / "r")
    jobs = plan.jobs("03_vanilla_kd", SMOKE, str(root))
    base, kd = (next(j for j in jobs if j.run == r) for r in ("baseline", "kd"))
    other = RunLock(lock_path(base.dir(root))).acquire()   # "another worker" (a live owner)

    def release_when_kd_is_done():
        deadline = time.monotonic() + 120   # a worker that waits for the level would wait this long
        while not is_finished(kd.dir(root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        other.release()
    threading.Thread(target=release_when_kd_is_done, daemon=True).start()
    assert executors.work_levels(lambda level: [j for j in jobs if j.level == level], str(root), threads=1) == {}
    kd_done = (kd.dir(root) / "manifest.json").stat().st_mtime
    assert kd_done <= (base.dir(root) / "config.json").stat().st_mtime   # the baseline started after KD ended


def test_a_student_whose_teacher_no_one_trains_is_reported_not_waited_for(tmp_path):
    kd = next(j for j in plan.jobs("03_vanilla_kd", SMOKE, str(tmp_path)) if j.run == "kd")
    failed = executors.work([kd], str(tmp_path))
    assert "no one is training it" in failed[kd.label] and not kd.dir(tmp_path).exists()


KD_40 = textwrap.dedent("""
    from dataclasses import replace
    from kd_helpers import plan
    def kd_40(level=1):   # the KD run with 12 epochs: long enough to be killed mid-run
        return [replace(j, spec=replace(j.spec, train=replace(j.spec.train, epochs=12))) for j in
                plan.jobs("03_vanilla_kd", {"dataset": "mnist5k", "profile": "smoke", "seeds": [0]})
                if j.run == "kd" and j.level == level]
""")
WORKER = KD_40 + "import sys\nfrom kd_helpers import executors\nexecutors.work(kd_40(), sys.argv[1], threads=1)\n"


def test_a_killed_worker_leaves_a_store_the_next_invocation_completes(tmp_path, teacher_store):
    root = copy_store(teacher_store, tmp_path / "r")
    d = run_dir(root, "mnist5k", "kd", 0)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(root)], cwd=REPO)
    t0 = time.time()
    while not (d / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(d).exists() and held(lock_path(d)) is None   # left behind, and seen as stale
    assert not is_finished(d)
    ns = {}
    exec(KD_40, ns)
    failed = executors.run_plan(ns["kd_40"], "local", 1, str(root), log=lambda *_: None)
    assert not failed and is_finished(d) and not lock_path(d).exists()
    log = (d / "train.log").read_text()
    assert "resuming after epoch" in log and log.count("epoch 12:") == 1


# ------------------------------------------------------------------ SLURM, without a cluster

def test_slurm_arrays_carry_the_options_and_a_task_trains_its_run(tmp_path, teacher_store):
    from submitit.core import submission
    from submitit.slurm.test_slurm import mocked_slurm
    root = copy_store(teacher_store, tmp_path / "r")
    jobs = [j for j in plan.jobs("03_vanilla_kd", SMOKE) if j.run == "kd"] + plan.jobs("02_student_baseline", SMOKE)
    with mocked_slurm() as mock:
        ex = executors.make_executor("slurm", tmp_path / "logs", 2,
                                     {"slurm_partition": "gpu", "timeout_min": 90, "gpus_per_node": 1})
        futures = ex.map_array(executors.RunTask(), jobs, [str(root)] * len(jobs), [None] * len(jobs))
        script = next((tmp_path / "logs").glob("*submission.sh")).read_text()
        assert f"#SBATCH --array=0-{len(jobs) - 1}%2" in script
        assert "#SBATCH --partition=gpu" in script and "#SBATCH --time=90" in script
        assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --cpus-per-task=4" in script
        with mock.job_context(futures[0].job_id):
            submission.process_job(futures[0].paths.folder)
        assert futures[0].result() == "mnist5k/kd/0" and is_finished(run_dir(root, "mnist5k", "kd", 0))


def test_a_preempted_task_releases_its_lock_and_is_requeued_with_the_same_job(tmp_path):
    job = plan.jobs("02_student_baseline", SMOKE)[0]
    lock = lock_path(job.dir(str(tmp_path)))
    RunLock(lock).acquire()._stop.set()          # held by this process, as inside a running task
    delayed = executors.RunTask().checkpoint(job, str(tmp_path))
    assert not lock.exists() and delayed.args[0] == job


def test_pruning_runs_on_every_seed_of_the_study_unless_told_otherwise():
    from kd_helpers.store.params import check_parameters
    seeds = lambda **kw: sorted({(j.run, j.seed) for j in plan.jobs("20_pruning", {**SMOKE, "seeds": [0, 2], **kw},
                                                                      "/nonexistent")})
    assert seeds() == [("baseline", 0), ("baseline", 2), ("kd", 0), ("kd", 2)]
    assert seeds(prune_seeds=[2]) == [("baseline", 2), ("kd", 2)]
    ns = {**plan.declared("20_pruning"), "seeds": [1, 2]}   # what the notebook sees after papermill's cell
    assert check_parameters(ns, "20_pruning")["prune_seeds"] == [1, 2]
    assert check_parameters({**ns, "prune_seeds": [0]}, "20_pruning")["prune_seeds"] == [0]


def test_a_failed_run_is_reported_with_what_went_wrong():
    from kd_helpers.executors import last_line
    tb = ('Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    f()\n'
          "kd_helpers.core.data.DatasetNotFoundError: Dataset 'MNIST' not found and could not be downloaded.\n"
          "  Looked in: data/MNIST\n  Fix: point KD_DATA_DIR at it")
    assert last_line(tb) == "kd_helpers.core.data.DatasetNotFoundError: Dataset 'MNIST' not found and could not be downloaded."
    assert last_line("its teacher t is not finished") == "its teacher t is not finished"


def test_a_paused_owner_keeps_its_lock_and_a_reused_pid_does_not(tmp_path, monkeypatch):
    from kd_helpers.core import lock as lockmod
    monkeypatch.setenv("KD_LOCK_STALE_S", "1")
    path = tmp_path / "seed_0.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = lockmod._started(sleeper.pid)
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "started": started}))
        old = time.time() - 3600
        os.utime(path, (old, old))                     # no heartbeat for an hour: SIGSTOPped, say
        assert held(path) is not None and lockmod.stale_in(path, held(path)) is None
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "started": "1"}))
        assert held(path) is None                      # that PID now belongs to another process
    finally:
        sleeper.kill()


def test_a_heartbeat_from_the_future_is_skew_not_life(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_LOCK_STALE_S", "0.5")
    path = tmp_path / "seed_0.lock"
    path.write_text(json.dumps({"host": "another-node", "pid": 1}))
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))                     # that node's clock runs an hour ahead
    assert held(path) is not None                      # first seen now: not stale yet
    time.sleep(0.7)
    assert held(path) is None                          # ... and stale the limit after it was first seen


def test_a_lock_on_a_full_disk_is_whole_or_absent_and_names_its_path(tmp_path, monkeypatch):
    from kd_helpers.core.util import DiskFull
    path = tmp_path / "seed_0.lock"
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(DiskFull, match=r"seed_0.lock"):
        RunLock(path).acquire()
    assert not path.exists() and not list(tmp_path.iterdir())


def test_an_owner_whose_lock_was_broken_stops_and_leaves_the_new_owners_lock(tmp_path, capsys):
    from kd_helpers.core.lock import LockLost
    path = tmp_path / "seed_0.lock"
    first = RunLock(path).acquire()
    path.unlink()                                      # judged stale by another worker ...
    second = RunLock(path, wait=False).acquire()       # ... which took the run over
    with pytest.raises(LockLost, match="stops without writing"):
        first.check()
    first.release()
    assert held(path)["pid"] == os.getpid() and json.loads(path.read_text())["token"] == second.token
    second.check()
    second.release()
    assert not path.exists()


def test_waiting_for_a_lock_says_who_holds_it(tmp_path, capsys, monkeypatch):
    path = tmp_path / "seed_0.lock"
    path.write_text(json.dumps({"host": "another-node", "pid": 7, "since": "yesterday"}))
    monkeypatch.setenv("KD_LOCK_STALE_S", "0.3")
    with RunLock(path, poll_s=0.1):
        pass
    err = capsys.readouterr().err
    assert "held by another-node:7 since yesterday" in err and "turns stale in" in err


def test_plan_show_spec_prints_each_runs_resolved_config_before_training(tmp_path):
    from kd_helpers.study import run_study
    lines = []
    run_study("smoke", datasets=["mnist5k"], results_dir=str(tmp_path / "r"), only=["03_vanilla_kd"],
              list_only=True, show_spec=True, log=lines.append)
    configs = [json.loads(line.split("config: ", 1)[1]) for line in lines if line.strip().startswith("config: ")]
    assert [c["run"] for c in configs] == ["baseline", "kd"]
    assert configs[1]["loss"] == {"T": 20.0, "alpha": 0.1} and configs[1]["train"]["precision"] != "auto"
    assert isinstance(configs[0]["data"]["val_size"], int) and not (tmp_path / "r").exists()


def test_a_worker_sets_its_share_of_threads_explicitly_not_through_the_environment():
    """``work(threads=n)`` sets the worker's torch threads (a later run's ``setup_threads()`` keeps
    them) and leaves ``KD_THREADS``, a user's variable, alone."""
    import subprocess
    import sys
    code = ("import os, torch; os.environ.pop('KD_THREADS', None)\n"
            "from kd_helpers import executors\nfrom kd_helpers.core import util\n"
            "executors.work([], threads=3); util.setup_threads()\n"
            "print(torch.get_num_threads(), 'KD_THREADS' in os.environ, os.environ.get('KD_PROGRESS'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["3", "False", "None"]


class _Future:
    """A finished submitit job as run_level sees it: its result, or the error of a killed worker."""
    def __init__(self, result=None, error=None):
        from types import SimpleNamespace
        self._result, self._error = result, error
        self.paths = SimpleNamespace(stderr="/tmp/kd_worker_log.err")

    def done(self):
        return True

    def result(self):
        if self._error:
            raise self._error
        return self._result


@dataclass(frozen=True)
class _Run:
    label: str
    done: bool

    def finished(self, results_dir=None):
        return self.done

    def running(self, results_dir=None):
        return False


@pytest.mark.parametrize("all_finished", [True, False])
def test_a_worker_killed_after_the_last_run_is_no_failure_but_a_missing_run_is(all_finished, monkeypatch, tmp_path):
    """``--executor local``: a worker that died (SIGKILL: submitit raises UncompletedJobError)
    while every run of the plan is finished fails nothing; with a run missing it is a failure."""
    from submitit.core.utils import UncompletedJobError
    killed = UncompletedJobError("Job 123 (task: 0) with path ... has not produced any output (state: KILLED)")
    futures = [_Future(result={}), _Future(error=killed)]

    class Executor:
        def submit(self, *a, **k):
            return futures.pop(0)
    monkeypatch.setattr(executors, "make_executor", lambda *a, **k: Executor())
    todo = [_Run("mnist5k/kd/0", True), _Run("mnist5k/dkd/0", all_finished)]
    lines = []
    failed = executors.run_level(todo, "local", 2, folder=tmp_path, log=lines.append, every_s=0.0)
    if all_finished:
        assert failed == {} and any("ended abnormally" in line and "state: KILLED" in line
                                    and "every run finished" in line for line in lines)
    else:
        assert failed == {"worker 1": "/tmp/kd_worker_log.err"}
        assert any("FAILED worker 1" in line and "state: KILLED" in line for line in lines)
