"""The term at a glance: OUT/term.csv and OUT/term.html, one row per student, from the settled standings
(scores.py) of every assignment graded into OUT.

Each assignment's column is the student's final score (late penalty, manual scores and the term's
points included, so with a gradebook it is `nbgrader export`'s score). Then:

- total_points, max_points: all points earned over all points possible;
- total_percent: the weighted mean of the assignments' scores as fractions of their maxima, under
  `c.Autograder.weights` (course_config.py); an assignment without a weight weighs its maximum, so
  with no weights total_percent is 100 x total_points / max_points.

A student with no standing for an assignment (not in that class's submissions, nor in the gradebook)
scores 0 on it and is marked missing, as nbgrader export marks a student who did not submit.
"""
from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from autograder.results import atomic_write


def _num(x: float) -> str:
    return f"{round(x, 2):g}"


def term_table(standings, config) -> tuple[list[str], dict[str, float], list[dict]]:
    """(assignments, their maxima, one row per student: {student_id, scores: {stem: (score, status)},
    total_points, max_points, total_percent})."""
    stems = sorted({s.assignment for s in standings})
    maxima = {stem: max(s.max_score for s in standings if s.assignment == stem) for stem in stems}
    by_student: dict[str, dict] = {}
    for s in standings:
        by_student.setdefault(s.student_id, {})[s.assignment] = (s.score, s.status)
    weights = {stem: config.weight(stem, maxima[stem]) for stem in stems}
    rows = []
    for student in sorted(by_student):
        scores = {stem: by_student[student].get(stem, (0.0, "missing")) for stem in stems}
        earned = sum(score for score, _ in scores.values())
        weight = sum(weights.values())
        percent = (100 * sum(weights[stem] * (scores[stem][0] / maxima[stem] if maxima[stem] else 0.0)
                             for stem in stems) / weight) if weight else 0.0
        rows.append({"student_id": student, "scores": scores, "total_points": round(earned, 2),
                     "max_points": round(sum(maxima.values()), 2), "total_percent": round(percent, 2)})
    return stems, maxima, rows


def term_csv(standings, config) -> str:
    stems, _, rows = term_table(standings, config)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student_id", *stems, "total_points", "max_points", "total_percent"])
    for r in rows:
        w.writerow([r["student_id"], *(_num(r["scores"][s][0]) for s in stems), _num(r["total_points"]),
                    _num(r["max_points"]), _num(r["total_percent"])])
    return buf.getvalue()


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 1.5rem auto;
       padding: 0 1rem; color: #1f2328; }
table { border-collapse: collapse; font-size: .92rem; }
td, th { padding: .2rem .6rem; border-bottom: 1px solid #d0d7de; }
th { background: #f6f8fa; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #cf222e; } .note { color: #57606a; }
"""


def term_html(standings, config) -> str:
    stems, maxima, rows = term_table(standings, config)
    weights = {stem: config.weight(stem, maxima[stem]) for stem in stems}
    e = html.escape
    head = "".join(f'<th>{e(s)}<br><span class="note">/ {_num(maxima[s])}, weight {_num(weights[s])}</span></th>'
                   for s in stems)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="num{" missing" if status == "missing" else ""}" title="{e(status)}">{_num(score)}</td>'
            for score, status in (r["scores"][s] for s in stems))
        body.append(f"<tr><td>{e(r['student_id'])}</td>{cells}<td class=\"num\">{_num(r['total_points'])} / "
                    f"{_num(r['max_points'])}</td><td class=\"num\">{_num(r['total_percent'])}%</td></tr>")
    how = ("the weights of <code>c.Autograder.weights</code> (an assignment without one weighs its maximum)"
           if config.weights else "each assignment weighing its maximum points (no <code>c.Autograder.weights</code>)")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Term summary</title>"
            f"<style>{CSS}</style></head><body>\n<h1>Term summary</h1>\n"
            f"<p class=\"note\">{len(rows)} students, {len(stems)} assignment(s). Each score is the final one "
            "(late penalty, manual scores, the term's points); a missing submission scores 0 (in red). "
            f"The total in % is the weighted mean of the scores over their maxima, with {how}.</p>\n"
            f"<table><tr><th>student</th>{head}<th>total points</th><th>total</th></tr>\n" + "\n".join(body)
            + "\n</table>\n</body></html>\n")


def write_term(out: Path, standings, config) -> dict[str, Path]:
    out = Path(out)
    paths = {"csv": out / "term.csv", "html": out / "term.html"}
    atomic_write(paths["csv"], term_csv(standings, config))
    atomic_write(paths["html"], term_html(standings, config))
    return paths
