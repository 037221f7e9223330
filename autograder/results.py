"""Results of a grading run, their status, and the files a run writes.

OUT/results/<stem>/<student_id>.json   one student's per-check results (shards write disjoint files)
OUT/grades.csv                         student_id,assignment,score,max_score,status: the final scores
                                       (scores.py: course configuration, late penalties, the gradebook's
                                       manual scores), rebuilt by every `grade` and `report`
OUT/canvas_grades.csv, moodle_grades.csv, lms_report.csv   the LMS exports (lms.py)
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from autograder.compare import CaseVerdict
from autograder.problems import ADVISORY, KINDS, Problem


@dataclass
class CheckResult:
    name: str
    grade_id: str
    points: float
    max_points: float
    passed: int
    total: int
    cases: list[CaseVerdict] = field(default_factory=list)
    note: str | None = None  # why the check scored less than its cases say (none is set today)
    note_kind: str | None = None  # the note's problem kind (autograder.problems.KINDS)
    adjusted: str | None = None  # the instructor changed its points: dropped, re-weighted, a manual score

    @property
    def hints(self) -> list[str]:
        seen: list[str] = []
        for v in self.cases:
            for _, hint in v.matched():
                if hint not in seen:
                    seen.append(hint)
        return seen

    @property
    def error(self) -> str | None:
        """The error every failing case raised, when they all raised the same one (e.g. a missing function)."""
        failed = {v.message for v in self.cases if not v.passed and not v.inconclusive}
        if len(failed) == 1:
            (message,) = failed
            if message.startswith("raised "):
                return message.removeprefix("raised ")
        return None

    @property
    def mistakes(self) -> list[str]:
        seen: list[str] = []
        for v in self.cases:
            for mistake, _ in v.matched():
                if mistake not in seen:
                    seen.append(mistake)
        return seen


@dataclass
class SubmissionResult:
    student_id: str
    assignment: str
    notebook: str | None
    checks: list[CheckResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # what the instructor and student should know
    status: str = "graded"  # a key of STATUSES, set by `conclude` from the problems' kinds
    max_score: float = 0.0
    timestamp: str | None = None  # the submission's timestamp.txt (nbgrader collect writes it), as written
    fingerprint: str | None = None  # what was graded and by what (grading.fingerprint): `grade --resume` skips a match
    cells: dict[str, list] = field(default_factory=dict)  # {cell number: [grade_id, role]} (report.cell_roles)

    @property
    def ran(self) -> bool:
        """Whether any of the notebook could be run (a missing or unreadable notebook: nothing was)."""
        return not any(p.kind in NOT_RUN for p in self.problems) and self.status not in NOT_RUN

    @property
    def score(self) -> float:
        return round(sum(c.points for c in self.checks), 2)

    @classmethod
    def from_json(cls, d: dict) -> "SubmissionResult":
        """The inverse of to_json (results written by older runs lack the newer fields)."""
        verdict_fields = set(CaseVerdict.__dataclass_fields__)
        check_fields = set(CheckResult.__dataclass_fields__) - {"cases"}
        checks = [CheckResult(**{k: v for k, v in c.items() if k in check_fields},
                              cases=[CaseVerdict(**{k: v for k, v in case.items() if k in verdict_fields})
                                     for case in c.get("cases", [])])
                  for c in d.get("checks", [])]
        return cls(d["student_id"], d["assignment"], d.get("notebook"), checks,
                   [Problem.from_json(p) for p in d.get("problems", [])],
                   d.get("status", "graded"), float(d.get("max_score", 0.0)), d.get("timestamp"),
                   d.get("fingerprint"), dict(d.get("cells") or {}))

    def summary(self) -> "SubmissionResult":
        """This result in the little memory a class-wide view needs (scores, grades.csv, the LMS
        files, the class report): every check's points and counts, its note, its error, its
        mistakes and hints, and of its cases only one failing case per known mistake matched (the
        report counts students per mistake), without messages but the check's error. A student's own feedback takes the full result
        (`with_cases_of`)."""
        checks = []
        for c in self.checks:
            error = c.error  # kept: every kept case says it, so the summary's `error` is the same
            message = f"raised {error}" if error else ""
            kept: dict[tuple, CaseVerdict] = {}
            for v in c.cases:
                if not v.passed and not v.inconclusive and (v.matched() or (error and not kept)):
                    kept.setdefault(tuple(v.matched()), CaseVerdict(v.label, False, message, mistake=v.mistake,
                                                                    hint=v.hint, mistakes=v.mistakes, hints=v.hints))
            checks.append(replace(c, cases=list(kept.values())))
        return replace(self, checks=checks, problems=list(self.problems))

    def with_cases_of(self, full: "SubmissionResult") -> "SubmissionResult":
        """This result (a summary, its points settled) with the cases of `full`, the same result as
        graded, check by check: what the student's feedback shows."""
        cases = {c.name: c.cases for c in full.checks}
        return replace(self, checks=[replace(c, cases=cases.get(c.name, c.cases)) for c in self.checks])

    def troubles(self) -> list[tuple[str, str]]:
        """(kind, what) for everything that went wrong beyond wrong answers, kind from PROBLEM_KINDS:
        the problems of the run, then the checks whose every failing case raised (grouped by error)."""
        found = [(p.kind, str(p)) for p in self.problems if p.kind not in ADVISORY]
        if not self.ran:
            return found
        by_error: dict[tuple[str, str], list[str]] = {}
        for c in self.checks:
            if c.error:
                where = re.compile(r"\s*\(cell\s+\d+, line \d+\)\s*$")  # the same error in several cells
                error = where.sub("", c.error.splitlines()[0])
                kind = ("unanswered" if error.startswith("NotImplementedError") else
                        "timeout" if "did not finish within" in error else
                        "crash" if "ended the process" in error or "was killed" in error else "error")
                by_error.setdefault((kind, error), []).append(c.name)
            elif c.note and c.note_kind == "timeout":
                by_error.setdefault(("timeout", c.note), []).append(c.name)
        for (kind, error), names in by_error.items():
            found.append((kind, f"{', '.join(names)}: {error}"))
        return found

    def to_json(self) -> dict:
        """The result as plain data (what dataclasses.asdict gives, made without its deep copy:
        every field is a str, number, bool, None or list of str), its score, and each check's
        hints and mistakes."""
        d = {name: getattr(self, name) for name in _RESULT_FIELDS}
        d["checks"] = [_check_json(c) for c in self.checks]
        d["score"] = self.score
        d["problems"] = [p.to_json() for p in self.problems]
        return d


