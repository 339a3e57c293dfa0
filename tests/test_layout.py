"""The structure rules of issue 14, kept true: README's layout table names every module (and only real
paths), functions stay short, and a module over 450 lines says in its opening docstring why it is one
file (the convention: the words "450 lines" and the reason beside them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450


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


def test_long_modules_say_why_they_are_one_file():
    unexplained = []
    for module in _modules():
        source = module.read_text(encoding="utf-8")
        if source.count("\n") <= MAX_MODULE_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(source)) or ""
        if f"{MAX_MODULE_LINES} lines" not in docstring:  # the convention: "... over 450 lines because ..."
            unexplained.append(str(module.relative_to(REPO)))
    assert not unexplained, (f"modules over {MAX_MODULE_LINES} lines whose opening docstring does not say why they "
                             f"stay one file: {unexplained}")


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
