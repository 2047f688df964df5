"""The docs hooks: maths that cannot render fails the strict build; the API reference covers every module.

Each test builds a tiny MkDocs site in a temporary directory with the real hooks and extensions,
so what is proven is what ``mkdocs build --strict`` does with the site's own configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))

import api_pages  # noqa: E402
import mathml  # noqa: E402


def _build(tmp_path: Path, page: str) -> subprocess.CompletedProcess[str]:
    """Build a one-page site strictly with the maths hook and the site's arithmatex setting."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(textwrap.dedent(page), encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(
        textwrap.dedent(
            f"""\
            site_name: t
            hooks: [{ROOT / "docs" / "hooks" / "mathml.py"}]
            markdown_extensions:
              - pymdownx.arithmatex:
                  generic: true
            """
        ),
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )


def test_display_maths_with_blank_lines_renders(tmp_path: Path) -> None:
    result = _build(tmp_path, "Risk\n\n$$\nR(f) = \\mathbb E\\,\\ell\n$$\n\nand $x$.\n")
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "<math" in html
    assert "$" not in html.split("<body")[1].split("</article>")[0]


def test_display_maths_without_a_blank_line_fails_the_build(tmp_path: Path) -> None:
    """The Layer 1 defect: ``$$`` straight after a line of text stayed as raw ``$$`` in the page."""
    result = _build(tmp_path, "the empirical risk\n$$\n\\hat R = 1\n$$\n")
    assert result.returncode != 0
    assert "TeX left unrendered" in result.stderr
    assert "index.md" in result.stderr


def test_an_unknown_command_fails_the_build(tmp_path: Path) -> None:
    result = _build(tmp_path, "A $\\notacommand x$ here.\n")
    assert result.returncode != 0
    assert "\\notacommand" in result.stderr


def test_a_bare_command_in_prose_fails_the_build(tmp_path: Path) -> None:
    result = _build(tmp_path, "A stray \\alpha in the text.\n")
    assert result.returncode != 0
    assert "TeX left unrendered" in result.stderr


def test_code_may_hold_dollars_and_backslashes(tmp_path: Path) -> None:
    result = _build(tmp_path, "Run `echo $HOME` or\n\n```\nprintf '\\n$'\n```\n")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("tex", "char"),
    [
        ("\\mathbb E", "\U0001d53c"),
        ("\\mathcal N", "\U0001d4a9"),
        ("\\mathcal L", "\u2112"),  # a hole of the block: Letterlike Symbols' script L
        ("\\mathbb R", "\u211d"),
        ("\\mathbf x", "\U0001d431"),
        ("\\mathbf 1", "\U0001d7cf"),
    ],
)
def test_styled_letters_become_unicode_characters(tex: str, char: str) -> None:
    """MathML Core ignores mathvariant other than "normal": the style must be in the character."""
    match = mathml._INLINE.match(f'<span class="arithmatex">\\({tex}\\)</span>')
    assert match is not None
    out = mathml._render(match, "inline", "t.md")
    assert char in out or f"&#x{ord(char):05X};" in out.upper() or f"&#x{ord(char):X};" in out
    assert 'mathvariant="double-struck"' not in out
    assert 'mathvariant="script"' not in out
    assert 'mathvariant="bold"' not in out


def test_arg_min_renders_as_an_operator() -> None:
    match = mathml._INLINE.match('<span class="arithmatex">\\(\\arg\\min_w f(w)\\)</span>')
    assert match is not None
    out = mathml._render(match, "inline", "t.md")
    assert "\\arg" not in out
    assert "arg" in out


def test_every_public_module_has_an_api_page() -> None:
    """Every module file under packages/*/src not starting with "_" gets its own page."""
    pages = api_pages._pages()
    expected = set()
    for package in api_pages.PACKAGES:
        src = ROOT / "packages" / package / "src"
        for path in src.rglob("*.py"):
            parts = path.relative_to(src).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith("_") for p in parts) or len(parts) == 1:
                continue
            expected.add(f"api/{package}/{'.'.join(parts)}.md")
    missing = expected - set(pages)
    assert not missing, sorted(missing)
    for package in api_pages.PACKAGES:
        assert f"api/{package}/index.md" in pages


def test_a_module_page_documents_only_its_own_members() -> None:
    pages = api_pages._pages()
    page = pages["api/fms-dl/fms_dl.nn.linear.md"][1]
    assert "show_submodules: false" in page
    assert "- Linear" in page
    package = pages["api/fms-dl/fms_dl.nn.md"][1]
    # The package page lists Linear with a link to its home, and documents nothing of its own.
    assert "[`Linear`][fms_dl.nn.linear.Linear]" in package
    assert "members: false" in package
