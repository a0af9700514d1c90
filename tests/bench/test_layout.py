"""Where the benchmarks sit: beside the core, which never imports them, touching the engine in one place only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "accel_recipes"
TRAINING_INTERNALS = ("accel_recipes.engine", "accel_recipes.data", "accel_recipes.models")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_the_core_never_imports_the_benchmarks():
    core = [path for path in PACKAGE.rglob("*.py") if PACKAGE / "bench" not in path.parents]
    assert core
    for path in core:
        found = [name for name in imported_modules(path) if name.startswith("accel_recipes.bench")]
        assert not found, f"{path.relative_to(PACKAGE)} imports {found}"


def test_only_the_datapath_setup_touches_the_engine_the_data_loaders_and_the_models():
    for path in (PACKAGE / "bench").rglob("*.py"):
        found = [name for name in imported_modules(path) if name.startswith(TRAINING_INTERNALS)]
        if path.name != "datapath_setup.py":
            assert not found, f"bench/{path.relative_to(PACKAGE / 'bench')} imports {found}"
