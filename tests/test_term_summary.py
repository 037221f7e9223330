"""The term at a glance: `grade` takes several chapters (or all that were submitted) in one run, and every
run writes term.csv and term.html (each student's score per assignment and the total under the term's
weights), a total column in the LMS files, and a class report that says why its mean is not formgrader's."""
from __future__ import annotations

import csv
import json

import pytest

from autograder.cli import main
from autograder.course_config import CourseConfig, CourseConfigError
from autograder.results import CheckResult, SubmissionResult
from autograder.scores import settle
from autograder.term import term_csv, term_html


def _result(student: str, stem: str, points: float, max_points: float, **kw) -> SubmissionResult:
    return SubmissionResult(student, stem, f"{stem}.ipynb", [CheckResult("c", "check_c", points, max_points, 1, 1)],
                            max_score=max_points, **kw)


def _config(tmp_path, text: str = "") -> CourseConfig:
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\n" + text)
    return CourseConfig.load(tmp_path)


RESULTS = [_result("ann", "losses", 12, 16), _result("ann", "tensors", 10, 10),
           _result("bob", "losses", 4, 16), SubmissionResult("bob", "tensors", None, status="missing", max_score=10),
           _result("cid", "tensors", 5, 10)]  # cid was in no losses class at all


def _rows(text: str) -> dict[str, dict]:
    return {r["student_id"]: r for r in csv.DictReader(text.splitlines())}


def test_total_is_all_points_over_all_possible_without_weights(tmp_path):
    config = _config(tmp_path)
    rows = _rows(term_csv(settle(RESULTS, config), config))
    assert rows["ann"] == {"student_id": "ann", "losses": "12", "tensors": "10", "total_points": "22",
                           "max_points": "26", "total_percent": f"{100 * 22 / 26:.2f}".rstrip("0")}
    assert rows["bob"]["tensors"] == "0" and rows["bob"]["total_points"] == "4"
    assert rows["cid"]["losses"] == "0" and rows["cid"]["total_points"] == "5"  # missing: 0, as nbgrader export


def test_total_under_the_terms_weights(tmp_path):
    config = _config(tmp_path, "c.Autograder.weights = {'losses': 1, 'tensors': 3}\n")
    rows = _rows(term_csv(settle(RESULTS, config), config))
    assert float(rows["ann"]["total_percent"]) == 100 * (1 * 12 / 16 + 3 * 10 / 10) / 4  # 93.75
    assert float(rows["bob"]["total_percent"]) == 100 * (1 * 4 / 16) / 4
    page = term_html(settle(RESULTS, config), config)
    assert "93.75%" in page and "weight 3" in page and "c.Autograder.weights" in page


@pytest.mark.parametrize("weights", ["{'losses': -1}", "{'losses': 'heavy'}", "[1, 2]", "{'losses': True}"])
def test_a_weight_that_is_not_a_number_is_refused(tmp_path, weights):
    with pytest.raises(CourseConfigError, match="c.Autograder.weights"):
        _config(tmp_path, f"c.Autograder.weights = {weights}\n")


def test_class_report_says_why_its_mean_is_not_formgraders(tmp_path):
    from autograder.class_report import mean_note

    config = _config(tmp_path)
    tensors = [s for s in settle(RESULTS, config) if s.assignment == "tensors"]
    note = mean_note(tensors)
    assert "over all 3 students" in note and "5.00 / 10" in note  # (10 + 0 + 5) / 3
    assert "over the 2 submissions alone, before late penalties: 7.50 / 10" in note


@pytest.fixture(scope="module")
def two_chapters(tmp_path_factory):
    """Two students, two chapters, graded in one run (`grade all`)."""
    from tests.test_term import answered

    tmp = tmp_path_factory.mktemp("two_chapters")
    subs, out = tmp / "submitted", tmp / "grading"
    for student in ("ann", "bob"):
        for stem in ("losses", "tensors"):
            if (student, stem) == ("bob", "tensors"):
                continue  # bob has a folder, not this chapter
            (subs / student / stem).mkdir(parents=True)
            (subs / student / stem / f"{stem}.ipynb").write_text(json.dumps(answered(stem)))
    code = main(["grade", "all", "--submissions", str(subs), "--out", str(out), "--jobs", "2", "--device", "cpu",
                 "--cell-timeout", "20", "--course", str(tmp)])
    return code, out


def test_grade_all_grades_every_submitted_chapter_in_one_run(two_chapters):
    code, out = two_chapters
    assert code == 0
    with (out / "grades.csv").open() as f:
        grades = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    assert set(grades) == {("ann", "losses"), ("ann", "tensors"), ("bob", "losses"), ("bob", "tensors")}
    assert grades[("bob", "tensors")]["status"] == "missing"
    rows = {r["student_id"]: r for r in csv.DictReader((out / "term.csv").open())}
    for student, row in rows.items():
        mine = [g for (s, _), g in grades.items() if s == student]
        assert float(row["total_points"]) == sum(float(g["score"]) for g in mine)
        assert float(row["max_points"]) == sum(float(g["max_score"]) for g in mine)
    canvas = list(csv.reader((out / "canvas_grades.csv").open()))
    assert canvas[0][-1] == "Term total (%)"
    for line in canvas[2:]:
        assert float(line[-1]) == float(rows[line[3]]["total_percent"])
    assert (out / "term.html").is_file()