def _copied(v):
    return list(v) if type(v) is list else v


def _check_json(c: CheckResult) -> dict:
    d = {name: getattr(c, name) for name in _CHECK_FIELDS}
    d["cases"] = [{name: _copied(getattr(v, name)) for name in _VERDICT_FIELDS} for v in c.cases]
    d["hints"] = c.hints
    d["mistakes"] = c.mistakes
    return d


_RESULT_FIELDS = [f.name for f in fields(SubmissionResult) if f.name not in ("checks", "problems")]
_CHECK_FIELDS = [f.name for f in fields(CheckResult) if f.name != "cases"]
_VERDICT_FIELDS = [f.name for f in fields(CaseVerdict)]


# What can go wrong with a submission besides wrong answers, from worst to mildest.
PROBLEM_KINDS = KINDS

# A submission's status: what happened to it, in a word, for grades.csv, the LMS report and the class
# report. The first status whose problem kind the result has wins (the order is KINDS's, worst first).
STATUSES = {
    "grader-error": "the grader itself failed on this submission (not the student's fault): grade it again",
    "unreadable": "the notebook could not be read: nothing was run, every check scores 0",
    "missing": "no notebook was submitted: every check scores 0",
    "timed-out": "some code ran past its time limit: graded without it",
    "crashed": "the student's code ended or broke the process running it: graded with what was answered",
    "syntax-error": "a cell is not valid Python: graded without it",
    "renamed": "the notebook was renamed: another notebook was graded in its place",
    "graded": "graded",
}
STATUS_OF_KIND = {"grader-error": "grader-error", "unreadable": "unreadable", "missing": "missing",
                  "timeout": "timed-out", "crash": "crashed", "syntax-error": "syntax-error", "renamed": "renamed"}
NOT_RUN = ("grader-error", "unreadable", "missing")


def status_of(result: SubmissionResult) -> str:
    """The status of `result`, from the kinds of its problems (and of its checks' errors)."""
    kinds = {kind for kind, _ in result.troubles()}
    return next((STATUS_OF_KIND[k] for k in KINDS if k in kinds and k in STATUS_OF_KIND), "graded")


def read_timestamp(folder: Path) -> str | None:
    """The submission's `timestamp.txt` as `nbgrader collect` writes it (None when there is none)."""
    path = Path(folder) / "timestamp.txt"
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text[:100] or None


