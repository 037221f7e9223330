"""Write the runner's results into nbgrader's gradebook, as `nbgrader autograde` would.

For each graded student, through nbgrader's own API (`nbgrader.api.Gradebook`):

- the assignment, its notebook and its grade/solution cells are created when
  the database lacks them, by nbgrader's `generate_assignment` on the source
  notebook (the same step that normally creates them);
- the student is added when missing, and the submission is created or updated
  (`update_or_create_submission`, with the timestamp `nbgrader collect` left);
- every grade cell (`check_<name>`) gets `auto_score` = the check's points;
  a solution cell left as released gets the auto comment "No response.";
- the autograded notebook is written to the course's
  `autograded/<student>/<stem>/<stem>.ipynb`, which formgrader shows and
  `nbgrader generate_feedback` renders: the student's notebook with every
  locked cell restored from the release, a missing check cell put back, and
  each check cell's output being the runner's report for that check.

Regrading updates the same rows (one submission per student and assignment,
one grade per cell), never adds new ones, and keeps manual scores: a cell with
a manual score whose automatic score changed is flagged for review. The late
penalty is set as nbgrader's `AssignLatePenalties` sets it (`assign_late_penalty`),
and a check dropped or re-weighted in the course configuration gets its new
maximum in its grade cell, so `nbgrader export` gives the runner's scores.

The check cells in the autograded notebook come from the *release* notebook,
so they hold no hidden test at all: feedback generated from them cannot show
one even without ClearHiddenTests.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from autograder.notebook import BEGIN_HIDDEN, END_HIDDEN, marked_lines
from autograder.report import render_check, render_header
from autograder.results import SubmissionResult, atomic_write


# A traceback line that quotes a cell's source: an optional arrow, the line number, the line.
_QUOTED_LINE = re.compile(r"^\s*(?:-*>\s*)?(\d+)\s(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def hidden_line_numbers(source: str) -> dict[int, str]:
    """{line number (from 1): stripped text} of a cell's hidden-test block, markers included."""
    return {n: line.strip() for n, line in marked_lines(source, BEGIN_HIDDEN, END_HIDDEN).items()}


def scrub_traceback(lines: list[str], hidden: dict[int, str]) -> list[str]:
    """The traceback without the lines that quote a hidden line (IPython quotes lines around the failing one)."""
    out = []
    for frame in lines:
        kept = []
        for line in frame.split("\n"):
            m = _QUOTED_LINE.match(_ANSI.sub("", line))
            if m and hidden.get(int(m.group(1))) == m.group(2).strip():
                continue
            kept.append(line)
        out.append("\n".join(kept))
    return out


class ClearHiddenTracebacks(Preprocessor):
    """nbconvert preprocessor for `nbgrader generate_feedback`, to run before ClearHiddenTests.

    ClearHiddenTests removes hidden tests from a cell's source, but a failing
    visible test's traceback quotes the lines around it, hidden ones included:
    this removes every quoted hidden line from the cell's error outputs.
    """

    enabled = Bool(True).tag(config=True)  # nbconvert's preprocessors are off unless enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.get("cell_type") == "code":
            hidden = hidden_line_numbers(cell.get("source", ""))
            if hidden:
                for output in cell.get("outputs", []):
                    if output.get("output_type") == "error":
                        output["traceback"] = scrub_traceback(output.get("traceback", []), hidden)
        return cell, resources


class OfflineMathJax(Preprocessor):
    """nbconvert preprocessor for `nbgrader generate_feedback`: MathJax itself (the copy the book's
    sphinx-mathjax-offline ships), for the feedback template `feedback_templates/offline_feedback`
    to inline in place of nbgrader's CDN script, so that the maths renders with no network."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb, resources):
        resources["offline_mathjax"] = offline_mathjax()
        return nb, resources


def offline_mathjax() -> str:
    """MathJax 3 (TeX in, SVG out: no font files to fetch) as inline scripts, configured for Jupyter's
    delimiters ($...$, $$...$$, \\(...\\), \\[...\\])."""
    from importlib.metadata import distribution

    js = Path(distribution("sphinx-mathjax-offline").locate_file("sphinx-mathjax-offline/static/mathjax/tex-svg.js"))
    config = ("window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
              "displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']], processEscapes: true, processEnvironments: true}, "
              "svg: {fontCache: 'global'}};")
    code = js.read_text(encoding="utf-8").replace("</script", "<\\/script")
    return f"<!-- MathJax, inlined: no network needed -->\n<script>{config}</script>\n<script>{code}</script>\n"


EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")


class GradebookError(Exception):
    """The gradebook cannot take these results; the message says what to do."""


def course_directory(course: Path):
    """nbgrader's CourseDirectory for the course at `course`, configured by its nbgrader_config.py."""
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    course = Path(course).resolve()
    config = Config()
    if (course / "nbgrader_config.py").is_file():
        config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    if "root" not in config.CourseDirectory:
        config.CourseDirectory.root = str(course)
    return CourseDirectory(config=config)


