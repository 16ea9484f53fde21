"""benchmarks/: every script is in the README's index, runs as a module, and edits no sys.path."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"
HELPERS = {"__init__", "common", "search_bench", "pgserver", "torchdistill_side"}  # shared code, not scripts


def scripts() -> list[Path]:
    return sorted(p for p in ROOT.glob("*.py") if p.stem not in HELPERS)


def test_every_script_is_in_the_index() -> None:
    index = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", index, flags=re.M))
    missing = [p.stem for p in scripts() if p.stem not in listed]
    assert not missing, f"benchmarks/README.md does not index {missing}"
    for helper in HELPERS - {"__init__"}:
        assert f"{helper}.py" in index, f"benchmarks/README.md does not name the helper {helper}.py"


def test_every_script_runs_as_a_module_without_path_edits() -> None:
    for path in scripts():
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and isinstance(n.func.value, ast.Attribute) and n.func.value.attr == "path" and n.func.attr in ("insert", "append")]
        assert not calls, f"{path.name} edits sys.path"
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), f"{path.name} has no main()"
        assert "__main__" in path.read_text(), f"{path.name} does not run as python -m benchmarks.{path.stem}"
        assert f"python -m benchmarks.{path.stem}" in path.read_text(), f"{path.name}'s docstring does not show its -m command"
