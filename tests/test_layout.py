"""The package's layout: the top level holds the entry points, and imports flow one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rdd

PACKAGE = Path(rdd.__file__).parent
# Entry points (python -m rdd.<name> and the console scripts) and the one user-facing module.
TOP_LEVEL = {"__init__.py", "run.py", "evaluate.py", "buffer.py", "scripts.py", "synset.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The rdd modules ``name`` imports anywhere in its file (lazy imports included), with
    the packages Python runs on the way (their __init__)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                if prefix in known and prefix != name:
                    found.add(prefix)
    return found


def test_the_top_level_holds_only_entry_points_and_subpackages():
    files = {p.name for p in PACKAGE.glob("*.py")}
    assert files == TOP_LEVEL, f"move {sorted(files - TOP_LEVEL)} into a subpackage"


def test_no_module_imports_itself_through_others():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    # A package imports its parent package (rdd.eval runs rdd's __init__): not a cycle of ours.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert not cycles, "import circles:\n" + "\n".join(sorted(set(cycles))[:10])


def test_every_module_imports_first_in_a_fresh_process():
    # An import circle that static reading misses shows as an ImportError for some order.
    names = sorted(n for n in modules() if ".conf" not in n)
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'rdd' or m.startswith('rdd.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
