"""The built book (`make book` first): every chapter present, figures real, nothing secret."""
from __future__ import annotations

import html as html_lib
import json
import os
import re
from html.parser import HTMLParser
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


# --- What a reader sees: no plumbing, no sideways scrolling, a short common-mistakes box ---------

BOOK = course_root() / "book"
PAGE_STEMS = sorted(p.stem for p in BOOK.glob("*.md"))
COLUMN = 88  # characters of code that fit the text column without scrolling sideways
MAX_MISTAKES = 12  # items a common-mistakes box shows before the grader's folded catalogue
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
CELL_OPTIONS = re.compile(r"\A(?:---\n.*?\n---\n|(?::[^\n]*\n)+)", re.S)


def code_cells(text: str) -> list[tuple[str, str]]:
    """(options, code) of each code cell of a MyST page: options are its tags and metadata."""
    cells = []
    for m in CODE_CELL.finditer(text):
        head = CELL_OPTIONS.match(m.group(1))
        options = head.group(0) if head else ""
        cells.append((options, m.group(1)[len(options):]))
    return cells


def input_removed(options: str) -> bool:
    return bool(re.search(r"\bremove-(?:input|cell)\b", options))


def shown_glue_calls(text: str) -> list[str]:
    """Lines calling glue( in a cell whose code the page shows (or folds: hide-input)."""
    return [line.strip() for options, code in code_cells(text) if not input_removed(options)
            for line in code.splitlines() if "glue(" in line]


def long_code_lines(text: str) -> list[str]:
    """Code lines, of cells whose code is shown or folded, wider than the column."""
    return [line for options, code in code_cells(text) if not input_removed(options)
            for line in code.splitlines() if len(line) > COLUMN]


def mistakes_section(text: str) -> str:
    m = re.search(r"^## Common mistakes\n(.*?)(?=^## )", text, re.S | re.M)
    return m.group(1) if m else ""


def visible_mistakes(text: str) -> int:
    """List items of the page's common-mistakes section outside its code cells (the cell
    that draws the grader's catalogue must fold it into a dropdown)."""
    section = CODE_CELL.sub("", mistakes_section(text))
    return len(re.findall(r"^\s*- ", section, re.M))


def catalogue_folded(text: str) -> bool:
    return any("common_mistakes(" in code and ":class: dropdown" in code
               for _, code in code_cells(mistakes_section(text)))


@pytest.mark.parametrize("stem", PAGE_STEMS)
def test_no_page_shows_glue_calls_or_code_wider_than_the_column(stem):
    text = (BOOK / f"{stem}.md").read_text()
    assert not shown_glue_calls(text), (
        f"book/{stem}.md shows {shown_glue_calls(text)[:3]}: glue in a cell tagged remove-cell")
    assert not long_code_lines(text), (
        f"book/{stem}.md: code lines over {COLUMN} characters scroll sideways: {long_code_lines(text)[:3]}")


@pytest.mark.parametrize("stem", [s for s in PAGE_STEMS if s not in {"intro", "instructors"}])
def test_common_mistakes_box_is_short_and_the_catalogue_folded(stem):
    text = (BOOK / f"{stem}.md").read_text()
    assert 1 <= visible_mistakes(text) <= MAX_MISTAKES, (stem, visible_mistakes(text))
    assert catalogue_folded(text), f"book/{stem}.md: the grader's catalogue is not in a dropdown"


def test_the_reader_checks_can_fail():
    """Each check catches the page it is meant to catch, and passes the fixed page."""
    shown = "```{code-cell} ipython3\nx = 1\nglue(\"x\", x, display=False)\n```\n"
    folded = "```{code-cell} ipython3\n:tags: [hide-input]\n\nglue(\"x\", 1)\n```\n"
    removed = "```{code-cell} ipython3\n:tags: [remove-cell]\n\nglue(\"x\", 1)\n```\n"
    front = "```{code-cell} ipython3\n---\ntags: [remove-input]\n---\nglue(\"x\", 1)\n```\n"
    assert shown_glue_calls(shown) == ['glue("x", x, display=False)']
    assert shown_glue_calls(folded) == ['glue("x", 1)']
    assert shown_glue_calls(removed + front) == []
    wide = "```{code-cell} ipython3\n" + "y = " + "1 + " * 30 + "1\n```\n"
    assert len(long_code_lines(wide)) == 1 and long_code_lines(removed) == []
    box = ("## Common mistakes\n\n```{admonition} Mistakes\n" + "- a mistake\n" * 13 + "```\n\n"
           "```{code-cell} ipython3\nbox = common_mistakes(\"x\")\n- not counted\n```\n\n## Next\n")
    assert visible_mistakes(box) == 13 and not catalogue_folded(box)
    assert catalogue_folded(box.replace('common_mistakes("x")', 'common_mistakes("x")\n":class: dropdown"'))


