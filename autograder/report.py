"""Turn results into what a student reads: the check cells' output under
nbgrader, and the text of the feedback files (feedback.py renders the same
views as HTML).

Everything shown comes from the results: the case's description, the expected
and the student's values in short, the hint of a matched mistake, and the
error the student's own code raised. Never the source of a check or of the
reference solution: neither is in the results.
"""
from __future__ import annotations

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


def mark(result: CheckResult) -> str:
    if result.total and result.passed == result.total and result.points == result.max_points:
        return "PASS"
    return "FAIL" if result.points == 0 else "PARTIAL"


@dataclass
class CheckView:
    """One check's result as the student should read it."""

    result: CheckResult
    mark: str
    note: str | None  # why the check scored less than its cases (visible tests failed)
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
    failed = [v for v in result.cases if not v.passed]
    error = _short(result.error) if result.error else None
    shown = [] if error else failed[:MAX_FAILURES_SHOWN]
    counts = Counter(pair for v in failed for pair in v.matched())
    return CheckView(
        result, mark(result), _short(result.note) if result.note else None, error, shown,
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
    lines = [f"[{v.mark}] {r.name}: {r.points:g}/{r.max_points:g} points ({r.passed} of {r.total} cases passed)"]
    if not ran:
        return lines[0]
    if v.note:
        lines.append("  Note: " + v.note.replace("\n", "\n        "))
    if v.error:
        lines.append(f"  Every failing case raised {v.error}")
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
            lines.append(f"  Failed on {case.label}: {case.message}")
    if v.more:
        lines.append(f"  ... and {v.more} more failing cases")
    if v.advice:
        lines.append(f"  What this means: {v.advice}")
    for _, hint, n in v.mistakes:
        lines.append(f"  Hint ({n} failing case{'s' if n != 1 else ''} match a known mistake): {hint}")
    return "\n".join(lines)


def render_header(result: SubmissionResult) -> str:
    """Who, the score, and the problems of the run, each explained."""
    lines = [f"{result.assignment}: feedback for {result.student_id}",
             f"Score: {result.score:g}/{result.max_score:g} points"]
    if result.notebook:
        lines.append(f"Notebook graded: {result.notebook}")
    if result.problems:
        lines.append("")
        lines.append("Problems while running your notebook:")
        for p in result.problems:
            lines.append(f"  - {p}")
            advice = explain(p)
            if advice:
                lines.append(f"    What this means: {advice}")
    return "\n".join(lines)


def render_submission(result: SubmissionResult) -> str:
    lines = [render_header(result), ""]
    if result.status != "graded":
        lines.append("Nothing in the notebook could be run, so every check scores 0:")
    lines.extend(render_check(c, ran=result.status == "graded") + "\n" for c in result.checks)
    return "\n".join(lines).rstrip() + "\n"