def resolve_db_url(spec: str, course: Path) -> str:
    """`auto`: the course's configured gradebook; a URL (sqlite:///..., postgresql://...); else a file path."""
    if spec == "auto":
        return course_directory(course).db_url
    if "://" in spec:
        return spec
    return "sqlite:///" + str(Path(spec).resolve())


def open_gradebook(db_url: str):
    """nbgrader's Gradebook; it runs `alembic` from PATH, so this interpreter's bin/ goes on PATH first."""
    from nbgrader.api import Gradebook

    if shutil.which("alembic") is None:
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return Gradebook(db_url)


def _sqlite_path(db_url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(db_url[len(prefix):]) if db_url.startswith(prefix) else None


def ensure_assignment(db_url: str, stem: str, coursedir, check_ids: list[str]):
    """Make sure the gradebook knows the assignment and its cells; return the release notebook (nbformat)."""
    import nbformat
    from nbgrader.api import MissingEntry

    from autograder.release import generate

    release = Path(coursedir.format_path(coursedir.release_directory, ".", stem)) / f"{stem}.ipynb"
    with open_gradebook(db_url) as gb:
        try:
            known = {c.name for c in gb.find_notebook(stem, stem).grade_cells}
        except MissingEntry:
            known = None
    if known is not None and release.is_file():
        notebook = nbformat.read(str(release), as_version=4)
    else:
        db = _sqlite_path(db_url)
        if known is None and db is None:
            raise GradebookError(f"the gradebook {db_url} has no assignment {stem!r}: "
                                 f"run `nbgrader generate_assignment {stem}` for it first")
        with tempfile.TemporaryDirectory(prefix="autograder-release-") as tmp:
            # generate_assignment records the assignment and its cells in the gradebook when it lacks
            # them, and writes the release notebook (here into a scratch folder).
            made = generate(stem, release_dir=Path(tmp), root=Path(coursedir.root),
                            db=db if known is None else Path(tmp) / "scratch.db")
            notebook = nbformat.read(str(made), as_version=4)
        with open_gradebook(db_url) as gb:
            known = {c.name for c in gb.find_notebook(stem, stem).grade_cells}
    missing = [g for g in check_ids if g not in known]
    if missing:
        raise GradebookError(f"the gradebook's {stem} has no grade cells {missing}: its source notebook changed "
                             f"since `nbgrader generate_assignment {stem}`; run it again (with --force)")
    return notebook


def _nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def _read_notebook(path: Path | None):
    import nbformat

    if path is None:
        return None
    try:
        nb = nbformat.reads(path.read_text(encoding="utf-8", errors="replace"), as_version=4)
        nbformat.validate(nb)
        return nb
    except Exception:  # noqa: BLE001 - any unreadable or invalid notebook: start from the release
        return None


def autograded_notebook(result: SubmissionResult, submitted: Path | None, rel):
    """The notebook `nbgrader autograde` would leave, with the runner's report as each check cell's output.

    `rel` is the release notebook: it gives every cell's nbgrader metadata, the locked cells' source,
    and the whole notebook when the submission cannot be read.
    """
    import nbformat
    released = {_nbgrader_meta(c).get("grade_id"): c for c in rel.cells if _nbgrader_meta(c).get("grade_id")}
    order = [_nbgrader_meta(c)["grade_id"] for c in rel.cells if _nbgrader_meta(c).get("grade_id")]
    student = _read_notebook(submitted)
    nb = student if student is not None else copy.deepcopy(rel)
    nb.metadata["kernelspec"] = rel.metadata.get("kernelspec", nb.metadata.get("kernelspec", {}))

    seen: set[str] = set()
    cells = []
    for cell in nb.cells:
        gid = _nbgrader_meta(cell).get("grade_id")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if gid in released and gid not in seen:
            seen.add(gid)
            src = released[gid]
            # the release's metadata, whatever the student did to theirs; locked cells as released
            cell.metadata["nbgrader"] = copy.deepcopy(src.metadata["nbgrader"])
            if src.metadata["nbgrader"].get("locked") or src.cell_type != cell.cell_type:
                fixed = copy.deepcopy(src)
                fixed.metadata = cell.metadata
                cell = fixed
        elif "nbgrader" in cell.get("metadata", {}):
            del cell.metadata["nbgrader"]  # unknown or duplicate id: an ordinary cell
        cells.append(cell)
    # put back deleted grade cells, after the last cell that precedes them in the release
    for k, gid in enumerate(order):
        if gid in seen or not released[gid].metadata["nbgrader"].get("grade"):
            continue
        back = copy.deepcopy(released[gid])
        note = f"This cell ({gid}) was missing from the submission; the grader put it back.\n"
        back.source = ("# " + note if back.cell_type == "code" else note + "\n") + back.source
        before = set(order[:k])
        at = max((i for i, c in enumerate(cells) if _nbgrader_meta(c).get("grade_id") in before), default=-1)
        cells.insert(at + 1, back)
        seen.add(gid)

    by_id = {c.grade_id: c for c in result.checks}
    ran = result.ran
    for cell in cells:
        check = by_id.get(_nbgrader_meta(cell).get("grade_id"))
        if check is not None and cell.cell_type == "code":
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout",
                                       text=render_check(check, ran=ran, cells=result.cells) + "\n"),
                nbformat.v4.new_output("execute_result", data={"text/plain": f"{check.points:g}"}, execution_count=1),
            ]
    summary = render_header(result).replace("```", "'''")
    header = nbformat.v4.new_markdown_cell(
        f"**Graded by `python -m autograder grade`.**\n\n```\n{summary}\n```\n"
        + ("\nThe submission could not be read as a notebook, so this is the released notebook; "
           "the scores are those of what was submitted.\n" if student is None else ""))
    header.metadata = {}
    nb.cells = [header, *cells]
    return nb


