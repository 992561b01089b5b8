"""Papermill smoke runs: every notebook executes headless with the smoke profile."""
import json

import nbformat
import pytest

from kd_helpers import plan, tuning
from kd_helpers.experiment import distill, train_teacher
from kd_helpers.core.losses import LOSSES
from kd_helpers.store.presets import tuning_budget, variant
from kd_helpers.store.results import load_results
from kd_helpers.plan import STEPS
from kd_helpers.study import NOTEBOOK_DIR, NotebookFailed, execute, record_timings, run_study
from conftest import needs_cifar, shared_data_dir

pytestmark = pytest.mark.notebook
PER_DATASET = [s.notebook for s in STEPS if s.per_dataset and "mlp" in s.families]
CNN_ONLY = [s.notebook for s in STEPS if s.per_dataset and "mlp" not in s.families]
ONCE = [s.notebook for s in STEPS if not s.per_dataset]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A per-worker results store with the smoke teachers (notebooks reuse finished runs)."""
    root = tmp_path_factory.mktemp("nb_results")
    train_teacher("mnist5k", "smoke", results_dir=root)
    if shared_data_dir():
        train_teacher("cifar10", "smoke", results_dir=root, data_dir=shared_data_dir())
    return root


def run_nb(name, tmp_path, store, **params):
    out = tmp_path / f"{name}.ipynb"
    execute(name, out, {"profile": "smoke", "seeds": [0], "results_dir": str(store),
                        "data_dir": shared_data_dir(), **params}, log=lambda *_: None)
    nb = nbformat.read(out, as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    return nb


def test_notebooks_have_parameters_cell_and_no_function_definitions():
    for step in STEPS:
        nb = nbformat.read(NOTEBOOK_DIR / f"{step.notebook}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, step.notebook
        for c in nb.cells:
            if c.cell_type == "code":
                assert "def " not in c.source and "sys.path" not in c.source, step.notebook
                assert not c.get("outputs"), f"{step.notebook}: committed notebooks carry no outputs"


def recorded_summary(nb) -> dict | None:
    """What a method notebook recorded in the metadata of its generated interpretation."""
    found = [o.metadata["kd_summary"] for c in nb.cells for o in c.get("outputs", [])
             if "kd_summary" in o.get("metadata", {})]
    return found[-1] if found else None


def check_ablation(nb, dataset):
    """01_teacher's appendix records its table: every row of the family's grid, the study's own
    protocol marked once per role, and the validation choice marked."""
    from kd_helpers.store.presets import ABLATION_GRID as GRID
    from kd_helpers.store.presets import family
    found = [o.metadata["kd_ablation"] for c in nb.cells for o in c.get("outputs", [])
             if "kd_ablation" in o.get("metadata", {})]
    assert len(found) == 1
    t = found[0]
    grid = GRID[family(dataset)]
    assert t["protocol"] == [label for label, _, _ in grid]
    for role in set(t["role"]):
        rows = [i for i, r in enumerate(t["role"]) if r == role]
        assert sum(t["study"][i] for i in rows) == 1 and any(t["best on validation"][i] for i in rows)
        split = next(t["val_size"][i] for i in rows if t["study"][i])
        same = [i for i in rows if t["val_size"][i] == split]   # another split's accuracy does not compare
        assert len(same) < len(rows) or family(dataset) != "mlp" or role == "kd"   # MLP: a split row per network
        best = max(t["val_acc"][i] for i in same)
        assert all(t["best on validation"][i] == (i in same and t["val_acc"][i] == best) for i in rows)


def check_pruning_verdicts(nb):
    """20_pruning compares every KD-fine-tuned pruned model with its CE-fine-tuned twin, and only that."""
    found = [o.metadata["kd_pruning"] for c in nb.cells for o in c.get("outputs", [])
             if "kd_pruning" in o.get("metadata", {})]
    assert len(found) == 1
    v = found[0]
    assert len(v["run"]) == 4   # 2 kinds x 1 amount x 2 sources, each fine-tuned with KD
    assert all("__finetune=kd__" in r and b == r.replace("__finetune=kd__", "__finetune=ce__")
               for r, b in zip(v["run"], v["baseline"]))
    assert set(v["verdict"]) == {"not judged"} and set(v["seeds"]) == {1}


def check_method_summary(name, nb, min_acc=0.0):
    s = recorded_summary(nb)
    if name not in METHOD_NOTEBOOKS:
        assert s is None
        return
    assert s is not None, f"{name} recorded no summary"
    assert s["runs"] == METHOD_NOTEBOOKS[name]                  # exactly the runs the notebook lists
    assert sorted(s["table_runs"]) == sorted(s["runs"] + ["teacher"])   # one table row per run, plus the teacher
    assert set(s["verdicts"]) <= set(s["table_runs"])
    # one seed (the smoke profile): a difference is shown, the method is not judged
    assert set(s["verdicts"].values()) <= {"not judged"}
    kd_runs = [r for r in s["runs"] if variant(r.split("__")[0]).method != "ce"]
    assert sorted(s["verdicts"]) == sorted(kd_runs)              # every KD run is judged against its baseline
    text = "".join(o.data.get("text/markdown", "") for c in nb.cells for o in c.get("outputs", [])
                   if "kd_summary" in o.get("metadata", {}))
    for run in s["verdicts"]:
        assert f"**{run}**" in text                              # the interpretation names what the table has
    assert all(0 <= acc <= 1 for acc in s["test_acc"].values()) and s["test_acc"]["baseline"] > min_acc


# the pruning sweep's full grid is 32 runs; one amount covers every code path of the notebook
SMALL = {"20_pruning": {"amounts": [0.5]}}


@pytest.mark.parametrize("name", PER_DATASET)
def test_notebook_smoke_mnist5k(name, tmp_path, store):
    nb = run_nb(name, tmp_path, store, dataset="mnist5k", **SMALL.get(name, {}))
    check_method_summary(name, nb, min_acc=0.2)
    if name == "01_teacher":
        check_ablation(nb, "mnist5k")   # the MLP baseline is well above chance after one smoke epoch
    if name == "20_pruning":
        check_pruning_verdicts(nb)
    if name == "14_tuning":
        check_tuning(nb, store)


def check_tuning(nb, store):
    """Every variant's study spent the smoke budget; each best configuration was retrained on the
    tuned seed; the recorded numbers are the store's."""
    found = [o.metadata["kd_tuning"] for c in nb.cells for o in c.get("outputs", []) if "kd_tuning" in o.get("metadata", {})]
    assert found, "14_tuning recorded no summary"
    rec = found[-1]
    n_trials, n_seeds = tuning_budget("mnist5k", "smoke")
    assert rec["trials"] == {v: n_trials for v in tuning.variants("mnist5k")}
    assert rec["tuned_seeds"] == {v: n_seeds for v in tuning.variants("mnist5k")}
    assert all(0 < acc <= 100 for acc in rec["best_val"].values())
    df = load_results(store, "smoke")
    for v, acc in rec["tuned_acc"].items():
        assert 100 * df[df.run == f"tuned_{v}"].test_acc.mean() == pytest.approx(acc)