def conclude(result: SubmissionResult, folder: Path) -> SubmissionResult:
    """Where a result is recorded: its status from its problems, and the submission's timestamp."""
    result.status = status_of(result)
    result.timestamp = read_timestamp(folder)
    return result


def score_of(passed: int, total: int, max_points: float) -> float:
    """Points for a check: its share of passed cases, to 2 decimals.

    The same function scores the runner and the hidden cells under nbgrader.
    """
    if total == 0:
        return 0.0
    return round(max_points * passed / total, 2)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; results are read by other tools and people
    os.replace(tmp, path)


def write_result(out: Path, result: SubmissionResult) -> Path:
    path = Path(out) / "results" / result.assignment / f"{result.student_id}.json"
    atomic_write(path, json.dumps(result.to_json(), sort_keys=True))  # one line: json's C encoder
    return path


def load_submissions(out: Path, assignment: str | None = None) -> list[SubmissionResult]:
    return [SubmissionResult.from_json(d) for d in load_results(out, assignment)]


def load_summaries(out: Path, assignment: str | None = None) -> list[SubmissionResult]:
    """Every result under OUT/results as a `summary`, read one at a time: what the class-wide
    outputs need, in memory that grows by a few kilobytes a student."""
    return [SubmissionResult.from_json(d).summary() for d in iter_results(out, assignment)]


def graded_stems(out: Path) -> list[str]:
    """Every assignment with results under OUT/results, sorted."""
    return sorted(p.name for p in (Path(out) / "results").glob("*") if p.is_dir() and any(p.glob("*.json")))


def load_results(out: Path, assignment: str | None = None) -> list[dict]:
    return list(iter_results(out, assignment))


def result_paths(out: Path, assignment: str | None = None) -> list[Path]:
    """Every result file under OUT/results (of one assignment, or of all), sorted."""
    return sorted((Path(out) / "results").glob(f"{assignment}/*.json" if assignment else "*/*.json"))


def iter_results(out: Path, assignment: str | None = None):
    """Each result under OUT/results as a dict, read one at a time (memory flat in the class size)."""
    for p in result_paths(out, assignment):
        yield json.loads(p.read_text())


class ResultFiles:
    """Every result under OUT/results (of one assignment, or of all), read back one at a time when
    iterated: `python -m autograder report` rebuilds the outputs of any class in the same memory."""

    def __init__(self, out: Path, assignment: str | None = None):
        self.paths = result_paths(out, assignment)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        for path in self.paths:
            yield SubmissionResult.from_json(json.loads(path.read_text()))


class StoredResults:
    """A run's results, read back from OUT one at a time when iterated (`grade_class(keep=False)`),
    so a class of any size is graded in the same memory. A result that could not be written is
    kept as it was; one that can no longer be read back comes out as a grader error."""

    def __init__(self, out: Path, stem: str):
        self.out, self.stem = Path(out), stem
        self.students: list[str] = []
        self.kept: dict[str, SubmissionResult] = {}

    def add(self, result: SubmissionResult, written: bool) -> None:
        self.students.append(result.student_id)
        if not written:
            self.kept[result.student_id] = result

    def __len__(self) -> int:
        return len(self.students)

    def __iter__(self):
        for student in self.students:
            if student in self.kept:
                yield self.kept[student]
                continue
            path = self.out / "results" / self.stem / f"{student}.json"
            try:
                yield SubmissionResult.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                yield SubmissionResult(student, self.stem, None, status="grader-error", problems=[Problem(
                    "grader-error", f"this student's result could not be read back from {path} "
                                    f"({type(exc).__name__}): grade it again")])


def write_grades_csv(out: Path, standings=None) -> Path:
    """OUT/grades.csv: one row per student and assignment, the final score (scores.Standing).

    Without `standings`, the scores of the results under OUT/results as graded (merges shards);
    `python -m autograder report` and `grade` pass the settled standings (course configuration,
    late penalties, the gradebook's manual scores), so the file agrees with `nbgrader export`.
    """
    if standings is None:
        rows = [(r["student_id"], r["assignment"], r["score"], r["max_score"], r["status"]) for r in iter_results(out)]
    else:
        rows = [(s.student_id, s.assignment, s.score, s.max_score, s.status) for s in standings]
    rows.sort(key=lambda r: (r[0], r[1]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_id", "assignment", "score", "max_score", "status"])
    for student, stem, score, max_score, status in rows:
        w.writerow([student, stem, f"{score:g}", f"{max_score:g}", status])
    path = Path(out) / "grades.csv"
    atomic_write(path, buf.getvalue())
    return path