def _solution_unchanged(nb, gid: str) -> bool:
    from nbgrader import utils

    for cell in nb.cells:
        meta = _nbgrader_meta(cell)
        if meta.get("grade_id") == gid:
            return meta.get("checksum") is not None and meta["checksum"] == utils.compute_checksum(cell)
    return False


def write_gradebook(results: list[SubmissionResult], *, db_url: str, course: Path,
                    submissions: Path | None = None, config=None) -> dict:
    """Record `results` (one assignment or several) in the gradebook and write the autograded notebooks.

    `results` carry the term's points (`CourseConfig.adjust`): a dropped or re-weighted check's
    grade cell gets its new maximum. `config` (a CourseConfig) gives the late-penalty plugin and
    the due dates the gradebook lacks. Without `submissions`, only the scores are written (the
    autograded notebooks already there stay): what `report --gradebook` does after a change of
    points or due date.

    Returns counts (students added, submissions added, grades written) and where the autograded
    notebooks went.
    """
    from autograder.course_config import CourseConfig

    config = config or CourseConfig.load(course)
    coursedir = course_directory(course)
    counts = {"students_added": 0, "submissions_added": 0, "submissions_removed": 0, "grades": 0}
    by_stem: dict[str, list[SubmissionResult]] = {}
    for r in results:
        by_stem.setdefault(r.assignment, []).append(r)
    for stem, rs in sorted(by_stem.items()):
        check_ids = sorted({c.grade_id for r in rs for c in r.checks})
        release = ensure_assignment(db_url, stem, coursedir, check_ids)
        with open_gradebook(db_url) as gb, warnings.catch_warnings():
            # nbgrader's add_submission makes SQLAlchemy warn (as under `nbgrader autograde`); nothing is lost
            warnings.filterwarnings("ignore", message=r".*not in session.*")
            solution_ids = [c.name for c in gb.find_notebook(stem, stem).solution_cells]
            _set_assignment(gb, stem, rs, config)
            for r in sorted(rs, key=lambda r: r.student_id):
                _record(gb, r, coursedir, release, solution_ids, submissions, counts, config)
    counts["autograded"] = coursedir.format_path(coursedir.autograded_directory, "*", "*")
    return counts


def _set_assignment(gb, stem: str, rs: list[SubmissionResult], config) -> None:
    """The assignment's due date (from the course configuration when the gradebook has none) and its
    grade cells' maxima (a check dropped or re-weighted in the course configuration)."""
    assignment = gb.find_assignment(stem)
    due = config.duedate(stem)
    if assignment.duedate is None and due is not None:
        assignment.duedate = due
    maxima = {c.grade_id: c.max_points for r in rs for c in r.checks}
    for gid, max_points in maxima.items():
        cell = gb.find_grade_cell(gid, stem, stem)
        if cell.max_score != max_points:
            cell.max_score = max_points
    gb.db.commit()


def assign_late_penalty(gb, stem: str, student_id: str, config) -> float | None:
    """What nbgrader's AssignLatePenalties does after autograding one notebook, for this runner:
    reset the penalty; when the submission is late, the plugin's penalty on the notebook's score
    (manual scores included), clamped to 0 .. score."""
    submission = gb.find_submission(stem, student_id)
    notebook = gb.find_submission_notebook(stem, stem, student_id)
    notebook.late_submission_penalty = None
    if submission.total_seconds_late > 0:
        notebook.late_submission_penalty = config.late_penalty(student_id, notebook.score,
                                                               submission.total_seconds_late)
    gb.db.commit()
    return notebook.late_submission_penalty


