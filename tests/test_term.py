"""One term on a scratch course, by the instructors' page itself (book/instructors.md, "A term, step by
step"): its shell commands and its configuration blocks are read from the page and run in order, as
written. Only what people do between the commands is the test's: the students' answers, an LMS
download, a grader's score in formgrader, a resubmission. Dates are shifted together (the page's due
date becomes tomorrow). Two assignments (the page's steps 1 to 3 are run for each), four students:
alice and bob through nbgrader's exchange, cara through an LMS (late), dan who never submits.
After every step, every file the runner writes agrees with `nbgrader export` for every student,
formgrader has nothing to grade by hand, and the gradebook holds nothing that did not happen."""
from __future__ import annotations

import csv
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from autograder.cli import main
from autograder.course import course_root, release_notebook, source_notebook
from autograder.notebook import find_cell, without_solution_markers
from tests.conftest import full_points
from tests.nbgrader_course import BIN, nbgrader

pytestmark = pytest.mark.slow

STEMS = ("losses", "tensors")
EXCHANGE_STUDENTS = ("alice", "bob")
LMS_STUDENT = "cara"
STUDENTS = ("alice", "bob", "cara", "dan")  # dan never submits
COURSE_ID = "pytorch-course"
PAGE = course_root() / "book" / "instructors.md"
# Commands of the page a scratch course does not run, and why.
NOT_RUN_HERE = {
    "make venv": "the tests run in the course's .venv already",
    ".venv/bin/jupyter lab": "formgrader's server: the test writes the manual score through nbgrader's API, as it does",
}
WRONG_RELU = "def relu(input):\n    return input.abs()\n"
WRONG_L1 = 'def l1_loss(input, target, reduction="mean"):\n    return apply_reduction((input - target) ** 2, reduction)\n'
DATE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ([A-Za-z_]+/[A-Za-z_]+|UTC)")


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


def page_steps() -> list[tuple[int, str, str]]:
    """(step number, kind, text) of the walkthrough, in order: kind `sh` (one command line, comments
    dropped), `config` (a block to add to nbgrader_config.py) or `file:<name>` (a file to write)."""
    text = PAGE.read_text()
    section = text[text.index("## A term, step by step"):]
    section = section[:section.index("\n## ", 5)]
    steps, step = [], 0
    for m in re.finditer(r"^### (\d+)\.|^```(sh|python)\n(.*?)^```", section, re.S | re.M):
        if m.group(1):
            step = int(m.group(1))
            continue
        kind, body = m.group(2), m.group(3)
        if kind == "sh":
            for line in body.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):
                    steps.append((step, "sh", line))
            continue
        first, _, rest = body.partition("\n")
        if first.strip() == "# in nbgrader_config.py":
            steps.append((step, "config", rest))
        elif re.fullmatch(r"# [\w.]+\.py", first.strip()):
            steps.append((step, "file:" + first.strip()[2:], rest))
        else:
            raise AssertionError(f"a python block of the walkthrough says neither where it goes: {first!r}")
    return steps


