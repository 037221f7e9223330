"""Where the student's code runs: the interface both executors implement, and the in-process one.

An executor runs a submission's cells, calls a graded function for a visible
test the grader runs, runs a visible test in its own namespace, and answers
a check's cases with one `Answer` each. Two implement it:

* `InProcess` (this module): the code runs in this process. Used by the hidden
  check cells under `nbgrader autograde` (the kernel's own namespace), by
  `grade --no-sandbox`, and by the tests. Not a sandbox.
* `autograder.sandbox.SandboxedSubmission`: the code runs in a limited child
  process (the class runner).

Both hand every answer through the one codec (`autograder.answer`), so both
give the same score; `autograder.grading` runs one pipeline over either.
"""
from __future__ import annotations

from typing import Protocol

from autograder.answer import Answer, round_trip
from autograder.checks import Case, Check
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell, code_to_run
from autograder.probes import run_probe
from autograder.problems import Problem, cell_error_kind
from autograder.torchstate import pin_torch_flags


class Executor(Protocol):
    problems: list[Problem]  # what happened while running the code (cells that raised, were skipped...)
    visible_failures: dict[str, Problem]  # grade_id -> why that check cell's visible tests failed

    def __enter__(self) -> "Executor": ...  # runs the cells (and the visible tests given to it)

    def __exit__(self, *exc) -> None: ...

    def call(self, name: str, args: tuple, kwargs: dict): ...  # a graded function, for a visible test

    def run_visible(self, grade_id: str, cell: Cell) -> None: ...  # a visible test in its namespace

    def prefetch(self, checks: list[Check]) -> None: ...  # answers asked ahead (a hint; may do nothing)

    def answer(self, check: Check, cases: list[Case]) -> list[Answer]: ...


class GradedCodeError(Exception):
    """A graded function a visible test called raised, or could not be called; the message says what."""


class InProcess:
    """Runs the cells and the probes in this process, on `namespace` (a kernel's globals,
    or a fresh one for `cells`). Answers still cross the codec, so the scores equal the runner's."""

    def __init__(self, namespace: dict | None = None, *, cells: list[Cell] = (), check_ids: set[str] = frozenset(),
                 visible: dict[str, Cell] | None = None):
        self.namespace = namespace if namespace is not None else new_namespace()
        self.code = code_to_run(list(cells), set(check_ids)) if cells else []
        self.visible = visible or {}
        self.problems: list[Problem] = []
        self.visible_failures: dict[str, Problem] = {}

    def __enter__(self) -> "InProcess":
        for cell in self.code:
            outcome = run_cell(cell, self.namespace)
            if not outcome.ok:
                self.problems.append(Problem(cell_error_kind(outcome.error), f"cell {cell.number} raised {outcome.error}"))
        for grade_id, cell in self.visible.items():
            self.run_visible(grade_id, cell)
        return self

    def __exit__(self, *exc) -> None:
        pass

    def call(self, name: str, args: tuple, kwargs: dict):
        fn = self.namespace.get(name)
        if fn is None:
            raise GradedCodeError(f"NameError: name {name!r} is not defined")
        return fn(*args, **kwargs)

    def run_visible(self, grade_id: str, cell: Cell) -> None:
        outcome = run_cell(cell, self.namespace)
        if not outcome.ok:
            self.visible_failures[grade_id] = Problem("error", outcome.error)

    def prefetch(self, checks: list[Check]) -> None:
        pass

    def answer(self, check: Check, cases: list[Case]) -> list[Answer]:
        impl = self.namespace.get(check.target)
        if impl is None:
            return [Answer.missing(check.target) for _ in cases]
        out = []
        for case in cases:
            pin_torch_flags()
            out.append(round_trip(run_probe(check, impl, case)))
        return out
