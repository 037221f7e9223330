"""The gradebook as `nbgrader autograde` would leave it, read with nbgrader's own API: nothing flagged
for a person where nothing needs one, a submission only for who submitted, an assignment only for what
was released or graded; `generate_feedback` and `release_feedback` for exchange and LMS submissions alike."""
from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from autograder.cli import main
from autograder.course import course_root
from tests.nbgrader_course import nbgrader
from tests.test_instructor import WRONG_L1, _set_source, _student, _write, course_copy
from tests.conftest import full_points

pytestmark = pytest.mark.slow
STEM = "losses"
FULL = full_points(STEM)
COURSE_ID = "scratch-gradebook-course"


def _configure(root, tmp) -> None:
    with (root / "nbgrader_config.py").open("a") as f:
        f.write(f"\nc.CourseDirectory.course_id = {COURSE_ID!r}\nc.Exchange.root = {str(tmp / 'exchange')!r}\n"
                f"c.Exchange.cache = {str(tmp / 'cache')!r}\n")
    (tmp / "exchange").mkdir()


def _grade(root, *stems, extra=()) -> None:
    assert main(["grade", *stems, "--submissions", str(root / "submitted"), "--out", str(root / "grading"),
                 "--device", "cpu", "--jobs", "2", "--cell-timeout", "10", "--gradebook", "auto",
                 "--course", str(root), *extra]) == 0


def _gradebook(root):
    from autograder.gradebook import open_gradebook

    return open_gradebook(f"sqlite:///{root / 'gradebook.db'}")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """perfect and wrong come through nbgrader's exchange layout (timestamp.txt, submission_secret.txt as
    `nbgrader collect` leaves them); lms came from an LMS (the notebook alone); absent has a folder and
    submitted nothing."""
    tmp = tmp_path_factory.mktemp("gradebook")
    root = course_copy(tmp)
    _configure(root, tmp)
    subs = root / "submitted"
    _write(subs, "perfect", _student())
    _write(subs, "wrong", _student(lambda nb: _set_source(nb, "l1_loss", WRONG_L1)))
    _write(subs, "lms", _student())
    (subs / "absent").mkdir()
    for student in ("perfect", "wrong"):
        (subs / student / STEM / "timestamp.txt").write_text("2026-03-01 10:00:00.000000 UTC")
        (subs / student / STEM / "submission_secret.txt").write_text(student * 20)
    _grade(root, STEM)
    return root


def test_nothing_is_flagged_for_manual_grading(graded):
    """formgrader's "needs manual grade" is false for every autograded submission: the visible-test cells
    (0 points, no check) get auto_score 0, as nbgrader autograde gives them."""
    with _gradebook(graded) as gb:
        subs = gb.assignment_submissions(STEM)
        assert subs and not [s.student.id for s in subs if s.needs_manual_grade]
        for s in subs:
            nb = gb.find_submission_notebook(STEM, STEM, s.student.id)
            assert not nb.needs_manual_grade
            assert all(g.auto_score is not None for g in nb.grades), s.student.id
            visible = [g for g in nb.grades if g.name.startswith("visible_")]
            assert visible and all(g.auto_score == 0 and g.max_score == 0 for g in visible)
        assert gb.find_assignment(STEM).num_submissions == 3


def test_a_student_who_submitted_nothing_has_no_submission(graded):
    from nbgrader.api import MissingEntry

    with _gradebook(graded) as gb:
        assert "absent" in {s.id for s in gb.students}  # listed by nbgrader export, with 0
        with pytest.raises(MissingEntry):
            gb.find_submission(STEM, "absent")
    assert not (graded / "autograded" / "absent").exists()
    proc = nbgrader("export", "--to", str(graded / "export.csv"), cwd=graded)
    assert proc.returncode == 0, proc.stderr
    with (graded / "export.csv").open() as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"perfect", "wrong", "lms", "absent"}
    assert float(rows["absent"]["score"]) == 0 and float(rows["perfect"]["score"]) == FULL


