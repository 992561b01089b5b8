"""Layers point one way: data/models/losses/stats at the bottom, fit, runs, then orchestration."""
import ast
from pathlib import Path

import kd_helpers

PKG = Path(kd_helpers.__file__).parent
ORCHESTRATION = {"prune_sweep", "ablation", "study", "report", "html_report", "publish", "plan", "executors", "tuning"}
ANALYSIS = {"stats", "findings", "summary", "tables", "tuning_report", "plots", "method_report"}
RUNS = {"experiment"}


def imports(path: Path) -> set[str]:
    """kd_helpers modules a file imports (relative imports, top level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = (node.module or "").split(".")[0]
            out |= {base} if base else {a.name for a in node.names}
    return out - {""}


GRAPH = {p.stem: imports(p) for p in PKG.glob("*.py") if p.stem != "__init__"}


def test_no_import_cycles():
    seen, done = set(), set()

    def visit(m, path):
        assert m not in seen or m in done, f"import cycle: {' -> '.join(path + [m])}"
        if m in done:
            return
        seen.add(m)
        for n in GRAPH.get(m, ()):
            visit(n, path + [m])
        done.add(m)
    for m in GRAPH:
        visit(m, [])


def test_runs_and_below_never_import_analysis_or_orchestration():
    above = ORCHESTRATION | ANALYSIS
    for m, deps in GRAPH.items():
        if m not in above:
            assert not deps & above, f"{m} imports {deps & above}"
        if m not in above | RUNS:
            assert not deps & RUNS, f"{m} imports the runs layer"


# the analysis side reads the store (results) and configuration tables (presets, losses' docstrings)
RUN_SIDE = ORCHESTRATION | RUNS | {"train"}


def test_analysis_never_imports_the_run_side_or_orchestration():
    for m in ANALYSIS:
        assert m in GRAPH, f"{m} is not a module any more: update ANALYSIS"
        assert not GRAPH[m] & RUN_SIDE, f"analysis module {m} imports {GRAPH[m] & RUN_SIDE}"


def test_what_a_method_notebook_imports_does_not_load_the_runners():
    """A method notebook's last cell (method_report) must not load submitit or the executors."""
    import json
    import subprocess
    import sys
    nb = json.loads((PKG.parent / "notebooks" / "13_dkd.ipynb").read_text())
    lines = [line for c in nb["cells"] if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
             if line.startswith(("from kd_helpers", "import kd_helpers"))]
    assert any("method_report" in line for line in lines)
    code = "\n".join(lines + ["import sys", "print(sorted(m for m in sys.modules if m.startswith(('submitit', "
                                             "'kd_helpers.executors', 'kd_helpers.study', 'kd_helpers.report'))))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_library_code_never_sets_environment_variables():
    """Settings travel as arguments (a worker's threads, a kernel's ``reuse_only``); the ``KD_*``
    variables are the user's, only read (CONTRIBUTING.md lists them)."""
    import ast
    writes = []
    for f in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            hits = [t for t in targets if isinstance(t, ast.Subscript) and "environ" in ast.unparse(t.value)]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    node.func.attr == "putenv" or ("environ" in ast.unparse(node.func.value)
                                                   and node.func.attr in ("setdefault", "update", "pop", "clear"))):
                hits.append(node)
            writes += [f"{f.relative_to(PKG)}:{n.lineno}" for n in hits]
    assert writes == []