@needs_cifar
@pytest.mark.parametrize("name", ["00_data", "01_teacher"] + CNN_ONLY)
def test_notebook_smoke_cifar10(name, tmp_path, store):
    # the CNN grid's code path is the MLP grid's (tested on mnist5k); its six CNN runs would add minutes
    nb = run_nb(name, tmp_path, store, dataset="cifar10", **SMALL.get(name, {}), **({"ablation": False} if name == "01_teacher" else {}))
    check_method_summary(name, nb)
    if name == "01_teacher":   # ablation=False is obeyed (an import of the same name once shadowed it)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if "kd_ablation" in o.get("metadata", {})]


@needs_cifar
def test_a_teacher_student_pair_runs_through_the_notebooks(tmp_path, store):
    """A residual pair's study (cifar10@resnet56-resnet20): the teacher notebook trains the pair's
    teacher (no ablation grid for pairs), a method notebook its student with the pair's DKD beta."""
    ds = "cifar10@resnet56-resnet20"
    run_nb("01_teacher", tmp_path, store, dataset=ds)
    nb = run_nb("13_dkd", tmp_path, store, dataset=ds)
    s = recorded_summary(nb)
    assert s["dataset"] == ds and s["runs"] == ["baseline", "kd", "dkd"] and set(s["verdicts"]) == {"kd", "dkd"}
    from kd_helpers.store.results import load_results
    df = load_results(store).query("dataset == @ds")
    assert set(df.run) == {"teacher", "baseline", "kd", "dkd"}
    assert set(df.set_index("run").model.items()) == {("teacher", "resnet56"), ("baseline", "resnet20"),
                                                       ("kd", "resnet20"), ("dkd", "resnet20")}


