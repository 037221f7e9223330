"""The class runner: malformed and hostile submissions are graded for what they honestly contain."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autograder.course import source_notebook
from autograder.grading import grade_class
from autograder.sandbox import Limits

STEM = "losses"


def _notebook_with(edit) -> dict:
    nb = json.loads(source_notebook(STEM).read_text())
    edit(nb)
    return nb


def _solution_cell(nb, grade_id):
    return next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _append_to(grade_id, code):
    def edit(nb):
        cell = _solution_cell(nb, grade_id)
        cell["source"] = "".join(cell["source"]) + "\n" + code
    return edit


def _write(subs: Path, student: str, content, name=f"{STEM}.ipynb") -> None:
    d = subs / student / STEM
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    subs = tmp / "submitted"
    honest = json.loads(source_notebook(STEM).read_text())
    _write(subs, "honest", honest)
    _write(subs, "broken_json", source_notebook(STEM).read_text()[:5000])
    _write(subs, "renamed", honest, name=f"{STEM}-Copy1.ipynb")
    (subs / "empty_folder" / STEM).mkdir(parents=True)
    _write(subs, "os_exit", _notebook_with(_append_to("mse_loss", "import os; os._exit(3)")))
    _write(subs, "sys_exit", _notebook_with(_append_to("mse_loss", "import sys; sys.exit(0)")))
    _write(subs, "hang", _notebook_with(_append_to("mse_loss", "while True:\n    try:\n        pass\n"
                                                   "    except BaseException:\n        pass")))
    _write(subs, "patches_assert_close", _notebook_with(_append_to(
        "l1_loss", "import torch\ntorch.testing.assert_close = lambda *a, **k: None\n"
        "torch.allclose = lambda *a, **k: True\ndef l1_loss(input, target, reduction='mean'):\n"
        "    return input.sum() * 0")))
    _write(subs, "magics", _notebook_with(_append_to("l1_loss", "%matplotlib inline\n!echo hi")))
    _write(subs, "flood", _notebook_with(_append_to("l1_loss", "for i in range(200000):\n    print('x' * 100)")))
    _write(subs, "deleted_cell", _notebook_with(lambda nb: nb["cells"].remove(_solution_cell(nb, "nll_loss"))))
    _write(subs, "changed_metadata", _notebook_with(
        lambda nb: _solution_cell(nb, "l1_loss")["metadata"].update({"nbgrader": {"grade": True, "points": 99}})))
    results = grade_class(STEM, submissions=subs, out=tmp / "out", device="cpu", jobs=2, progress=False,
                          limits=Limits(cell_timeout=5, check_timeout=20))
    return {r.student_id: r for r in results}, tmp / "out"


def _points(result) -> dict[str, float]:
    return {c.name: c.points for c in result.checks}


def test_honest_submission_gets_full_marks(graded):
    results, _ = graded
    assert results["honest"].score == results["honest"].max_score == 16


def test_broken_json_is_reported_and_scores_zero(graded):
    r = graded[0]["broken_json"]
    assert r.status == "unreadable" and r.score == 0
    assert any("not valid notebook JSON" in p for p in r.problems)


def test_renamed_notebook_is_graded_and_reported(graded):
    r = graded[0]["renamed"]
    assert r.score == 16 and any("losses-Copy1.ipynb" in p for p in r.problems)


def test_empty_folder_is_reported_as_missing(graded):
    r = graded[0]["empty_folder"]
    assert r.status == "missing" and r.score == 0


@pytest.mark.parametrize("student", ["os_exit", "hang"])
def test_a_cell_that_kills_or_hangs_costs_only_what_it_defines(graded, student):
    """The mse_loss cell is lost (it killed or hung the child); everything else still counts,
    except what depends on mse_loss... nothing does."""
    r = graded[0][student]
    pts = _points(r)
    assert pts["mse_loss"] == 0
    assert r.score == 16 - 1, pts
    assert any("graded without that cell" in p for p in r.problems)


def test_sys_exit_in_a_cell_is_just_an_exception(graded):
    r = graded[0]["sys_exit"]
    assert r.score == 16 and any("SystemExit" in p for p in r.problems)


def test_patching_torch_comparisons_changes_nothing(graded):
    pts = _points(graded[0]["patches_assert_close"])
    assert pts["l1_loss"] == 0
    assert pts["detection_loss"] < 2  # it honestly uses the wrong l1_loss
    assert sum(v for k, v in pts.items() if k not in ("l1_loss", "detection_loss")) == 13


def test_magics_are_accepted_and_floods_are_cut(graded):
    assert graded[0]["magics"].score == 16
    assert graded[0]["flood"].score == 16


def test_deleted_solution_cell_costs_that_check_and_its_dependents(graded):
    pts = _points(graded[0]["deleted_cell"])
    assert pts["nll_loss"] == 0 and pts["cross_entropy"] == 0  # cross_entropy uses nll_loss
    assert pts["l1_loss"] == 1 and pts["detection_loss"] == 2


def test_changed_metadata_does_not_change_the_grading(graded):
    assert graded[0]["changed_metadata"].score == 16


def test_grades_csv_has_a_row_per_student_with_status(graded):
    results, out = graded
    rows = (out / "grades.csv").read_text().splitlines()
    assert rows[0] == "student_id,assignment,score,max_score,status"
    assert len(rows) == 1 + len(results)
    assert f"broken_json,{STEM},0,16,unreadable" in rows


def test_shards_merge_into_one_grades_csv(tmp_path):
    subs = tmp_path / "submitted"
    for s in ("a", "b", "c"):
        _write(subs, s, json.loads(source_notebook(STEM).read_text()))
    for i in range(2):
        grade_class(STEM, submissions=subs, out=tmp_path / "out", device="cpu", jobs=1, shard=f"{i}/2",
                    progress=False)
    rows = (tmp_path / "out" / "grades.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["a", "b", "c"]
