"""Where the student's code runs: the interface both executors implement, and the in-process one.

An executor runs a submission's cells (the read-only visible-test cells among
them, which score nothing) and answers a check's cases with one `Answer` each.
Two implement it:

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
from autograder.problems import Problem, cell_problem
from autograder.torchstate import pin_torch_flags


class Executor(Protocol):
    problems: list[Problem]  # what happened while running the code (cells that raised, were skipped...)

    def __enter__(self) -> "Executor": ...  # runs the cells

    def __exit__(self, *exc) -> None: ...

    def prefetch(self, checks: list[Check]) -> None: ...  # answers asked ahead (a hint; may do nothing)

    def answer(self, check: Check, cases: list[Case]) -> list[Answer]: ...


class InProcess:
    """Runs the cells and the probes in this process, on `namespace` (a kernel's globals,
    or a fresh one for `cells`). Answers still cross the codec, so the scores equal the runner's."""

    def __init__(self, namespace: dict | None = None, *, cells: list[Cell] = (), check_ids: set[str] = frozenset()):
        self.namespace = namespace if namespace is not None else new_namespace()
        self.code = code_to_run(list(cells), set(check_ids)) if cells else []
        self.problems: list[Problem] = []

    def __enter__(self) -> "InProcess":
        for cell in self.code:
            outcome = run_cell(cell, self.namespace)
            if not outcome.ok:
                self.problems.append(cell_problem(cell, outcome.error))
        return self

    def __exit__(self, *exc) -> None:
        pass

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
