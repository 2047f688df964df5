"""The docs site builds strictly, has every API page, links to nothing missing, and needs no network.

``nox -s docs`` builds the site and points ``FMS_SITE_DIR`` at it; run alone, this module builds
the site itself.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["fms-ml", "fms-dl", "fms-transformer", "fms-llm", "fms-mm", "fms-agent"]


def _site_path() -> str:
    """The path part of mkdocs.yml's `site_url` (`/fms/`), which site-absolute links start with."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    found = re.search(r"^site_url:\s*(\S+)", config, flags=re.MULTILINE)
    return urlsplit(found.group(1)).path.rstrip("/") if found else ""


_SITE_PATH = _site_path()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and a.get("name"):
            self.ids.add(str(a["name"]))
        if tag == "link" and a.get("rel") == "canonical":
            return  # the page's published address, never fetched by a browser
        for key in ("href", "src"):
            if a.get(key):
                self.links.append((tag, str(a[key])))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _pages(site: Path) -> dict[Path, _Page]:
    return {p: _parse(p) for p in sorted(site.rglob("*.html"))}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_has_an_api_page(site: Path, package: str) -> None:
    page = site / "api" / package / "index.html"
    assert page.is_file(), f"missing API page {page}"
    module = package.replace("-", "_")
    assert module in _parse(page).ids, f"{page} does not document the module {module}"


def test_no_page_links_to_a_missing_target(site: Path) -> None:
    pages = _pages(site)
    broken: list[str] = []
    for path, page in pages.items():
        for tag, url in page.links:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith(("mailto:", "data:", "javascript:")):
                continue
            if not parts.path:
                target = path
            elif parts.path.startswith("/"):  # site-absolute (only the 404 page uses these)
                local = unquote(parts.path).removeprefix(_SITE_PATH)
                target = (site / local.lstrip("/")).resolve()
            else:
                target = (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(site)}: <{tag}> {url} -> missing {target}")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {url} -> no anchor #{parts.fragment}")
    assert not broken, "\n".join(broken[:50])


def test_the_site_needs_no_network(site: Path) -> None:
    """Scripts, styles, fonts and images are served by the site itself (no CDN)."""
    remote: list[str] = []
    for path, page in _pages(site).items():
        for tag, url in page.links:
            if tag in {"script", "link", "img", "source"} and urlsplit(url).scheme in {
                "http",
                "https",
            }:
                remote.append(f"{path.relative_to(site)}: <{tag}> {url}")
    assert not remote, "\n".join(remote[:50])


def test_maths_is_rendered_to_mathml(site: Path) -> None:
    """The build turned LaTeX into MathML: no raw arithmatex delimiters are left for a script."""
    leftovers = [
        str(p.relative_to(site))
        for p in site.rglob("*.html")
        if 'class="arithmatex"' in p.read_text(encoding="utf-8")
    ]
    assert not leftovers, leftovers
    assert any("<math" in p.read_text(encoding="utf-8") for p in site.rglob("*.html"))


def test_every_snippet_include_was_expanded(site: Path) -> None:
    """No `--8<--` include is left as text: one that is (say, mangled by a formatter into
    `--8 < --`) puts the marker on the page instead of the code it names, and the strict build
    does not notice."""
    marker = re.compile(r"--8\s*(<|&lt;)\s*--")
    leftovers = [
        str(p.relative_to(site))
        for p in site.rglob("*.html")
        if marker.search(re.sub(r"<[^>]+>", "", p.read_text(encoding="utf-8")))
    ]
    assert not leftovers, leftovers
