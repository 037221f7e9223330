"""The built book in a real browser: headless Chromium from the system, driven by Playwright.

Every chapter and exercise page loads without a console error (no asset is
fetched from the internet), shows every image and its mathematics, links
onward and back in the order of `_toc.yml`, and the search page finds each
chapter by a word in it. A screenshot of every page is kept in
`_build/screenshots/` (`make book` first; `make test` installs Chromium when
it runs as root).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from autograder.course import course_root, release_notebook
from tests.test_book import HTML, require_built_book

pytestmark = pytest.mark.browser

ROOT = course_root()
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())

# A word from each chapter's prose, and the chapter the search must find with it.
SEARCH_WORDS = {"tensors": "broadcasting", "autograd": "Jacobian", "network_classes": "ModuleList",
                "final_layers": "garment", "losses": "segmentation", "optimizers": "Rosenbrock",
                "activations": "GELU", "deep_networks": "Kaiming", "capstone": "overfitting"}


def _toc_pages() -> list[str]:
    """Every page in reading order: the root, then each chapter and its sections."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries:
            pages.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc["parts"]:
        walk(part["chapters"])
    return pages


PAGES = _toc_pages()
CHAPTERS = [p.split("/")[1] for p in PAGES if p.startswith("book/") and f"exercises/{p[5:]}/{p[5:]}" in PAGES]


def test_every_chapter_and_its_exercise_is_in_the_toc():
    assert sorted(CHAPTERS) == sorted(SEARCH_WORDS), CHAPTERS
    for stem in CHAPTERS:
        assert PAGES.index(f"exercises/{stem}/{stem}") == PAGES.index(f"book/{stem}") + 1, stem


SERVED_ERRORS: list[str] = []  # "404 /path" for every error the test server answered


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_error(self, code, message=None, explain=None):
        SERVED_ERRORS.append(f"{code} {self.path}")
        super().send_error(code, message, explain)


@pytest.fixture(scope="module")
def site() -> str:
    require_built_book()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: `make test` installs "
                                   "requirements.txt, or run `.venv/bin/pip install -r requirements.txt`")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `sudo apt-get install -y chromium` "
                    "(or run `make test` as root, which does), or set CHROMIUM to its path")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visit:
    """A browser tab that records every console error, page error and failed request."""

    def __init__(self, browser, site: str):
        self.site = site
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def _console(self, m) -> None:
        if m.type != "error":
            return
        # Chromium itself (not the page) sometimes asks for /favicon.ico while a click
        # navigates away, before the new page's <link rel="icon"> is read; the page never
        # sees that request, only its console line. Any other missing file is a problem.
        if "status of 404" in m.text and SERVED_ERRORS and SERVED_ERRORS[-1] == "404 /favicon.ico":
            return
        self.problems.append(f"console: {m.text} (server errors so far: {SERVED_ERRORS[-3:]})")

    def open(self, path: str, idle: bool = True):
        self.page.goto(f"{self.site}/{path}", wait_until="load")
        self.settle(idle)

    def settle(self, idle: bool = True):
        """Wait for the page (and, with idle, for half a second without requests, to catch late ones)."""
        self.page.wait_for_load_state("networkidle" if idle else "load")
        # MathJax typesets after load; wait for it where a page loads it.
        self.page.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }")

    def path(self) -> str:
        return self.page.url.split(self.site, 1)[1].lstrip("/").split("#")[0]

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser, site):
    v = Visit(browser, site)
    yield v
    v.close()


def _shot_name(page: str) -> str:
    return page.replace("/", "__") + ".png"


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_clean_with_its_images_and_maths(visit, page):
    visit.open(f"{page}.html")
    assert visit.page.locator("article h1").first.is_visible(), f"{page}: no title"
    broken = visit.page.evaluate("""async () => {
        const imgs = Array.from(document.images);
        for (const img of imgs) { img.loading = "eager"; try { await img.decode(); } catch (e) {} }
        return imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
    }""")
    assert not broken, f"{page}: images that did not load: {broken}"
    if page.startswith("book/") and page[5:] in CHAPTERS:
        figures = visit.page.locator("main img[src*='_images/']")
        assert figures.count() > 0, f"{page}: the chapter shows no figure"
    if visit.page.locator("main .math").count():
        assert visit.page.locator("main mjx-container").count() > 0, f"{page}: the mathematics was not typeset"
        assert visit.page.locator("main mjx-merror").count() == 0, f"{page}: MathJax reports an error"
    SHOTS.mkdir(parents=True, exist_ok=True)
    visit.page.screenshot(path=str(SHOTS / _shot_name(page)), full_page=True)
    assert not visit.problems, f"{page}: {visit.problems}"


def test_next_links_walk_the_book_in_toc_order_and_prev_links_walk_back(visit):
    visit.open("index.html")  # a redirect to the root page
    seen = [visit.path()]
    while visit.page.locator("a.right-next").count():
        with visit.page.expect_navigation():
            visit.page.locator("a.right-next").first.click()
        visit.settle(idle=False)
        seen.append(visit.path())
    assert seen == [f"{p}.html" for p in PAGES]
    back = [visit.path()]
    while visit.page.locator("a.left-prev").count():
        with visit.page.expect_navigation():
            visit.page.locator("a.left-prev").first.click()
        visit.settle(idle=False)
        back.append(visit.path())
    assert back == seen[::-1]
    assert not visit.problems, visit.problems


