"""Layers point one way: data/models/losses/stats at the bottom, fit, runs, then orchestration."""
import ast
from pathlib import Path

import kd_helpers

PKG = Path(kd_helpers.__file__).parent
ORCHESTRATION = {"prune_sweep", "ablation", "study", "report", "method_report", "findings", "html_report", "publish",
                 "plan", "executors"}
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


def test_runs_and_below_never_import_orchestration():
    for m, deps in GRAPH.items():
        if m not in ORCHESTRATION:
            assert not deps & ORCHESTRATION, f"{m} imports {deps & ORCHESTRATION}"
        if m not in ORCHESTRATION | RUNS:
            assert not deps & RUNS, f"{m} imports the runs layer"
