"""The workspace's sessions: every check CI runs, and the benchmarks.

``uv run nox`` runs the default set (everything but ``bench``); ``uv run nox -l`` lists the
sessions; ``uv run nox -s tests-fms-ml`` runs one. Each session builds a fresh virtual environment
with uv, installing exact versions from the ``[tool.uv] constraint-dependencies`` of the root
``pyproject.toml``, so a session proves what a user who installs from an index would get.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# The chain, bottom to top. Each package depends on the one before it.
PACKAGES = ["fms-ml", "fms-dl", "fms-transformer", "fms-llm", "fms-mm", "fms-agent"]
# Extras a package's own tests exercise (fms-dl's torch toolkit; fms-llm's corpora, tiktoken, the
# server and the chatterbot dialogues).
EXTRAS = {"fms-dl": "torch", "fms-llm": "corpora,tiktoken,serve,dialogues"}
TEST_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
DEV = {req.split("[")[0].split("=")[0]: req for req in PYPROJECT["dependency-groups"]["dev"]}


def _constraints(session: nox.Session) -> str:
    """Write the root's pinned versions to a constraints file for ``uv pip install -c``."""
    path = Path(session.create_tmp()) / "constraints.txt"
    pins = PYPROJECT["tool"]["uv"]["constraint-dependencies"]
    path.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return str(path)


def _local(package: str) -> str:
    extras = EXTRAS.get(package)
    path = f"./packages/{package}"
    return f"{path}[{extras}]" if extras else path


def _install(session: nox.Session, *args: str) -> None:
    session.install("-c", _constraints(session), *args)


def _src_dirs() -> list[str]:
    return [str(ROOT / "packages" / p / "src") for p in PACKAGES]


def _make_tests_session(index: int, package: str) -> None:
    below = PACKAGES[:index]

    def tests(session: nox.Session) -> None:
        if package == "fms-dl":
            # fms-dl's core is numpy alone: prove it installs and imports without torch first.
            _install(session, *[_local(p) for p in below], "./packages/fms-dl")
            session.run(
                "python",
                "-c",
                "import sys, fms_dl, fms_dl.nn, fms_dl.optim, fms_dl.data; "
                "assert 'torch' not in sys.modules, 'fms_dl core imported torch'; "
                "print('fms_dl core imports without torch')",
            )
        # Only this package, the packages below it (from their local paths, not an index) and its
        # own `test` dependency group: a test that needs a later layer fails here.
        _install(
            session,
            *[_local(p) for p in [*below, package]],
            "--group",
            f"packages/{package}/pyproject.toml:test",
        )
        session.run("pytest", f"packages/{package}/tests", *session.posargs, env=TEST_ENV)
        if package == "fms-llm" and not session.posargs:
            # The C kernels again, required: where they cannot be built this fails, not skips.
            session.run(
                "pytest",
                "packages/fms-llm/tests/test_cpu_kernels.py",
                "-q",
                env={**TEST_ENV, "FMS_LLM_CPU_KERNELS": "1"},
            )

    tests.__doc__ = f"Install {package} alone (with the layers below it) and run its tests."
    nox.session(name=f"tests-{package}")(tests)


for _i, _p in enumerate(PACKAGES):
    _make_tests_session(_i, _p)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and import-linter's layering contracts (with their proof)."""
    _install(session, DEV["ruff"], DEV["import-linter"], DEV["pytest"])
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # import-linter reads the source statically; the packages need only be findable.
    env = {"PYTHONPATH": os.pathsep.join(_src_dirs())}
    session.run("lint-imports", "--no-cache", env=env)
    # Proof that the contracts bite: a deliberately broken copy of the tree must fail them.
    session.run("pytest", ".ci/tests/test_layering.py", "-q", env=env)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on every package's src (settings in the root pyproject.toml)."""
    _install(session, DEV["mypy"], *[_local(p) for p in PACKAGES])
    session.run("mypy", *[f"packages/{p}/src" for p in PACKAGES])


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site strictly, check its links and API pages, then read every page in Chromium.

    The browser test (``.ci/tests/test_docs_browser.py``) serves the site on 127.0.0.1 and loads
    each page in headless Chromium (Debian's ``chromium``, installed by ``.ci/run``); screenshots
    of the home page and a chapter are kept in this session's ``tmp/screenshots``.
    """
    _install(
        session,
        DEV["mkdocs"],
        DEV["mkdocs-material"],
        DEV["mkdocstrings-python"],
        DEV["latex2mathml"],
        DEV["pytest"],
        DEV["playwright"],
    )
    tmp = Path(session.create_tmp())
    site = tmp / "site"
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", str(site), env={"NO_MKDOCS_2_WARNING": "1"}
    )
    session.run(
        "pytest",
        ".ci/tests/test_docs_site.py",
        ".ci/tests/test_docs_hooks.py",
        ".ci/tests/test_docs_browser.py",
        "-q",
        env={
            "FMS_SITE_DIR": str(site),
            "FMS_DOCS_ARTIFACTS": str(tmp / "screenshots"),
            "NO_MKDOCS_2_WARNING": "1",
        },
    )


@nox.session
def wheels(session: nox.Session) -> None:
    """Build all six wheels, install the wheels (not the sources) into a fresh venv, import each."""
    dist = Path(session.create_tmp()) / "dist"
    session.run("uv", "build", "--all-packages", "--wheel", "--out-dir", str(dist), external=True)
    built = sorted(str(w) for w in dist.glob("*.whl"))
    if len(built) != len(PACKAGES):
        session.error(f"expected {len(PACKAGES)} wheels in {dist}, found {built}")
    _install(session, *built)
    imports = ", ".join(p.replace("-", "_") for p in PACKAGES)
    session.run(
        "python",
        "-c",
        f"import {imports}\n"
        f"for m in ({imports}): print(m.__name__, m.__version__, m.__file__)\n"
        "assert all('site-packages' in m.__file__ for m in "
        f"({imports})), 'a package was imported from the source tree'",
    )
    session.run("fms-llm", "--help", silent=True)


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """The nightly-sized fuzz run: every package's ``fuzz``-marked tests with many more examples.

    The default ``tests-*`` sessions run the same tests with a few hundred mutations each; here
    ``FMS_FUZZ_EXAMPLES`` raises every loader's budget (default 2,000; pass another count as
    ``-- 5000``).
    """
    examples = session.posargs[0] if session.posargs else "2000"
    _install(
        session,
        *[_local(p) for p in PACKAGES],
        *[f"--group=packages/{p}/pyproject.toml:test" for p in PACKAGES],
    )
    tests = [f"packages/{p}/tests" for p in PACKAGES]
    session.run(
        "pytest", *tests, "-m", "fuzz", "-q", env={**TEST_ENV, "FMS_FUZZ_EXAMPLES": examples}
    )


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run every package's benchmarks/ (ours and the reference side by side). Not in the default set.

    Pass ``-- --quick`` for the short versions.
    """
    _install(
        session,
        *[_local(p) for p in PACKAGES],
        *[f"--group=packages/{p}/pyproject.toml:test" for p in PACKAGES],
    )
    for package in PACKAGES:
        for script in sorted((ROOT / "packages" / package / "benchmarks").rglob("bench_*.py")):
            session.log(f"{package}: {script.relative_to(ROOT)}")
            session.run("python", str(script), *session.posargs, env=TEST_ENV)


if __name__ == "__main__":  # pragma: no cover - `python noxfile.py` is not how nox is run
    sys.exit("run `uv run nox` from the repository root")
