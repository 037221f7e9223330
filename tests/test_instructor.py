"""What the instructor gets from a grading run: the nbgrader gradebook (read back by `nbgrader export`
and `nbgrader generate_feedback`), feedback for every student, the class report, the LMS CSV."""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import pytest

from autograder.cli import main
from autograder.course import course_root, release_notebook, source_notebook
from autograder.notebook import find_cell, without_solution_markers
from autograder.reference import check_points
from tests.nbgrader_course import nbgrader
from tests.test_course import _solution_lines
from tests.conftest import full_points

STEM = "losses"
FULL = full_points(STEM)
CHECKS = len(check_points(STEM))


def _cell(nb: dict, grade_id: str) -> dict:
    return find_cell(nb, grade_id)


def _set_source(nb: dict, grade_id: str, code: str) -> None:
    _cell(nb, grade_id)["source"] = code


def _answered() -> dict:
    """The release notebook with every solution cell answered as the source does (markers removed)."""
    nb = json.loads(release_notebook(STEM).read_text())
    source = json.loads(source_notebook(STEM).read_text())
    for cell in source["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            code = "".join(cell["source"])
            _set_source(nb, meta["grade_id"], without_solution_markers(code))
    return nb


def _student(*edits) -> dict:
    nb = _answered()
    for edit in edits:
        edit(nb)
    return nb


WRONG_L1 = 'def l1_loss(input, target, reduction="mean"):\n    return apply_reduction((input - target) ** 2, reduction)\n'
WRONG_MSE = 'def mse_loss(input, target, reduction="mean"):\n    return ((input - target) ** 2).mean()\n'
RAISES_CE = ('def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):\n'
             '    raise ValueError("I gave up on cross_entropy")\n')
HANG = "while True:\n    pass\n"


def _write(subs: Path, student: str, nb: dict | str) -> None:
    d = subs / student / STEM
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{STEM}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb, indent=1))


def make_class(subs: Path) -> None:
    """A small class of `losses` submissions, right, wrong and broken."""
    _write(subs, "perfect", _student())
    _write(subs, "wrong", _student(lambda nb: _set_source(nb, "l1_loss", WRONG_L1),
                                   lambda nb: _set_source(nb, "mse_loss", WRONG_MSE)))
    _write(subs, "syntax_error", _student(lambda nb: _set_source(nb, "log_softmax", "def log_softmax(input, dim)\n"
                                                                                     "    return 0\n")))
    _write(subs, "deleted_cell", _student(lambda nb: nb["cells"].remove(_cell(nb, "nll_loss"))))
    _write(subs, "raises", _student(lambda nb: _set_source(nb, "cross_entropy", RAISES_CE)))
    _write(subs, "hangs", _student(lambda nb: _set_source(nb, "detection_loss", HANG)))
    _write(subs, "untouched", json.loads(release_notebook(STEM).read_text()))
    _write(subs, "broken_json", release_notebook(STEM).read_text()[:3000])


def course_copy(tmp: Path) -> Path:
    """This course's nbgrader configuration and the chapter's notebooks, in a scratch folder."""
    root = tmp / "course"
    for sub in ("solutions", "exercises"):
        shutil.copytree(course_root() / sub / STEM, root / sub / STEM)
    shutil.copy(course_root() / "nbgrader_config.py", root / "nbgrader_config.py")
    return root


def _grade(root: Path, out: Path) -> None:
    assert main(["grade", STEM, "--submissions", str(root / "submitted"), "--out", str(out), "--device", "cpu",
                 "--jobs", "2", "--cell-timeout", "5", "--gradebook", "auto", "--course", str(root)]) == 0


