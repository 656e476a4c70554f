"""The code's shape: imports flow one way, scripts -> src/cli.py -> analysis -> engine (train, evaluation,
deploy) -> factory -> support (io, data, config, ...) -> models -> token reduction, and every function fits on
a screen."""
import ast
from pathlib import Path

import pytest

from ..conftest import ROOT

SRC = ROOT / "src"
# A module may import modules of its own layer or below, never above. Every module of src/ has a layer, so a
# new module is placed on purpose.
LAYERS = {
    "token_reduction": 0,
    "models": 1,
    "io": 2, "data": 2, "schema": 2, "config": 2, "flops": 2, "timing": 2, "mslog": 2,
    "factory": 3,
    "train": 4, "evaluation": 4, "deploy": 4,
    "analysis": 5,
    "cli": 6,
}
MAX_FUNCTION_LINES = 60


def _unit(path: Path) -> str:
    """The top-level unit of src/ a file belongs to (``src/models/vit.py`` -> ``models``)."""
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _src_imports(path: Path):
    """The top-level units of src/ that ``path`` imports (relative or ``src.`` absolute imports)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = list(base) + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if len(target) == 1 else [target]
            else:
                names = [node.module.split(".")] if node.module else []
            for parts in names:
                if parts[0] == "src" and len(parts) > 1:
                    yield parts[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "src" and len(parts) > 1:
                    yield parts[1]


SOURCES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_every_module_has_a_layer():
    assert sorted({_unit(p) for p in SOURCES} - set(LAYERS)) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_flow_one_way(path):
    own = LAYERS[_unit(path)]
    upward = sorted({u for u in _src_imports(path) if u in LAYERS and LAYERS[u] > own and u != _unit(path)})
    assert upward == [], f"{path.relative_to(ROOT)} (layer {own}) imports {upward} from a higher layer"


def test_the_import_check_sees_imports():
    assert set(_src_imports(SRC / "factory.py")) >= {"io", "config", "data", "models"}
    assert "token_reduction" in set(_src_imports(SRC / "models" / "vit.py"))


def _code_lines(lines, node) -> int:
    """Lines of a function without its docstring, blank lines and comment lines."""
    skip = set()
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        skip = set(range(first.lineno, first.end_lineno + 1))
    return sum(1 for i in range(node.lineno, node.end_lineno + 1)
               if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def test_functions_fit_on_a_screen():
    long = []
    for path in SOURCES + sorted(ROOT.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(lines, node)
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_fixture_provenance_notes_are_current():
    """Every fixture file is listed with its hash and source (regenerate: python tests/fixture_provenance.py)."""
    from ..fixture_provenance import NOTES, render

    assert NOTES.read_text(encoding="utf-8") == render()
