"""The book as a website: it builds with `mkdocs build --strict`, offline, and works in a browser.

* The build (mkdocs.yml, sitebuild/) runs into a temporary folder with MkDocs' link validation
  (missing files fail the strict build; anchors are checked too) and must leave every chapter, its
  tutorial page, the copied figures, math as MathML and diagrams as SVG.
* The diagram renderer and the math conversion refuse what they cannot draw.
* In headless Chromium (Debian's `chromium`, driven by Playwright; skipped where either is absent):
  chapter 8's math is typeset, chapter 9's SE-block diagram is a drawn figure with a size, the
  search finds "im2col", and the pages request nothing from any host but the local server.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_the_site_builds_strict_with_every_chapter_and_tutorial(site):
    for chapter in sorted((ROOT / "docs").glob("[0-9A-Z]*-*.md")):
        assert (site / chapter.stem / "index.html").is_file(), chapter.name
    for script in sorted((ROOT / "tutorials").glob("*.py")):
        if re.match(r"(\d\d|[A-Z]\d?)_", script.name):
            page = (site / "tutorials" / script.stem / "index.html").read_text(encoding="utf-8")
            assert "<h1" in page and (site / "tutorials" / script.name).is_file(), script.name
    assert (site / "studies" / "cpu-5ep" / "results.png").is_file()
    assert (site / "weights" / "se_resnet20-10ep" / "excitation" / "fig6_class_means.png").is_file()
    chapter8 = (site / "08-batchnorm2d" / "index.html").read_text(encoding="utf-8")
    assert chapter8.count("<math") > 20 and "$$" not in chapter8
    for name in ("01-overview", "08-batchnorm2d", "09-se-block"):
        page = (site / name / "index.html").read_text(encoding="utf-8")
        assert 'class="npse-diagram"' in page and "flowchart LR" not in page, name


def test_the_site_loads_nothing_from_the_network(site):
    """No CDN script, stylesheet or web font in any page (Material's Mermaid, Google Fonts)."""
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", text):
            assert not re.search(r"(?:src|href)=\"(?:https?:)?//", tag) or 'rel="canonical"' in tag \
                or "<a " in tag, f"{page.relative_to(site)}: {tag}"
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text


def test_mermaid_subset_is_drawn_and_anything_else_refused():
    from sitebuild import mermaid
    svg = mermaid.render('flowchart LR\n  A["a<br/>b"] --> B(("c"))\n  A -->|"skip"| C\n  B --> C\n')
    assert svg.startswith("<svg") and svg.count("<path") == 4 and "skip" in svg and "<circle" in svg
    assert mermaid.render("flowchart TD\n  A --> B").startswith("<svg")
    for bad in ("sequenceDiagram\n A->>B: hi", "flowchart LR\n A --> B\n B --> A", "flowchart LR\n A -.-> B"):
        with pytest.raises(mermaid.MermaidError):
            mermaid.render(bad)


def test_math_becomes_mathml_and_code_is_left_alone():
    import markdown
    from sitebuild.markdown_ext import MathError, NpseSiteExtension, to_mathml
    html = markdown.markdown("Costs `$HOME` and $\\hat x_i$; $$y = \\frac{a}{b}$$", extensions=[NpseSiteExtension()])
    assert "<code>$HOME</code>" in html and html.count("<math") == 2 and 'display="block"' in html
    assert "running_mean" in to_mathml(r"\text{running\_mean}", display=False)
    with pytest.raises(MathError):
        to_mathml(r"\frac{1}{", display=False)


# ------------------------------------------------------------------------ in a browser
@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_the_site_in_a_real_browser(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-default-apps", "--disable-domain-reliability"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            context.on("request", lambda request: requests.append(request.url))
            page = context.new_page()

            page.goto(f"{server}/08-batchnorm2d/")
            page.wait_for_load_state("networkidle")
            maths = page.locator("math")
            assert maths.count() > 20
            box = page.locator('math[display="block"]').first.bounding_box()
            assert box and box["width"] > 50 and box["height"] > 10, box      # typeset, not raw TeX
            assert "\\frac" not in page.inner_text("article")

            page.goto(f"{server}/09-se-block/")
            page.wait_for_load_state("networkidle")
            diagram = page.locator("figure.npse-diagram-figure svg").first
            box = diagram.bounding_box()
            assert box and box["width"] > 300 and box["height"] > 40, box
            assert diagram.locator("text").count() >= 8
            assert "flowchart" not in page.inner_text("article")

            # The index loads in a web worker; a query typed before it is ready is typed again.
            results = page.locator(".md-search-result__item")
            for _ in range(12):
                page.click("input.md-search__input")
                page.fill("input.md-search__input", "")
                page.keyboard.type("im2col")
                try:
                    results.first.wait_for(state="attached", timeout=5000)
                    break
                except sync_api.TimeoutError:
                    continue
            assert results.count() >= 1
            assert "im2col" in page.inner_text(".md-search-result").lower()

            others = [url for url in requests if not url.startswith((server, "data:", "blob:"))]
            assert requests and not others, others
        finally:
            browser.close()