def _export(root: Path) -> dict[str, dict]:
    path = root / "export.csv"
    proc = nbgrader("export", "--to", str(path), cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with path.open() as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def _grades_csv(out: Path) -> dict[str, float]:
    with (out / "grades.csv").open() as f:
        return {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}


def _code(notebook: Path) -> str:
    """The source of every cell of a submitted notebook ('' when it is not JSON)."""
    try:
        return "\n".join("".join(c.get("source", "")) for c in json.loads(notebook.read_text())["cells"])
    except json.JSONDecodeError:
        return ""


def _text(path: Path) -> str:
    """What a reader of the file sees: for HTML, the text without tags (code is split into spans)."""
    raw = path.read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", raw)) if path.suffix == ".html" else raw


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A class graded once with --gradebook, read back by nbgrader, then regraded after one student's fix."""
    tmp = tmp_path_factory.mktemp("instructor")
    root = course_copy(tmp)
    make_class(root / "submitted")
    out = tmp / "out"
    _grade(root, out)
    first = {"export": _export(root), "grades": _grades_csv(out)}
    proc = nbgrader("generate_feedback", STEM, "--force", cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    nbgrader_feedback = {p.parts[-3]: _text(p) for p in (root / "feedback").glob(f"*/{STEM}/{STEM}.html")}
    submitted_code = {s: _code(root / "submitted" / s / STEM / f"{STEM}.ipynb") for s in nbgrader_feedback}
    # the student fixes l1_loss (not mse_loss); the class is graded again into the same gradebook
    _write(root / "submitted", "wrong", _student(lambda nb: _set_source(nb, "mse_loss", WRONG_MSE)))
    _grade(root, out)
    return {"root": root, "out": out, "first": first, "nbgrader_feedback": nbgrader_feedback,
            "submitted_code": submitted_code,
            "second": {"export": _export(root), "grades": _grades_csv(out)}}


STUDENTS = ["perfect", "wrong", "syntax_error", "deleted_cell", "raises", "hangs", "untouched", "broken_json"]


def test_nbgrader_export_lists_every_students_runner_score(course):
    export, grades = course["first"]["export"], course["first"]["grades"]
    assert sorted(export) == sorted(grades) == sorted(STUDENTS)
    assert {s: float(row["score"]) for s, row in export.items()} == grades
    assert all(float(row["max_score"]) == FULL for row in export.values())
    assert grades["perfect"] == FULL and grades["untouched"] == grades["broken_json"] == 0
    assert 0 < grades["wrong"] < FULL and 0 < grades["syntax_error"] < FULL


def test_regrading_replaces_scores_and_duplicates_nothing(course):
    from nbgrader.api import Grade, SubmittedAssignment

    from autograder.gradebook import open_gradebook

    first, second = course["first"], course["second"]
    # l1_loss fixed (its points back: all but its device cases, which the wrong one passed too); mse_loss,
    # which ignores `reduction`, still earns only its 'mean' cases
    assert first["grades"]["wrong"] < second["grades"]["wrong"] < FULL
    assert {s: float(row["score"]) for s, row in second["export"].items()} == second["grades"]
    with open_gradebook(f"sqlite:///{course['root'] / 'gradebook.db'}") as gb:
        assert gb.db.query(SubmittedAssignment).count() == len(STUDENTS)
        # one per student and grade cell: each check, and each exercise's visible tests (0 points)
        assert gb.db.query(Grade).count() == len(STUDENTS) * 2 * CHECKS
        assert len(gb.students) == len(STUDENTS)


def test_formgrader_flags_nothing_for_any_kind_of_submission(course):
    """Broken, blank, looping, not JSON: every grade cell has its automatic score, none needs a person."""
    from autograder.gradebook import open_gradebook

    with open_gradebook(f"sqlite:///{course['root'] / 'gradebook.db'}") as gb:
        subs = gb.assignment_submissions(STEM)
        assert sorted(s.student.id for s in subs) == sorted(STUDENTS)
        assert not [s.student.id for s in subs if s.needs_manual_grade]
        for s in subs:
            grades = gb.find_submission_notebook(STEM, STEM, s.student.id).grades
            assert all(g.auto_score is not None and not g.needs_manual_grade for g in grades), s.student.id


def test_nbgrader_feedback_shows_the_runners_scores(course):
    fb = course["nbgrader_feedback"]
    assert sorted(fb) == sorted(STUDENTS)
    for student, score in course["first"]["grades"].items():
        shown = re.search(rf"{STEM} \(Score: ([\d.]+) / {FULL:.1f}\)", fb[student])
        assert shown and float(shown.group(1)) == score, (student, score, shown)
    assert "L1 loss is the absolute error" in fb["wrong"]  # the runner's report is the check cell's output


def _secrets() -> tuple[list[str], list[str]]:
    """Distinctive lines of the hidden checks, and of the solutions."""
    source = json.loads(source_notebook(STEM).read_text())
    hidden = sorted({ln.strip() for c in source["cells"]
                     for block in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END", "".join(c["source"]), re.S)
                     for ln in block.splitlines() if ln.strip()})
    solution = [ln for ln in _solution_lines(STEM) if ln not in hidden]
    assert hidden and len(solution) > 10
    return hidden + ["BEGIN HIDDEN TESTS"], solution


def test_no_feedback_shows_a_hidden_check_or_solution_code(course):
    hidden, solution = _secrets()
    out = course["out"]
    for student in STUDENTS:
        runner = [_text(out / "feedback" / student / f"{STEM}.{ext}") for ext in ("html", "txt")]
        for text in runner:
            assert not [ln for ln in hidden + solution if ln in text], student
        # nbgrader's feedback shows the student's own code, and nothing else of the solutions
        theirs = course["nbgrader_feedback"][student]
        assert not [ln for ln in hidden if ln in theirs], student
        own_code = course["submitted_code"][student]
        assert not [ln for ln in solution if ln in theirs and ln not in own_code], student


def test_feedback_names_each_mistake_and_error(course):
    out = course["out"]
    fb = {s: (out / "feedback" / s / f"{STEM}.txt").read_text() for s in STUDENTS}
    html_fb = {s: _text(out / "feedback" / s / f"{STEM}.html") for s in STUDENTS}
    assert "[PASS] l1_loss: 1/1 point (" in fb["perfect"] and "FAIL" not in fb["perfect"]
    # the first grading's feedback for `wrong` was replaced by the regrade's
    wrong = course["second"]["grades"]["wrong"]
    assert f"Score: {wrong:g}/{FULL:g} points" in fb["wrong"] and "[PASS] l1_loss" in fb["wrong"]
    assert "reduction='none' returns the loss of every element" in fb["wrong"]  # the hint of mse_loss's mistake
    assert "not valid notebook JSON" in fb["broken_json"] and "Download it again" in fb["broken_json"]
    assert "SyntaxError" in fb["syntax_error"] and "Python could not read the cell" in fb["syntax_error"]
    assert "log_softmax is not defined in your notebook" in fb["syntax_error"]
    assert "nll_loss is not defined in your notebook" in fb["deleted_cell"]
    assert "I gave up on cross_entropy" in fb["raises"] and "I gave up on cross_entropy" in html_fb["raises"]
    assert "did not finish within 5 s" in fb["hangs"] and "time limit" in fb["hangs"]
    assert "not answered yet" in fb["untouched"]


def test_a_wrong_answer_gets_input_expected_got_and_hint(tmp_path):
    from autograder.feedback import render_html
    from autograder.grading import grade_submission
    from autograder.report import render_submission
    from tests.conftest import grader

    subs = tmp_path / "submitted"
    _write(subs, "wrong", _student(lambda nb: _set_source(nb, "l1_loss", WRONG_L1)))
    result = grade_submission(grader(STEM), "wrong", subs / "wrong" / STEM, sandboxed=False)  # our own code
    text, page = render_submission(result), html.unescape(re.sub(r"<[^>]+>", "", render_html(result)))
    for shown in (text, page):
        assert "input of shape (7,) (float32), reduction='none'" in shown  # the input described
        assert "L1 loss is the absolute error |input - target|, not the squared error" in shown  # the hint
    assert re.search(r"expected output: \[0\.0952608, .*\n\s+got: +\[0\.00907461, ", text)
    assert "expected output" in page and "your code gave" in page


def test_report_has_the_plots_and_the_students_who_errored(course):
    page = (course["out"] / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 3  # score histogram, pass rates, mistakes
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained
    troubles: dict[str, str] = {}
    for student, kind, details in re.findall(
            r'<tr><td>([^<]+)</td><td class="kind[^"]*">([^<]+)</td><td><code>([^<]*)</code></td></tr>', page):
        troubles[student] = troubles.get(student, "") + html.unescape(f" {kind}: {details}")
    for student, what in (("broken_json", "could not be read"), ("syntax_error", "SyntaxError"),
                          ("deleted_cell", "nll_loss is not defined"), ("raises", "I gave up on cross_entropy"),
                          ("hangs", "did not finish within"), ("untouched", "not answered")):
        assert what in troubles.get(student, ""), (student, troubles.get(student))
    assert "perfect" not in troubles and "wrong" not in troubles


def test_report_command_rebuilds_the_outputs_from_results(course, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(course["out"] / "results", out / "results")
    assert main(["report", "--out", str(out)]) == 0
    assert (out / "grades.csv").read_text() == (course["out"] / "grades.csv").read_text()
    canvas = (out / "canvas_grades.csv").read_text().splitlines()
    assert canvas[0] == f"Student,ID,SIS User ID,SIS Login ID,Section,{STEM},Term total (%)"
    assert len(canvas) == 2 + len(STUDENTS)
    assert sorted(p.parent.name for p in (out / "feedback").glob(f"*/{STEM}.html")) == sorted(STUDENTS)
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_tracebacks_lose_the_hidden_lines_they_quote():
    """nbgrader autograde's traceback of a failing visible test quotes the lines after it, hidden ones too."""
    from autograder.gradebook import ClearHiddenTracebacks

    source = "x = 1\ncheck_close(f(x), 2)\n### BEGIN HIDDEN TESTS\nsecret_check(f)\n### END HIDDEN TESTS"
    frame = ("\x1b[0;32m      1\x1b[0m x = 1\n\x1b[0;32m----> 2\x1b[0m check_close(f(x), 2)\n"
             "\x1b[0;32m      3\x1b[0m \x1b[38;5;66m### BEGIN HIDDEN TESTS\x1b[0m\n"
             "\x1b[0;32m      4\x1b[0m secret_check(f)\n")
    cell = {"cell_type": "code", "source": source,
            "outputs": [{"output_type": "error", "traceback": ["AssertionError", frame, "AssertionError: no"]}]}
    cleaned, _ = ClearHiddenTracebacks().preprocess_cell(cell, {}, 0)
    shown = "\n".join(cleaned["outputs"][0]["traceback"])
    assert "secret_check" not in shown and "HIDDEN" not in shown
    assert "check_close(f(x), 2)" in shown and "AssertionError: no" in shown


@pytest.mark.slow
def test_nbgrader_autograde_feedback_hides_hidden_tests_in_tracebacks(tmp_path):
    """The classic path: `nbgrader autograde` then `generate_feedback` with this course's configuration."""
    root = course_copy(tmp_path)
    _write(root / "submitted", "wrong", _student(lambda nb: _set_source(nb, "l1_loss", WRONG_L1)))
    for step in (("generate_assignment", STEM, "--force"), ("autograde", STEM, "--force", "--create"),
                 ("generate_feedback", STEM, "--force")):
        proc = nbgrader(*step, cwd=root)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    autograded = (root / "autograded" / "wrong" / STEM / f"{STEM}.ipynb").read_text()
    assert "Traceback" in autograded and "BEGIN HIDDEN TESTS" in autograded  # what there was to hide
    page = _text(root / "feedback" / "wrong" / STEM / f"{STEM}.html")
    hidden, _ = _secrets()
    assert "check_close(l1_loss(x, y, reduction=r)" in page  # the failing visible test is shown
    assert not [ln for ln in hidden if ln in page]


def test_status_says_what_happened_to_each_submission(course):
    with (course["out"] / "grades.csv").open() as f:
        status = {row["student_id"]: row["status"] for row in csv.DictReader(f)}
    assert status == {"perfect": "graded", "wrong": "graded", "syntax_error": "syntax-error", "hangs": "timed-out",
                      "broken_json": "unreadable", "deleted_cell": "graded", "raises": "graded",
                      "untouched": "graded"}
    with (course["out"] / "lms_report.csv").open() as f:
        assert {row["student_id"]: row["status"] for row in csv.DictReader(f)} == status


def test_feedback_wording_has_no_double_space_or_raised_time_out(course):
    for student in STUDENTS:
        text = (course["out"] / "feedback" / student / f"{STEM}.txt").read_text()
        assert "(cell  " not in text and ":  (" not in text and "raised your code" not in text, student
        assert not re.search(r"at line \d+: \w+Error.*\(cell \d+, line \d+\)", text), student
    text = (course["out"] / "feedback" / "untouched" / f"{STEM}.txt").read_text()
    # said once, by the check, at the line of the student's own cell (no cell numbers: Jupyter shows none)
    assert text.count("NotImplementedError (line 9 of your answer to l1_loss)") == 1
    assert "the visible tests of l1_loss" not in text
    for student in STUDENTS:
        for ext in ("txt", "html"):
            shown = _text(course["out"] / "feedback" / student / f"{STEM}.{ext}")
            assert not re.search(r"\bcells? \d", shown), (student, ext, re.findall(r".{60}\bcells? \d.{40}", shown))
