"""Static checks that catch what unit tests miss: names that only fail when a rarely-run line executes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_no_undefined_names_or_unused_imports():
    pytest.importorskip("ruff")
    targets = [str(REPO / d) for d in ("rllib_o2o", "pipelines", "benchmarks", "cluster", "tests")
               if (REPO / d).exists()]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", *targets],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _imports_of_the_package() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at module level or inside a function."""
    import ast

    modules = {}
    for path in (REPO / "rllib_o2o").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def module_of(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                found = module_of(target) if target.startswith("rllib_o2o") else None
                # `from package import module` names the package too: not an edge up to it
                if found and found != name and not name.startswith(found + "."):
                    edges[name].add(found)
    return edges


def test_every_import_points_down():
    """The project's modules import each other without a cycle, counting function-local imports (which
    may keep `rllib-o2o --help` light, but not hide a cycle)."""
    edges = _imports_of_the_package()
    done, active = set(), []

    def visit(name):
        if name in active:
            raise AssertionError("import cycle: " + " -> ".join(active[active.index(name):] + [name]))
        if name in done:
            return
        active.append(name)
        for target in sorted(edges[name]):
            visit(target)
        active.pop()
        done.add(name)

    for name in sorted(edges):
        visit(name)
