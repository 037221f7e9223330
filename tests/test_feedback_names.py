"""Feedback names what a student sees: the exercise and the line within their own cell (Jupyter shows no
cell numbers), never a line of the notebook's own code as theirs; each problem once; every failing case
listed (past the first few, folded in the HTML); the class report links only to feedback there is."""
from __future__ import annotations

import html
import re

import pytest

from autograder.feedback import render_html, write_all_feedback
from autograder.grading import grade_submission
from autograder.report import MAX_FAILURES_SHOWN, render_submission
from tests.conftest import grader
from tests.test_instructor import WRONG_L1, _set_source, _student, _write

STEM = "losses"
RAISES_ON_LINE_3 = 'def mse_loss(input, target, reduction="mean"):\n    y = 2\n    raise ValueError("nope")\n'
BAD_HELPER_CALL = ('def l1_loss(input, target, reduction="mean"):\n'
                   '    return apply_reduction((input - target).abs(), "bogus")\n')  # raises in the setup cell
TOP_LEVEL_ERROR = 'def log_softmax(input, dim):\n    return input\n\nundefined_name + 1\n'


def _graded(tmp_path, student: str, *edits):
    subs = tmp_path / "submitted"
    _write(subs, student, _student(*edits))
    return grade_submission(grader(STEM), student, subs / student / STEM, sandboxed=False)  # our own code


def _both(result) -> tuple[str, str]:
    return render_submission(result), html.unescape(re.sub(r"<[^>]+>", " ", render_html(result)))


@pytest.fixture(scope="module")
def unanswered(tmp_path_factory):
    from autograder.course import release_notebook

    tmp = tmp_path_factory.mktemp("unanswered")
    _write(tmp / "submitted", "untouched", release_notebook(STEM).read_text())
    return grade_submission(grader(STEM), "untouched", tmp / "submitted" / "untouched" / STEM, sandboxed=False)


def test_no_cell_numbers_anywhere(unanswered, tmp_path):
    wrong = _graded(tmp_path, "wrong", lambda nb: _set_source(nb, "mse_loss", RAISES_ON_LINE_3),
                    lambda nb: _set_source(nb, "l1_loss", BAD_HELPER_CALL),
                    lambda nb: _set_source(nb, "log_softmax", TOP_LEVEL_ERROR))
    for result in (unanswered, wrong):
        for text in _both(result):
            assert not re.search(r"\bcells? \d", text), re.findall(r".{50}\bcells? \d.{30}", text)


def test_an_unanswered_exercise_is_said_once_at_its_own_line(unanswered):
    text, page = _both(unanswered)
    for shown in (text, page):
        assert shown.count("your answer to l1_loss") == 1, shown
        assert "the visible tests of l1_loss" not in shown  # the check says it: not twice
    assert "NotImplementedError (line 9 of your answer to l1_loss)" in text
    line_9 = _student_line(unanswered, "l1_loss", 9)
    assert "raise NotImplementedError" in line_9  # the line named is the student's own raise


def _student_line(result, exercise: str, n: int) -> str:
    import json

    from autograder.course import release_notebook
    from autograder.notebook import find_cell

    nb = json.loads(release_notebook(STEM).read_text())
    return "".join(find_cell(nb, exercise)["source"]).splitlines()[n - 1]


def test_an_error_in_the_students_cell_names_its_line(tmp_path):
    result = _graded(tmp_path, "wrong", lambda nb: _set_source(nb, "mse_loss", RAISES_ON_LINE_3))
    text, page = _both(result)
    for shown in (text, page):
        assert "ValueError: nope (line 3 of your answer to mse_loss)" in shown
    assert RAISES_ON_LINE_3.splitlines()[2].strip() == 'raise ValueError("nope")'


def test_an_error_inside_the_notebooks_own_code_is_not_given_as_the_students_line(tmp_path):
    result = _graded(tmp_path, "wrong", lambda nb: _set_source(nb, "l1_loss", BAD_HELPER_CALL))
    text, _ = _both(result)
    l1 = text[text.index("[FAIL] l1_loss"):].split("\n\n")[0]
    assert "raised in the notebook's own code, which your code called" in l1
    assert not re.search(r"line \d+", l1), l1  # a line of the setup cell is not one the student wrote


