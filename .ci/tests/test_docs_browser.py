"""Every page of the built site, loaded in headless Chromium as a reader would see it.

``nox -s docs`` builds the site, points ``FMS_SITE_DIR`` at it and ``FMS_DOCS_ARTIFACTS`` at a
folder for screenshots; run alone, this module builds the site itself. The site is served on
127.0.0.1 (a free port, a thread of this process) and each page is loaded by Debian's Chromium
(``/usr/bin/chromium``, or ``$CHROMIUM``) driven by Playwright. A page fails on:

- raw TeX in its rendered text (``$``, ``\\(``, ``\\[``, ``\\command`` outside code and maths);
- an image that did not load, or any request for the page's own resources answering 4xx/5xx;
- a console error or an uncaught script exception;
- any request that leaves the site's own server (the docs work offline and call no third party);
- a table wider than the column it sits in (its last columns hidden behind a scroll bar).

Screenshots of the home page and of one chapter are kept as build artefacts.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1280, "height": 900}  # a laptop screen: the content column is ~750 px
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_CHECK_PAGE = r"""() => {
  const article = document.querySelector("article") || document.body;
  const copy = article.cloneNode(true);
  copy.querySelectorAll("code, pre, math, script, style, .headerlink").forEach(e => e.remove());
  const text = copy.textContent;
  const tex = [];
  const re = /\$|\\\(|\\\[|\\[A-Za-z]+/g;
  let m;
  while ((m = re.exec(text)) !== null && tex.length < 5) {
    tex.push(text.slice(Math.max(0, m.index - 30), m.index + 30).replace(/\s+/g, " "));
  }
  const images = Array.from(document.images)
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.getAttribute("src"));
  const column = article.clientWidth;
  const tables = Array.from(article.querySelectorAll("table"))
    .filter(t => t.scrollWidth > Math.min(t.clientWidth, column) + 1)
    .map(t => `${t.scrollWidth}px in ${Math.min(t.clientWidth, column)}px: ` +
      Array.from(t.querySelectorAll("th")).map(th => th.textContent.trim()).join(" | "));
  return {tex, images, tables};
}"""


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            "the docs browser test needs Chromium: install the Debian package `chromium` "
            "(apt-get install chromium; .ci/run does this) or set $CHROMIUM to its path"
        )
    return path


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    """Serve the site on 127.0.0.1 (a free port) from a thread; stopped after the module."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _pages(site: Path) -> list[str]:
    """Every page's URL path, relative to the site root (``learn/layer1-ml/``)."""
    paths = []
    for html in sorted(site.rglob("index.html")):
        rel = html.parent.relative_to(site).as_posix()
        paths.append("" if rel == "." else rel + "/")
    return paths


def test_every_page_renders_cleanly_in_chromium(site: Path, base_url: str) -> None:
    from playwright.sync_api import sync_playwright

    artefacts = Path(os.environ.get("FMS_DOCS_ARTIFACTS", site.parent / "screenshots"))
    artefacts.mkdir(parents=True, exist_ok=True)
    pages = _pages(site)
    assert len(pages) > 20, pages
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            page.set_default_timeout(20_000)
            events: list[str] = []
            page.on(
                "console",
                lambda m: (
                    events.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e: events.append(f"script error: {e}"))
            page.on(
                "response",
                lambda r: (
                    events.append(f"HTTP {r.status} for {r.url}") if r.status >= 400 else None
                ),
            )
            page.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith((base_url, "data:", "blob:"))
                    else events.append(f"request to a third party: {r.url}")
                ),
            )
            # A request still in flight when the next page loads is aborted: not a fault.
            page.on(
                "requestfailed",
                lambda r: (
                    None
                    if "ERR_ABORTED" in (r.failure or "")
                    else events.append(f"request failed ({r.failure}): {r.url}")
                ),
            )
            for path in pages:
                events.clear()
                page.goto(base_url + path, wait_until="load")
                found = page.evaluate(_CHECK_PAGE)
                where = path or "(home)"
                problems += [f"{where}: {e}" for e in events]
                problems += [f"{where}: raw TeX in the text: {t!r}" for t in found["tex"]]
                problems += [f"{where}: image did not load: {s}" for s in found["images"]]
                problems += [f"{where}: table wider than its column: {t}" for t in found["tables"]]
                if path == "":
                    page.screenshot(path=str(artefacts / "home.png"), full_page=True)
                if path == "learn/layer4-pretraining/":
                    page.screenshot(path=str(artefacts / "layer4-pretraining.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:80])
    assert (artefacts / "home.png").is_file()