def test_feedback_is_generated_and_released_for_exchange_and_lms_submissions(graded):
    for step in (("generate_feedback", STEM, "--force"), ("release_feedback", STEM)):
        proc = nbgrader(*step, cwd=graded)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    released = list((graded.parent / "exchange" / COURSE_ID / "feedback").glob("*.html"))
    assert len(released) == 3  # perfect, wrong and lms; absent has none
    for student in ("perfect", "wrong", "lms"):
        fb = graded / "feedback" / student / STEM
        assert (fb / f"{STEM}.html").is_file() and (fb / "timestamp.txt").is_file()
    # the maths renders offline: MathJax is in the page, no script comes from the network
    page = (graded / "feedback" / "perfect" / STEM / f"{STEM}.html").read_text()
    assert "MathJax, inlined" in page and "inlineMath: [['$', '$']" in page and "$\\ell_i" in page
    assert not re.findall(r'<script[^>]*\ssrc=', page) and "cdnjs" not in page
    # the exchange's own secret is kept: the student's cached submission fetches their feedback with it
    assert (graded / "autograded" / "perfect" / STEM / "submission_secret.txt").read_text() == "perfect" * 20


def test_a_second_assignment_adds_only_who_submitted_it(graded, monkeypatch):
    """tensors, submitted by perfect alone: the others of the gradebook have no tensors submission."""
    from nbgrader.api import MissingEntry

    from tests.test_term import answered

    root = graded
    for sub in ("solutions", "exercises"):
        shutil.copytree(course_root() / sub / "tensors", root / sub / "tensors")
    (root / "submitted" / "perfect" / "tensors").mkdir()
    (root / "submitted" / "perfect" / "tensors" / "tensors.ipynb").write_text(json.dumps(answered("tensors")))
    monkeypatch.setenv("AUTOGRADER_COURSE_ROOT", str(root))
    _grade(root, "tensors")
    with _gradebook(root) as gb:
        assert [s.student.id for s in gb.assignment_submissions("tensors")] == ["perfect"]
        for student in ("wrong", "lms", "absent"):
            with pytest.raises(MissingEntry):
                gb.find_submission("tensors", student)
        assert sorted(a.name for a in gb.assignments) == ["losses", "tensors"]


def test_a_submission_no_longer_there_is_removed_from_the_gradebook(graded):
    """Recorded once (an earlier run), its folder gone: nbgrader would have no such submission."""
    from nbgrader.api import MissingEntry

    moved = graded / "lms_notebook.ipynb"
    shutil.move(graded / "submitted" / "lms" / STEM / f"{STEM}.ipynb", moved)
    (graded / "submitted" / "lms" / STEM).rmdir()
    try:
        _grade(graded, STEM, extra=("--student", "lms"))
        with _gradebook(graded) as gb:
            with pytest.raises(MissingEntry):
                gb.find_submission(STEM, "lms")
    finally:
        (graded / "submitted" / "lms" / STEM).mkdir()
        shutil.move(moved, graded / "submitted" / "lms" / STEM / f"{STEM}.ipynb")
        _grade(graded, STEM, extra=("--student", "lms"))


def test_release_adds_nothing_to_the_gradebook(tmp_path, monkeypatch):
    """`make release` regenerates exercises/ for the book; an assignment enters the gradebook when it is
    added, released through the exchange or graded."""
    from autograder.release import release

    root = course_copy(tmp_path)
    with _gradebook(root):
        pass  # an empty gradebook
    monkeypatch.setenv("AUTOGRADER_COURSE_ROOT", str(root))
    assert release([STEM]) == [STEM]
    with _gradebook(root) as gb:
        assert gb.assignments == []


def test_the_gradebook_matches_nbgrader_autograde(graded, tmp_path):
    """The same perfect submission through `nbgrader autograde`: every grade cell's automatic score and
    manual-grade flag as the runner left them."""
    root = course_copy(tmp_path)
    _write(root / "submitted", "perfect", _student())
    for step in (("generate_assignment", STEM, "--force"), ("autograde", STEM, "--force", "--create")):
        proc = nbgrader(*step, cwd=root)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def cells(course):
        with _gradebook(course) as gb:
            nb = gb.find_submission_notebook(STEM, STEM, "perfect")
            return {g.name: (g.auto_score, g.needs_manual_grade) for g in nb.grades}, nb.needs_manual_grade

    assert cells(graded) == cells(root)
