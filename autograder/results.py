"""Results of a grading run, and the files it writes.

OUT/results/<student_id>.json   one student's per-check results (shards write disjoint files)
OUT/grades.csv                  student_id,assignment,score,max_score,status (rebuilt from results/)
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.compare import CaseVerdict


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

    @property
    def hints(self) -> list[str]:
        seen: list[str] = []
        for v in self.cases:
            if v.hint and v.hint not in seen:
                seen.append(v.hint)
        return seen

    @property
    def mistakes(self) -> list[str]:
        seen: list[str] = []
        for v in self.cases:
            if v.mistake and v.mistake not in seen:
                seen.append(v.mistake)
        return seen


@dataclass
class SubmissionResult:
    student_id: str
    assignment: str
    notebook: str | None
    checks: list[CheckResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the instructor and student should know
    status: str = "graded"  # graded | unreadable | missing
    max_score: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(c.points for c in self.checks), 2)

    def to_json(self) -> dict:
        d = asdict(self)
        d["score"] = self.score
        for c, obj in zip(d["checks"], self.checks):
            c["hints"] = obj.hints
            c["mistakes"] = obj.mistakes
        return d


def score_of(passed: int, total: int, max_points: float) -> float:
    """Points for a check: its share of passed cases, to 2 decimals.

    The same function scores the runner and the hidden cells under nbgrader.
    """
    if total == 0:
        return 0.0
    return round(max_points * passed / total, 2)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_result(out: Path, result: SubmissionResult) -> Path:
    path = Path(out) / "results" / result.assignment / f"{result.student_id}.json"
    _atomic_write(path, json.dumps(result.to_json(), indent=1, sort_keys=True))
    return path


def load_results(out: Path, assignment: str | None = None) -> list[dict]:
    base = Path(out) / "results"
    pattern = f"{assignment}/*.json" if assignment else "*/*.json"
    return [json.loads(p.read_text()) for p in sorted(base.glob(pattern))]


def write_grades_csv(out: Path) -> Path:
    """Rebuild OUT/grades.csv from every result under OUT/results (merges shards)."""
    rows = load_results(out)
    rows.sort(key=lambda r: (r["student_id"], r["assignment"]))
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_id", "assignment", "score", "max_score", "status"])
    for r in rows:
        w.writerow([r["student_id"], r["assignment"], f"{r['score']:g}", f"{r['max_score']:g}", r["status"]])
    path = Path(out) / "grades.csv"
    _atomic_write(path, buf.getvalue())
    return path
