"""The reference namespace: the source notebook's own code, executed.

The source notebook is the single source of truth: its solution cells are
the reference solution. Nothing duplicates them elsewhere.
"""
from __future__ import annotations

from functools import lru_cache

from autograder.course import source_notebook
from autograder.execute import new_namespace, run_cell
from autograder.notebook import Cell, code_to_run, has_code, read_cells, visible_part


class SourceNotebookError(RuntimeError):
    """The source notebook's own code failed: the reference cannot be built."""


@lru_cache(maxsize=None)
def reference_namespace(stem: str) -> dict:
    cells = read_cells(source_notebook(stem))
    check_ids = {c.grade_id for c in cells if c.is_check and c.grade_id}
    ns = new_namespace()
    for cell in code_to_run(cells, check_ids):
        outcome = run_cell(cell, ns)
        if not outcome.ok:
            raise SourceNotebookError(f"solutions/{stem}/{stem}.ipynb cell {cell.number} failed: {outcome.error}")
    return ns


def check_points(stem: str) -> dict[str, float]:
    """Points of each check cell of the source notebook, by grade_id."""
    cells = read_cells(source_notebook(stem))
    return {c.grade_id: float(c.points or 0) for c in cells if c.is_check and c.grade_id}


def visible_tests(stem: str) -> dict[str, Cell]:
    """The visible code of each check cell of the source notebook, by grade_id (comments aside).

    nbgrader runs the source's version of a check cell: visible tests there would
    gate its points (a test that raises scores the cell 0). This course keeps its
    visible tests in read-only cells of their own that score nothing, so this is
    empty for every chapter; `grading.Grader` refuses a chapter where it is not.
    """
    cells = read_cells(source_notebook(stem))
    return {c.grade_id: Cell(c.index, "code", visible_part(c.source), c.grade_id)
            for c in cells if c.is_check and c.grade_id and has_code(visible_part(c.source))}