def _record(gb, r: SubmissionResult, coursedir, release, solution_ids: list[str],
            submissions: Path | None, counts: dict, config) -> None:
    """One student's submission, grades and comments in the gradebook; their autograded notebook on disk.

    A student who submitted nothing (status `missing`) is in the gradebook's students, as `nbgrader
    export` lists them (0, no submission), but gets no submission: nbgrader autograde makes none, and
    formgrader would show them as submitted and autograded."""
    import nbformat
    from nbgrader.api import MissingEntry

    stem = r.assignment
    folder = Path(submissions) / r.student_id / stem if submissions else None
    submitted = folder / r.notebook if folder is not None and r.notebook else None
    try:
        gb.find_student(r.student_id)
    except MissingEntry:
        gb.add_student(r.student_id)
        counts["students_added"] += 1
    try:
        gb.find_submission(stem, r.student_id)
        existed = True
    except MissingEntry:
        existed = False
    if r.status == "missing":
        if existed and not _has_manual_score(gb, stem, r.student_id):
            gb.remove_submission(stem, r.student_id)  # recorded once, no longer submitted: as nbgrader has it
            counts["submissions_removed"] += 1
            shutil.rmtree(coursedir.format_path(coursedir.autograded_directory, r.student_id, stem), ignore_errors=True)
        return
    if not existed:
        counts["submissions_added"] += 1
    from autograder.course_config import parse_time

    stamp = coursedir.get_existing_timestamp(str(folder)) if folder is not None else None
    stamp = stamp or parse_time(r.timestamp)  # timestamp.txt, as read when it was graded
    gb.update_or_create_submission(stem, r.student_id, **({"timestamp": stamp} if stamp else {}))
    nb = autograded_notebook(r, submitted if submitted and submitted.is_file() else None, release)
    by_id = {check.grade_id: check for check in r.checks}
    for cell in gb.find_notebook(stem, stem).grade_cells:
        grade = gb.find_grade(cell.name, stem, stem, r.student_id)
        check = by_id.get(cell.name)
        if check is None:  # a visible-test cell (0 points, no check): what autograde leaves, nothing to grade
            if grade.manual_score is None:
                grade.auto_score, grade.needs_manual_grade = 0.0, False
            continue
        if grade.manual_score is not None and grade.auto_score != check.points:
            grade.needs_manual_grade = True  # a grader's score stays; flagged for review when the code's changed
        elif grade.manual_score is None:
            grade.needs_manual_grade = False
        grade.auto_score = check.points
        counts["grades"] += 1
    for gid in solution_ids:
        comment = gb.find_comment(gid, stem, stem, r.student_id)
        comment.auto_comment = "No response." if _solution_unchanged(nb, gid) else None
    gb.db.commit()
    assign_late_penalty(gb, stem, r.student_id, config)
    dest = Path(coursedir.format_path(coursedir.autograded_directory, r.student_id, stem)) / f"{stem}.ipynb"
    if submissions is not None or not dest.is_file():
        atomic_write(dest, nbformat.writes(nb))
    _exchange_files(folder, dest.parent, r, gb.find_submission(stem, r.student_id).timestamp)


def _has_manual_score(gb, stem: str, student_id: str) -> bool:
    return any(g.manual_score is not None for nb in gb.find_submission(stem, student_id).notebooks for g in nb.grades)


def _exchange_files(folder: Path | None, autograded: Path, r: SubmissionResult, stamp) -> None:
    """What nbgrader's exchange left with the submission, copied as `nbgrader autograde` copies it:
    `generate_feedback` copies them next to the feedback, and `release_feedback` needs both. A
    submission that came another way (an LMS, e-mail) has neither: its timestamp.txt says when it
    was submitted (or graded), and its submission_secret.txt is a new secret, so that feedback is
    released for the whole class (a student off the exchange has no cached submission to fetch it
    with: send them the runner's feedback)."""
    import secrets

    for name in EXCHANGE_FILES:
        src = folder / name if folder is not None else None
        dest = autograded / name
        if src is not None and src.is_file():
            atomic_write(dest, src.read_text(encoding="utf-8", errors="replace"))
        elif name == "timestamp.txt":
            when = r.timestamp or (f"{stamp:%Y-%m-%d %H:%M:%S.%f} UTC" if stamp else None)
            if when or not dest.is_file():
                import datetime

                atomic_write(dest, when or f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S.%f} UTC")
        elif not dest.is_file():
            atomic_write(dest, secrets.token_hex(64))
