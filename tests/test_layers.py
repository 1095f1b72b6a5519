"""The packages import each other one way only:

    contract  <-  ingestion, trainer, serving  <-  components (trainer, serving),
                                                   predict (ingestion, serving)  <-  pipeline

plus `system`, the artifact types Kubeflow's UI draws, which imports no project package.

`contract` is TensorFlow-free (standard library only), and nothing imports `pipeline`.
An upward import anywhere, also inside a function, fails here with its file and line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ALLOWED = {
    "contract": {"contract"},
    "ingestion": {"contract", "ingestion"},
    "trainer": {"contract", "trainer"},
    "serving": {"contract", "serving"},
    "components": {"contract", "trainer", "serving", "predict", "components", "system"},
    "predict": {"contract", "ingestion", "serving", "predict"},
    "pipeline": {"contract", "ingestion", "trainer", "serving", "components", "predict",
                 "pipeline", "system"},
    "system": {"system"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def package_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down_only(package):
    assert package_files(package), f"{package}/ has no modules"
    upward = [f"{path.relative_to(REPO)}:{line} imports {module}"
              for path in package_files(package)
              for line, module in imported_modules(path)
              if module.split(".")[0] in ALLOWED and module.split(".")[0] not in ALLOWED[package]]
    assert not upward, "\n".join(upward)


def test_the_contract_needs_only_the_standard_library():
    outside = [f"{path.relative_to(REPO)}:{line} imports {module}"
               for path in package_files("contract")
               for line, module in imported_modules(path)
               if module.split(".")[0] not in sys.stdlib_module_names | {"contract", "__future__"}]
    assert not outside, "\n".join(outside)


def test_every_project_package_is_layered():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == set(ALLOWED)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipeline.config import PipelineConfig\n")
    assert imported_modules(bad) == [(2, "pipeline.config")]
