"""One term on a scratch course, by the commands of the instructors' page (book/instructors.md, "A term,
step by step"), run as they are written: two assignments through nbgrader's exchange, a late
submission with a penalty, a manual score in the gradebook (what formgrader writes), a regrade of one
student, a dropped check, exports for Canvas and Moodle. After every step, every file the runner
writes agrees with `nbgrader export` for every student."""
from __future__ import annotations

import csv
import datetime
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from autograder.cli import main
from autograder.course import course_root, release_notebook, source_notebook
from autograder.notebook import find_cell, without_solution_markers
from autograder.reference import check_points
from tests.nbgrader_course import nbgrader

pytestmark = pytest.mark.slow

STEMS = ("losses", "tensors")
LOSSES_MAX = sum(check_points("losses").values())  # full marks, from the source notebook
STUDENTS = ("alice", "bob", "cara")
COURSE_ID = "pytorch-course"
PAGE = course_root() / "book" / "instructors.md"
# Commands of the walkthrough a scratch course cannot run, and where they are covered instead.
NOT_RUN_HERE = {
    "sudo mkdir -p /srv/nbgrader/exchange": "a system folder; the test uses a scratch exchange (c.Exchange.root)",
    "sudo chmod ugo+rwx /srv/nbgrader/exchange": "idem",
    "jupyter lab": "starts formgrader's server; the test writes the manual score through nbgrader's API, as it does",
}
WRONG_RELU = "def relu(input):\n    return input.abs()\n"
WRONG_L1 = 'def l1_loss(input, target, reduction="mean"):\n    return apply_reduction((input - target) ** 2, reduction)\n'


