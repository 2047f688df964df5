"""MkDocs hook: render the site's LaTeX as MathML at build time.

``pymdownx.arithmatex`` (generic mode) wraps every ``$...$`` and ``$$...$$`` in a span or div
holding ``\\(...\\)`` or ``\\[...\\]``. This hook replaces each with MathML made by ``latex2mathml``,
which every current browser renders natively: the site needs no script, no font and no network
to show its maths. An expression that cannot be converted is a build warning (so ``mkdocs build
--strict`` fails and names the page and the expression).
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.mathml")

_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(?P<tex>.*?)\\\]\s*</div>', re.DOTALL)
_INLINE = re.compile(r'<span class="arithmatex">\\\((?P<tex>.*?)\\\)</span>', re.DOTALL)
# Navigation and table-of-contents entries are made from headings as plain text, so a heading with
# maths reaches them as a bare \(...\) inside material's link label.
_NAV_LABEL = re.compile(r'(<span class="md-ellipsis">)(?P<label>.*?)(</span>)', re.DOTALL)
_BARE_INLINE = re.compile(r"\\\((?P<tex>.*?)\\\)", re.DOTALL)


def _render(match: re.Match[str], display: str, where: str) -> str:
    tex = html.unescape(match.group("tex")).strip()
    try:
        mathml = convert(tex, display=display)
    except Exception as exc:  # latex2mathml raises several exception types
        log.warning("%s: cannot render %r as MathML (%s)", where, tex, exc)
        return match.group(0)
    return f'<div class="math-block">{mathml}</div>' if display == "block" else mathml


def on_page_content(content: str, page: Any, **_: Any) -> str:
    where = page.file.src_uri
    content = _BLOCK.sub(lambda m: _render(m, "block", where), content)
    return _INLINE.sub(lambda m: _render(m, "inline", where), content)


def on_post_page(output: str, page: Any, **_: Any) -> str:
    where = page.file.src_uri

    def label(match: re.Match[str]) -> str:
        inner = _BARE_INLINE.sub(lambda m: _render(m, "inline", where), match.group("label"))
        return match.group(1) + inner + match.group(3)

    return _NAV_LABEL.sub(label, output)
