"""One source of scores: the final score of every student on every assignment, settled once.

Every file a run writes (grades.csv, the feedback, report.html, the LMS
exports) takes its scores from `settle`, never from the results directly:

- without a gradebook: each result with the course's points (course_config:
  dropped and re-weighted checks), then the late penalty (the due date of
  `c.Autograder.duedates`, the submission's `timestamp.txt`, nbgrader's
  late-penalty plugin);
- with a gradebook: what the gradebook holds, read exactly as `nbgrader export`
  reads it (the submission's score, with every manual score a grader gave in
  formgrader, minus its late penalty, never below 0; the assignment's maximum).
  The gradebook's students with no submission are listed as `missing`, 0, as
  `nbgrader export` lists them. So the files and `nbgrader export` never disagree.
"""
from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field

from autograder.course_config import CourseConfig, parse_time
from autograder.problems import Problem
from autograder.results import CheckResult, SubmissionResult, status_of


def _status(r: SubmissionResult) -> str:
    """The recorded status, or, for a result recorded as graded (by an older run too), its problems' status."""
    return r.status if r.status != "graded" else status_of(r)


@dataclass
class Standing:
    """A student's final standing on one assignment."""

    result: SubmissionResult  # the points shown check by check (course points, manual scores folded in)
    raw_score: float
    late_penalty: float
    score: float
    max_score: float
    status: str
    duedate: datetime.datetime | None = None  # naive UTC, as nbgrader stores it
    submitted: datetime.datetime | None = None
    seconds_late: float = 0.0
    manual: list[str] = field(default_factory=list)  # checks whose score a grader set
    source: str = "results"  # or "gradebook"

    @property
    def student_id(self) -> str:
        return self.result.student_id

    @property
    def assignment(self) -> str:
        return self.result.assignment

    @property
    def late(self) -> bool:
        return self.seconds_late > 0

    def late_text(self) -> str | None:
        """'submitted 2 h 5 min after the due date: late penalty 2 points', or None when on time."""
        if not self.late:
            return None
        minutes = int(self.seconds_late // 60)
        days, rest = divmod(minutes, 24 * 60)
        hours, minutes = divmod(rest, 60)
        parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
        how = " ".join(p for p in parts if p) or f"{self.seconds_late:.0f} s"
        penalty = (f"late penalty {self.late_penalty:g} point{'s' if self.late_penalty != 1 else ''}"
                   if self.late_penalty else "no late penalty")
        return f"submitted {how} after the due date ({self.duedate:%Y-%m-%d %H:%M} UTC): {penalty}"


def _finite(x) -> float:
    return round(float(x or 0.0), 2)


def from_results(results: list[SubmissionResult], config: CourseConfig) -> list[Standing]:
    out = []
    for r in results:
        adjusted = config.adjust(r)
        raw = adjusted.score
        due, submitted = config.duedate(r.assignment), parse_time(r.timestamp)
        seconds = max(0.0, (submitted - due).total_seconds()) if due and submitted else 0.0
        penalty = config.late_penalty(r.student_id, raw, seconds) or 0.0
        out.append(Standing(adjusted, raw, _finite(penalty), _finite(max(0.0, raw - penalty)), adjusted.max_score,
                            _status(r), due, submitted, seconds))
    return out


def from_gradebook(results: list[SubmissionResult], config: CourseConfig, db_url: str) -> list[Standing]:
    """The gradebook's scores for every assignment in `results`, for every student in the gradebook."""
    from nbgrader.api import MissingEntry

    from autograder.gradebook import open_gradebook

    by_key = {(r.assignment, r.student_id): config.adjust(r) for r in results}
    out: list[Standing] = []
    with open_gradebook(db_url) as gb:
        for stem in sorted({r.assignment for r in results}):
            try:
                assignment = gb.find_assignment(stem)
            except MissingEntry:
                raise ValueError(f"the gradebook {db_url} has no assignment {stem!r}: write it first "
                                 f"(`python -m autograder report --gradebook auto`)") from None
            for student in gb.students:
                result = by_key.get((stem, student.id))
                try:
                    sub = gb.find_submission(stem, student.id)
                except MissingEntry:
                    missing = result or SubmissionResult(student.id, stem, None, status="missing",
                                                         max_score=_finite(assignment.max_score),
                                                         problems=[Problem("missing", "no submission")])
                    out.append(Standing(missing, 0.0, 0.0, 0.0, _finite(assignment.max_score), "missing",
                                        assignment.duedate, source="gradebook"))
                    continue
                shown = copy.deepcopy(result) if result is not None else SubmissionResult(
                    student.id, stem, f"{stem}.ipynb", status="graded")
                checks = {c.grade_id: c for c in shown.checks}
                manual = []
                for nb in sub.notebooks:
                    for g in nb.grades:
                        c = checks.get(g.name)
                        if c is None and not g.max_score:
                            continue  # an exercise's visible tests: a grade cell worth 0 points, no check
                        if c is None:
                            c = CheckResult(g.name.removeprefix("check_"), g.name, 0.0, 0.0, 0, 0)
                            shown.checks.append(c)
                            checks[g.name] = c
                        c.points, c.max_points = _finite(g.score), _finite(g.max_score)
                        if g.manual_score is not None:
                            manual.append(c.name)
                            c.adjusted = ((c.adjusted + "; ") if c.adjusted else "") + \
                                f"score set by your instructor: {g.manual_score:g} points"
                shown.max_score = _finite(assignment.max_score)
                raw, penalty = _finite(sub.score), _finite(sub.late_submission_penalty)
                out.append(Standing(shown, raw, penalty, _finite(max(0.0, sub.score - penalty)),
                                    _finite(assignment.max_score), _status(shown), sub.duedate, sub.timestamp,
                                    float(sub.total_seconds_late), manual, "gradebook"))
    return out


def settle(results: list[SubmissionResult], config: CourseConfig, db_url: str | None = None) -> list[Standing]:
    """Every final standing, sorted by assignment then student."""
    standings = from_gradebook(results, config, db_url) if db_url else from_results(results, config)
    return sorted(standings, key=lambda s: (s.assignment, s.student_id))
