"""The pieces a term relies on, without grading anything: statuses, progress in a log, the term's points,
late penalties as nbgrader computes them, the LMS files, the wording of messages."""
from __future__ import annotations

import csv
import io
import threading
import time
from pathlib import Path

import pytest

from autograder.cli import main
from autograder.compare import CaseVerdict
from autograder.course_config import CourseConfig, CourseConfigError
from autograder.lms import MappingError, write_lms_files
from autograder.problems import Problem
from autograder.progress import Progress
from autograder.report import every_failing_case, render_submission, tidy
from autograder.results import CheckResult, SubmissionResult, load_submissions, status_of, write_result
from autograder.scores import settle


def _result(student="ann", stem="losses", problems=(), checks=None, timestamp=None) -> SubmissionResult:
    checks = checks if checks is not None else [CheckResult("mm", "check_mm", 2.0, 2.0, 4, 4),
                                                CheckResult("mean", "check_mean", 1.0, 2.0, 2, 4)]
    return SubmissionResult(student, stem, f"{stem}.ipynb", checks, list(problems),
                            max_score=sum(c.max_points for c in checks), timestamp=timestamp)


@pytest.mark.parametrize("kinds, status", [
    ((), "graded"),
    (("notebook",), "graded"),
    (("error", "unanswered"), "graded"),
    (("syntax-error",), "syntax-error"),
    (("timeout", "syntax-error"), "timed-out"),
    (("renamed",), "renamed"),
    (("renamed", "crash"), "crashed"),
    (("unreadable",), "unreadable"),
    (("missing",), "missing"),
    (("grader-error", "timeout"), "grader-error"),
])
def test_status_comes_from_the_kinds_of_problems(kinds, status):
    assert status_of(_result(problems=[Problem(k, f"a {k}") for k in kinds])) == status


def test_a_check_that_timed_out_makes_the_submission_timed_out():
    timed_out = CheckResult("mm", "check_mm", 0.0, 2.0, 0, 1, [CaseVerdict("a case", False,
                                                                           "raised did not finish within 60 s")])
    assert status_of(_result(checks=[timed_out])) == "timed-out"


class _Log(io.StringIO):
    def isatty(self):
        return False


def test_progress_in_a_log_names_slow_submissions_and_sums_up():
    log = _Log()
    meter = Progress("losses", 3, stream=log, every=0.05, slow=0.2)
    release = threading.Event()

    def grade(student):
        if student == "slow":
            release.wait(2)
        return _result(student, problems=[Problem("timeout", "x")] if student == "slow" else [])

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        futures = pool.map(meter.timed(grade), ["ann", "slow", "zoe"])
        time.sleep(0.5)
        during = log.getvalue()
        release.set()
        for r in futures:
            r.status = status_of(r)
            meter.done(r)
    summary = meter.close()
    assert "still running: slow for" in during  # the heartbeat names it while it runs
    text = log.getvalue()
    assert "\r" not in text and "losses: 1/3 done" in text and "losses: 3/3 done" in text
    assert "losses: slow took" in text and "(timed-out)" in text
    assert summary.startswith("losses: 3 submissions in ") and "2 graded, 1 timed-out" in summary
    assert "slowest: slow " in summary
    one = Progress("losses", 1, stream=_Log(), show=False)
    one.done(_result())
    assert "1 submission in" in one.close()


def test_dropped_and_reweighted_checks(tmp_path):
    config = CourseConfig(tmp_path, points={"losses": {"mm": 0, "mean": 4}})
    adjusted = config.adjust(_result())
    mm, mean = adjusted.checks
    assert (mm.points, mm.max_points, mean.points, mean.max_points, adjusted.max_score) == (0, 0, 2, 4, 4)
    assert "dropped" in mm.adjusted and "from 2 to 4 points" in mean.adjusted
    assert "[DROPPED] mm: 0/0 points" in render_submission(adjusted)
    assert _result().checks[0].points == 2  # the result itself is unchanged
    with pytest.raises(CourseConfigError, match="names no check"):
        CourseConfig(tmp_path, points={"losses": {"nope": 1}}).adjust(_result())


