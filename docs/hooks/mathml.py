"""MkDocs hook: render the site's LaTeX as MathML at build time, and refuse TeX it cannot render.

``pymdownx.arithmatex`` (generic mode) wraps every ``$...$`` and ``$$...$$`` in a span or div
holding ``\\(...\\)`` or ``\\[...\\]``. This hook replaces each with MathML made by ``latex2mathml``,
which every current browser renders natively: the site needs no script, no font and no network
to show its maths.

Three things are build warnings (so ``mkdocs build --strict`` fails, naming the page and the text):

- an expression ``latex2mathml`` cannot convert;
- a command it does not know, which it would pass through as the literal text ``\\arg``;
- TeX left in the page's prose after conversion: a ``$``, ``$$``, ``\\(`` or ``\\[`` that
  arithmatex did not take (a display block without a blank line before it, say) or a bare
  ``\\command``. Code (``<code>``, ``<pre>``) is exempt; a literal dollar in prose is written in
  code or as a word.

Browsers implement MathML Core, whose ``<mi>`` honours ``mathvariant="normal"`` only, so the hook
also writes styled letters (``\\mathbb E``, ``\\mathcal L``, ``\\mathbf x``) as the Unicode
mathematical alphanumeric characters they stand for (``𝔼``, ``ℒ``, ``𝐱``).
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from html.parser import HTMLParser
from typing import Any

from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.mathml")

_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(?P<tex>.*?)\\\]\s*</div>', re.DOTALL)
_INLINE = re.compile(r'<span class="arithmatex">\\\((?P<tex>.*?)\\\)</span>', re.DOTALL)
# Navigation and table-of-contents entries are made from headings as plain text, so a heading with
# maths reaches them as a bare \(...\) inside material's link label.
_NAV_LABEL = re.compile(r'(<span class="md-ellipsis">)(?P<label>.*?)(</span>)', re.DOTALL)
_BARE_INLINE = re.compile(r"\\\((?P<tex>.*?)\\\)", re.DOTALL)

# Operators latex2mathml does not know, written as the upright operator names they are.
_OPERATORS = {
    r"\arg": r"\operatorname{arg}",
    r"\argmin": r"\operatorname*{arg\,min}",
    r"\argmax": r"\operatorname*{arg\,max}",
    r"\softmax": r"\operatorname{softmax}",
}
_OPERATOR = re.compile(
    "|".join(re.escape(k) + r"(?![A-Za-z])" for k in sorted(_OPERATORS, key=len, reverse=True))
)
# A command latex2mathml passed through as text: <mi>\arg</mi>, <mo>\foo</mo>.
_UNKNOWN = re.compile(r"<m[ion][^>]*>\s*(\\[A-Za-z]+)")
_STYLED = re.compile(
    r'<(?P<tag>m[in]) mathvariant="(?P<variant>[a-z-]+)">(?P<text>[^<]+)</(?P=tag)>'
)
_UNICODE_STYLE = {
    "double-struck": "DOUBLE-STRUCK",
    "script": "SCRIPT",
    "fraktur": "FRAKTUR",
    "bold": "BOLD",
    "italic": "ITALIC",
    "bold-italic": "BOLD ITALIC",
    "sans-serif": "SANS-SERIF",
    "monospace": "MONOSPACE",
}
# The letters that live outside the Mathematical Alphanumeric Symbols block (Letterlike Symbols).
_LETTERLIKE = {("FRAKTUR", "C"): "\u212d", ("FRAKTUR", "H"): "\u210c", ("ITALIC", "h"): "\u210e"}
# Leftover TeX in prose: a dollar, an opening \( or \[, or a backslash command.
_LEFTOVER = re.compile(r"\$|\\\(|\\\[|\\[A-Za-z]+")
_EXEMPT = {"code", "pre", "script", "style", "math", "kbd", "samp", "textarea"}


def _styled_char(variant: str, char: str) -> str | None:
    """The Unicode character for ``char`` in ``variant`` (``None`` if Unicode has none)."""
    style = _UNICODE_STYLE.get(variant)
    if style is None:
        return None
    if (style, char) in _LETTERLIKE:
        return _LETTERLIKE[(style, char)]
    try:
        name = unicodedata.name(char)
    except ValueError:
        return None
    # "LATIN CAPITAL LETTER E" -> "CAPITAL E"; "GREEK SMALL LETTER THETA" -> "SMALL THETA";
    # "DIGIT ONE" -> "DIGIT ONE".
    base = re.sub(r"^(LATIN|GREEK) (CAPITAL|SMALL) LETTER ", r"\2 ", name)
    for candidate in (f"MATHEMATICAL {style} {base}", f"{style} {base}"):
        try:
            return unicodedata.lookup(candidate)
        except KeyError:
            continue
    if style == "SCRIPT" or style == "DOUBLE-STRUCK" or style == "FRAKTUR":
        # The holes of the block are Letterlike Symbols named without "MATHEMATICAL".
        alias = {"FRAKTUR": "BLACK-LETTER"}.get(style, style)
        try:
            return unicodedata.lookup(f"{alias} {base}")
        except KeyError:
            return None
    return None


def _unicode_styles(mathml: str) -> str:
    """Rewrite ``<mi mathvariant="double-struck">E</mi>`` as ``<mi>𝔼</mi>`` (MathML Core); ``<mn>`` too."""

    def one(match: re.Match[str]) -> str:
        variant, text = match.group("variant"), html.unescape(match.group("text"))
        if variant == "normal":
            return match.group(0)
        chars = [_styled_char(variant, c) for c in text]
        if any(c is None for c in chars):
            return match.group(0)
        styled = "".join(c for c in chars if c is not None)
        # A run of upright letters is one identifier; a single styled letter stays as it is.
        tag = match.group("tag")
        attr = ' mathvariant="normal"' if len(styled) > 1 and tag == "mi" else ""
        return f"<{tag}{attr}>{html.escape(styled)}</{tag}>"

    return _STYLED.sub(one, mathml)


def _render(match: re.Match[str], display: str, where: str) -> str:
    tex = _OPERATOR.sub(lambda m: _OPERATORS[m.group(0)], html.unescape(match.group("tex")).strip())
    try:
        mathml = convert(tex, display=display)
    except Exception as exc:  # latex2mathml raises several exception types
        log.warning("%s: cannot render %r as MathML (%s)", where, tex, exc)
        return match.group(0)
    unknown = _UNKNOWN.search(mathml)
    if unknown:
        log.warning("%s: unknown TeX command %s in %r", where, unknown.group(1), tex)
    mathml = _unicode_styles(mathml)
    return f'<div class="math-block">{mathml}</div>' if display == "block" else mathml


class _Prose(HTMLParser):
    """Collects the text of a page outside code, scripts and maths."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _EXEMPT:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _EXEMPT and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.text.append(data)