def test_a_cell_that_raises_at_top_level_is_named_by_its_exercise(tmp_path):
    result = _graded(tmp_path, "wrong", lambda nb: _set_source(nb, "log_softmax", TOP_LEVEL_ERROR))
    text, page = _both(result)
    for shown in (text, page):
        assert "Your answer to log_softmax raised NameError at line 4" in shown, shown[:2000]


def test_every_failing_case_is_listed_and_folded_past_the_first(tmp_path):
    result = _graded(tmp_path, "wrong", lambda nb: _set_source(nb, "l1_loss", WRONG_L1))
    check = next(c for c in result.checks if c.name == "l1_loss")
    failed = [v for v in check.cases if not v.passed and not v.inconclusive]
    assert len(failed) > MAX_FAILURES_SHOWN  # else there is nothing to fold
    text = render_submission(result)
    assert "more failing cases" not in text
    block = text[re.search(r"\[(FAIL|PARTIAL)\] l1_loss", text).start():].split("\n\n")[0]
    assert block.count("  Failed on ") == len(failed)
    page = render_html(result)
    folded = page[page.index("<details>"):page.index("</details>")]
    assert f"<summary>{len(failed) - MAX_FAILURES_SHOWN} more failing cases</summary>" in folded
    assert folded.count('class="case"') == len(failed) - MAX_FAILURES_SHOWN
    for v in failed:
        assert html.escape(v.label) in page


def test_class_report_links_only_to_feedback_there_is(tmp_path, unanswered):
    from autograder.class_report import write_report
    from autograder.results import SubmissionResult
    from autograder.scores import Standing

    out = tmp_path / "out"
    write_all_feedback(out, [unanswered])
    never = SubmissionResult("never_submitted", STEM, None, status="missing", max_score=16)
    page = write_report(out, [Standing(unanswered, 0, 0, 0, 16, "graded"),
                              Standing(never, 0, 0, 0, 16, "missing")]).read_text()
    links = re.findall(r'href="([^"#]+)"', page)
    assert links and all((out / link).is_file() for link in links), links
    assert "feedback/untouched/losses.html" in links and "never_submitted/" not in " ".join(links)


def test_a_syntax_error_names_the_exercise_and_its_line(tmp_path):
    result = _graded(tmp_path, "wrong", lambda nb: _set_source(nb, "log_softmax", "def log_softmax(input, dim)\n"
                                                                                    "    return 0\n"))
    text, page = _both(result)
    for shown in (text, page):
        assert "Your answer to log_softmax raised SyntaxError" in shown
        assert "(line 1 of your answer to log_softmax)" in shown
        assert "<cell" not in shown


@pytest.mark.parametrize("message, named", [
    ("cell 33 did not finish within 5 s; graded without that cell",
     "Your answer to detection_loss did not finish within 5 s"),
    ("the cell l1_loss appears 2 times (cells 5, 7); all ran in order", "the cell l1_loss appears 2 times; all ran"),
    ("cell 5 (l1_loss): its nbgrader metadata was changed", "The cell l1_loss: its nbgrader metadata"),
    ("the visible tests of l1_loss (cell 6; they give no points: the hidden checks grade l1_loss) raised "
     "AssertionError at line 9 of cell 5: no", "raised AssertionError at line 9 of your answer to l1_loss: no"),
    ("cell 40 raised NameError at line 2: x", "A code cell you added (the 40th cell from the top) raised NameError"),
    ("ValueError: bad (cell 3, line 13)",
     "ValueError: bad (raised in the notebook's own code, which your code called)"),
])
def test_every_kind_of_message_names_cells_as_the_student_sees_them(message, named):
    from autograder.report import tidy

    cells = {"3": ["setup", "provided"], "5": ["l1_loss", "answer"], "6": ["visible_l1_loss", "visible"],
             "7": ["l1_loss", "answer"], "33": ["detection_loss", "answer"], "40": ["", "other"]}
    shown = tidy(message, cells)
    assert named in shown and not re.search(r"\bcells? \d", shown), shown
