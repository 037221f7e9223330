"""Read a notebook into cells, tolerating what students do to notebooks.

Works on the raw JSON (not nbformat's validator), so a notebook with changed
metadata or a missing field is still read; only JSON that cannot be parsed at
all is refused, with the line and column of the problem.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path


class NotebookError(Exception):
    """The file cannot be read as a notebook; the message says why."""


@dataclass(frozen=True)
class Cell:
    index: int  # position among all cells, from 0
    cell_type: str
    source: str
    grade_id: str | None = None
    solution: bool = False
    grade: bool = False
    points: float | None = None
    locked: bool = False  # nbgrader's read-only cell: autograde runs the source's version

    @property
    def number(self) -> int:
        """The cell's position as a person counts it (the first cell is cell 1), for messages."""
        return self.index + 1

    @property
    def is_check(self) -> bool:
        """An nbgrader test cell worth points: it holds a (hidden) check, not the student's code."""
        return self.cell_type == "code" and self.grade and not self.solution and not self.is_visible_test

    @property
    def is_visible_test(self) -> bool:
        """An nbgrader test cell worth 0 points: an exercise's visible tests. `nbgrader validate`
        reports it when it fails; nothing scores it (nbgrader gives it 0 of 0; the runner runs it as
        any cell): docs/maintainers.md."""
        return self.cell_type == "code" and self.grade and not self.solution and not self.points


def _text(source) -> str:
    if isinstance(source, list):
        return "".join(str(s) for s in source)
    return source if isinstance(source, str) else ""


