"""The hidden check cells' entry point under `nbgrader autograde`.

    ### BEGIN HIDDEN TESTS
    from autograder.inline import check
    check("losses", "l1_loss", globals())
    ### END HIDDEN TESTS

Runs one check on the kernel's namespace, prints a report to stdout and
returns the points as the cell's value: nbgrader reads a number as partial
credit. Nothing goes to stderr and no exception escapes, because nbgrader
scores a cell with any stderr output or error as 0 (and a traceback would
quote this hidden cell). The decision here is made inside the student's
kernel, so it is as trustworthy as nbgrader itself; `python -m autograder
grade` is the runner that holds against hostile code.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from functools import lru_cache

from autograder.report import render_check


@lru_cache(maxsize=None)
def _grader(stem: str, device: str):
    from autograder.grading import Grader
    from autograder.probes.core import guard_the_watch

    guard_the_watch()  # as in the runner's child: the watch's switches and thread starters report themselves
    return Grader(stem, device=device)


def check(stem: str, name: str, namespace: dict) -> float:
    device = os.environ.get("AUTOGRADER_DEVICE", "auto")
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            from autograder.grading import InProcess
            from autograder.probes.core import excuse_running_threads

            excuse_running_threads()  # the kernel's own threads
            result = _grader(stem, device).grade_check(name, InProcess(namespace))
    except Exception as exc:  # noqa: BLE001 - report, score 0, never a traceback
        print(f"{name}: the check could not run ({type(exc).__name__}: {exc}); 0 points")
        return 0.0
    print(render_check(result))
    return result.points