class Term:
    """The scratch course, the students' homes, and what has been run."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "course"
        self.ran: list[str] = []
        self.seen: dict = {}
        for stem in STEMS:
            for sub in ("solutions", "exercises"):
                shutil.copytree(course_root() / sub / stem, self.root / sub / stem)
        shutil.copy(course_root() / "nbgrader_config.py", self.root / "nbgrader_config.py")
        # the instructor's own data: the class list, the LMS's ids, cara's notebooks downloaded from the LMS
        (self.root / "students.csv").write_text(
            "id,first_name,last_name,email\n" + "".join(f"{s},{s.title()},Doe,{s}@uni.example\n" for s in STUDENTS))
        (self.root / "lms_students.csv").write_text(
            "student_id,name,sis_user_id,sis_login_id,email,idnumber\n"
            + "".join(f"{s},{s.title()} Doe,S{k}00,{s}@uni.example,{s}@uni.example,S{k}00\n"
                      for k, s in enumerate(STUDENTS, 1)))
        for stem in STEMS:
            (self.root / "downloads" / LMS_STUDENT).mkdir(parents=True, exist_ok=True)
            (self.root / "downloads" / LMS_STUDENT / f"{stem}.ipynb").write_text(json.dumps(answered(stem)))
        self.homes = tmp / "home"
        # each student's nbgrader names the course's exchange (the page: c.Exchange.root, full path)
        self.student_config = (f"c = get_config()\nc.Exchange.root = {str(self.root / 'exchange')!r}\n"
                               f"c.Exchange.cache = {str(tmp / 'cache')!r}\n")
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        page_due = re.search(r'--duedate "([^"]+)"', PAGE.read_text()).group(1)
        self.shift = now + datetime.timedelta(days=1) - self._parse(page_due)

    @staticmethod
    def _parse(text: str) -> datetime.datetime:
        when, zone = DATE.fullmatch(text).groups()
        return datetime.datetime.fromisoformat(when).replace(
            tzinfo=datetime.timezone.utc if zone == "UTC" else ZoneInfo(zone))

    def dated(self, command: str) -> str:
        """The command with each of its dates moved by the same offset (the page's due date: tomorrow)."""
        def moved(m) -> str:
            return f"{(self._parse(m.group(0)) + self.shift).astimezone(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"

        return DATE.sub(moved, command)

    # -- running the page's steps -------------------------------------------------------
    def play(self) -> None:
        for step, kind, text in page_steps():
            stems = STEMS if step <= 3 else (STEMS[0],)  # "every other one is the same with its own stem"
            if kind == "config":
                with (self.root / "nbgrader_config.py").open("a") as f:
                    f.write("\n" + text)
                self.ran.append("config: " + text.strip().splitlines()[0])
            elif kind.startswith("file:"):
                (self.root / kind[5:]).write_text(text)
                self.ran.append(kind)
            else:
                for stem in stems:
                    self.command(text.replace("losses", stem), page=text)
            self.after(step, kind, text)

    def command(self, command: str, *, page: str) -> None:
        self.ran.append(page)
        if page in NOT_RUN_HERE:
            if page == ".venv/bin/jupyter lab":
                self.formgrader()
            return
        command = self.dated(command)
        words = shlex.split(command)
        if words[0] == "nbgrader":  # a student's command, run by each student of the exchange
            for student in EXCHANGE_STUDENTS:
                self.student(student, words)
        elif words[0] == ".venv/bin/nbgrader":
            if words[1:3] == ["collect", "losses"] and "--update" in words:
                self.resubmit("bob", "losses", answered("losses"))  # bob fixed l1_loss
            proc = nbgrader(*words[1:], cwd=self.root)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        elif words[:3] == [".venv/bin/python", "-m", "autograder"]:
            old = Path.cwd()
            os.chdir(self.root)
            try:
                extra = ["--jobs", "2", "--cell-timeout", "20", "--device", "cpu"] if words[3] == "grade" else []
                assert main(words[3:] + extra) == 0, command
            finally:
                os.chdir(old)
        else:  # mkdir, cp, echo: as a shell runs them
            proc = subprocess.run(["bash", "-ec", command], cwd=self.root, capture_output=True, text=True)
            assert proc.returncode == 0, f"{command}\n{proc.stderr}"

    def student(self, student: str, words: list[str]) -> None:
        home = self.homes / student
        home.mkdir(parents=True, exist_ok=True)
        (home / "nbgrader_config.py").write_text(self.student_config)
        if words[1] == "submit":
            stem = words[2]
            wrong = {"bob": {"losses": {"l1_loss": WRONG_L1}, "tensors": {"relu": WRONG_RELU}}}
            nb = answered(stem, **wrong.get(student, {}).get(stem, {}))
            (home / stem / f"{stem}.ipynb").write_text(json.dumps(nb))
        proc = nbgrader(*words[1:], "--student", student, cwd=home)
        assert proc.returncode == 0, f"{student}: {words}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    def resubmit(self, student: str, stem: str, nb: dict) -> None:
        (self.homes / student / stem / f"{stem}.ipynb").write_text(json.dumps(nb))
        proc = nbgrader("submit", stem, "--course", COURSE_ID, "--student", student, cwd=self.homes / student)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def formgrader(self) -> None:
        """What a grader does in formgrader: a manual score for alice's l1_loss (0.5 of 1)."""
        with self.gradebook() as gb:
            grade = gb.find_grade("check_l1_loss", "losses", "losses", "alice")
            grade.manual_score, grade.needs_manual_grade = 0.5, False
            gb.db.commit()

    def gradebook(self):
        from autograder.gradebook import open_gradebook

        return open_gradebook(f"sqlite:///{self.root / 'gradebook.db'}")

    def after(self, step: int, kind: str, text: str) -> None:
        """After a command that writes the files: they agree with nbgrader export, for every step."""
        if kind == "sh" and ("-m autograder" in text or "db assignment add" in text):
            if (self.root / "grading" / "grades.csv").is_file():
                self.seen.setdefault(step, []).append(self.assert_all_agree())

    # -- what the files say -------------------------------------------------------------
    def export(self) -> dict[tuple[str, str], dict]:
        proc = nbgrader("export", "--to", "grading/nbgrader_grades.csv", cwd=self.root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with (self.root / "grading" / "nbgrader_grades.csv").open() as f:
            return {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}

    def csv_rows(self, name: str) -> list[dict]:
        with (self.root / "grading" / name).open() as f:
            return list(csv.DictReader(f))

    def assert_all_agree(self) -> dict[tuple[str, str], dict]:
        """grades.csv, both LMS files, the LMS report, the term summary, the class report and each feedback
        file say what nbgrader export says, for every student and assignment; formgrader flags nothing;
        the gradebook has a submission only for who submitted, and only the assignments given."""
        from autograder.course_config import CourseConfig

        export = self.export()
        graded = sorted({a for _, a in export})
        assert {k for k in export} == {(s, a) for s in STUDENTS for a in graded}
        config = CourseConfig.load(self.root)
        grades = {(r["student_id"], r["assignment"]): r for r in self.csv_rows("grades.csv")}
        report = {(r["student_id"], r["assignment"]): r for r in self.csv_rows("lms_report.csv")}
        term = {r["student_id"]: r for r in self.csv_rows("term.csv")}
        with (self.root / "grading" / "canvas_grades.csv").open() as f:
            canvas = list(csv.reader(f))
        with (self.root / "grading" / "moodle_grades.csv").open() as f:
            moodle = list(csv.reader(f))
        titles = [f"{config.lms_title(a)} ({config.canvas_id(a)})" if config.canvas_id(a) else config.lms_title(a)
                  for a in graded]
        assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *titles, "Term total (%)"]
        assert canvas[1][0].strip() == "Points Possible"
        page = (self.root / "grading" / "report.html").read_text()
        links = re.findall(r'href="(feedback/[^"#]+)"', page)
        assert links and all((self.root / "grading" / link).is_file() for link in links)
        for k, stem in enumerate(graded):
            assert float(canvas[1][5 + k]) == float(export[(STUDENTS[0], stem)]["max_score"])
        for (student, stem), row in export.items():
            score = float(row["score"])
            assert float(grades[(student, stem)]["score"]) == score, (student, stem)
            assert float(grades[(student, stem)]["max_score"]) == float(row["max_score"])
            r = report[(student, stem)]
            assert (float(r["score"]), float(r["raw_score"]), float(r["late_penalty"])) == (
                score, float(row["raw_score"]), float(row["late_submission_penalty"])), (student, stem)
            assert float(term[student][stem]) == score
            c, m = self.lms_rows(student, canvas, moodle, config)
            if config.lms_students:
                assert m[1] == f"{student}@uni.example" and c[2] == f"S{STUDENTS.index(student) + 1}00"
            assert float(c[5 + graded.index(stem)]) == score == float(m[-len(graded) - 1 + graded.index(stem)])
            if student == "dan":
                assert not (self.root / "grading" / "feedback" / student / f"{stem}.html").exists()
                continue
            assert f"Score: {score:g}/{float(row['max_score']):g} points" in \
                (self.root / "grading" / "feedback" / student / f"{stem}.txt").read_text()
            assert re.search(rf"<td>{student}</td><td class=\"num\">{score:g} / {float(row['max_score']):g}</td>",
                             page), (student, stem)
        for student, row in term.items():
            total = sum(float(export[(student, a)]["score"]) for a in graded)
            assert float(row["total_points"]) == round(total, 2)
            assert float(self.lms_rows(student, canvas, moodle, config)[0][-1]) == float(row["total_percent"])
            assert float(self.lms_rows(student, canvas, moodle, config)[1][-1]) == float(row["total_percent"])
        self.assert_gradebook_as_nbgrader_leaves_it(graded)
        return export

    @staticmethod
    def lms_rows(student: str, canvas, moodle, config) -> tuple[list[str], list[str]]:
        """A student's Canvas and Moodle rows: by the mapping file's name and id number once it is
        configured (step 8), by nbgrader's id before."""
        mapped = bool(config.lms_students)
        name, idnumber = ((f"{student.title()} Doe", f"S{STUDENTS.index(student) + 1}00") if mapped
                          else (student, student))
        return (next(line for line in canvas[2:] if line[0] == name),
                next(line for line in moodle[1:] if line[0] == idnumber))

    def assert_gradebook_as_nbgrader_leaves_it(self, graded: list[str]) -> None:
        from nbgrader.api import MissingEntry

        with self.gradebook() as gb:
            assert sorted(a.name for a in gb.assignments) == list(STEMS)  # added in step 1, both
            for stem in graded:
                subs = gb.assignment_submissions(stem)
                assert sorted(s.student.id for s in subs) == ["alice", "bob", "cara"]
                assert not [s.student.id for s in subs if s.needs_manual_grade], "formgrader: needs manual grade"
                with pytest.raises(MissingEntry):
                    gb.find_submission(stem, "dan")


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("term")
    t = Term(tmp)
    old = os.environ.get("AUTOGRADER_COURSE_ROOT")
    os.environ["AUTOGRADER_COURSE_ROOT"] = str(t.root)
    try:
        t.play()
        yield t
    finally:
        if old is None:
            os.environ.pop("AUTOGRADER_COURSE_ROOT", None)
        else:
            os.environ["AUTOGRADER_COURSE_ROOT"] = old


def _export_at(term, step: int) -> dict:
    return term.seen[step][-1]


def test_every_step_of_the_page_is_run_in_order(term):
    documented = [text if kind == "sh" else ("config: " + text.strip().splitlines()[0] if kind == "config" else kind)
                  for _, kind, text in page_steps()]
    assert len(documented) >= 20
    ran = [c for k, c in enumerate(term.ran) if k == 0 or c != term.ran[k - 1]]  # steps 1-3: once per stem
    assert ran == documented
    assert not [c for c in NOT_RUN_HERE if c not in documented]
    assert not [c for c in documented if c.startswith("sudo") or "/srv/" in c], "a step needs root"
    instructor = [c for c in documented if c.startswith("nbgrader ") and not re.match(
        r"nbgrader (fetch_assignment|submit|fetch_feedback) ", c)]
    assert not instructor, f"an instructor's command without the course's .venv/bin/: {instructor}"
    assert Path(BIN / "nbgrader").is_file() and Path(BIN / "jupyter").is_file()


def test_late_submission_gets_nbgraders_penalty(term):
    export = _export_at(term, 4)
    late = export[("cara", "losses")]
    assert float(late["late_submission_penalty"]) == 3 and float(late["score"]) == float(late["raw_score"]) - 3
    assert all(float(r["late_submission_penalty"]) == 0 for (s, _), r in export.items() if s != "cara")
    text = (term.root / "grading" / "feedback" / "cara" / "losses.txt").read_text()
    assert "Late: submitted 3 h 10 min after the due date" in text and "late penalty 3 points" in text
    assert "submitted 3 h 10 min after the due date" in (term.root / "grading" / "report.html").read_text()


def test_manual_score_flows_into_every_file(term):
    before, after = _export_at(term, 4)[("alice", "losses")], _export_at(term, 5)[("alice", "losses")]
    assert float(before["score"]) == full_points("losses") and float(after["score"]) == full_points("losses") - 0.5
    text = (term.root / "grading" / "feedback" / "alice" / "losses.txt").read_text()
    assert "score set by your instructor: 0.5 points" in text


def test_regrade_of_one_student_changes_only_theirs(term):
    before, after = _export_at(term, 5), _export_at(term, 6)
    assert float(before[("bob", "losses")]["score"]) < full_points("losses") == float(after[("bob", "losses")]["score"])
    assert {k: r["score"] for k, r in before.items() if k != ("bob", "losses")} == \
        {k: r["score"] for k, r in after.items() if k != ("bob", "losses")}


def test_dropped_and_reweighted_checks_change_the_maximum_everywhere(term):
    before, after = _export_at(term, 6), _export_at(term, 7)
    for student in STUDENTS:  # detection_loss (2 points) dropped, mse_loss 1 -> 2
        assert float(after[(student, "losses")]["max_score"]) == float(before[(student, "losses")]["max_score"]) - 1
    text = (term.root / "grading" / "feedback" / "alice" / "losses.txt").read_text()
    assert "[DROPPED] detection_loss: 0/0 points" in text and "dropped by the instructor" in text


def test_the_term_summary_totals_match_nbgrader_export(term):
    export = _export_at(term, 8)
    rows = {r["student_id"]: r for r in term.csv_rows("term.csv")}
    assert sorted(rows) == sorted(STUDENTS)
    for student, row in rows.items():  # weights 1 and 1: the mean of the two fractions
        fractions = [float(export[(student, a)]["score"]) / float(export[(student, a)]["max_score"]) for a in STEMS]
        assert float(row["total_percent"]) == pytest.approx(100 * sum(fractions) / 2, abs=0.01)
    assert float(rows["dan"]["total_points"]) == 0
    assert "Term summary" in (term.root / "grading" / "term.html").read_text()


def test_feedback_is_released_to_everyone_who_submitted(term):
    released = list((term.root / "exchange" / COURSE_ID / "feedback").glob("*.html"))
    assert len(released) == 3  # alice, bob (exchange) and cara (LMS)
    for student in EXCHANGE_STUDENTS:
        fetched = list((term.homes / student).glob("losses/feedback/*/losses.html"))
        assert fetched, f"fetch_feedback brought {student} nothing"
        page = fetched[0].read_text()
        assert "BEGIN HIDDEN TESTS" not in page and "MathJax, inlined" in page and "cdnjs" not in page
