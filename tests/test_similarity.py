"""The class report's advisory similarity section: near-identical graded code is listed in pairs, once the
released stub and the reference solution are set aside; renaming variables does not hide a copy, an
honest answer that is the obvious one is not flagged, and nothing changes a score."""
from __future__ import annotations

import json
import re

from autograder.class_report import write_report
from autograder.results import CheckResult, SubmissionResult
from autograder.scores import Standing
from autograder.similarity import boilerplate, similar_pairs
from tests.test_term import answered

STEM = "losses"
OWN = '''
def l1_loss(input, target, reduction="mean"):
    differences = []
    flat_input, flat_target = input.reshape(-1), target.reshape(-1)
    for position in range(flat_input.numel()):
        gap = flat_input[position] - flat_target[position]
        differences.append(gap if gap >= 0 else -gap)
    stacked = torch.stack(differences).reshape(input.shape) if differences else input.new_zeros(input.shape)
    if reduction == "none":
        return stacked
    total = stacked.sum()
    return total / max(stacked.numel(), 1) if reduction == "mean" else total
'''
RENAMED = (OWN.replace("differences", "d").replace("gap", "g").replace("position", "i").replace("stacked", "s")
           .replace("total", "t").replace("    ", "  "))
OTHER = '''
def l1_loss(input, target, reduction="mean"):
    err = torch.where(input > target, input - target, target - input)
    if reduction == "sum":
        return err.sum()
    if reduction == "mean":
        return err.mean()
    return err
'''


def _with_l1(code: str | None) -> dict:
    nb = answered(STEM)
    if code is not None:
        cell = next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "l1_loss")
        cell["source"] = code
    return nb


def _answers(nb: dict) -> str:
    return "\n\n".join("".join(c["source"]) for c in nb["cells"]
                       if c.get("metadata", {}).get("nbgrader", {}).get("solution"))


CLASS = {"honest1": None, "honest2": None, "original": OWN, "copier": RENAMED, "other": OTHER}


def test_a_renamed_copy_is_found_and_the_obvious_answer_is_not():
    codes = {s: _answers(_with_l1(code)) for s, code in CLASS.items()}
    pairs = similar_pairs(codes, boilerplate(STEM))
    assert [(p.a, p.b) for p in pairs] == [("copier", "original")]
    assert pairs[0].share_a >= 0.8 and pairs[0].share_b >= 0.8


def test_the_stub_is_not_evidence():
    from autograder.course import release_notebook

    stub = _answers(json.loads(release_notebook(STEM).read_text()))
    assert similar_pairs({"a": stub, "b": stub, "c": stub}, boilerplate(STEM)) == []


def test_the_class_report_lists_the_pair_and_no_score_changes(tmp_path):
    subs, out = tmp_path / "submitted", tmp_path / "out"
    standings = []
    for student, code in CLASS.items():
        (subs / student / STEM).mkdir(parents=True)
        (subs / student / STEM / f"{STEM}.ipynb").write_text(json.dumps(_with_l1(code)))
        r = SubmissionResult(student, STEM, f"{STEM}.ipynb", [CheckResult("l1_loss", "check_l1_loss", 1, 1, 1, 1)],
                             max_score=1)
        standings.append(Standing(r, 1, 0, 1, 1, "graded"))
    (subs / "broken" / STEM).mkdir(parents=True)
    (subs / "broken" / STEM / f"{STEM}.ipynb").write_text("{not json")
    broken = SubmissionResult("broken", STEM, f"{STEM}.ipynb", status="unreadable", max_score=1)
    standings.append(Standing(broken, 0, 0, 0, 1, "unreadable"))
    page = write_report(out, standings, subs).read_text()
    section = page[page.index("Near-identical graded code"):page.index("<h3>Students</h3>")]
    assert re.findall(r"<tr><td>(\w+)</td><td>(\w+)</td>", section) == [("copier", "original")]
    assert "Advisory only" in section and "def " not in section  # ids and shares, never code
    assert all(st.score == 1 for st in standings if st.student_id != "broken")
    without = write_report(tmp_path / "out2", standings).read_text()
    assert "Not compared" in without