# What a submitted notebook may be, at most (an instructor can change them: ReadLimits(...)).
@dataclass(frozen=True)
class ReadLimits:
    max_bytes: int = 64 << 20  # a notebook with a few plots is a few MiB
    max_cells: int = 10_000  # an honest notebook has hundreds at most
    max_cell_chars: int = 1 << 20


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`: no symbolic link
    is followed, no FIFO, device or socket opened (the open cannot block), no hard link to a
    file elsewhere taken. NotebookError says which rule refused it."""
    name = Path(path).name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotebookError(f"{name} is a symbolic link; only a regular file is graded") from None
        raise NotebookError(f"{name} cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotebookError(f"{name} is not a regular file (a folder, pipe, device or socket); "
                                "only a regular file is graded")
        if st.st_nlink > 1:
            raise NotebookError(f"{name} is a hard link shared with another file; only a file of its own is graded")
        if st.st_size > max_bytes:
            raise NotebookError(f"{name} is {st.st_size / 2**20:.1f} MiB, over the limit of "
                                f"{max_bytes / 2**20:.0f} MiB (clear the outputs and submit it again)")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise NotebookError(f"{name} is over the limit of {max_bytes / 2**20:.0f} MiB")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise NotebookError(f"{name} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_cells(path: Path, limits: ReadLimits = ReadLimits()) -> list[Cell]:
    return parse_cells(read_regular_file(path, limits.max_bytes), Path(path).name, limits)


def parse_cells(raw: bytes, name: str, limits: ReadLimits = ReadLimits()) -> list[Cell]:
    """The cells of a notebook's bytes (as `read_regular_file` read them) named `name`."""
    try:
        nb = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{name} is not valid notebook JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); was it edited outside Jupyter or cut off while saving?"
        ) from None
    except RecursionError:
        raise NotebookError(f"{name} is JSON nested too deeply to be a notebook") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{name} is JSON but not a notebook (no list of cells)")
    if len(nb["cells"]) > limits.max_cells:
        raise NotebookError(f"{name} has {len(nb['cells'])} cells, over the limit of {limits.max_cells}")
    cells = []
    for i, c in enumerate(nb["cells"]):
        if not isinstance(c, dict):
            continue
        meta = c.get("metadata") if isinstance(c.get("metadata"), dict) else {}
        nbg = meta.get("nbgrader") if isinstance(meta.get("nbgrader"), dict) else {}
        source = _text(c.get("source", ""))
        if len(source) > limits.max_cell_chars:
            raise NotebookError(f"{name}: cell {i + 1} holds {len(source)} characters, over the limit of "
                                f"{limits.max_cell_chars}")
        cells.append(
            Cell(
                index=i,
                cell_type=str(c.get("cell_type", ""))[:32],
                source=source,
                grade_id=nbg.get("grade_id") if isinstance(nbg.get("grade_id"), str) else None,
                solution=bool(nbg.get("solution", False)),
                grade=bool(nbg.get("grade", False)),
                points=_points(nbg.get("points")),
                locked=bool(nbg.get("locked", False)),
            )
        )
    return cells


def _points(value) -> float | None:
    """A cell's points as a finite number, or None (only the source notebook's points are ever used)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        points = float(value)
    except OverflowError:
        return None
    return points if math.isfinite(points) else None


def code_to_run(cells: list[Cell], check_ids: set[str]) -> list[Cell]:
    """The code cells a kernel would run for grading: all but the check cells.

    A cell is a check cell if the source notebook says so (its grade_id is a
    check's), whatever the submission's own metadata claims, so editing
    metadata neither hides code from grading nor smuggles code into a check.
    """
    return [c for c in cells if c.cell_type == "code" and c.grade_id not in check_ids]


# nbgrader's markers, as they appear in a source notebook's cells.
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def marked_lines(source: str, begin: str, end: str) -> dict[int, str]:
    """{line number (from 1): line} of every block between `begin` and `end` markers, markers included."""
    found, inside = {}, False
    begin, end = begin.removeprefix("### "), end.removeprefix("### ")
    for n, line in enumerate(source.splitlines(), 1):
        if begin in line:
            inside = True
        if inside:
            found[n] = line
        if end in line:
            inside = False
    return found


def visible_part(source: str) -> str:
    """A check cell as students see it: without its hidden block
    (what nbgrader's ClearHiddenTests leaves)."""
    hidden = marked_lines(source, BEGIN_HIDDEN, END_HIDDEN)
    return "".join(line for n, line in enumerate(source.splitlines(keepends=True), 1) if n not in hidden)


def without_solution_markers(source: str) -> str:
    """A solution cell's code as a student who answered it would write it (markers removed)."""
    return re.sub(r"[ \t]*### (BEGIN|END) SOLUTION\n?", "", source)


def grade_id_of(cell: dict) -> str | None:
    """The nbgrader grade_id of a cell of a notebook read as JSON (None if it has none)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    gid = nbg.get("grade_id") if isinstance(nbg, dict) else None
    return gid if isinstance(gid, str) else None


def find_cell(nb: dict, grade_id: str) -> dict:
    """The cell of a notebook read as JSON whose nbgrader grade_id is `grade_id` (KeyError if none)."""
    for cell in nb.get("cells", []):
        if grade_id_of(cell) == grade_id:
            return cell
    raise KeyError(f"no cell with grade_id {grade_id!r}")


def has_code(source: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in source.splitlines())


def locked_cells(source: list[Cell]) -> dict[str, Cell]:
    """The source's read-only code cells that are neither solutions nor checks (e.g. the setup cell)."""
    return {c.grade_id: c for c in source
            if c.cell_type == "code" and c.locked and c.grade_id and not c.solution and not c.is_check}


def restore_locked(cells: list[Cell], source: list[Cell]) -> tuple[list[Cell], list[str]]:
    """As nbgrader's autograde does: a read-only cell runs with the source's code, whatever
    the submission did to it. Returns the cells and what was restored, in words."""
    locked = locked_cells(source)
    out, problems = [], []
    for c in cells:
        src = locked.get(c.grade_id) if c.cell_type == "code" else None
        if src is not None and c.source != src.source:
            problems.append(f"cell {c.number} ({c.grade_id}) is read-only but was edited; "
                            "graded with the source notebook's version")
            c = Cell(c.index, c.cell_type, src.source, c.grade_id, c.solution, c.grade, c.points, c.locked)
        out.append(c)
    return out, problems


def structure_problems(cells: list[Cell], source: list[Cell]) -> list[str]:
    """What a submission changed in the graded structure of the source notebook, in words.

    Grading does not depend on any of it (the code runs as a kernel would run
    it, check cells are chosen by the source's ids), but the instructor and
    the student should know.
    """
    wanted = {c.grade_id: c for c in source if c.grade_id and c.solution}
    found: dict[str, list[Cell]] = {}
    for c in cells:
        if c.grade_id:
            found.setdefault(c.grade_id, []).append(c)
    problems = []
    for grade_id, src in wanted.items():
        got = found.get(grade_id, [])
        if not got:
            problems.append(f"no cell has the nbgrader id {grade_id} (deleted, or its metadata changed); "
                            "graded with the code that is there")
        elif len(got) > 1:
            problems.append(f"the cell {grade_id} appears {len(got)} times (cells "
                            f"{', '.join(str(c.number) for c in got)}); all ran in order, as in a kernel")
        for c in got:
            if (c.solution, c.grade, c.points) != (src.solution, src.grade, src.points):
                problems.append(f"cell {c.number} ({grade_id}): its nbgrader metadata was changed; "
                                "graded with the source notebook's")
    return problems