def answered(stem: str, **wrong: str) -> dict:
    """The release notebook with every solution cell answered as the source does, but for `wrong`."""
    nb = json.loads(release_notebook(stem).read_text())
    source = json.loads(source_notebook(stem).read_text())
    for cell in source["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            code = wrong.get(meta["grade_id"], without_solution_markers("".join(cell["source"])))
            find_cell(nb, meta["grade_id"])["source"] = code
    return nb


def page_commands() -> list[str]:
    """The command lines of the page's walkthrough (its ```sh blocks), comments dropped."""
    text = PAGE.read_text()
    section = text[text.index("## A term, step by step"):]
    section = section[:section.index("\n## ", 5)] if "\n## " in section[5:] else section
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def normal(command: str) -> tuple[str, ...]:
    """A command's words, with dates as <time> and the --student option of student-side commands dropped
    (on a shared machine the test submits as each student; a student's own account says who they are)."""
    words = shlex.split(command)
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w == "--student" and any(x in words for x in ("fetch_assignment", "submit", "fetch_feedback")):
            skip = True
            continue
        out.append("<time>" if re.match(r"^\d{4}-\d\d-\d\d", w) else w)
    return tuple(out)


class Term:
    """The scratch course and the commands run in it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "course"
        self.exchange = tmp / "exchange"
        self.exchange.mkdir()
        self.ran: list[str] = []
        for stem in STEMS:
            for sub in ("solutions", "exercises"):
                shutil.copytree(course_root() / sub / stem, self.root / sub / stem)
        config = (course_root() / "nbgrader_config.py").read_text()
        config += (f"\nc.CourseDirectory.course_id = {COURSE_ID!r}\nc.Exchange.root = {str(self.exchange)!r}\n"
                   "c.AssignLatePenalties.plugin_class = 'late.SubMarks'\n"
                   "c.Autograder.lms_students = 'lms_students.csv'\n"
                   "c.Autograder.lms_assignments = {'losses': {'title': 'Week 1: losses', 'canvas_id': 101},"
                   " 'tensors': {'title': 'Week 2: tensors', 'canvas_id': 102}}\n")
        (self.root / "nbgrader_config.py").write_text(config)
        # the plugin of nbgrader's documentation: 1 point per hour late
        (self.root / "late.py").write_text(
            "from nbgrader.plugins import BasePlugin\n\n\nclass SubMarks(BasePlugin):\n"
            "    def late_submission_penalty(self, student_id, score, total_seconds_late):\n"
            "        return round(total_seconds_late / 3600)\n")
        (self.root / "students.csv").write_text(
            "id,first_name,last_name,email\n" + "".join(f"{s},{s.title()},Doe,{s}@uni.example\n" for s in STUDENTS))
        (self.root / "lms_students.csv").write_text(
            "student_id,name,sis_user_id,sis_login_id,email,idnumber\n"
            + "".join(f"{s},{s.title()} Doe,S{k}00,{s}@uni.example,{s}@uni.example,S{k}00\n"
                      for k, s in enumerate(STUDENTS, 1)))
        self.student_home = tmp / "home"
        self.student_home.mkdir()
        (self.student_home / "nbgrader_config.py").write_text(f"c = get_config()\nc.Exchange.root = {str(self.exchange)!r}\n")

    def run(self, command: str, *, student: str | None = None) -> str:
        """Run one command of the page in the course (or, for a student, in their home)."""
        self.ran.append(command)
        words = shlex.split(command)
        cwd = self.root
        if student:
            cwd = self.student_home / student
            cwd.mkdir(exist_ok=True)
            shutil.copy(self.student_home / "nbgrader_config.py", cwd / "nbgrader_config.py")
            words += ["--student", student]
        if words[0] == "nbgrader":
            proc = nbgrader(*words[1:], cwd=cwd)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            return proc.stdout + proc.stderr
        assert words[:3] == [".venv/bin/python", "-m", "autograder"], command
        old = Path.cwd()
        os.chdir(self.root)
        try:
            assert main(words[3:] + (["--jobs", "2", "--cell-timeout", "10"] if words[3] == "grade" else [])) == 0, \
                command
        finally:
            os.chdir(old)
        return ""

    def submit(self, student: str, stem: str, nb: dict) -> None:
        if not (self.student_home / student / stem).is_dir():
            self.run(f"nbgrader fetch_assignment {stem} --course {COURSE_ID}", student=student)
        (self.student_home / student / stem / f"{stem}.ipynb").write_text(json.dumps(nb))
        self.run(f"nbgrader submit {stem} --course {COURSE_ID}", student=student)

    # -- what the files say -------------------------------------------------------------
    def export(self) -> dict[tuple[str, str], dict]:
        self.run("nbgrader export --to grading/nbgrader_grades.csv")
        with (self.root / "grading" / "nbgrader_grades.csv").open() as f:
            return {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}

    def csv_rows(self, name: str) -> list[dict]:
        with (self.root / "grading" / name).open() as f:
            return list(csv.DictReader(f))

    def assert_all_agree(self) -> dict[tuple[str, str], dict]:
        """grades.csv, both LMS files, the LMS report, the class report and each feedback file say what
        nbgrader export says, for every student and assignment."""
        export = self.export()
        assert {k for k in export} == {(s, a) for s in STUDENTS for a in STEMS}
        grades = {(r["student_id"], r["assignment"]): r for r in self.csv_rows("grades.csv")}
        report = {(r["student_id"], r["assignment"]): r for r in self.csv_rows("lms_report.csv")}
        with (self.root / "grading" / "canvas_grades.csv").open() as f:
            canvas = list(csv.reader(f))
        with (self.root / "grading" / "moodle_grades.csv").open() as f:
            moodle = list(csv.reader(f))
        titles = {"losses": "Week 1: losses (101)", "tensors": "Week 2: tensors (102)"}
        assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *titles.values()]
        assert canvas[1][0].strip() == "Points Possible"
        assert moodle[0] == ["ID number", "Email address", "Week 1: losses", "Week 2: tensors"]
        page = (self.root / "grading" / "report.html").read_text()
        for k, stem in enumerate(STEMS):
            max_score = float(export[(STUDENTS[0], stem)]["max_score"])
            assert float(canvas[1][5 + k]) == max_score
        for (student, stem), row in export.items():
            score = float(row["score"])
            assert float(grades[(student, stem)]["score"]) == score, (student, stem)
            assert float(grades[(student, stem)]["max_score"]) == float(row["max_score"])
            r = report[(student, stem)]
            assert (float(r["score"]), float(r["raw_score"]), float(r["late_penalty"])) == (
                score, float(row["raw_score"]), float(row["late_submission_penalty"])), (student, stem)
            n = STUDENTS.index(student) + 1
            assert r["lms_id"] == f"{student}@uni.example"
            assert float(next(c for c in canvas if c[2] == f"S{n}00")[5 + STEMS.index(stem)]) == score
            assert float(next(m for m in moodle if m[0] == f"S{n}00")[2 + STEMS.index(stem)]) == score
            assert f"Score: {score:g}/{float(row['max_score']):g} points" in \
                (self.root / "grading" / "feedback" / student / f"{stem}.txt").read_text()
            assert re.search(rf"<td>{student}</td><td class=\"num\">{score:g} / {float(row['max_score']):g}</td>",
                             page), (student, stem)
        return export


def _utc(dt: datetime.datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("term")
    t = Term(tmp)
    old = os.environ.get("AUTOGRADER_COURSE_ROOT")
    os.environ["AUTOGRADER_COURSE_ROOT"] = str(t.root)
    try:
        yield _play(t)
    finally:
        if old is None:
            os.environ.pop("AUTOGRADER_COURSE_ROOT", None)
        else:
            os.environ["AUTOGRADER_COURSE_ROOT"] = old


def _play(t: Term) -> dict:
    seen: dict = {}
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    due = {"losses": now + datetime.timedelta(days=1), "tensors": now + datetime.timedelta(days=8)}
    # set up the course and the exchange
    t.run("nbgrader db student import students.csv")
    for stem in STEMS:
        t.run(f'nbgrader db assignment add {stem} --duedate "{_utc(due[stem])}"')
    # release, students fetch and submit, collect
    for stem in STEMS:
        t.run(f"nbgrader release_assignment {stem}")
    t.submit("alice", "losses", answered("losses"))
    t.submit("bob", "losses", answered("losses", l1_loss=WRONG_L1))
    t.submit("cara", "losses", answered("losses"))
    t.submit("alice", "tensors", answered("tensors"))
    t.submit("bob", "tensors", answered("tensors", relu=WRONG_RELU))
    t.submit("cara", "tensors", answered("tensors"))
    for stem in STEMS:
        t.run(f"nbgrader collect {stem}")
    # cara's tensors came in 3 h 10 min after the due date (as an LMS or e-mail would record it)
    (t.root / "submitted" / "cara" / "tensors" / "timestamp.txt").write_text(
        _utc(due["tensors"] + datetime.timedelta(hours=3, minutes=10)))
    # grade both assignments into the gradebook
    for stem in STEMS:
        t.run(f".venv/bin/python -m autograder grade {stem} --submissions submitted --out grading --gradebook auto")
    seen["graded"] = t.assert_all_agree()

    # formgrader: a manual score for alice's l1_loss (0.5 of 1)
    from autograder.gradebook import open_gradebook

    with open_gradebook(f"sqlite:///{t.root / 'gradebook.db'}") as gb:
        gb.find_grade("check_l1_loss", "losses", "losses", "alice").manual_score = 0.5
        gb.db.commit()
    t.run(".venv/bin/python -m autograder report --out grading --gradebook auto")
    seen["manual"] = t.assert_all_agree()

    # bob fixes l1_loss and resubmits; only bob is collected and graded again
    t.submit("bob", "losses", answered("losses"))
    t.run("nbgrader collect losses --update --student bob")
    t.run(".venv/bin/python -m autograder grade losses --submissions submitted --out grading --gradebook auto "
          "--student bob")
    seen["regraded"] = t.assert_all_agree()

    # mm found unfair: dropped in the course configuration, applied by the next report
    with (t.root / "nbgrader_config.py").open("a") as f:
        f.write("c.Autograder.points = {'tensors': {'mm': 0}}\n")
    t.run(".venv/bin/python -m autograder report --out grading --gradebook auto")
    seen["dropped"] = t.assert_all_agree()

    # feedback to students
    for stem in STEMS:
        t.run(f"nbgrader generate_feedback {stem}")
        t.run(f"nbgrader release_feedback {stem}")
    t.run(f"nbgrader fetch_feedback losses --course {COURSE_ID}", student="alice")
    seen["root"] = t.root
    seen["ran"] = list(t.ran)
    return seen


def test_every_command_of_the_walkthrough_is_run(term):
    ran = {normal(c) for c in term["ran"]}
    documented = page_commands()
    assert len(documented) >= 15
    missing = [c for c in documented if normal(c) not in ran and c not in NOT_RUN_HERE]
    assert not missing, missing
    stale = [c for c in NOT_RUN_HERE if c not in documented]
    assert not stale, stale


def test_late_submission_gets_nbgraders_penalty(term):
    export = term["graded"]
    late = export[("cara", "tensors")]
    assert float(late["late_submission_penalty"]) == 3 and float(late["score"]) == float(late["raw_score"]) - 3
    assert all(float(r["late_submission_penalty"]) == 0 for k, r in export.items() if k != ("cara", "tensors"))
    text = (term["root"] / "grading" / "feedback" / "cara" / "tensors.txt").read_text()
    assert "Late: submitted 3 h 10 min after the due date" in text and "late penalty 3 points" in text
    assert "submitted 3 h 10 min after the due date" in (term["root"] / "grading" / "report.html").read_text()


def test_manual_score_flows_into_every_file(term):
    before, after = term["graded"][("alice", "losses")], term["manual"][("alice", "losses")]
    # l1_loss's 1 point set to 0.5 by hand
    assert float(before["score"]) == LOSSES_MAX and float(after["score"]) == LOSSES_MAX - 0.5
    text = (term["root"] / "grading" / "feedback" / "alice" / "losses.txt").read_text()
    assert "score set by your instructor: 0.5 points" in text


def test_regrade_of_one_student_changes_only_theirs(term):
    before, after = term["manual"], term["regraded"]
    assert float(before[("bob", "losses")]["score"]) < LOSSES_MAX == float(after[("bob", "losses")]["score"])
    assert {k: r["score"] for k, r in before.items() if k != ("bob", "losses")} == \
        {k: r["score"] for k, r in after.items() if k != ("bob", "losses")}


def test_dropped_check_lowers_the_maximum_everywhere(term):
    before, after = term["regraded"], term["dropped"]
    for student in STUDENTS:
        assert float(after[(student, "tensors")]["max_score"]) == float(before[(student, "tensors")]["max_score"]) - 2
    text = (term["root"] / "grading" / "feedback" / "alice" / "tensors.txt").read_text()
    assert "[DROPPED] mm: 0/0 points" in text and "dropped by the instructor" in text


def test_students_get_feedback_through_the_exchange(term):
    fetched = list((term["root"].parent / "home" / "alice").glob("losses/feedback/*/losses.html"))
    assert fetched, "fetch_feedback brought nothing"
    assert "BEGIN HIDDEN TESTS" not in fetched[0].read_text()
