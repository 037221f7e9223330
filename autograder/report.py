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
from autograder.problems import VISIBLE_PREFIX
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
_SYNTAX_WHERE = re.compile(r"\(<cell (\d+)>, line (\d+)\)")
_TEST_LINE = re.compile(r"your code raised at line (\d+): (.*?) \(cell (\d+), line (\d+)\)")
_VISIBLE_CELL = re.compile(r"\(cell \d+; they give no points")  # the exercise is named: its number says nothing
_LINE_OF_CELL = re.compile(r"\bat line (\d+) of cell (\d+)")
_CELL_RAISED = re.compile(r"^cell (\d+) ")  # "cell 5 raised ...", "cell 33 did not finish within 5 s"
_ANY_CELL = re.compile(r"\bcell (\d+)\b")
_CELL_LIST = re.compile(r" \(cells \d+(?:, \d+)*\)")
_CELL_NAMED = re.compile(r"\bcell (\d+) \(([\w.-]+)\)")


def cell_roles(cells) -> dict[str, list]:
    """{cell number: [grade_id, role]} of a notebook's code cells (notebook.Cell), role one of answer (a
    solution cell: the student's code), visible (an exercise's visible tests), check, provided (a
    read-only cell of the notebook) and other (a cell the student added or an unmarked one)."""
    out = {}
    for c in cells:
        if c.cell_type != "code":
            continue
        role = ("answer" if c.solution else "visible" if c.is_visible_test else "check" if c.is_check
                else "provided" if c.locked or c.grade_id else "other")
        out[str(c.number)] = [c.grade_id or "", role]
    return out


def _name_of(cells: dict, number: str, line: str | None = None) -> str:
    """A cell as the student sees it: the exercise it answers, never its position (Jupyter shows none)."""
    grade_id, role = (cells.get(number) or ["", "other"])[:2]
    at = f"line {line} of " if line else ""
    if role == "answer":
        return f"{at}your answer to {grade_id}"
    if role == "visible":
        return f"{at}the visible tests of {grade_id.removeprefix(VISIBLE_PREFIX)}"
    if role in ("provided", "check"):
        return OWN_CODE
    return f"{at}a code cell you added (the {_ordinal(int(number))} cell from the top)"


OWN_CODE = "the notebook's own code, which your code called"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def tidy(message: str, cells: dict | None = None) -> str:
    """A message as a person reads it: one space before "(cell N, line M)", no colon before it when the
    error says nothing more, and the student's line first when a visible test's line is also given.
    With `cells` (a result's `cells`), every "cell N" is named as the student sees it: "line 3 of
    your answer to l1_loss", the visible tests of an exercise, or the notebook's own code (whose
    line is not the student's)."""
    text = _SYNTAX_WHERE.sub(r"(cell \1, line \2)", message)  # a SyntaxError says where as Python does
    text = _EMPTY_WHERE.sub(r" (cell \1, line \2)", text)
    text = _WHERE.sub(r"(cell \1, line \2)", text)
    text = _TEST_LINE.sub(r"your code raised \2 in cell \3, line \4 (called by line \1 of the check's tests)", text)
    text = _VISIBLE_CELL.sub("(they give no points", text)
    if not cells:
        return text
    text = _CELL_NAMED.sub(r"the cell \2", text)
    text = _CELL_RAISED.sub(lambda m: _name_of(cells, m.group(1)) + " ", text)
    text = _LINE_OF_CELL.sub(lambda m: _in(cells, m.group(2), m.group(1)), text)
    text = _WHERE.sub(lambda m: f"(raised in {OWN_CODE})" if _name_of(cells, m.group(1)) == OWN_CODE
                      else f"({_name_of(cells, m.group(1), m.group(2))})", text)
    text = _ANY_CELL.sub(lambda m: _name_of(cells, m.group(1)), text)
    text = _CELL_LIST.sub("", text)
    return text[:1].upper() + text[1:] if _CELL_RAISED.match(message) else text


def _in(cells: dict, number: str, line: str) -> str:
    name = _name_of(cells, number, line)
    return f"in {name}" if name == OWN_CODE else f"at {name}"


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
    failures: list[CaseVerdict] = field(default_factory=list)  # every failing case (none when `error` says it)
    mistakes: list[tuple[str, str, int]] = field(default_factory=list)  # (mistake, hint, cases matched)
    cells: dict = field(default_factory=dict)  # the result's cells, to name where a message points

    @property
    def advice(self) -> str | None:
        return explain(self.error or self.note or "")

    @property
    def shown(self) -> list[CaseVerdict]:
        """The failing cases shown first; the others are listed folded (HTML) or after them (text)."""
        return self.failures[:MAX_FAILURES_SHOWN]

    @property
    def folded(self) -> list[CaseVerdict]:
        return self.failures[MAX_FAILURES_SHOWN:]

    def message(self, case: CaseVerdict) -> str:
        return tidy(case.message, self.cells)


def _short(text: str, lines: int = NOTE_LINES, width: int = 300) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][:lines]
    return "\n".join(ln if len(ln) <= width else ln[:width] + "..." for ln in kept)


def view_check(result: CheckResult, cells: dict | None = None) -> CheckView:
    """`cells`: the submission's (SubmissionResult.cells), so that a message names the student's own
    cell and line; without them, messages are as graded."""
    failed = [v for v in result.cases if not v.passed and not v.inconclusive]  # not judged: no failure
    error = tidy(_short(result.error), cells) if result.error else None
    counts = Counter(pair for v in failed for pair in v.matched())
    return CheckView(
        result, mark(result), tidy(_short(result.note), cells) if result.note else None, error,
        [] if error else failed, [(m, h, n) for (m, h), n in counts.most_common()], dict(cells or {}),
    )


def shown_problems(result: SubmissionResult) -> list[str]:
    """The run's problems, each once and as the student sees it: a visible-test failure of an exercise
    whose check already says that every case raised the same error is left to the check."""
    said = {c.name: c.error.split(":")[0].split()[0] for c in result.checks if c.error}
    out = []
    for p in result.problems:
        m = re.match(r"the visible tests of (\w+) .*? raised (\w+)", str(p))
        if getattr(p, "kind", None) == "visible" and m and said.get(m.group(1)) == m.group(2):
            continue
        text = tidy(p, result.cells)
        if text not in out:
            out.append(text)
    return out


def _detail(message: str) -> str:
    """What assert_close said beyond expected/got (the size of the difference and the tolerance)."""
    _, _, rest = message.partition(". ")
    return rest.strip()


def render_check(result: CheckResult, *, ran: bool = True, cells: dict | None = None) -> str:
    """One check as text, every failing case listed; `ran=False` (nothing could be run) gives only its line."""
    v = view_check(result, cells)
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
            lines.append(f"  Failed on {case.label}: {v.message(case)}")
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
    problems = shown_problems(result)
    if problems:
        lines.append("")
        lines.append("Problems while running your notebook:")
        for p in problems:
            lines.append(f"  - {p}")
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
    lines.extend(render_check(c, ran=result.ran, cells=result.cells) + "\n" for c in result.checks)
    return "\n".join(lines).rstrip() + "\n"