def test_sidebar_links_to_another_chapter(visit):
    visit.open("book/tensors.html")
    visit.page.locator("nav.bd-docs-nav a[href$='losses.html']").first.click()
    visit.settle()
    assert visit.path() == "book/losses.html"
    assert "Loss functions" in visit.page.locator("article h1").first.inner_text()
    assert not visit.problems, visit.problems


@pytest.mark.parametrize("stem", sorted(SEARCH_WORDS))
def test_search_finds_the_chapter_by_a_word_in_it(visit, stem):
    word = SEARCH_WORDS[stem]
    assert word.lower() in (ROOT / "book" / f"{stem}.md").read_text().lower(), f"pick a word that is in the {stem} chapter"
    visit.open(f"search.html?q={word}")
    # Sphinx lists the results one by one, then writes its summary.
    visit.page.locator("#search-results p.search-summary", has_text="Search finished").wait_for(timeout=15_000)
    results = visit.page.locator("#search-results ul.search li a")
    hrefs = [results.nth(i).get_attribute("href") for i in range(results.count())]
    assert any(re.search(rf"(^|/)book/{stem}\.html", h) for h in hrefs), f"{word!r} found {hrefs}"
    assert not visit.problems, visit.problems


@pytest.mark.parametrize("stem", CHAPTERS)
def test_exercise_page_launches_and_downloads_the_released_notebook(visit, stem):
    visit.open(f"exercises/{stem}/{stem}.html")
    bar = visit.page.locator(".course-exercise-links")
    links = {a.inner_text(): a.get_attribute("href") for a in bar.locator("a").all()}
    repo = re.sub(r"^https://github\.com/", "", CONFIG["repository"]["url"]).strip("/")
    target = f"exercises/{stem}/{stem}.ipynb"
    assert links["Colab"] == f"https://colab.research.google.com/github/{repo}/blob/main/{target}"
    assert links["Binder"].startswith(f"https://mybinder.org/v2/gh/{repo}/main?urlpath=tree/{target}")
    hub = CONFIG["launch_buttons"].get("jupyterhub_url")
    assert ("JupyterHub" in links) == bool(hub), links
    # The header's launch menu offers the same, and the download is the released notebook itself.
    assert visit.page.locator(".dropdown-launch-buttons a[href*='colab']").count() == 1
    download = bar.locator("a.course-download")
    assert download.get_attribute("download") == f"{stem}.ipynb"
    response = visit.page.request.get(f"{visit.site}/exercises/{stem}/{download.get_attribute('href')}")
    assert response.ok
    assert json.loads(response.body()) == json.loads(release_notebook(stem).read_text())
    assert not visit.problems, visit.problems


def test_chapter_pages_offer_no_launch_button_for_a_markdown_file(visit):
    visit.open(f"book/{CHAPTERS[0]}.html")
    assert visit.page.locator(".dropdown-launch-buttons").count() == 0
    assert visit.page.locator(".dropdown-download-buttons a[href$='.ipynb']").count() == 1


# What a reader sees on a chapter page before opening anything: no code, printed output or table
# that scrolls sideways, no glue call in the shown code, a common-mistakes box of at most 12 items
# (the grader's whole catalogue folded in its dropdown). Measured by the browser's layout.
READER_VIEW = """() => {
    // hidden by display, visibility (a folded dropdown's content) or opacity
    const shown = el => el.checkVisibility({visibilityProperty: true, opacityProperty: true});
    const wide = el => el.scrollWidth > el.clientWidth + 1;
    const code = Array.from(document.querySelectorAll("main .cell_input pre")).filter(shown);
    const outputs = Array.from(document.querySelectorAll("main .cell_output pre")).filter(shown);
    const tables = Array.from(document.querySelectorAll("main table")).filter(shown)
        .map(t => t.closest(".pst-scrollable-table-container, .table-wrapper") || t);
    const box = document.querySelector("main section#common-mistakes");
    return {
        code: code.length,
        wideCode: code.filter(wide).map(p => p.innerText.split("\\n").find(l => l.length > 88) || "?"),
        wideOutputs: outputs.filter(wide).map(p => p.innerText.slice(0, 60)),
        glue: code.filter(p => p.innerText.includes("glue(")).length,
        wideTables: tables.filter(wide).map(t => t.innerText.slice(0, 60)),
        mistakes: box ? Array.from(box.querySelectorAll("li")).filter(shown).length : -1,
    };
}"""


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_page_fits_the_column_and_shows_a_short_box(visit, stem):
    visit.open(f"book/{stem}.html", idle=False)
    view = visit.page.evaluate(READER_VIEW)
    assert view["code"] > 0, f"{stem}: no code cell found (has the theme's markup changed?)"
    assert not view["wideCode"], f"{stem}: code that scrolls sideways: {view['wideCode'][:3]}"
    assert not view["wideOutputs"], f"{stem}: printed output that scrolls sideways: {view['wideOutputs'][:3]}"
    assert not view["glue"], f"{stem}: {view['glue']} code cells show a glue call"
    assert not view["wideTables"], f"{stem}: tables that scroll sideways: {view['wideTables']}"
    assert 1 <= view["mistakes"] <= 12, f"{stem}: the common-mistakes box shows {view['mistakes']} items"
