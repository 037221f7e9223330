"""The course's autograder.

The modules, in the order a submission meets them (docs/design.md draws the
data flow and the trust boundary):

    course.py       where a chapter's source notebook, release and checks live
    notebook.py     read a notebook (tolerant of broken ones) into cells; nbgrader's markers; find a cell
    reference.py    the reference namespace, from the source notebook's solution cells
    checks.py       checks as data: cases, probe, mistakes, forbidden calls
    inputs.py       seeded input makers for the checks
    chapters/       one module of checks per chapter (stem)
    mistakes/       code that makes known mistakes on purpose (grader only)
    probes/         how to call the student's code and what comes back
    answer.py       Answer: what a probe reports for one case, and the one codec it crosses
    executor.py     the executor interface, and the in-process executor
    execute.py      run cells into a namespace, as a kernel would
    sandbox/        the limited processes that run submissions (grader, zygote, child modules)
    torchstate.py   torch's global state: pin the flags, snapshot, restore
    tolerance.py    the tolerance policy, written down once
    compare.py      decide one case: shape, dtype, device, values; match known mistakes
    source_scan.py  a look at the submission's source for what the runtime call watch may not see
    grading.py      grade one submission (locate, read, sanitize, execute, decide, record), then a class
    problems.py     what went wrong besides wrong answers, as data (kind and text)
    text.py         text from a submission made safe for any file
    results.py      result dataclasses, a submission's status, and the files a run writes
    progress.py     what a class run says while it runs (bar or log lines), and its summary
    course_config.py the course's grading settings (nbgrader_config.py): points for the term, due dates, late penalty
    scores.py       one source of scores: results or the gradebook, settled into each student's final standing
    report.py       the words of a check's result (shared by feedback, gradebook and inline)
    feedback.py     each student's feedback
    class_report.py the instructor's class report
    similarity.py   the class report's advisory pairs of near-identical answers (copydetect)
    term.py         the term at a glance: every student's scores and total under the term's weights
    gradebook.py    nbgrader's gradebook and autograded notebooks
    feedback_templates/ nbgrader's feedback page with MathJax inlined (generate_feedback, offline maths)
    lms.py          Canvas's and Moodle's import files, the companion report, the student-id mapping
    publish.py      the public student repository: the built book and the released notebooks, scanned for secrets
    catalogue.py    the common-mistakes box of a chapter page, drawn from its checks' catalogue
    inline.py       the entry point of the hidden check cells under `nbgrader autograde`
    release.py      regenerate exercises/ from solutions/ with nbgrader
    cli.py          the thin command line: `python -m autograder ...`
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