def _course(tmp: Path, config: str) -> Path:
    (tmp / "nbgrader_config.py").write_text("c = get_config()\n" + config)
    return tmp


@pytest.mark.parametrize("plugin, penalty", [("", 0), ("c.LateSubmissionPlugin.penalty_method = 'zero'\n", 3),
                                             ("c.AssignLatePenalties.plugin_class = 'late_here.PerHour'\n", 1)])
def test_late_penalty_as_nbgrader_applies_it(tmp_path, plugin, penalty):
    (tmp_path / "late_here.py").write_text(
        "from nbgrader.plugins import BasePlugin\nclass PerHour(BasePlugin):\n"
        "    def late_submission_penalty(self, student_id, score, total_seconds_late):\n"
        "        return round(total_seconds_late / 3600)\n")
    course = _course(tmp_path, "c.Autograder.duedates = {'losses': '2026-03-02 17:00:00 Europe/Paris'}\n" + plugin)
    config = CourseConfig.load(course)
    late = _result("late", timestamp="2026-03-02 18:10:00 Europe/Paris")  # 1 h 10 min late
    on_time = _result("early", timestamp="2026-03-02 16:59:00 Europe/Paris")
    never = _result("nostamp")
    by = {s.student_id: s for s in settle([late, on_time, never], config)}
    assert by["late"].seconds_late == 70 * 60 and by["late"].late_penalty == min(penalty, 3)
    assert by["late"].score == 3 - min(penalty, 3) and by["late"].raw_score == 3
    assert by["early"].late_penalty == 0 and by["nostamp"].late_penalty == 0 and not by["early"].late
    text = render_submission(late, by["late"])
    assert "Late: submitted 1 h 10 min after the due date (2026-03-02 16:00 UTC)" in text


def test_a_penalty_larger_than_the_score_is_clamped_as_nbgrader_does(tmp_path):
    (tmp_path / "late_big.py").write_text(
        "from nbgrader.plugins import BasePlugin\nclass Big(BasePlugin):\n"
        "    def late_submission_penalty(self, student_id, score, total_seconds_late):\n        return 100\n")
    config = CourseConfig.load(_course(tmp_path, "c.AssignLatePenalties.plugin_class = 'late_big.Big'\n"
                                                 "c.Autograder.duedates = {'losses': '2026-03-02 17:00:00 UTC'}\n"))
    (s,) = settle([_result(timestamp="2026-03-03 17:00:00 UTC")], config)
    assert (s.late_penalty, s.score) == (3, 0)


def test_lms_files_canvas_moodle_and_report(tmp_path):
    (tmp_path / "ids.csv").write_text("student_id,name,sis_user_id,sis_login_id,section,email,idnumber\n"
                                      "ann,Ann Lee,S1,alee,A,ann@u.example,1001\nbob,Bob Ray,S2,bray,B,bob@u.example,1002\n")
    course = _course(tmp_path, "c.Autograder.lms_students = 'ids.csv'\n"
                               "c.Autograder.lms_assignments = {'losses': {'title': 'Week 1', 'canvas_id': 77}}\n")
    config = CourseConfig.load(course)
    results = [_result("ann"), _result("bob", checks=[CheckResult("mm", "check_mm", 0.5, 2.0, 1, 4)]),
               _result("ann", "tensors", checks=[CheckResult("relu", "check_relu", 1.0, 1.0, 1, 1)]),
               _result("cid", "tensors", checks=[CheckResult("relu", "check_relu", 1.0, 1.0, 1, 1)])]
    files = write_lms_files(tmp_path, settle(results, config), config)
    canvas = files["canvas"].read_text().splitlines()
    # the term total: all points over all possible (no weights), a missing assignment 0
    assert canvas == ["Student,ID,SIS User ID,SIS Login ID,Section,Week 1 (77),tensors,Term total (%)",
                      "    Points Possible,,,,,4,1,100",
                      "Ann Lee,,S1,alee,A,3,1,80", "Bob Ray,,S2,bray,B,0.5,,10", "cid,,,,,,1,20"]
    assert files["moodle"].read_text().splitlines() == ["ID number,Email address,Week 1,tensors,Term total (%)",
                                                        "1001,ann@u.example,3,1,80", "1002,bob@u.example,0.5,,10",
                                                        ",,,1,20"]
    assert files["unmapped"] == ["cid"]
    with files["report"].open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["student_id"], r["lms_id"], r["assignment"], r["status"], r["score"], r["max_score"]) for r in rows][:2] \
        == [("ann", "alee", "losses", "graded", "3", "4"), ("ann", "alee", "tensors", "graded", "1", "1")]
    (tmp_path / "ids.csv").write_text("id,email\n")
    with pytest.raises(MappingError, match="student_id"):
        write_lms_files(tmp_path, settle(results, config), config)


