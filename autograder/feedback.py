"""Feedback files for students: OUT/feedback/<student_id>/<stem>.html and <stem>.txt.

Both are rendered from the results JSON alone (report.py's views), which
holds what the student's code returned, the expected values in short, and
the hints of matched mistakes: no hidden check's source and no solution
code are in the results, so none can reach the feedback.
"""
from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from autograder.problems import Problem
from autograder.report import every_failing_case, explain, render_submission, shown_problems, view_check
from autograder.results import SubmissionResult, atomic_write, write_result

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin: 1.6rem 0 .4rem; }
.score { font-size: 1.2rem; font-weight: 600; }
table { border-collapse: collapse; margin: .6rem 0; } td, th { padding: .25rem .7rem; border-bottom: 1px solid #d0d7de;
       text-align: left; } th { background: #f6f8fa; }
.PASS { color: #1a7f37; font-weight: 600; } .FAIL { color: #cf222e; font-weight: 600; }
.PARTIAL { color: #9a6700; font-weight: 600; } .DROPPED { color: #57606a; font-weight: 600; }
.check { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1rem; margin: .8rem 0; }
.case { margin: .4rem 0 .4rem 1rem; } details { margin: .4rem 0 .4rem 1rem; } summary { cursor: pointer; }
.why { color: #57606a; font-size: .9rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9rem; }
pre { background: #f6f8fa; padding: .4rem .6rem; border-radius: 4px; white-space: pre-wrap; margin: .2rem 0; }
.hint { background: #ddf4ff; border-left: 4px solid #0969da; padding: .4rem .7rem; margin: .4rem 0; }
.problem { background: #fff8c5; border-left: 4px solid #9a6700; padding: .4rem .7rem; margin: .4rem 0; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _case_html(v, case) -> str:
    out = [f'<div class="case">Failed on <b>{_e(case.label)}</b>']
    if case.expected is not None:
        out.append(f"<table><tr><th>expected {_e(case.output)}</th><td><code>{_e(case.expected)}</code></td></tr>"
                   f"<tr><th>your code gave</th><td><code>{_e(case.got)}</code></td></tr></table>")
    else:
        out.append(f"<pre>{_e(v.message(case))}</pre>")
    out.append("</div>")
    return "".join(out)


def _check_html(check, ran: bool, cells: dict | None = None) -> str:
    v = view_check(check, cells)
    r = v.result
    out = [f'<div class="check" id="{_e(r.name)}"><h2><span class="{v.mark}">{v.mark}</span> <code>{_e(r.name)}</code>: '
           f'{r.points:g}/{r.max_points:g} {"point" if r.max_points == 1 else "points"}</h2>',
           f'<div class="why">{r.passed} of {r.total} cases passed</div>']
    if r.adjusted:
        out.append(f'<div class="hint"><b>Changed by your instructor:</b> {_e(r.adjusted)}</div>')
    if not ran:
        return "".join(out) + "</div>"
    if v.note:
        out.append(f'<div class="problem">{_e(v.note.splitlines()[0])}<pre>{_e(chr(10).join(v.note.splitlines()[1:]))}'
                   '</pre></div>' if "\n" in v.note else f'<div class="problem">{_e(v.note)}</div>')
    if v.error:
        lead = every_failing_case(v.error).removesuffix(v.error).rstrip()
        out.append(f'<div class="problem">{_e(lead)} <pre>{_e(v.error)}</pre></div>')
    out.extend(_case_html(v, case) for case in v.shown)
    if v.folded:  # every failing case is listed; past the first few, folded
        n = len(v.folded)
        out.append(f"<details><summary>{n} more failing case{'s' if n != 1 else ''}</summary>"
                   + "".join(_case_html(v, case) for case in v.folded) + "</details>")
    if v.advice:
        out.append(f'<div class="hint"><b>What this means:</b> {_e(v.advice)}</div>')
    for _, hint, n in v.mistakes:
        out.append(f'<div class="hint"><b>Hint</b> ({n} failing case{"s" if n != 1 else ""} match a known mistake): '
                   f"{_e(hint)}</div>")
    out.append("</div>")
    return "\n".join(out)


def render_html(result: SubmissionResult, standing=None) -> str:
    """One student's feedback page; with `standing` (scores.Standing), its settled score and lateness."""
    if standing is not None:
        result = standing.result
    score, max_score = (standing.score, standing.max_score) if standing is not None else (result.score,
                                                                                          result.max_score)
    ran = result.ran
    rows = "".join(
        f'<tr><td><a href="#{_e(c.name)}"><code>{_e(c.name)}</code></a></td>'
        f'<td class="{view_check(c).mark}">{view_check(c).mark}</td><td>{c.points:g}/{c.max_points:g}</td></tr>'
        for c in result.checks)
    problems = "".join(
        f'<div class="problem"><pre>{_e(p)}</pre>'
        + (f"<b>What this means:</b> {_e(explain(p))}" if explain(p) else "") + "</div>"
        for p in shown_problems(result))
    late = (f'<div class="problem"><b>Late:</b> {_e(standing.late_text())}; {standing.raw_score:g} points '
            "before the penalty</div>" if standing is not None and standing.late else "")
    body = [
        f"<h1>{_e(result.assignment)}: feedback for {_e(result.student_id)}</h1>",
        f'<p class="score">Score: {score:g}/{max_score:g} points</p>',
        late,
        f"<p>Notebook graded: <code>{_e(result.notebook)}</code></p>" if result.notebook else "",
        f"<h2>Problems while running your notebook</h2>{problems}" if problems else "",
        "" if ran else "<p>Nothing in the notebook could be run, so every check scores 0.</p>",
        f"<table><tr><th>check</th><th>result</th><th>points</th></tr>{rows}</table>",
        *(_check_html(c, ran, result.cells) for c in result.checks if view_check(c).mark != "PASS"),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(result.assignment)}: feedback for {_e(result.student_id)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def write_feedback(out: Path, result: SubmissionResult, standing=None) -> list[Path]:
    """OUT/feedback/<student_id>/<stem>.html and .txt for one result (its settled standing when given)."""
    base = Path(out) / "feedback" / result.student_id
    paths = [base / f"{result.assignment}.html", base / f"{result.assignment}.txt"]
    atomic_write(paths[0], render_html(result, standing))
    atomic_write(paths[1], render_submission(result, standing))
    return paths


def write_all_feedback(out: Path, results: list[SubmissionResult], standings=None) -> int:
    """Feedback for each of `results`, with its standing from `standings` when given. One whose
    feedback cannot be written becomes a grader-error result (its problem says why) and the
    others are still written. Returns how many were written."""
    by_key = {(s.assignment, s.student_id): s for s in standings or []}
    written = 0
    for r in results:
        try:
            standing = by_key.get((r.assignment, r.student_id))
            if standing is not None:  # settled from a summary (results.load_summaries): the cases are r's
                standing = replace(standing, result=standing.result.with_cases_of(r))
            write_feedback(out, r, standing)
            written += 1
        except Exception as exc:  # noqa: BLE001 - one student's feedback never stops the others'
            r.status = "grader-error"
            r.problems.append(Problem("grader-error", f"the grader failed while writing this student's feedback "
                                                      f"({type(exc).__name__}: {exc})"))
            try:
                write_result(out, r)
            except Exception:  # noqa: BLE001
                pass
    return written
