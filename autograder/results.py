"""Results of a grading run, and the files it writes.

OUT/results/<stem>/<student_id>.json   one student's per-check results (shards write disjoint files)
OUT/grades.csv                         student_id,assignment,score,max_score,status (rebuilt from results/)
OUT/lms_grades.csv                     student_id,<stem>...,total: one row per student (rebuilt from results/)
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.compare import CaseVerdict
from autograder.problems import KINDS, Problem


@dataclass
class CheckResult:
    name: str
    grade_id: str
    points: float
    max_points: float
    passed: int
    total: int
    cases: list[CaseVerdict] = field(default_factory=list)
    note: str | None = None  # e.g. the visible tests in the check cell failed
    note_kind: str | None = None  # the note's problem kind (autograder.problems.KINDS)

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
        failed = {v.message for v in self.cases if not v.passed}
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
    status: str = "graded"  # graded | unreadable | missing | grader-error
    max_score: float = 0.0

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
                   d.get("status", "graded"), float(d.get("max_score", 0.0)))

    def troubles(self) -> list[tuple[str, str]]:
        """(kind, what) for everything that went wrong beyond wrong answers, kind from PROBLEM_KINDS:
        the problems of the run, then the checks whose every failing case raised (grouped by error)."""
        found = [(p.kind, str(p)) for p in self.problems]
        if self.status != "graded":
            return found
        by_error: dict[tuple[str, str], list[str]] = {}
        for c in self.checks:
            if c.error:
                where = re.compile(r"\s*\(cell\s+\d+, line \d+\)\s*$")  # the same error in several cells
                error = where.sub("", c.error.splitlines()[0])
                kind = "unanswered" if error.startswith("NotImplementedError") else "error"
                by_error.setdefault((kind, error), []).append(c.name)
            elif c.note and c.note_kind == "timeout":
                by_error.setdefault(("timeout", c.note), []).append(c.name)
        for (kind, error), names in by_error.items():
            found.append((kind, f"{', '.join(names)}: {error}"))
        return found

    def to_json(self) -> dict:
        d = asdict(self)
        d["score"] = self.score
        d["problems"] = [p.to_json() for p in self.problems]
        for c, obj in zip(d["checks"], self.checks):
            c["hints"] = obj.hints
            c["mistakes"] = obj.mistakes
        return d


# What can go wrong with a submission besides wrong answers, from worst to mildest.
PROBLEM_KINDS = KINDS


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
    atomic_write(path, json.dumps(result.to_json(), indent=1, sort_keys=True))
    return path


def load_submissions(out: Path, assignment: str | None = None) -> list[SubmissionResult]:
    return [SubmissionResult.from_json(d) for d in load_results(out, assignment)]


def graded_stems(out: Path) -> list[str]:
    """Every assignment with results under OUT/results, sorted."""
    return sorted(p.name for p in (Path(out) / "results").glob("*") if p.is_dir() and any(p.glob("*.json")))


def load_results(out: Path, assignment: str | None = None) -> list[dict]:
    base = Path(out) / "results"
    pattern = f"{assignment}/*.json" if assignment else "*/*.json"
    return [json.loads(p.read_text()) for p in sorted(base.glob(pattern))]


def write_grades_csv(out: Path) -> Path:
    """Rebuild OUT/grades.csv from every result under OUT/results (merges shards)."""
    rows = load_results(out)
    rows.sort(key=lambda r: (r["student_id"], r["assignment"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_id", "assignment", "score", "max_score", "status"])
    for r in rows:
        w.writerow([r["student_id"], r["assignment"], f"{r['score']:g}", f"{r['max_score']:g}", r["status"]])
    path = Path(out) / "grades.csv"
    atomic_write(path, buf.getvalue())
    return path


def write_lms_csv(out: Path) -> Path:
    """OUT/lms_grades.csv: one row per student, one column per assignment graded into OUT, then the total.

    A student with no result for an assignment gets an empty cell there (not
    graded) and the total of what was graded. Maximum scores are in grades.csv.
    """
    stems = graded_stems(out)
    scores: dict[str, dict[str, float]] = {}
    for r in load_results(out):
        scores.setdefault(r["student_id"], {})[r["assignment"]] = r["score"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_id", *stems, "total"])
    for student in sorted(scores):
        mine = scores[student]
        w.writerow([student, *(f"{mine[s]:g}" if s in mine else "" for s in stems),
                    f"{round(sum(mine.values()), 2):g}"])
    path = Path(out) / "lms_grades.csv"
    atomic_write(path, buf.getvalue())
    return path