def test_report_applies_new_points_without_regrading(tmp_path):
    out = tmp_path / "out"
    for r in (_result("ann"), _result("bob")):
        write_result(out, r)
    course = _course(tmp_path, "")
    assert main(["report", "--out", str(out), "--course", str(course)]) == 0
    assert "ann,losses,3,4,graded" in (out / "grades.csv").read_text()
    _course(tmp_path, "c.Autograder.points = {'losses': {'mean': 0}}\n")
    assert main(["report", "--out", str(out), "--course", str(course)]) == 0
    assert "ann,losses,2,2,graded" in (out / "grades.csv").read_text()
    assert "Week" not in (out / "canvas_grades.csv").read_text() and ",2,100\n" in (out / "canvas_grades.csv").read_text()
    assert load_submissions(out)[0].checks[1].max_points == 2  # the results on disk keep their points
    assert "DROPPED" in (out / "feedback" / "ann" / "losses.txt").read_text()


def test_messages_read_as_a_person_writes_them():
    assert tidy("NotImplementedError:  (cell  11, line 9)") == "NotImplementedError (cell 11, line 9)"
    assert tidy("the visible tests failed: your code raised at line 6: NotImplementedError:  (cell 11, line 9)") == (
        "the visible tests failed: your code raised NotImplementedError in cell 11, line 9 "
        "(called by line 6 of the check's tests)")
    assert every_failing_case("your code did not finish within 60 s") == \
        "On every failing case, your code did not finish within 60 s"
    assert every_failing_case("ValueError: no") == "Every failing case raised ValueError: no"


def test_a_renamed_notebook_gets_status_renamed(tmp_path):
    from autograder.grading import find_notebook

    (tmp_path / "losses (1).ipynb").write_text("{}")
    notebook, problems = find_notebook(tmp_path, "losses")
    assert notebook.name == "losses (1).ipynb" and [p.kind for p in problems] == ["renamed"]
    assert status_of(_result(problems=problems)) == "renamed"
    (tmp_path / "losses.ipynb").write_text("{}")  # the right name, and an extra notebook: not a rename
    _, problems = find_notebook(tmp_path, "losses")
    assert status_of(_result(problems=problems)) == "graded"


@pytest.mark.parametrize("text", ["2026-12-06 14:05:00.123456 UTC", "2026-12-06 14:05:00 America/New_York",
                                  "2026-12-06 14:05:00 -0500", "2026-12-06 14:05:00 +0130", "2026-12-06T14:05:00Z",
                                  "2026-12-06 14:05:00", "2026-12-06T14:05:00+09:00", "Dec 6 2026 2pm",
                                  "2026-12-06 14:05:00 Europe/Berlin"])
def test_timestamps_are_read_as_nbgrader_reads_them(text):
    """course_config.parse_utc is nbgrader.utils.parse_utc without importing nbgrader."""
    from nbgrader.utils import parse_utc as nbgraders

    from autograder.course_config import parse_time, parse_utc

    assert parse_utc(text) == nbgraders(text)
    assert parse_time(f"  {text}\n") == nbgraders(text)


@pytest.mark.parametrize("text", ["", "   ", "not a time", "2026-13-45 99:00:00", None])
def test_an_unreadable_timestamp_is_none(text):
    from autograder.course_config import parse_time

    assert parse_time(text) is None


def test_reading_a_timestamp_does_not_import_nbgrader():
    import subprocess
    import sys

    code = ("import sys\nfrom autograder.course_config import parse_time\n"
            "assert parse_time('2026-12-06 14:05:00 UTC') is not None\nprint('nbgrader' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
