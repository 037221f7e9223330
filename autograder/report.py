"""Turn results into what a student reads: the check cells' output under
nbgrader, and the text of the feedback files (feedback.py renders the same
views as HTML).

Everything shown comes from the results: the case's description, the expected
and the student's values in short, the hint of a matched mistake, and the
error the student's own code raised. Never the source of a check or of the
reference solution: neither is in the results.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from autograder.compare import CaseVerdict
from autograder.results import CheckResult, SubmissionResult

MAX_FAILURES_SHOWN = 3
NOTE_LINES = 4

# What an error means for the student, by a fragment of its message (first match wins).
ERROR_ADVICE = (
    ("is not defined in your notebook",
     "The grader found no such function or class in your notebook: its cell was deleted, the name was "
     "changed, or the cell raised an error before defining it (see the problems above)."),
    ("NotImplementedError", "This exercise is not answered yet: replace `raise NotImplementedError()` with your code."),
    ("did not finish within",
     "Your code ran past the time limit: look for a loop that never ends, or work far larger than the inputs need."),
    ("ended the process",
     "Your code ended the process that ran it (os._exit, a crash in native code, or running out of memory)."),
    ("SyntaxError", "Python could not read the cell: look at the line and column it names."),
    ("IndentationError", "Python could not read the cell: its indentation is inconsistent."),
    ("not valid notebook JSON",
     "The file is not a notebook Jupyter can open. Download it again from Jupyter (File > Download) and resubmit."),
    ("NameError", "A name used here is not defined: a cell above it may have raised an error or been deleted."),
    ("not differentiable", "Compute the output with torch operations on the input tensors, so autograd can "
     "follow it back to them."),
)


def explain(message: str) -> str | None:
    """What an error message means for the student, in a sentence; None when there is nothing to add."""
    for fragment, advice in ERROR_ADVICE:
        if fragment in message:
            return advice
    return None


_EMPTY_WHERE = re.compile(r":\s*\(cell\s+(\d+), line (\d+)\)")  # "NotImplementedError:  (cell 5, line 9)"
_WHERE = re.compile(r"\(cell\s+(\d+), line (\d+)\)")
_TEST_LINE = re.compile(r"your code raised at line (\d+): (.*?) \(cell (\d+), line (\d+)\)")


def tidy(message: str) -> str:
    """A message as a person reads it: one space before "(cell N, line M)", no colon before it when the
    error says nothing more, and the student's line first when a visible test's line is also given."""
    text = _EMPTY_WHERE.sub(r" (cell \1, line \2)", message)
    text = _WHERE.sub(r"(cell \1, line \2)", text)
    return _TEST_LINE.sub(r"your code raised \2 in cell \3, line \4 (called by line \1 of the check's tests)", text)


def every_failing_case(error: str) -> str:
    """'Every failing case raised X', or, for what is not an exception (a time-out), 'On every failing case, X'."""
    if error.startswith(("your code", "did not finish")):
        return f"On every failing case, {error}"
    return f"Every failing case raised {error}"


def mark(result: CheckResult) -> str:
    if result.max_points == 0 and result.adjusted:
        return "DROPPED"
    if result.total and result.passed == result.total and result.points == result.max_points:
        return "PASS"
    return "FAIL" if result.points == 0 else "PARTIAL"


@dataclass
class CheckView:
    """One check's result as the student should read it."""

    result: CheckResult
    mark: str
    note: str | None  # why the check scored less than its cases say (none is set today)
    error: str | None  # the error every failing case raised, when it is the same one
    failures: list[CaseVerdict] = field(default_factory=list)  # shown, at most MAX_FAILURES_SHOWN
    more: int = 0  # failing cases not shown
    mistakes: list[tuple[str, str, int]] = field(default_factory=list)  # (mistake, hint, cases matched)

    @property
    def advice(self) -> str | None:
        return explain(self.error or self.note or "")


def _short(text: str, lines: int = NOTE_LINES, width: int = 300) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][:lines]
    return "\n".join(ln if len(ln) <= width else ln[:width] + "..." for ln in kept)


def view_check(result: CheckResult) -> CheckView:
    failed = [v for v in result.cases if not v.passed and not v.inconclusive]  # not judged: no failure
    error = tidy(_short(result.error)) if result.error else None
    shown = [] if error else failed[:MAX_FAILURES_SHOWN]
    counts = Counter(pair for v in failed for pair in v.matched())
    return CheckView(
        result, mark(result), tidy(_short(result.note)) if result.note else None, error, shown,
        0 if error else len(failed) - len(shown),
        [(m, h, n) for (m, h), n in counts.most_common()],
    )


def _detail(message: str) -> str:
    """What assert_close said beyond expected/got (the size of the difference and the tolerance)."""
    _, _, rest = message.partition(". ")
    return rest.strip()


def render_check(result: CheckResult, *, ran: bool = True) -> str:
    """One check as text; `ran=False` (nothing could be run) gives only its line."""
    v = view_check(result)
    r = v.result
    lines = [f"[{v.mark}] {r.name}: {r.points:g}/{r.max_points:g} "
             f"{'point' if r.max_points == 1 else 'points'} ({r.passed} of {r.total} cases passed)"]
    if r.adjusted:
        lines.append(f"  Changed by your instructor: {r.adjusted}")
    if not ran:
        return "\n".join(lines)
    if v.note:
        lines.append("  Note: " + v.note.replace("\n", "\n        "))
    if v.error:
        lines.append(f"  {every_failing_case(v.error)}")
    for case in v.failures:
        if case.expected is not None:
            want = f"expected {case.output}:"
            lines.append(f"  Failed on {case.label}:")
            lines.append(f"      {want} {case.expected}")
            lines.append(f"      {'got:'.ljust(len(want))} {case.got}")
            detail = _detail(case.message)
            if detail:
                lines.append(f"      ({detail[:240]})")
        else:
            lines.append(f"  Failed on {case.label}: {tidy(case.message)}")
    if v.more:
        lines.append(f"  ... and {v.more} more failing cases")
    if v.advice:
        lines.append(f"  What this means: {v.advice}")
    for _, hint, n in v.mistakes:
        lines.append(f"  Hint ({n} failing case{'s' if n != 1 else ''} match a known mistake): {hint}")
    return "\n".join(lines)


def render_header(result: SubmissionResult, standing=None) -> str:
    """Who, the score (the settled one, scores.Standing, when given: late penalty, manual scores), and
    the problems of the run, each explained."""
    score, max_score = (standing.score, standing.max_score) if standing is not None else (result.score,
                                                                                          result.max_score)
    lines = [f"{result.assignment}: feedback for {result.student_id}",
             f"Score: {score:g}/{max_score:g} points"]
    if standing is not None and standing.late:
        lines.append(f"Late: {standing.late_text()}; {standing.raw_score:g} before the penalty")
    if result.notebook:
        lines.append(f"Notebook graded: {result.notebook}")
    if result.problems:
        lines.append("")
        lines.append("Problems while running your notebook:")
        for p in result.problems:
            lines.append(f"  - {tidy(p)}")
            advice = explain(p)
            if advice:
                lines.append(f"    What this means: {advice}")
    return "\n".join(lines)


def render_submission(result: SubmissionResult, standing=None) -> str:
    if standing is not None:
        result = standing.result
    lines = [render_header(result, standing), ""]
    if not result.ran:
        lines.append("Nothing in the notebook could be run, so every check scores 0:")
    lines.extend(render_check(c, ran=result.ran) + "\n" for c in result.checks)
    return "\n".join(lines).rstrip() + "\n"
