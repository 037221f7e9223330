"""The student repository that `python -m autograder publish` writes: what students need, nothing secret,
and launch buttons that open notebooks it holds."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from autograder.cli import main
from autograder.course import course_root, source_notebook, stems
from autograder.publish import PublishError, launch_targets, publish, scan, secret_lines

REPO = "https://github.com/your-org/your-course-student"


def _config_repository() -> str:
    return re.search(r"^repository:\s*\n\s+url:\s*(\S+)", (course_root() / "_config.yml").read_text(), re.M)[1]


def _page(stem: str, repo: str = REPO, path: str | None = None) -> str:
    path = path or f"exercises/{stem}/{stem}.ipynb"
    org, name = repo.removeprefix("https://github.com/").split("/")
    return (f'<html><body><h1>{stem}</h1><p class="course-exercise-links">'
            f'<a class="course-launch" href="https://colab.research.google.com/github/{org}/{name}/blob/main/{path}">'
            f'Colab</a> · <a class="course-launch" href="https://mybinder.org/v2/gh/{org}/{name}/main?'
            f'urlpath=tree/{path}">Binder</a></p></body></html>')


def fake_book(tmp: Path, **pages) -> Path:
    """A built book's shape: index, one exercise page per chapter (launch links), the sources."""
    html = tmp / "html"
    (html / "_static").mkdir(parents=True)
    (html / "index.html").write_text("<html><body>The course</body></html>")
    for stem in stems():
        page = html / "exercises" / stem / f"{stem}.html"
        page.parent.mkdir(parents=True)
        page.write_text(pages.get(stem, _page(stem)))
        src = html / "_sources" / "exercises" / stem / f"{stem}.ipynb"
        src.parent.mkdir(parents=True)
        shutil.copy(course_root() / "exercises" / stem / f"{stem}.ipynb", src)
    return html


def test_published_tree_has_what_students_need_and_no_secret(tmp_path):
    dest = tmp_path / "public"
    (dest / ".git").mkdir(parents=True)
    (dest / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (dest / "stale.txt").write_text("from an earlier publish")
    assert main(["publish", str(dest), "--html", str(fake_book(tmp_path)), "--repository", REPO]) == 0
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert ".git/HEAD" in files and "stale.txt" not in files  # the checkout is kept, the rest replaced
    for stem in stems():
        assert (dest / "exercises" / stem / f"{stem}.ipynb").read_bytes() == \
            (course_root() / "exercises" / stem / f"{stem}.ipynb").read_bytes()
    assert {"README.md", "requirements.txt", "docs/index.html", "docs/.nojekyll"} <= set(files)
    assert "torch==" in (dest / "requirements.txt").read_text()
    assert not [f for f in files if f.endswith((".py", ".db")) or f.startswith(("solutions", "autograder"))]
    assert scan(dest) == []
    assert {path for _, _, path in launch_targets(dest)} == {f"exercises/{s}/{s}.ipynb" for s in stems()}


def test_secrets_to_scan_for_cover_solutions_hidden_tests_and_grading_code():
    secrets = secret_lines()
    for stem in stems():
        assert len(secrets[f"solutions/{stem}"]) >= 5, stem
        assert len(secrets[f"autograder/chapters/{stem}.py"]) >= 5, stem
    nb = json.loads(source_notebook("losses").read_text())
    hidden = [ln.strip() for c in nb["cells"] for block in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END",
                                                                       "".join(c["source"]), re.S)
              for ln in block.splitlines() if ln.strip()]
    assert hidden and set(hidden) <= set(secrets["solutions/losses"])


@pytest.mark.parametrize("leak", ["solution", "hidden", "grading", "gradebook", "python", "marker"])
def test_publish_refuses_any_secret_and_leaves_nothing(tmp_path, leak):
    html = fake_book(tmp_path)
    secrets = secret_lines()
    line = {"solution": secrets["solutions/losses"][0], "hidden": next(s for s in secrets["solutions/tensors"] if s.startswith("check(")),
            "grading": secrets["autograder/chapters/losses.py"][3], "marker": "### BEGIN SOLUTION"}.get(leak)
    if line:  # as a page would show highlighted code: one span per token
        words = "".join(f"<span>{w}</span> " for w in line.split(" "))
        (html / "leak.html").write_text(f"<html><pre>{words.rstrip()}</pre></html>".replace("</span> <", "</span><span> </span><"))
    elif leak == "gradebook":
        (html / "gradebook.db").write_bytes(b"SQLite format 3\x00")
    else:
        (html / "_static" / "checks.py").write_text("x = 1\n")
    dest = tmp_path / "public"
    with pytest.raises(PublishError, match="nothing published"):
        publish(dest, html=html, repository=REPO)
    assert list(dest.iterdir()) == []


