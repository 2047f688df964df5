"""Fixtures shared by the docs tests: the built site, made once per test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The strictly built docs site: ``$FMS_SITE_DIR`` when ``nox -s docs`` built it, else a fresh build."""
    if "FMS_SITE_DIR" in os.environ:
        return Path(os.environ["FMS_SITE_DIR"])
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return out
