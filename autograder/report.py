"""Turn results into text a student reads (feedback, inline checks)."""
from __future__ import annotations

from autograder.results import CheckResult, SubmissionResult

MAX_FAILURES_SHOWN = 3


def render_check(result: CheckResult) -> str:
    mark = "PASS" if result.passed == result.total else ("FAIL" if result.passed == 0 else "PARTIAL")
    lines = [f"[{mark}] {result.name}: {result.points:g}/{result.max_points:g} points "
             f"({result.passed}/{result.total} cases passed)"]
    failed = [v for v in result.cases if not v.passed]
    for v in failed[:MAX_FAILURES_SHOWN]:
        lines.append(f"  - on {v.label}:")
        lines.append(f"      {v.message}")
    if len(failed) > MAX_FAILURES_SHOWN:
        lines.append(f"  - ... and {len(failed) - MAX_FAILURES_SHOWN} more failing cases")
    for hint in result.hints:
        lines.append(f"  Hint: {hint}")
    return "\n".join(lines)


def render_submission(result: SubmissionResult) -> str:
    lines = [f"{result.assignment} for {result.student_id}: {result.score:g}/{result.max_score:g} points"]
    if result.notebook:
        lines.append(f"notebook: {result.notebook}")
    for p in result.problems:
        lines.append(f"note: {p}")
    lines.append("")
    lines.extend(render_check(c) for c in result.checks)
    return "\n".join(lines)
