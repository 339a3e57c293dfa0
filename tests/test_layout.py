"""The structure rules, kept true: README's layout table names every module (and only real paths), functions stay
short, the import-linter contracts of pyproject.toml hold (the layers, no cycles), and an import inside a function
says on its line why it is not at the top."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO

MAX_FUNCTION_LINES = 60


def _layout_paths() -> list[str]:
    """Every path in README's layout table; a bare name continues the folder of the row's first path."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    paths = []
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", first_cell)
        folder = str(Path(names[0]).parent) if "/" in names[0] and not names[0].endswith("/") else ""
        paths += [name if "/" in name or not folder else f"{folder}/{name}" for name in names]
    return paths


def _modules() -> list[Path]:
    return sorted(p for p in (REPO / "bps_vit").rglob("*.py") if p.name != "__init__.py")


def test_readme_layout_names_every_module_and_only_real_paths():
    paths = _layout_paths()
    missing_on_disk = [p for p in paths if not (REPO / p).exists()]
    assert not missing_on_disk, f"README layout names paths that do not exist: {missing_on_disk}"
    covered_folders = [p for p in paths if p.endswith("/")]
    unnamed = [str(m.relative_to(REPO)) for m in _modules()
               if str(m.relative_to(REPO)) not in paths
               and not any(str(m.relative_to(REPO)).startswith(folder) for folder in covered_folders)]
    assert not unnamed, f"modules missing from README's layout table: {unnamed}"


def test_layout_parser_reads_continued_names():
    # the parser itself: a row "`bps_vit/explain/run.py`, `scoring.py`" names bps_vit/explain/scoring.py
    assert "bps_vit/explain/scoring.py" in _layout_paths()


def test_functions_are_short():
    long = []
    for module in _modules():
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {long}"


def test_the_import_contracts_hold():
    """The layers (app -> steps -> core), the data layer's and each package's one-way rules, and no import cycle at
    any depth, imports inside functions included: the contracts under [tool.importlinter] (also run by make lint)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_imports_inside_functions_say_why():
    """An import inside a function hides a dependency from a reader of the module's top; each one says why on its
    line (a heavy library a lighter path must not load, an optional extra), or it moves to the top."""
    silent = []
    for module in _modules():
        source = module.read_text(encoding="utf-8")
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and "#" not in lines[node.lineno - 1]:
                    silent.append(f"{module.relative_to(REPO)}:{node.lineno}")
    assert not silent, f"imports inside functions without a reason on their line: {sorted(set(silent))}"


def test_package_imports_itself_relatively():
    # one import style inside the package (issue 14): `from .x import` / `from ..x import`, never `from bps_vit...`
    absolute = []
    for module in _modules():
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "bps_vit":
                absolute.append(f"{module.relative_to(REPO)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "bps_vit" for a in node.names):
                absolute.append(f"{module.relative_to(REPO)}:{node.lineno}")
    assert not absolute, f"absolute imports of the package inside it: {absolute}"