def notebook_runs(name) -> list[str]:
    """The run names a notebook trains (kd_helpers.plan), in order."""
    ds = "cifar10" if name == "07_at" else "mnist5k"
    return [j.run for j in plan.jobs(name, {"dataset": ds, "profile": "smoke", "seeds": [0]}, "/nonexistent")]


METHOD_NOTEBOOKS = {s.notebook: notebook_runs(s.notebook) for s in STEPS
                    if s.per_dataset and "method_report(" in "".join(
                        c.source for c in nbformat.read(NOTEBOOK_DIR / f"{s.notebook}.ipynb", as_version=4).cells)}


def test_every_registered_loss_has_a_notebook_and_a_step():
    covered = {variant(r).method for runs in METHOD_NOTEBOOKS.values() for r in runs}
    assert set(LOSSES) <= covered, f"losses without a notebook in STEPS: {sorted(set(LOSSES) - covered)}"
    for name, runs in METHOD_NOTEBOOKS.items():
        assert len(runs) == len(set(runs)), f"{name} lists a run twice"


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory):
    """Two seeds of a few methods, trained through the API (fast), for the summary notebooks."""
    root = tmp_path_factory.mktemp("nb_filled")
    train_teacher("mnist5k", "smoke", results_dir=root)
    for name in ("baseline", "kd", "dist", "dml"):
        distill(name, "mnist5k", "smoke", seeds=[0, 1], results_dir=root)
    if shared_data_dir():   # a study that has only its teacher so far (as a published store can)
        train_teacher("cifar10", "smoke", results_dir=root, data_dir=shared_data_dir())
    return root


@pytest.mark.parametrize("name", ONCE)
def test_notebook_smoke_once(name, tmp_path, filled_store):
    datasets = ["mnist5k"] + (["cifar10"] if shared_data_dir() else [])
    nb = run_nb(name, tmp_path, filled_store, datasets=datasets, seeds=[0, 1])
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))
    assert list((tmp_path / "figures").glob("mnist5k_*.png"))  # KD_FIGURES_DIR set by conftest


def test_runner_names_the_failing_notebook(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotebookFailed, match="00_data failed \\(cifar100\\).*cifar-100-python"):
        run_study("smoke", datasets=["cifar100"], data_dir=str(tmp_path / "empty"), results_dir=str(tmp_path / "r"),
                  reports_dir=str(tmp_path / "rep"), only=["00_data"], log=lambda *_: None)
    # an unknown dataset is refused before any notebook runs
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset'"):
        run_study("smoke", datasets=["no_such_dataset"], results_dir=str(tmp_path / "r"),
                  reports_dir=str(tmp_path / "rep"), only=["00_data"], log=lambda *_: None)


def test_timings_of_separate_invocations_add_up(tmp_path):
    path = tmp_path / "timings.json"
    record_timings(path, "paper", [0], {"mnist/01_teacher": 100.0, "mnist/03_vanilla_kd": 50.0})
    out = record_timings(path, "paper", [0], {"cifar10/01_teacher": 1000.0, "30_statistics": 5.0})
    assert out["per_dataset_s"] == {"mnist": 150.0, "cifar10": 1000.0, "all datasets": 5.0}
    assert out["total_s"] == 1155.0
    out = record_timings(path, "paper", [0], {"mnist/01_teacher": 90.0})  # a re-run replaces its time
    assert out["per_dataset_s"]["mnist"] == 140.0
    assert record_timings(path, "quick", [0, 1, 2], {"mnist5k/01_teacher": 1.0})["total_s"] == 1.0


def test_an_invocation_on_other_seeds_adds_its_records_and_keeps_the_others(tmp_path):
    path = tmp_path / "timings.json"
    record_timings(path, "paper", [0, 1, 2], {"mnist/01_teacher": 100.0})
    out = record_timings(path, "paper", [0], {"cifar10@resnet56-resnet20/01_teacher": 50.0})
    assert {k: v["seeds"] for k, v in out["notebooks"].items()} == {
        "mnist/01_teacher": [0, 1, 2], "cifar10@resnet56-resnet20/01_teacher": [0]}
    assert out["seeds"] == [0, 1, 2] and out["total_s"] == 150.0


