"""The course's grading settings, read from its `nbgrader_config.py` (one file for nbgrader and the runner).

    c.Autograder.points = {"losses": {"detection_loss": 0, "mse_loss": 2}}
        a check's points for the term: 0 drops it, another number re-weights it (its cases keep their
        share). Applied by the next `python -m autograder report`, without grading again; the
        results on disk keep the points as graded.
    c.Autograder.duedates = {"losses": "2026-03-02 17:00:00 Europe/Paris"}
        due dates, in nbgrader's timestamp format, for a course without a gradebook. With a gradebook,
        nbgrader's due date (`nbgrader db assignment add losses --duedate ...`) is the one used, and
        this one is written into the gradebook only when it has none.
    c.Autograder.lms_students = "lms_students.csv"
        the student-id mapping file for the LMS exports (autograder/lms.py), relative to the course.
    c.Autograder.lms_assignments = {"losses": {"title": "Week 3: losses", "canvas_id": 4711}}
        an assignment's name in the LMS and its Canvas assignment id.
    c.Autograder.weights = {"losses": 1, "tensors": 2}
        each assignment's weight in the term total (term.py): the total is the weighted mean of the
        assignments' scores as fractions of their maxima. An assignment left out weighs its maximum
        points (so with no weights at all, the total is all points earned over all points possible).

Late penalties are nbgrader's own settings, in the same file, applied by `late_penalty` exactly as
nbgrader's `AssignLatePenalties` applies them under `nbgrader autograde`:

    c.LateSubmissionPlugin.penalty_method = "zero"        # or "none", the default
    c.AssignLatePenalties.plugin_class = "late.SubMarks"  # a plugin of yours, in the course folder
"""
from __future__ import annotations

import copy
import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autograder.results import SubmissionResult


class CourseConfigError(ValueError):
    """The course configuration says something the results cannot take; the message says what."""


def load_config(course: Path):
    """The traitlets Config of the course's nbgrader_config.py (empty when there is none)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    course = Path(course).resolve()
    if (course / "nbgrader_config.py").is_file():
        return PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    return Config()


def parse_utc(ts):
    """nbgrader.utils.parse_utc, with dateutil as nbgrader uses it: a "date time ZONE" text (a
    zone name or a numeric offset) or any text dateutil reads, to naive UTC. Here so that
    reading a timestamp does not import nbgrader (over a second, for every grading run);
    tests/test_scores.py holds the two to the same answers."""
    import dateutil.parser
    import dateutil.tz

    if isinstance(ts, str):
        parts = ts.split(" ")
        if len(parts) == 3:
            tz = parts[2]
            try:
                tz = int(tz)
            except ValueError:
                tz = dateutil.tz.gettz(tz)
            ts = dateutil.parser.parse(" ".join(parts[:2] + ["TZ"]), tzinfos=dict(TZ=tz))
        else:
            ts = dateutil.parser.parse(ts)
    if ts.tzinfo is not None:
        ts = (ts - ts.utcoffset()).replace(tzinfo=None)
    return ts


def parse_time(text) -> datetime.datetime | None:
    """A timestamp as nbgrader reads one (naive UTC); None for None or an empty or unreadable text."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return parse_utc(text.strip() if isinstance(text, str) else text)
    except (ValueError, OverflowError, TypeError, AttributeError):
        return None


def _weights(weights) -> dict:
    if not isinstance(weights, dict):
        raise CourseConfigError(f"c.Autograder.weights is {weights!r}: give a dict, e.g. {{'losses': 1, 'tensors': 2}}")
    for stem, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or w != w:
            raise CourseConfigError(f"c.Autograder.weights[{stem!r}] = {w!r}: give a number, 0 or more")
    return dict(weights)


