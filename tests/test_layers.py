"""Layers point one way, and the folder layout shows them: ``core/`` (data, networks, losses, the
training loop) imports only itself; ``store/`` (the results store, configuration tables, parameter
rules) the core; ``analysis/`` the core and the store, never the training loop, the run side or
orchestration; the package's top level (running, planning, publishing, the CLIs) anything."""
import ast
from pathlib import Path

import kd_helpers

PKG = Path(kd_helpers.__file__).parent
LAYERS = ("core", "store", "analysis")
ALLOWED = {"core": {"core"}, "store": {"core", "store"}, "analysis": {"core", "store", "analysis"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}


def imports(name: str) -> set[str]:
    """The kd_helpers modules module ``name`` imports (relative imports, at the top and inside functions)."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)] + ((node.module or "").split(".") if node.module else [])
            target = ".".join(p for p in base if p)
            for a in node.names:
                sub = f"{target}.{a.name}" if target else a.name
                out.add(sub if sub in MODULES else target)
    return out - {"", name}


GRAPH = {m: imports(m) for m in MODULES if m}


def layer(module: str) -> str:
    head = module.split(".")[0]
    return head if head in LAYERS else "top"


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


def test_each_layer_imports_only_the_layers_below_it():
    assert {layer(m) for m in GRAPH} == {*LAYERS, "top"}
    for m, deps in GRAPH.items():
        if layer(m) != "top":
            wrong = {d for d in deps if layer(d) not in ALLOWED[layer(m)]}
            assert not wrong, f"{m} ({layer(m)}) imports {sorted(wrong)}"


def test_analysis_never_imports_the_training_loop():
    for m, deps in GRAPH.items():
        if layer(m) == "analysis":
            assert "core.train" not in deps and "experiment" not in deps, f"{m} imports the run side"


def test_the_layer_rule_sees_a_violation():
    """The rule is not vacuous: the graph resolves relative imports to the modules they name."""
    assert "store.results" in GRAPH["analysis.findings"] and "core.util" in GRAPH["store.results"]
    assert "core.zoo" in imports("")   # the package's __init__
    assert layer("experiment") == "top" and layer("core.losses.kd") == "core"


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