def test_a_rerun_that_only_reuses_runs_keeps_the_training_time(tmp_path):
    path = tmp_path / "timings.json"
    record_timings(path, "paper", [0], {"mnist/01_teacher": {"s": 140.0, "trained_runs": 1}})
    out = record_timings(path, "paper", [0], {"mnist/01_teacher": {"s": 6.0, "trained_runs": 0}})
    assert out["notebooks"]["mnist/01_teacher"]["s"] == 140.0
    out = record_timings(path, "paper", [0], {"mnist/01_teacher": {"s": 120.0, "trained_runs": 1}})
    assert out["notebooks"]["mnist/01_teacher"]["s"] == 120.0


def test_runner_records_what_each_notebook_trained(tmp_path):
    kw = dict(datasets=["mnist5k"], results_dir=str(tmp_path / "r"), reports_dir=str(tmp_path / "rep"),
              only=["01_teacher"], log=lambda *_: None)
    t = run_study("smoke", **kw)["mnist5k/01_teacher"]
    from kd_helpers.store.presets import ABLATION_GRID as GRID
    # the study's own runs the appendix compares (teacher, baseline, KD), and every changed row of the ablation
    own = {role for _, role, changes in GRID["mlp"] if not changes}
    ablation_runs = sum(1 for _, _, changes in GRID["mlp"] if changes)
    assert own == {"teacher", "baseline", "kd"}
    assert t["trained_runs"] == len(own) + ablation_runs and t["commit"] and t["machine"]
    assert "fp32" in t["precision"] and set(t["precision"].split(", ")) <= {"fp32", "bf16"}
    assert run_study("smoke", **kw)["mnist5k/01_teacher"]["trained_runs"] == 0   # reused
    recorded = json.loads((tmp_path / "rep" / "timings.json").read_text())["notebooks"]["mnist5k/01_teacher"]
    assert recorded == {**t, "seeds": [0]}   # the record names the seeds it ran


def test_make_report_reexecutes_the_summaries_on_every_published_study(monkeypatch, filled_store):
    """`make report` runs 30_statistics and 31_report on every dataset and seed of the store it reads."""
    from kd_helpers import report
    seen = {}
    monkeypatch.setattr(report, "run_study", lambda profile, **kw: seen.update(profile=profile, **kw))
    report.rerun_summaries("smoke", results_dir=filled_store, log=lambda *_: None)
    assert seen["only"] == ["30_statistics", "31_report"] and seen["results_dir"] == filled_store
    assert seen["datasets"] == sorted(["mnist5k"] + (["cifar10"] if shared_data_dir() else []))
    assert seen["seeds"] == [0, 1]


def test_executed_notebooks_name_repository_paths_relative_to_notebooks(tmp_path):
    from kd_helpers.study import REPO_ROOT, strip_machine_paths
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f'results_dir = "{REPO_ROOT}/reports/paper/store"\ndata_dir = "/elsewhere/data"',
        metadata={"tags": ["injected-parameters"]})])
    nb.metadata["papermill"] = {"parameters": {"results_dir": f"{REPO_ROOT}/reports/paper/store", "seeds": [0]}}
    nbformat.write(nb, tmp_path / "x.ipynb")
    strip_machine_paths(tmp_path / "x.ipynb")
    out = nbformat.read(tmp_path / "x.ipynb", as_version=4)
    assert out.cells[0].source == 'results_dir = "../reports/paper/store"\ndata_dir = "/elsewhere/data"'
    assert out.metadata.papermill.parameters == {"results_dir": "../reports/paper/store", "seeds": [0]}
    assert out.cells[0].id == "injected-parameters"   # not papermill's random one: re-executions diff cleanly


def test_the_runner_starts_kernels_without_the_unencrypted_tcp_warning(tmp_path, capfd):
    import nbformat as nbf
    from kd_helpers import study
    nb = nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell("print(1 + 1)")])
    (tmp_path / "t.ipynb").write_text(nbf.writes(nb))
    import papermill as pm
    pm.execute_notebook(str(tmp_path / "t.ipynb"), str(tmp_path / "o.ipynb"), kernel_name="python3",
                        progress_bar=False, kernel_manager_class=study._kernel_manager())
    assert "without encryption" not in capfd.readouterr().err
    assert nbf.read(tmp_path / "o.ipynb", 4).cells[0].outputs[0]["text"] == "2\n"
