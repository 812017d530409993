"""The layout's rules, enforced: the core (`vlm/`, its CLI included: it starts stages by name through the lazy
command table) imports no stage package, and no stage package imports another. What two stages share lives in the
core. The checker is an AST walk over every import statement, lazy ones inside functions included, and it is shown
to fail on a deliberate core -> stage import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("sft", "labeling", "reward", "ppo", "grpo")


def imported_packages(source: str) -> set[str]:
    """Top-level package of every module imported anywhere in `source` (relative imports are local)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def boundary_violations(package: str, root: Path = REPO) -> list[str]:
    """`file: imports X` for each import of a stage that `package` may not import."""
    forbidden = set(STAGES) - {package}
    return [
        f"{path.relative_to(root)}: imports {name}"
        for path in sorted((root / package).rglob("*.py"))
        for name in sorted(imported_packages(path.read_text()) & forbidden)
    ]


@pytest.mark.parametrize("package", ("vlm", *STAGES))
def test_no_forbidden_imports(package):
    assert boundary_violations(package) == []


def test_the_check_fails_on_a_core_to_stage_import(tmp_path):
    (tmp_path / "vlm" / "eval").mkdir(parents=True)
    (tmp_path / "vlm" / "eval" / "sneaky.py").write_text("def f():\n    from ppo.guards import TrainingStopped\n")
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "x.py").write_text("import reward.train\nimport vlm\n")
    assert boundary_violations("vlm", tmp_path) == ["vlm/eval/sneaky.py: imports ppo"]
    assert boundary_violations("sft", tmp_path) == ["sft/x.py: imports reward"]
