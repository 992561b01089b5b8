"""The HTML edition: an index in study order linking every executed notebook, images embedded,
no machine path and no traceback on any page; the report opens with its findings."""
import re

import pytest

from kd_helpers.experiment import distill, train_teacher
from kd_helpers.html_report import render
from kd_helpers.study import run_study
from kd_helpers.core.util import REPO_ROOT

pytestmark = pytest.mark.notebook


def test_html_edition_of_the_smoke_report(tmp_path, monkeypatch):
    store = tmp_path / "store"
    train_teacher("mnist5k", "smoke", results_dir=store, progress=False)
    for name in ("baseline", "kd"):
        distill(name, "mnist5k", "smoke", seeds=[0, 1], results_dir=store, progress=False)
    monkeypatch.setenv("KD_RESULTS_DIR", str(store))   # not a notebook parameter: no path in the notebooks
    reports = tmp_path / "reports"
    run_study("smoke", datasets=["mnist5k"], seeds=[0, 1], reports_dir=str(reports),
              only=["03_vanilla_kd", "30_statistics", "31_report"], log=lambda *_: None)
    index = render("smoke", reports)
    links = re.findall(r'href="([^"]+)"', index.read_text())
    assert links == ["31_report.html", "30_statistics.html", "mnist5k/03_vanilla_kd.html"]   # the report first
    assert "What it shows" in index.read_text() and "<table>" in index.read_text()   # notebooks x studies
    # every link of every page resolves (pages, the executed notebooks they point to, the index)
    for page in index.parent.rglob("*.html"):
        for href in re.findall(r'href="([^"#:]+)"', page.read_text()):
            assert (page.parent / href).exists(), (page.name, href)
    for link in links:
        page = (index.parent / link).read_text()
        for leak in (str(tmp_path), str(REPO_ROOT), "/root/", "/home/"):
            assert leak not in page, (link, leak)
        assert "Traceback" not in page, link
    report = (index.parent / "31_report.html").read_text()
    assert "data:image/png;base64" in report
    text = re.sub(r"<[^>]+>", " ", report)
    assert text.index("Findings") < text.index("Learning curves")   # findings before the details
    # the first screen is the report, not its code: code cells are hidden, the executed notebook is linked
    assert "check_parameters(" not in text and "display(Markdown" not in text and "In&nbsp;[" not in report
    assert 'href="../31_report.ipynb"' in report
    # math typeset as MathML: no raw LaTeX, nothing from the network
    vanilla = (index.parent / "mnist5k" / "03_vanilla_kd.html").read_text()
    assert "<math" in vanilla and "$$" not in vanilla and "\\frac" not in vanilla
    assert 'href="../../mnist5k/03_vanilla_kd.ipynb"' in vanilla
    for page in index.parent.rglob("*.html"):
        assert not re.findall(r'(?:src=|@import |url\()["\']?https?://', page.read_text()), page.name   # nothing loads from the network
    # one seed in the smoke run: what was compared, not judged
    assert "Not judged (fewer than 3 seeds)" in text and "Compute (training time as recorded" in text