VOID = {"br", "img", "hr", "input", "meta", "link", "source", "wbr", "col", "area", "base", "embed"}


class ReaderView(HTMLParser):
    """What a built page shows before the reader opens anything: the code of its cells
    (`div.cell_input` outside a <details> or a dropdown) and the list items of its
    common-mistakes section outside a dropdown."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool, bool]] = []  # (tag, folded, in code, in mistakes)
        self.code, self.mistakes = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        folded, in_code, in_mistakes = self.stack[-1][1:] if self.stack else (False, False, False)
        folded = folded or tag == "details" or "dropdown" in classes or "toggle-hidden" in classes
        in_code = in_code or "cell_input" in classes
        in_mistakes = in_mistakes or (tag == "section" and a.get("id") == "common-mistakes")
        self.stack.append((tag, folded, in_code, in_mistakes))
        if tag == "li" and in_mistakes and not folded:
            self.mistakes += 1

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.stack and self.stack[-1][2] and not self.stack[-1][1]:
            self.code.append(data)


def reader_view(page: str) -> tuple[list[str], int]:
    """(shown code lines, shown common-mistakes items) of a built page."""
    view = ReaderView()
    view.feed(page)
    return "".join(view.code).splitlines(), view.mistakes


@pytest.mark.parametrize("stem", stems())
def test_built_page_shows_no_plumbing_no_wide_code_and_a_short_box(html, stem):
    lines, mistakes = reader_view((html / "book" / f"{stem}.html").read_text())
    assert lines, f"{stem}: no code found on the page (has the theme's markup changed?)"
    assert not [line for line in lines if "glue(" in line], stem
    assert not [line for line in lines if len(line) > COLUMN], stem
    assert 1 <= mistakes <= MAX_MISTAKES, (stem, mistakes)


def test_the_reader_view_sees_what_is_shown_only():
    page = ('<div class="cell_input"><pre>x = 1\nglue("a", x)</pre></div>'
            '<details><div class="cell_input"><pre>glue("hidden", 1)</pre></div></details>'
            '<section id="common-mistakes"><ul><li>one<br></li><li>two</li></ul>'
            '<div class="admonition dropdown"><ul><li>folded</li></ul></div></section><ul><li>out</li></ul>')
    assert reader_view(page) == (["x = 1", 'glue("a", x)'], 2)


def test_a_cached_chapter_older_than_its_catalogue_runs_again(tmp_path):
    """The execution cache keys on code cells: a hint changed in the grader leaves them as they were,
    so `make book` drops the cached runs of a chapter that are older than the catalogue it shows."""
    import importlib.util
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("build_book", BOOK / "_ext" / "build_book.py")
    build_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_book)
    with_box, without = tmp_path / "losses.md", tmp_path / "plain.md"
    with_box.write_text('```{code-cell} ipython3\nbox = common_mistakes("losses")\n```\n')
    without.write_text("```{code-cell} ipython3\nx = 1\n```\n")
    changed = datetime.fromtimestamp((course_root() / "autograder" / "chapters" / "losses.py").stat().st_mtime,
                                     timezone.utc)
    records = [SimpleNamespace(pk=1, uri=str(with_box), created=changed - timedelta(hours=1)),
               SimpleNamespace(pk=2, uri=str(with_box), created=changed + timedelta(hours=1)),
               SimpleNamespace(pk=3, uri=str(without), created=changed - timedelta(hours=1))]
    removed = []
    cache = SimpleNamespace(list_cache_records=lambda: records, remove_cache=removed.append)
    build_book.drop_stale_catalogues(cache, [str(with_box), str(without)], [str(with_box), str(without)])
    assert removed == [1]


@pytest.mark.parametrize("stem", stems())
def test_chapter_has_one_objectives_heading_and_links_its_exercise(stem):
    """One "After this chapter you can" and no second "Learning objectives" title above it; the
    chapter names its exercise notebook with a link (the capstone page once had neither right)."""
    text = (BOOK / f"{stem}.md").read_text()
    assert text.count("**After this chapter you can**") == 1, stem
    assert "Learning objectives" not in text, f"book/{stem}.md: a second objectives heading"
    assert f"{{doc}}`../exercises/{stem}/{stem}`" in text, f"book/{stem}.md does not link its exercise"