def test_publish_refuses_launch_buttons_that_open_nothing_there(tmp_path):
    elsewhere = fake_book(tmp_path / "a", losses=_page("losses", repo="https://github.com/someone/else"))
    with pytest.raises(PublishError, match="not the student repository"):
        publish(tmp_path / "public", html=elsewhere, repository=REPO)
    wrong_path = fake_book(tmp_path / "b", losses=_page("losses", path="book/losses.md"))
    with pytest.raises(PublishError, match="does not hold"):
        publish(tmp_path / "public", html=wrong_path)
    with pytest.raises(PublishError, match="make book"):
        publish(tmp_path / "public", html=tmp_path / "nothing")


def test_the_course_launch_buttons_point_to_a_student_repository_placeholder():
    """_config.yml ships a placeholder that cannot be mistaken for a real course; publish says so."""
    assert _config_repository() == REPO


def test_the_real_book_publishes_clean(tmp_path):
    html = course_root() / "_build" / "html"
    if not (html / "index.html").is_file():
        if os.environ.get("CI"):
            pytest.fail("_build/html is missing: CI must run `make book` before `make test`")
        pytest.skip("the book is not built: run `make book` first")
    summary = publish(tmp_path / "public", html=html, repository=_config_repository())
    assert "no secret found" in summary and "placeholder" in summary
    targets = launch_targets(tmp_path / "public")
    assert {repo for _, repo, _ in targets} == {_config_repository()}
    assert {path for _, _, path in targets} == {f"exercises/{s}/{s}.ipynb" for s in stems()}


def _book_page_sources(html: Path) -> Path:
    """A book page's downloadable sources, as jupyter-book writes them: the MyST page and its notebook,
    with a hidden common-mistakes cell (output kept), a removed glue cell, and a visible cell."""
    src = html / "_sources" / "book"
    src.mkdir(parents=True, exist_ok=True)
    (src / "page.md").write_text(
        "# A page\n\n```{code-cell} ipython3\nimport torch\ntorch.ones(2)\n```\n\n"
        "```{code-cell} ipython3\n---\ntags: [remove-input]\nmystnb:\n  markdown_format: myst\n---\n"
        "from autograder.catalogue import common_mistakes\n\ncommon_mistakes(\"losses\")\n```\n\n"
        "```{code-cell} ipython3\n:tags: [remove-cell]\nfrom autograder.chapters.capstone import BUDGET_S\n"
        "glue(\"budget_s\", BUDGET_S, display=False)\n```\n\nThe end.\n")
    box = {"output_type": "execute_result", "execution_count": 2, "metadata": {},
           "data": {"text/markdown": "**Common mistakes** ..."}}
    cells = [{"cell_type": "code", "metadata": {}, "source": "import torch\ntorch.ones(2)", "outputs": []},
             {"cell_type": "code", "metadata": {"tags": ["remove-input"]}, "outputs": [box],
              "source": "from autograder.catalogue import common_mistakes\n\ncommon_mistakes(\"losses\")"},
             {"cell_type": "code", "metadata": {"tags": ["remove-cell"]}, "outputs": [],
              "source": "from autograder.chapters.capstone import BUDGET_S\nglue('budget_s', BUDGET_S)"}]
    (src / "page.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                                "nbformat_minor": 5}))
    return src


def test_downloadable_page_sources_lose_the_hidden_cells_that_import_the_grader(tmp_path):
    """A book page's hidden cells that import the grader (the mistakes box, glued constants) are
    stripped from its published sources, the box's output kept: a downloaded page runs without the
    grader, and the publish is clean."""
    html = fake_book(tmp_path)
    _book_page_sources(html)
    dest = tmp_path / "public"
    publish(dest, html=html, repository=REPO)
    md = (dest / "docs" / "_sources" / "book" / "page.md").read_text()
    assert "autograder" not in md and "torch.ones(2)" in md and "The end." in md
    nb = json.loads((dest / "docs" / "_sources" / "book" / "page.ipynb").read_text())
    assert [c["source"] for c in nb["cells"]] == ["import torch\ntorch.ones(2)", ""]
    assert nb["cells"][1]["outputs"][0]["data"]["text/markdown"].startswith("**Common mistakes**")
    # the built book's own tree is not touched
    assert "from autograder" in (html / "_sources" / "book" / "page.md").read_text()


def test_a_visible_cell_that_imports_the_grader_is_refused(tmp_path):
    html = fake_book(tmp_path)
    src = _book_page_sources(html)
    (src / "page.md").write_text("```{code-cell} ipython3\nfrom autograder.catalogue import catalogue\n```\n")
    with pytest.raises(PublishError, match="page.md: 'from autograder'"):
        publish(tmp_path / "public", html=html, repository=REPO)


def test_what_students_see_anyway_is_no_secret():
    """A line the released notebook shows (quotes and all, not as escaped JSON) and a catalogued hint
    that quotes code are public: publishing them is no leak."""
    secrets = {ln for lines in secret_lines().values() for ln in lines}
    assert 'if reduction == "mean":' not in secrets  # the released losses notebook gives apply_reduction
    assert "closure = torch.enable_grad()(closure)" not in secrets  # LBFGS's hint quotes it
