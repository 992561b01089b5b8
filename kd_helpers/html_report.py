"""The HTML edition of a profile's executed notebooks: one page per notebook (figures embedded,
as the executed notebooks carry them) and an index page linking them in study order.

    python -m kd_helpers.html_report --profile paper        (make html PROFILE=paper)

Pages are written to ``reports/<profile>/html/``, code hidden (each page links its executed
notebook), equations pre-rendered as MathML (no network, no script).
"""
from __future__ import annotations

import argparse
import html
import re
from pathlib import Path

import nbformat

from .plan import STEPS
from .core.util import REPO_ROOT, atomic_write_text


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


_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?![\$\s])([^$\n]+?)(?<!\s)\$")
# nbconvert's page head loads MathJax and require.js from a CDN; the pages need neither
_CDN_SCRIPTS = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->|"
                          r"<script[^>]*src=\"https://cdnjs[^\"]*\"[^>]*>\s*</script>", re.S)


def mathml(text: str) -> str:
    """``$$...$$`` and ``$...$`` as MathML (``latex2mathml``), which browsers render natively:
    the pages show typeset math with no network and no script."""
    from latex2mathml.converter import convert
    text = _DISPLAY.sub(lambda m: convert(m.group(1).strip(), display="block"), text)
    return _INLINE.sub(lambda m: convert(m.group(1)), text)


def prerender_math(nb):
    """Every markdown cell and markdown output of ``nb`` with its math as MathML."""
    for c in nb.cells:
        if c.cell_type == "markdown":
            c.source = mathml(c.source)
        for o in c.get("outputs", []):
            if "text/markdown" in o.get("data", {}):
                o["data"]["text/markdown"] = mathml(o["data"]["text/markdown"])
    return nb


def page_summary(nb, limit: int = 160) -> str:
    """A notebook's one-line description: the first sentence after its title, without its math
    and markdown marks, at most ``limit`` characters."""
    for c in nb.cells:
        if c.cell_type == "markdown" and c.source.lstrip().startswith("#"):
            rest = " ".join(line for line in c.source.splitlines()[1:] if line.strip() and not line.startswith(("$", "-", "|")))
            rest = _INLINE.sub("", _DISPLAY.sub("", rest))
            rest = re.sub(r"[*`]", "", rest).split(". ")[0].rstrip(" .:,")
            return (rest[:limit].rsplit(" ", 1)[0] + " ...") if len(rest) > limit else (rest + "." if rest else "")
    return ""


def render(profile: str, reports_dir=None) -> Path:
    """Render every executed notebook of ``profile`` (code hidden, math as MathML, nothing loaded
    from the network) and the index (the report first, then a table of notebooks x studies); return the
    index path."""
    from nbconvert import HTMLExporter
    reports = Path(reports_dir or REPO_ROOT / "reports" / profile)
    out = reports / "html"
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    pages: dict[str, dict[str, Path]] = {}
    titles, descriptions = {}, {}
    for ds, path in executed_notebooks(reports):
        nb = settings_last(nbformat.read(path, as_version=4))
        descriptions[path.stem] = page_summary(nb)
        nb = prerender_math(nb)
        nb.metadata.pop("papermill", None)   # input/output paths of the machine that ran it
        rel = Path(ds) / f"{path.stem}.html" if ds else Path(f"{path.stem}.html")
        up = "../" * (len(rel.parts) - 1)
        source = f"{up}../{path.relative_to(reports).as_posix()}"
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            f"<small>Code hidden: the executed notebook with its code is [{path.relative_to(reports).as_posix()}]"
            f"({source}) (reports/{profile}/); its source is notebooks/{path.name}. "
            f"[All notebooks]({up}index.html)</small>"))
        body, _ = exporter.from_notebook_node(nb)
        atomic_write_text(out / rel, _CDN_SCRIPTS.sub("", body))
        pages.setdefault(path.stem, {})[ds] = rel
        titles[path.stem] = _title(nb)
    studies = sorted({ds for p in pages.values() for ds in p if ds})
    first = [nb for nb in pages if "" in pages[nb]]           # the report and the statistics: read first
    order = sorted(first, key=lambda n: n != "31_report") + [nb for nb in pages if nb not in first]
    head = "".join(f"<th>{html.escape(s)}</th>" for s in studies)
    rows = []
    for nb in order:
        cells = ("".join(f'<td><a href="{pages[nb][s].as_posix()}">{html.escape(s)}</a></td>' if s in pages[nb]
                         else "<td></td>" for s in studies) if "" not in pages[nb]
                 else f'<td colspan="{max(len(studies), 1)}"><a href="{pages[nb][""].as_posix()}">every study</a></td>')
        rows.append(f"<tr><th>{html.escape(titles[nb])}</th><td>{html.escape(descriptions[nb])}</td>{cells}</tr>")
    index = (f"<!doctype html><html><head><meta charset='utf-8'><title>kd-study report ({html.escape(profile)})</title>"
             f"<style>body{{font-family:sans-serif;max-width:80em;margin:2em auto}}table{{border-collapse:collapse}}"
             f"td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}</style></head><body>"
             f"<h1>kd-study: executed notebooks, profile <code>{html.escape(profile)}</code></h1>"
             f"<p>Start with the report: the abstract, the main figure and the findings. Each page hides its code; "
             f"the executed notebook with its code is linked at its top.</p>"
             f"<table><tr><th>Notebook</th><th>What it shows</th>{head}</tr>{''.join(rows)}</table></body></html>\n")
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