@dataclass
class CourseConfig:
    root: Path
    config: object = None
    points: dict = field(default_factory=dict)  # {stem: {check name: points for the term}}
    duedates: dict = field(default_factory=dict)  # {stem: timestamp text}
    lms_students: Path | None = None
    lms_assignments: dict = field(default_factory=dict)  # {stem: {"title": ..., "canvas_id": ...}}
    weights: dict = field(default_factory=dict)  # {stem: weight in the term total}

    @classmethod
    def load(cls, course: Path) -> "CourseConfig":
        config = load_config(course)
        section = config.get("Autograder", {})
        students = section.get("lms_students")
        return cls(Path(course).resolve(), config, dict(section.get("points", {}) or {}),
                   dict(section.get("duedates", {}) or {}),
                   (Path(course).resolve() / students) if students else None,
                   dict(section.get("lms_assignments", {}) or {}), _weights(section.get("weights", {}) or {}))

    def weight(self, stem: str, max_score: float) -> float:
        """The assignment's weight in the term total: the configured one, else its maximum points."""
        return float(self.weights[stem]) if stem in self.weights else float(max_score)

    # -- checks dropped or re-weighted -----------------------------------------------------
    def adjust(self, result: SubmissionResult) -> SubmissionResult:
        """A copy of `result` with the term's points: dropped checks score 0 of 0, re-weighted ones
        keep their share of passed cases. Unknown check names are an error, never ignored."""
        wanted = self.points.get(result.assignment) or {}
        if not wanted:
            return result
        names = {c.name for c in result.checks}
        unknown = sorted(set(wanted) - names)
        if unknown and result.checks:
            raise CourseConfigError(f"c.Autograder.points[{result.assignment!r}] names no check {unknown}; "
                                    f"the checks are {sorted(names)}")
        out = copy.deepcopy(result)
        for c in out.checks:
            if c.name not in wanted:
                continue
            new = float(wanted[c.name])
            if new < 0:
                raise CourseConfigError(f"c.Autograder.points[{result.assignment!r}][{c.name!r}] is negative")
            share = c.points / c.max_points if c.max_points else 0.0
            c.adjusted = (f"dropped by the instructor: not counted (was {c.max_points:g} points)" if new == 0
                          else f"re-weighted by the instructor from {c.max_points:g} to {new:g} points")
            c.points, c.max_points = round(new * share, 2), new
        out.max_score = round(sum(c.max_points for c in out.checks), 2)
        return out

    # -- deadlines -----------------------------------------------------------------------
    def duedate(self, stem: str) -> datetime.datetime | None:
        text = self.duedates.get(stem)
        due = parse_time(text)
        if text and due is None:
            raise CourseConfigError(f"c.Autograder.duedates[{stem!r}] = {text!r} is not a timestamp "
                                    "nbgrader can read (e.g. '2026-03-02 17:00:00 Europe/Paris')")
        return due

    def late_penalty(self, student_id: str, score: float, seconds_late: float) -> float | None:
        """nbgrader's penalty for a notebook `seconds_late` late, as AssignLatePenalties computes it:
        none when not late; else the configured plugin's penalty, clamped to 0 .. score."""
        if seconds_late <= 0:
            return None
        from nbgrader.preprocessors import AssignLatePenalties
        from traitlets.config import Config

        added = str(self.root) not in sys.path
        if added:  # nbgrader imports a course's own plugin (late.py) from the course folder
            sys.path.insert(0, str(self.root))
        try:
            assign = AssignLatePenalties(config=self.config or Config())
            assign.init_plugin()
            penalty = assign.plugin_inst.late_submission_penalty(student_id, score, seconds_late)
        finally:
            if added:
                sys.path.remove(str(self.root))
        if penalty is None:
            return None
        return float(min(max(penalty, 0), score))

    def lms_title(self, stem: str) -> str:
        return str((self.lms_assignments.get(stem) or {}).get("title") or stem)

    def canvas_id(self, stem: str) -> str | None:
        cid = (self.lms_assignments.get(stem) or {}).get("canvas_id")
        return str(cid) if cid not in (None, "") else None