def leftover_tex(content: str) -> list[str]:
    """Snippets of the page's prose that still hold TeX (``$``, ``\\(``, ``\\[``, ``\\cmd``)."""
    prose = _Prose()
    prose.feed(content)
    text = "".join(prose.text)
    snippets: list[str] = []
    last_end = -1
    for m in _LEFTOVER.finditer(text):
        if m.start() < last_end:  # one snippet for a run of leftovers close together
            continue
        last_end = m.end() + 30
        snippets.append(" ".join(text[max(0, m.start() - 30) : last_end].split()))
    return snippets


def on_page_content(content: str, page: Any, **_: Any) -> str:
    where = page.file.src_uri
    content = _BLOCK.sub(lambda m: _render(m, "block", where), content)
    content = _INLINE.sub(lambda m: _render(m, "inline", where), content)
    for snippet in leftover_tex(content)[:5]:
        log.warning("%s: TeX left unrendered in the text: %r", where, snippet)
    return content


def on_post_page(output: str, page: Any, **_: Any) -> str:
    where = page.file.src_uri

    def label(match: re.Match[str]) -> str:
        inner = _BARE_INLINE.sub(lambda m: _render(m, "inline", where), match.group("label"))
        return match.group(1) + inner + match.group(3)

    return _NAV_LABEL.sub(label, output)
