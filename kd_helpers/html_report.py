"""The HTML edition of a profile's executed notebooks: one page per notebook (figures embedded,
as the executed notebooks carry them) and an index page linking them in study order.

    python -m kd_helpers.html_report --profile paper        (make html PROFILE=paper)

Pages are written to ``reports/<profile>/html/``. Equations are MathJax; without internet they
stay readable as LaTeX source.
"""
from __future__ import annotations

import argparse
import html
from pathlib import Path

import nbformat

from .study import STEPS
from .util import REPO_ROOT, atomic_write_text


def _title(nb) -> str:
    for c in nb.cells:
        if c.cell_type == "markdown" and c.source.lstrip().startswith("#"):
            return c.source.lstrip().splitlines()[0].lstrip("# ").strip()
    return "notebook"


def executed_notebooks(reports: Path) -> list[tuple[str, Path]]:
    """``(dataset or "", path)`` of every executed notebook under ``reports``, in study order."""
    out = []
    datasets = sorted(d.name for d in reports.iterdir() if d.is_dir() and d.name not in ("html", "figures", "store"))
    for step in STEPS:
        if step.per_dataset:
            out += [(ds, reports / ds / f"{step.notebook}.ipynb") for ds in datasets
                    if (reports / ds / f"{step.notebook}.ipynb").exists()]
        elif (reports / f"{step.notebook}.ipynb").exists():
            out.append(("", reports / f"{step.notebook}.ipynb"))
    return out


def settings_last(nb):
    """The page opens with the notebook's content: the parameter cells (defaults, papermill's
    injected values, the parameter check) move to a closing "Parameters of this run" section."""
    tags = lambda c: set(c.get("metadata", {}).get("tags", []))
    is_setting = lambda c: c.cell_type == "code" and (tags(c) & {"parameters", "injected-parameters"}
                                                     or "check_parameters(" in c.source)
    moved = [c for c in nb.cells if is_setting(c)]
    if moved:
        nb.cells = [c for c in nb.cells if not is_setting(c)]
        nb.cells.append(nbformat.v4.new_markdown_cell("## Parameters of this run\n"
                                                      "The notebook's defaults, then the values the runner passed."))
        nb.cells += moved
    return nb


def render(profile: str, reports_dir=None) -> Path:
    """Render every executed notebook of ``profile`` and the index; return the index path."""
    from nbconvert import HTMLExporter
    reports = Path(reports_dir or REPO_ROOT / "reports" / profile)
    out = reports / "html"
    exporter = HTMLExporter(template_name="lab")
    items = []
    for ds, path in executed_notebooks(reports):
        nb = settings_last(nbformat.read(path, as_version=4))
        nb.metadata.pop("papermill", None)   # input/output paths of the machine that ran it
        body, _ = exporter.from_notebook_node(nb)
        rel = Path(ds) / f"{path.stem}.html" if ds else Path(f"{path.stem}.html")
        atomic_write_text(out / rel, body)
        items.append((ds, rel, _title(nb)))
    rows, current = [], None
    for ds, rel, title in items:
        if ds != current:
            rows.append(f"<h2>{html.escape(ds or 'All datasets')}</h2>")
            current = ds
        rows.append(f'<p><a href="{rel.as_posix()}">{html.escape(title)}</a></p>')
    index = (f"<!doctype html><html><head><meta charset='utf-8'><title>kd-study report ({html.escape(profile)})</title>"
             f"<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}</style></head><body>"
             f"<h1>kd-study: executed notebooks, profile <code>{html.escape(profile)}</code></h1>"
             f"<p>In study order. Start with the report (31) for the findings.</p>{''.join(rows)}</body></html>\n")
    atomic_write_text(out / "index.html", index)
    return out / "index.html"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--reports-dir", default=None, help="default: reports/<profile>")
    args = ap.parse_args(argv)
    index = render(args.profile, args.reports_dir)
    print(f"wrote {index.relative_to(REPO_ROOT) if index.is_relative_to(REPO_ROOT) else index}")


if __name__ == "__main__":
    main()
