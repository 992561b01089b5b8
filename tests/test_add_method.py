"""Adding a method is one loss file, one notebook and one line (CONTRIBUTING.md): a toy method
added that way to a copy of the repository goes through the parameter checks, the plan, the
study runner's smoke profile, the report notebook and the HTML edition, with nothing else edited."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebook

TOY_LOSS = '''"""A toy method for the add-a-method test: CE plus ``w`` times the squared distance between
the student's and the teacher's probabilities."""
import torch.nn.functional as F

from .base import DistillLoss, register_loss


@register_loss("toy")
class Toy(DistillLoss):
    """``CE + w * ||p_s - p_t||^2``."""

    def __init__(self, pair=None, w: float = 0.5):
        super().__init__(pair)
        self.w = w

    def forward(self, s_out, t_out, y, x=None, idx=None):
        gap = (F.softmax(s_out[0], 1) - F.softmax(t_out[0], 1)).pow(2).sum(1).mean()
        return {"ce": F.cross_entropy(s_out[0], y), "toy": self.w * gap}
'''
ONE_LINE = '    Step("15_toy", _method("toy", "kd")),\n'


def toy_notebook(template: Path, out: Path) -> None:
    """A method notebook from an existing one: title, the loss's parameters, the notebook's name."""
    nb = nbformat.read(template, as_version=4)
    nb.cells[0].source = "# 15 · Toy\n\nCE plus the squared distance between the two networks' probabilities."
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    kept = [line for line in params.source.splitlines() if line.split("=")[0].strip() in
            ("dataset", "profile", "seeds", "data_dir", "results_dir")]
    params.source = "\n".join(kept + ["w = None               # None: 0.5"])
    for c in nb.cells:
        if c.cell_type == "code":
            c.source = c.source.replace("10_dist", "15_toy")
    nbformat.write(nb, out)


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "repo"
    for part in ("kd_helpers", "notebooks"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "kd_helpers/core/losses/toy.py").write_text(TOY_LOSS)
    toy_notebook(REPO / "notebooks/10_dist.ipynb", root / "notebooks/15_toy.ipynb")
    plan = (root / "kd_helpers/plan.py").read_text()
    anchor = '    Step("14_tuning"'
    assert plan.count(anchor) == 1
    (root / "kd_helpers/plan.py").write_text(plan.replace(anchor, ONE_LINE + anchor))
    return root


def changed_files(root: Path) -> dict[str, str]:
    """Files of the copy that differ from the repository's: "new", or the lines added/removed."""
    out = {}
    for part in ("kd_helpers", "notebooks"):
        for f in (root / part).rglob("*"):
            if f.is_dir() or "__pycache__" in f.parts:
                continue
            rel = f.relative_to(root)
            orig = REPO / rel
            if not orig.exists():
                out[str(rel)] = "new"
            elif orig.read_bytes() != f.read_bytes():
                a, b = orig.read_text().splitlines(True), f.read_text().splitlines(True)
                out[str(rel)] = "".join(sorted(set(b) - set(a))) + "|" + "".join(sorted(set(a) - set(b)))
    return out


def run(root: Path, *args, check=True) -> subprocess.CompletedProcess:
    # PYTHONPATH: the copy's package, also in the notebooks' kernels (which start in notebooks/)
    env = {**os.environ, "PYTHONPATH": str(root), "KD_RESULTS_DIR": str(root / "results")}
    p = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_the_change_is_one_loss_file_one_notebook_one_line(toy_repo):
    assert changed_files(toy_repo) == {"kd_helpers/core/losses/toy.py": "new", "notebooks/15_toy.ipynb": "new",
                                       "kd_helpers/plan.py": ONE_LINE + "|"}


def test_toy_method_parameters_plan_study_report_and_html(toy_repo):
    root, results, reports = toy_repo, toy_repo / "results", toy_repo / "reports"
    # the copy's package is the one that runs
    assert run(root, "-c", "import kd_helpers; print(kd_helpers.__file__)").stdout.strip() == \
        str(root / "kd_helpers/__init__.py")
    # its hyper-parameter gets a rule from the loss signature (no edit to params.RULES)
    bad = run(root, "-m", "papermill", "notebooks/15_toy.ipynb", "/dev/null", "-p", "profile", "smoke",
              "-p", "w", "-1", check=False)
    assert bad.returncode != 0 and "parameter w=-1 is not accepted" in bad.stdout + bad.stderr
    # the plan lists its runs
    listed = run(root, "-m", "kd_helpers.study", "--profile", "smoke", "--only", "15_toy", "--plan").stdout
    assert "15_toy" in listed and " toy " in listed and " kd " in listed and " baseline " in listed
    # the runner's smoke profile trains and reports it
    run(root, "-c", "from kd_helpers.experiment import train_teacher; train_teacher('mnist5k', 'smoke')")
    run(root, "-m", "kd_helpers.study", "--profile", "smoke", "--only", "15_toy", "31_report",
        "--reports-dir", str(reports), "--seeds", "0")
    nb = nbformat.read(reports / "mnist5k/15_toy.ipynb", as_version=4)
    summary = [o.metadata["kd_summary"] for c in nb.cells for o in c.get("outputs", [])
               if "kd_summary" in o.get("metadata", {})][-1]
    assert summary["runs"] == ["baseline", "kd", "toy"] and "toy" in summary["verdicts"]
    assert 0 < summary["test_acc"]["toy"] <= 1
    config = json.loads((results / "mnist5k/toy/seed_0/config.json").read_text())
    assert config["method"] == "toy" and config["loss"] == {"w": 0.5}
    report = nbformat.read(reports / "31_report.ipynb", as_version=4)
    shown = "".join(o.get("text", "") + "".join(o.get("data", {}).get(k, "") for k in ("text/html", "text/markdown"))
                    for c in report.cells for o in c.get("outputs", []))
    assert "toy" in shown
    # the HTML edition has its page, linked from the index
    run(root, "-m", "kd_helpers.html_report", "--profile", "smoke", "--reports-dir", str(reports))
    index = (reports / "html/index.html").read_text()
    page = reports / "html/mnist5k/15_toy.html"
    assert page.exists() and 'href="mnist5k/15_toy.html"' in index and "15 · Toy" in index
    assert index.index("31_report.html") < index.index("15_toy.html")   # the report first, then study order
