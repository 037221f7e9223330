"""What went wrong with a submission besides wrong answers, as data: a kind and a text.

A problem is made where it happens (reading the notebook, a cell in the child,
a lost child, the grader itself) with its kind; reports and the class report
sort and count by kind, never by the wording of the text. `Problem` is a str
(its text), so it prints, compares and searches like the message it is, and
carries `.kind` beside it.
"""
from __future__ import annotations

from autograder.text import clean

# Every kind, from worst to mildest, with what the class report calls it.
KINDS = {
    "grader-error": "the grader itself failed on this submission",
    "unreadable": "the notebook could not be read",
    "missing": "no notebook submitted",
    "timeout": "code ran past the time limit",
    "crash": "code ended or broke the grading process",
    "syntax-error": "a cell is not valid Python",
    "error": "raised an error",
    "unanswered": "not answered (NotImplementedError)",
    "renamed": "notebook renamed (another notebook graded in its place)",
    "notebook": "extra notebooks, or cells deleted, duplicated or changed",
    "suspected": "the source names a forbidden function or a way around the call watch (no points taken)",
    "visible": "a visible test failed (visible tests give no points; the hidden checks grade)",
}
ADVISORY = ("visible",)  # kinds that are what the scores already say, not trouble beyond wrong answers

# A read-only cell whose grade_id starts with this holds an exercise's visible tests: it runs as any
# cell, scores nothing, and its failure is said as the exercise's (tests/test_statements.py holds
# every notebook to it: docs/maintainers.md)
VISIBLE_PREFIX = "visible_"


def cell_error_kind(error: str) -> str:
    """The kind of a cell's error message (as execute.run_cell writes it: "TypeName at line N: ...")."""
    return "syntax-error" if error.startswith(("SyntaxError", "IndentationError", "TabError")) else "error"


def cell_problem(cell, error: str) -> "Problem":
    """What a cell that raised `error` (execute.run_cell's message) is, said for the student."""
    grade_id = getattr(cell, "grade_id", None) or ""
    if grade_id.startswith(VISIBLE_PREFIX):
        name = grade_id[len(VISIBLE_PREFIX):]
        return Problem("visible", f"the visible tests of {name} (cell {cell.number}; they give no points: the "
                                  f"hidden checks grade {name}) raised {error}")
    return Problem(cell_error_kind(error), f"cell {cell.number} raised {error}")


class Problem(str):
    """One problem: its text (the str itself) and its `kind`, a key of KINDS."""

    kind: str

    def __new__(cls, kind: str, text: str) -> "Problem":
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self = super().__new__(cls, clean(text))
        self.kind = kind
        return self

    def __reduce__(self):
        return (Problem, (self.kind, str(self)))

    def to_json(self) -> dict:
        return {"kind": self.kind, "text": str(self)}

    @classmethod
    def from_json(cls, d) -> "Problem":
        """The inverse of to_json; a plain string (results of older runs) is sorted by `legacy_kind`."""
        if isinstance(d, dict) and d.get("kind") in KINDS:
            return cls(d["kind"], str(d.get("text", "")))
        return cls(legacy_kind(str(d)), str(d))


def legacy_kind(text: str) -> str:
    """The kind of a problem written as text alone by an older run (before kinds were recorded)."""
    if "did not finish within" in text:
        return "timeout"
    if any(w in text for w in ("ended the process", "garbled", "unreadable answer", "killed")):
        return "crash"
    if " raised " in text:
        return "error"
    return "notebook"
