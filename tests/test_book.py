"""The built book (`make book` first): every chapter present, figures real, nothing secret."""
from __future__ import annotations

import html as html_lib
import json
import os
import re
from pathlib import Path

import pytest

from autograder.course import course_root, release_notebook, stems
from tests.test_course import _solution_lines

HTML = course_root() / "_build" / "html"


def require_built_book() -> Path:
    """_build/html, or skip (fail under CI) when the book is not built."""
    if not (HTML / "index.html").is_file():
        if os.environ.get("CI"):
            pytest.fail("_build/html is missing: CI must run `make book` before `make test`")
        pytest.skip("the book is not built: run `make book` first")
    return HTML


@pytest.fixture(scope="module")
def html() -> Path:
    return require_built_book()


# Copied byte for byte from the pinned sphinx-mathjax-offline package after the
# build; nothing of the course reaches it, and it is 24 MB of JavaScript.
VENDORED = ("_static/mathjax/",)
TEXT_SUFFIXES = {".html", ".txt", ".ipynb", ".md", ".js", ".json", ".py", ".css", ".svg", ".inv", ".xml"}


def _text_files(root: Path):
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and p.suffix in TEXT_SUFFIXES and not rel.startswith(VENDORED):
            yield p


def _visible_text(path: Path) -> str:
    """The file as stored, plus, for a page, its text without tags: highlighted code
    is split into one <span> per token, which would hide a solution line."""
    text = path.read_text(errors="replace")
    if path.suffix == ".html":
        text += "\n" + html_lib.unescape(re.sub(r"<[^>]+>", "", text))
    return text


def _needles(stem: str) -> list[str]:
    """Each solution or hidden-test line, and the same line without its trailing comment,
    unless the released notebook shows it too (`super().__init__()` in code, "return
    `orig_loss`" in prose): a page's text without tags would match those."""
    cells = json.loads(release_notebook(stem).read_text())["cells"]
    public = "\n".join("".join(c["source"]) for c in cells)
    public += "\n" + public.replace("`", "")
    needles = set()
    for line in _solution_lines(stem):
        for needle in (line, line.split("  #")[0].strip()):
            if len(needle) > 12 and needle not in public:
                needles.add(needle)
    return sorted(needles)


@pytest.mark.parametrize("stem", stems())
def test_every_chapter_has_distinctive_secrets_to_scan_for(stem):
    # The leak scan below is only as good as its needles: every chapter has some.
    assert len(_needles(stem)) >= 5, stem


def test_no_solution_or_hidden_test_anywhere_in_the_html(html):
    secrets = {stem: _needles(stem) for stem in stems()}
    leaks, scanned = [], set()
    for path in _text_files(html):
        scanned.add(path.relative_to(html).as_posix())
        text = _visible_text(path)
        if re.search(r"BEGIN SOLUTION|BEGIN HIDDEN TESTS|autograder\.inline", text):
            leaks.append(f"{path}: marker")
        for stem, lines in secrets.items():
            for line in lines:
                if line in text:
                    leaks.append(f"{path}: {line}")
    assert not leaks, leaks[:5]
    assert not (html / "solutions").exists() and not (html / "_sources" / "solutions").exists()
    # The scan covered every page, every source copy and every download of every chapter.
    for stem in stems():
        for page in (f"book/{stem}.html", f"exercises/{stem}/{stem}.html", f"_sources/book/{stem}.md",
                     f"_sources/exercises/{stem}/{stem}.ipynb"):
            assert page in scanned, page
    assert {p for p in scanned if p.startswith("_downloads/")} == {
        p.relative_to(html).as_posix() for p in (html / "_downloads").rglob("*") if p.is_file()}


@pytest.mark.parametrize("stem", stems())
def test_exercise_download_is_the_released_notebook(html, stem):
    page = (html / "exercises" / stem / f"{stem}.html").read_text()
    hrefs = set(re.findall(r'href="([^"]+\.ipynb)"', page))
    assert f"../../_sources/exercises/{stem}/{stem}.ipynb" in hrefs, hrefs
    for href in hrefs:
        if not href.startswith("http"):
            served = (html / "exercises" / stem / href).resolve()
            assert served.read_bytes() == release_notebook(stem).read_bytes(), href
    assert "colab.research.google.com" in page and "mybinder.org" in page, f"{stem}: no launch links"


@pytest.mark.parametrize("stem", stems())
def test_chapter_and_exercise_pages_exist_with_figures(html, stem):
    page = html / "book" / f"{stem}.html"
    assert page.is_file(), f"{stem}: no chapter page"
    imgs = re.findall(r'<img[^>]+src="([^"]+)"', page.read_text())
    figures = [src for src in imgs if "_images/" in src]
    assert figures, f"{stem}: the chapter shows no figure"
    for src in figures:
        assert (page.parent / src).resolve().is_file(), src
    assert (html / "exercises" / stem / f"{stem}.html").is_file(), f"{stem}: no exercise page"


def test_executed_cells_show_no_errors(html):
    for stem in stems():
        text = (html / "book" / f"{stem}.html").read_text()
        assert "Traceback" not in text and 'class="output traceback' not in text, stem
