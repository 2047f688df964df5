"""Proof that the import-linter contracts in the root pyproject.toml bite.

Each test copies the six packages' sources to a temporary tree, plants one violation, and runs
``lint-imports`` over the copy with the real configuration. The contract that the violation breaks
must be reported as broken; the untouched copy must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["fms-ml", "fms-dl", "fms-transformer", "fms-llm", "fms-mm", "fms-agent"]


def _copy_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        src = ROOT / "packages" / package / "src"
        shutil.copytree(
            src, tmp_path / package / "src", ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["COLUMNS"] = "200"
    env["PYTHONPATH"] = os.pathsep.join(str(tree / p / "src") for p in PACKAGES)
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    return subprocess.run(
        [exe, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, check=False
    )


def _plant(tree: Path, package: str, module: str, line: str) -> None:
    path = tree / package / "src" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_untouched_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("package", "module", "line", "contract"),
    [
        # a lower layer importing a higher one breaks the chain
        ("fms-ml", "fms_ml/__init__.py", "import fms_dl  # noqa", "strict chain"),
        ("fms-dl", "fms_dl/__init__.py", "import fms_llm  # noqa", "strict chain"),
        ("fms-mm", "fms_mm/__init__.py", "import fms_agent  # noqa", "strict chain"),
        # torch sneaking into the numpy-only layers
        ("fms-ml", "fms_ml/__init__.py", "import torch  # noqa", "fms_ml needs numpy alone"),
        ("fms-dl", "fms_dl/__init__.py", "import torch  # noqa", "fms_dl's core is numpy alone"),
    ],
)
def test_planted_violation_breaks_its_contract(
    tmp_path: Path, package: str, module: str, line: str, contract: str
) -> None:
    tree = _copy_tree(tmp_path)
    _plant(tree, package, module, line)
    result = _lint(tree)
    assert result.returncode != 0, f"lint-imports accepted `{line}` in {module}"
    broken = [ln for ln in result.stdout.splitlines() if " BROKEN" in ln]
    assert any(contract in ln for ln in broken), result.stdout
