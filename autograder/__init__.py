"""The course's autograder.

A grading run takes these steps, one module each:

    course.py     where a chapter's source notebook, release and checks live
    notebook.py   read a notebook (tolerant of broken ones) into cells
    execute.py    run cells into a namespace, as a kernel would
    reference.py  the reference namespace, from the source notebook's solution cells
    checks.py     checks as data: cases, probe, mistakes, forbidden calls
    probes.py     how to call the student's code and what comes back (runs in the child)
    tolerance.py  the tolerance policy, written down once
    compare.py    decide one case: shape, dtype, device, values; match known mistakes
    sandbox.py    the limited child process that runs a submission
    grading.py    grade one submission, then a class; scores and results
    results.py    result dataclasses and the files a run writes
    inline.py     the entry point of the hidden check cells under `nbgrader autograde`
    release.py    regenerate exercises/ from solutions/ with nbgrader
    cli.py        the thin command line: `python -m autograder ...`
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
