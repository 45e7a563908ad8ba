"""edge-dm's structure: layers that import only downwards (import-linter's contract in pyproject.toml),
no import cycle, and edge-dm's own imports at the top of each file, where the order can be read."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_dm"
# imported where used: it defines torch modules, so importing it imports torch (seconds), and only
# the shortcut split needs it
FUNCTION_LEVEL_OK = {"edge_dm.families.shortcut_split"}


@pytest.fixture(scope="module")
def graph():
    grimp = pytest.importorskip("grimp")
    return grimp.build_graph("edge_dm")


def test_layers_contract_is_kept():
    """import-linter in a process of its own: it reconfigures logging, which would silence edge-dm's logger here."""
    import subprocess
    import sys

    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_no_import_cycle(graph):
    """Tarjan's strongly connected components of the module graph, function-level imports included."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(m):
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = set()
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.add(n)
                if n == m:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert len(graph.modules) > 30 and not cycles, cycles


def test_edge_dms_imports_are_at_the_top_of_each_file():
    inside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("edge_dm") \
                            and sub.module not in FUNCTION_LEVEL_OK:
                        inside.append(f"{path.relative_to(ROOT)}:{sub.lineno} {sub.module}")
                    if isinstance(sub, ast.Import) and any(a.name.startswith("edge_dm") for a in sub.names):
                        inside.append(f"{path.relative_to(ROOT)}:{sub.lineno}")
    assert not inside, inside


def test_version_comes_from_the_package_metadata():
    import importlib.metadata

    import edge_dm

    assert edge_dm.__version__ == importlib.metadata.version("edge-dm")
