"""The built book (`make book` first): every chapter present, figures real, nothing secret."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from autograder.course import course_root, stems
from tests.test_course import _solution_lines

HTML = course_root() / "_build" / "html"


@pytest.fixture(scope="module")
def html() -> Path:
    if not (HTML / "index.html").is_file():
        if os.environ.get("CI"):
            pytest.fail("_build/html is missing: CI must run `make book` before `make test`")
        pytest.skip("the book is not built: run `make book` first")
    return HTML


def _text_files(root: Path):
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in {".html", ".txt", ".ipynb", ".md", ".js", ".json", ".py"}:
            yield p


def test_no_solution_or_hidden_test_anywhere_in_the_html(html):
    secrets = {stem: _solution_lines(stem) for stem in stems()}
    leaks = []
    for path in _text_files(html):
        text = path.read_text(errors="replace")
        if re.search(r"BEGIN SOLUTION|BEGIN HIDDEN TESTS|autograder\.inline", text):
            leaks.append(f"{path}: marker")
        for stem, lines in secrets.items():
            for line in lines:
                if line in text:
                    leaks.append(f"{path}: {line}")
    assert not leaks, leaks[:5]
    assert not (html / "solutions").exists() and not (html / "_sources" / "solutions").exists()


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
