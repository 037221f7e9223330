"""Advisory only: pairs of submissions whose graded code is near-identical, for the class report.

The graded code of a submission is its answer cells (nbgrader's solution cells), read from the
notebook as submitted. Two of them are compared with copydetect (winnowed fingerprints of the code
tokenized by Pygments, names and literals folded, so renaming variables or reformatting does not hide
a copy), with the released stub and the reference solution removed as boilerplate: code that every
honest answer shares (the signature, `raise NotImplementedError()`, the obvious one-liner) is not
evidence of anything. A pair is listed when each side shares at least SHARE of its remaining code
with the other, and at least MIN_OVERLAP characters of it. Nothing here changes a score; the report
shows percentages and student ids only, never code.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from autograder.course import release_notebook, source_notebook
from autograder.notebook import NotebookError, read_cells, without_solution_markers

NOISE = 25  # copydetect's k: the shortest match (characters of tokenized code) that counts
GUARANTEE = 30  # a match this long is always found (winnowing window: GUARANTEE - NOISE + 1)
SHARE = 0.8
MIN_OVERLAP = 120


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    share_a: float  # of a's code (boilerplate aside), the part also in b's
    share_b: float
    overlap: int  # characters of tokenized code in common


def answer_code(path: Path) -> str | None:
    """The answer cells of a submitted notebook, in order; None when it cannot be read."""
    try:
        cells = read_cells(path)
    except (NotebookError, OSError, ValueError):
        return None
    return "\n\n".join(c.source for c in cells if c.cell_type == "code" and c.solution)


def _fingerprint(code: str, boilerplate=None):
    from copydetect import CodeFingerprint

    return CodeFingerprint("answer.py", NOISE, GUARANTEE - NOISE + 1, boilerplate=boilerplate,
                           fp=io.StringIO(code))


def boilerplate(stem: str, root: Path | None = None) -> list[int]:
    """The fingerprints of the released stub and of the reference solution's answer cells."""
    stub = answer_code(release_notebook(stem, root)) or ""
    reference = without_solution_markers(answer_code(source_notebook(stem, root)) or "")
    return sorted(_fingerprint(stub).hashes | _fingerprint(reference).hashes)


def similar_pairs(codes: dict[str, str], boiler: list[int]) -> list[Pair]:
    """Every pair of `codes` ({student: graded code}) near-identical once `boiler` is removed, the most
    similar first."""
    from copydetect import compare_files

    prints = {s: _fingerprint(code, boiler) for s, code in sorted(codes.items()) if code and code.strip()}
    by_hash: dict[int, list[str]] = {}
    for s, fp in prints.items():
        for h in fp.hashes:
            by_hash.setdefault(h, []).append(s)
    shared: dict[tuple[str, str], int] = {}  # only pairs with fingerprints in common are compared
    for students in by_hash.values():
        for i, a in enumerate(students):
            for b in students[i + 1:]:
                shared[(a, b)] = shared.get((a, b), 0) + 1
    pairs = []
    for a, b in sorted(shared):
        overlap, (share_a, share_b), _ = compare_files(prints[a], prints[b])
        if overlap >= MIN_OVERLAP and min(share_a, share_b) >= SHARE:
            pairs.append(Pair(a, b, round(float(share_a), 3), round(float(share_b), 3), int(overlap)))
    return sorted(pairs, key=lambda p: (-min(p.share_a, p.share_b), p.a, p.b))


def class_pairs(standings, submissions: Path) -> dict[str, list[Pair]]:
    """{assignment: similar pairs} for the standings' submissions under `submissions`."""
    by_stem: dict[str, dict[str, str]] = {}
    for st in standings:
        r = st.result
        if r.notebook and st.status not in ("missing", "unreadable"):
            code = answer_code(Path(submissions) / r.student_id / r.assignment / r.notebook)
            if code is not None:
                by_stem.setdefault(r.assignment, {})[r.student_id] = code
    return {stem: similar_pairs(codes, boilerplate(stem)) for stem, codes in by_stem.items()}
