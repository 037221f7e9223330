"""The common-mistakes box (autograder/catalogue.py): every catalogued mistake
and its hint, as the grader has them, and nothing of the solutions."""
from __future__ import annotations

import html as html_lib
import re

import pytest

from autograder.catalogue import catalogue, common_mistakes, escape, mistakes_markdown
from autograder.checks import load_checks
from autograder.course import course_root, stems
from tests.test_book import _needles

STEMS = stems()
# Sphinx's smart quotes and dashes, back to what the hints are written with.
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "--",
                        "\u2014": "---", "\u2026": "..."})


def _unescaped(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.mark.parametrize("stem", STEMS)
def test_the_box_lists_every_catalogued_mistake_with_its_hint(stem):
    box = mistakes_markdown(stem)
    text = _unescaped(box)
    assert box.startswith(":::{admonition} Common mistakes\n") and box.rstrip().endswith(":::")
    for check in load_checks(stem).values():
        for mistake in check.mistakes:
            assert f"*{mistake.name.replace('-', ' ')}*: " + " ".join(mistake.hint.split()) in text, mistake.name
        if check.mistakes:
            assert f"**`{check.target}`**" in box
    items = [ln for ln in box.splitlines() if ln.startswith("- ")]
    assert len(items) == sum(len(c.mistakes) for c in load_checks(stem).values())


@pytest.mark.parametrize("stem", STEMS)
def test_the_box_shows_names_and_hints_only(stem):
    box = mistakes_markdown(stem)
    for _, mistakes in catalogue(stem):
        for name, hint in mistakes:
            assert isinstance(name, str) and isinstance(hint, str)
    # No code of the mistakes (lambdas, classes) and no marker of a solution.
    assert "lambda" not in box and "<function" not in box and "<class" not in box
    assert "BEGIN SOLUTION" not in box and "HIDDEN TESTS" not in box


@pytest.mark.parametrize("stem", STEMS)
def test_the_box_holds_no_line_of_the_solutions(stem):
    # The needles the built book is scanned for (tests/test_book.py): a hint that quoted
    # a solution line would put it on the chapter's page.
    text = _unescaped(mistakes_markdown(stem))
    leaked = [needle for needle in _needles(stem) if needle in text]
    assert not leaked, leaked


def test_every_special_character_of_a_hint_is_escaped():
    hint = "Use *x* or `y` [z](w) {a} <b> $c$ | d_e #f ~g\n  and a new line"
    assert _unescaped(escape(hint)) == " ".join(hint.split())
    assert not re.search(r"(?<!\\)[*`\[\]{}<>$|_#~]", escape(hint))


def test_common_mistakes_is_markdown_for_a_book_cell():
    out = common_mistakes("autograd")
    assert out._repr_markdown_() == mistakes_markdown("autograd")


def test_the_built_page_shows_the_current_box():
    """A chapter page that uses the box shows every hint as the grader has it now
    (catches a cached, stale page). Skipped when the book is not built."""
    html_dir = course_root() / "_build" / "html"
    if not (html_dir / "index.html").is_file():
        pytest.skip("the book is not built: run `make book` first")
    for stem in STEMS:
        source = (course_root() / "book" / f"{stem}.md").read_text()
        if f'common_mistakes("{stem}")' not in source:
            continue
        page = (html_dir / "book" / f"{stem}.html").read_text()
        text = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", page)).translate(_PLAIN).split())
        assert "common_mistakes" not in text, f"{stem}: the box's code is shown"
        for _, mistakes in catalogue(stem):
            for name, hint in mistakes:
                assert " ".join(hint.split()) in text, f"{stem}: {name}'s hint is not on the page"


@pytest.mark.parametrize("stem", STEMS)
def test_every_chapter_page_shows_its_box(stem):
    """What the book warns about and what the grader recognises are one list: each page draws its box."""
    source = (course_root() / "book" / f"{stem}.md").read_text()
    assert f'common_mistakes("{stem}")' in source, f"book/{stem}.md has no common-mistakes box"
