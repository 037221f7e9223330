"""The instructor's class report: OUT/report.html, one self-contained page.

For every assignment graded into OUT: the score distribution, each check's
pass rate, the most frequent known mistakes (what to re-teach), the
submissions that errored, crashed or timed out, the notebooks that could not
be read, and every student's score with a link to their feedback. Plots are
matplotlib figures embedded as base64 PNG; the CSS is inline, so the file
can be mailed or opened from anywhere.
"""
from __future__ import annotations

import base64
import html
import io
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from autograder.report import view_check
from autograder.results import PROBLEM_KINDS, STATUSES, SubmissionResult, atomic_write, load_submissions

TOP_MISTAKES = 15

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 1.5rem auto;
       padding: 0 1rem; color: #1f2328; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.3rem; margin-top: 2rem;
       border-bottom: 1px solid #d0d7de; } h3 { font-size: 1.05rem; margin: 1.2rem 0 .3rem; }
.stats { display: flex; gap: 1.2rem; flex-wrap: wrap; margin: .6rem 0; }
.stat { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .4rem .8rem; }
.stat b { display: block; font-size: 1.3rem; }
.plots { display: flex; gap: 1rem; flex-wrap: wrap; } .plots img { max-width: 100%; border: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: .4rem 0; font-size: .92rem; }
td, th { padding: .2rem .6rem; border-bottom: 1px solid #d0d7de; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .88rem; }
.kind { font-weight: 600; } .timeout, .crash, .unreadable, .missing { color: #cf222e; } .error { color: #9a6700; }
.none { color: #57606a; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _png(fig) -> str:
    """An <img> with the figure as a base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(fig.axes[0].get_title())}" src="data:image/png;base64,{data}">'


def score_histogram(stem: str, standings) -> str:
    from matplotlib.figure import Figure

    max_score = max((r.max_score for r in standings), default=0) or 1
    fig = Figure(figsize=(4.6, 3.2))
    ax = fig.add_subplot()
    bins = [max_score * k / 10 for k in range(11)]
    ax.hist([r.score for r in standings], bins=bins, color="#0969da", edgecolor="white")
    ax.set_xlim(0, max_score)
    ax.set_xlabel(f"score (out of {max_score:g})")
    ax.set_ylabel("students")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{stem}: score distribution ({len(standings)} students)")
    return _png(fig)


def pass_rate_chart(stem: str, rates: list[tuple[str, float]]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4, 0.4 * len(rates) + 1.1))
    ax = fig.add_subplot()
    names = [n for n, _ in rates][::-1]
    values = [100 * r for _, r in rates][::-1]
    colors = ["#1a7f37" if v >= 80 else "#9a6700" if v >= 50 else "#cf222e" for v in values]
    ax.barh(names, values, color=colors)
    for y, v in enumerate(values):
        inside = v > 85  # no room to the right of the bar: write it on the bar
        ax.text(v - 1 if inside else v + 1, y, f"{v:.0f}%", va="center", ha="right" if inside else "left",
                fontsize=8, color="white" if inside else "black")
    ax.set_xlim(0, 100)
    ax.set_xlabel("students with full points on the check (%)")
    ax.set_title(f"{stem}: pass rate per check")
    return _png(fig)


def mistakes_chart(stem: str, mistakes: list[tuple[str, str, str, int]]) -> str:
    from matplotlib.figure import Figure

    top = mistakes[:10][::-1]
    fig = Figure(figsize=(4.4, 0.4 * len(top) + 1.1))
    ax = fig.add_subplot()
    ax.barh([f"{c}: {m}" for c, m, _, _ in top], [n for *_, n in top], color="#8250df")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("students")
    ax.set_title(f"{stem}: most frequent known mistakes")
    return _png(fig)


def summarize(results: list[SubmissionResult]) -> dict:
    """The numbers behind one assignment's section (also handy for tests)."""
    checks: dict[str, list] = defaultdict(list)
    mistakes: Counter = Counter()
    hints: dict[tuple[str, str], str] = {}
    troubles: list[tuple[str, str, str]] = []
    for r in results:
        for c in r.checks:
            checks[c.name].append(c)
            for mistake, hint, _ in view_check(c).mistakes:
                mistakes[(c.name, mistake)] += 1
                hints[(c.name, mistake)] = hint
        for kind, what in r.troubles():
            troubles.append((r.student_id, kind, what))
    order = list(PROBLEM_KINDS)
    troubles.sort(key=lambda t: (order.index(t[1]), t[0]))
    return {
        "pass_rates": [(name, sum(c.points == c.max_points for c in cs) / len(cs)) for name, cs in checks.items()
                       if any(c.max_points for c in cs)],
        "mean_points": {name: statistics.fmean(c.points for c in cs) for name, cs in checks.items()},
        "max_points": {name: cs[0].max_points for name, cs in checks.items()},
        "mistakes": [(check, m, hints[(check, m)], n) for (check, m), n in mistakes.most_common()],
        "troubles": troubles,
    }


def _section(stem: str, standings, folder: Path | None = None, pairs=None) -> str:
    results = [st.result for st in standings]
    s = summarize(results)
    scores = [st.score for st in standings]
    max_score = max((st.max_score for st in standings), default=0)
    statuses = {status: sum(st.status == status for st in standings) for status in STATUSES}
    out = [f'<h2 id="{_e(stem)}">{_e(stem)}</h2>', '<div class="stats">']
    stats = [("students", len(standings)),
             *((status, n) for status, n in statuses.items() if n or status == "graded"),
             ("late", sum(st.late for st in standings)),
             ("mean", f"{statistics.fmean(scores):.1f} / {max_score:g}"),
             ("median", f"{statistics.median(scores):g} / {max_score:g}"),
             ("full marks", sum(st.score == st.max_score for st in standings))]
    for label, value in stats:
        out.append(f'<div class="stat"><b>{_e(value)}</b>{_e(label)}</div>')
    out.append("</div>")
    out.append(f'<p class="none">{_e(mean_note(standings))}</p>')
    changed = sorted({f"{c.name}: {c.adjusted}" for r in results for c in r.checks
                      if c.adjusted and not c.adjusted.startswith("score set by")})
    if changed:
        out.append("<p>Changed in the course configuration: " + "; ".join(f"<code>{_e(t)}</code>" for t in changed)
                   + "</p>")
    plots = [score_histogram(stem, standings), pass_rate_chart(stem, s["pass_rates"])]
    if s["mistakes"]:
        plots.append(mistakes_chart(stem, s["mistakes"]))
    out.append('<div class="plots">' + "".join(plots) + "</div>")

    out.append("<h3>Checks</h3><table><tr><th>check</th><th>pass rate</th><th>mean points</th></tr>")
    for name, rate in s["pass_rates"]:
        out.append(f'<tr><td><code>{_e(name)}</code></td><td class="num">{100 * rate:.0f}%</td>'
                   f'<td class="num">{s["mean_points"][name]:.2f} / {s["max_points"][name]:g}</td></tr>')
    out.append("</table>")

    out.append("<h3>Most frequent known mistakes: what to re-teach</h3>")
    if s["mistakes"]:
        out.append("<table><tr><th>students</th><th>check</th><th>mistake</th><th>hint the students got</th></tr>")
        for check, mistake, hint, n in s["mistakes"][:TOP_MISTAKES]:
            out.append(f'<tr><td class="num">{n}</td><td><code>{_e(check)}</code></td><td>{_e(mistake)}</td>'
                       f"<td>{_e(hint)}</td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="none">No known mistake was matched.</p>')

    out.append("<h3>Submissions that errored, crashed or timed out; notebooks that could not be read</h3>")
    if s["troubles"]:
        out.append("<table><tr><th>student</th><th>what</th><th>details</th></tr>")
        for student, kind, what in s["troubles"]:
            out.append(f'<tr><td>{_e(student)}</td><td class="kind {kind}">{_e(PROBLEM_KINDS[kind])}</td>'
                       f"<td><code>{_e(what[:400])}</code></td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="none">Every notebook was read and ran without errors.</p>')

    out.append(_similar(pairs))
    out.append("<h3>Students</h3><table><tr><th>student</th><th>score</th><th>status</th><th>late</th>"
               "<th>changed by hand</th><th>feedback</th></tr>")
    for st in sorted(standings, key=lambda st: st.student_id):
        link = f"feedback/{st.student_id}/{stem}.html"
        # a link only to a file there is (a student of the gradebook with no result has no feedback)
        shown = (f'<a href="{_e(link)}">{_e(link)}</a>' if folder is None or (Path(folder) / link).is_file()
                 else '<span class="none">none (no result to give feedback on)</span>')
        late = f"{st.late_text()}" if st.late else ""
        out.append(f'<tr><td>{_e(st.student_id)}</td><td class="num">{st.score:g} / {st.max_score:g}</td>'
                   f'<td title="{_e(STATUSES.get(st.status, st.status))}">{_e(st.status)}</td><td>{_e(late)}</td>'
                   f'<td>{_e(", ".join(st.manual))}</td><td>{shown}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _similar(pairs) -> str:
    """The advisory similarity section (similarity.py): pairs whose graded code is near-identical."""
    out = ["<h3>Near-identical graded code (advisory)</h3>"]
    if pairs is None:
        return out[0] + ('<p class="none">Not compared: the students\' notebooks are read from the submissions '
                         "folder (<code>grade</code> always has it; give <code>report --submissions</code>).</p>")
    out.append('<p class="none">Pairs whose answer cells share at least 80% of their code, once the released stub '
               "and the reference solution are set aside (copydetect: names, literals and layout do not hide a "
               "copy). Advisory only: no score changes; look at both notebooks before drawing a conclusion.</p>")
    if not pairs:
        return "".join(out) + '<p class="none">No two submissions are near-identical.</p>'
    out.append("<table><tr><th>student</th><th>student</th><th>shared code</th></tr>")
    for p in pairs:
        out.append(f"<tr><td>{_e(p.a)}</td><td>{_e(p.b)}</td><td class=\"num\">{100 * p.share_a:.0f}% of "
                   f"{_e(p.a)}'s, {100 * p.share_b:.0f}% of {_e(p.b)}'s</td></tr>")
    return "".join(out) + "</table>"


def mean_note(standings) -> str:
    """Why this mean is not formgrader's: this one is over every student (a missing submission counts 0),
    after late penalties; formgrader averages the submissions alone, before late penalties."""
    scores = [st.score for st in standings]
    submitted = [st.raw_score for st in standings if st.status != "missing"]
    max_score = max((st.max_score for st in standings), default=0)
    text = (f"The mean ({statistics.fmean(scores):.2f} / {max_score:g}) is over all {len(scores)} students, a "
            "missing submission counting 0, after late penalties. ")
    if not submitted:
        return text + "Nobody submitted: formgrader has no mean."
    return text + (f"Formgrader's average score is over the {len(submitted)} submissions alone, before late "
                   f"penalties: {statistics.fmean(submitted):.2f} / {max_score:g}.")


def render_report(standings, out: Path | None = None, similar: dict | None = None) -> str:
    """The page, from settled standings (scores.settle); plain results are taken as they were graded.
    With `out` (the folder the page is written to), a student's feedback is linked only when it is there."""
    standings = [st if hasattr(st, "result") else _as_graded(st) for st in standings]
    by_stem: dict[str, list] = defaultdict(list)
    for st in standings:
        by_stem[st.assignment].append(st)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = " · ".join(f'<a href="#{_e(s)}">{_e(s)}</a>' for s in sorted(by_stem))
    body = "\n".join(_section(s, by_stem[s], out, None if similar is None else similar.get(s, []))
                     for s in sorted(by_stem)) or "<p>No results.</p>"
    source = ("nbgrader's gradebook (manual scores and late penalties included)"
              if any(st.source == "gradebook" for st in standings)
              else "the results of <code>python -m autograder grade</code>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Class report</title>"
            f"<style>{CSS}</style></head><body>\n<h1>Class report</h1>"
            f'<p class="none">{len({st.student_id for st in standings})} students, {len(by_stem)} assignment(s): '
            f"{toc}. Built {stamp}; scores from {source}.</p>\n"
            f"{body}\n</body></html>\n")


def _as_graded(result: SubmissionResult):
    from autograder.scores import Standing

    return Standing(result, result.score, 0.0, result.score, result.max_score, result.status)


def write_report(out: Path, standings=None, submissions: Path | None = None) -> Path:
    """OUT/report.html from `standings` (default: every result under OUT/results, as graded); with
    `submissions`, the students' code is compared (similarity.py, advisory)."""
    standings = load_submissions(out) if standings is None else standings
    similar = None
    if submissions is not None:
        from autograder.similarity import class_pairs

        similar = class_pairs([st for st in standings if hasattr(st, "result")], submissions)
    path = Path(out) / "report.html"
    atomic_write(path, render_report(standings, out, similar))
    return path
