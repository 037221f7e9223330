"""The class runner: malformed submissions are graded for what they honestly contain and reported.

The hostile corpus (patched checkers, exits, bombs, reading secrets...) is in test_hostile.py;
the helpers that build submissions live here and are shared with it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autograder.course import source_notebook
from autograder.notebook import find_cell
from autograder.grading import grade_class
from autograder.reference import check_points
from autograder.sandbox import Limits
from tests.conftest import ALL_STEMS

STEM = "losses"
# The chapter's full marks, from its source notebook: a new exercise changes it, no test hard-codes it.
MAX_SCORE = sum(check_points(STEM).values())


def _notebook_with(edit) -> dict:
    nb = json.loads(source_notebook(STEM).read_text())
    edit(nb)
    return nb


def _solution_cell(nb, grade_id):
    return find_cell(nb, grade_id)


def _append_to(grade_id, code):
    def edit(nb):
        cell = _solution_cell(nb, grade_id)
        cell["source"] = "".join(cell["source"]) + "\n" + code
    return edit


def _write(subs: Path, student: str, content, name=f"{STEM}.ipynb") -> None:
    d = subs / student / STEM
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(content if isinstance(content, str) else json.dumps(content))


def _duplicate(grade_id, code=None):
    """Insert a copy of a solution cell right after it (with `code` in the copy, if given)."""
    def edit(nb):
        cell = _solution_cell(nb, grade_id)
        copy = json.loads(json.dumps(cell))
        copy.pop("id", None)
        if code is not None:
            copy["source"] = code
        nb["cells"].insert(nb["cells"].index(cell) + 1, copy)
    return edit


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    subs = tmp / "submitted"
    honest = json.loads(source_notebook(STEM).read_text())
    _write(subs, "honest", honest)
    _write(subs, "broken_json", source_notebook(STEM).read_text()[:5000])
    _write(subs, "renamed", honest, name=f"{STEM}-Copy1.ipynb")
    (subs / "empty_folder" / STEM).mkdir(parents=True)
    _write(subs, "magics", _notebook_with(_append_to("l1_loss", "%matplotlib inline\n!echo hi")))
    _write(subs, "deleted_cell", _notebook_with(lambda nb: nb["cells"].remove(_solution_cell(nb, "nll_loss"))))
    _write(subs, "duplicated_cell", _notebook_with(_duplicate("l1_loss", "def l1_loss(input, target, reduction='mean'):\n"
                                                                      "    return input.sum() * 0")))
    _write(subs, "changed_metadata", _notebook_with(
        lambda nb: _solution_cell(nb, "l1_loss")["metadata"].update({"nbgrader": {"grade": True, "points": 99}})))
    results = grade_class(STEM, submissions=subs, out=tmp / "out", device="cpu", jobs=2, progress=False,
                          limits=Limits(cell_timeout=5, check_timeout=20))
    return {r.student_id: r for r in results}, tmp / "out"


def _points(result) -> dict[str, float]:
    return {c.name: c.points for c in result.checks}


def test_honest_submission_gets_full_marks(graded):
    results, _ = graded
    assert results["honest"].score == results["honest"].max_score == MAX_SCORE


def test_broken_json_is_reported_and_scores_zero(graded):
    r = graded[0]["broken_json"]
    assert r.status == "unreadable" and r.score == 0
    assert any("not valid notebook JSON" in p for p in r.problems)


def test_renamed_notebook_is_graded_and_reported(graded):
    r = graded[0]["renamed"]
    assert r.score == MAX_SCORE and any("losses-Copy1.ipynb" in p for p in r.problems)


def test_empty_folder_is_reported_as_missing(graded):
    r = graded[0]["empty_folder"]
    assert r.status == "missing" and r.score == 0


def test_magics_are_accepted(graded):
    assert graded[0]["magics"].score == MAX_SCORE


def test_deleted_solution_cell_costs_that_check_and_its_dependents(graded):
    pts = _points(graded[0]["deleted_cell"])
    assert pts["nll_loss"] == 0 and pts["cross_entropy"] == 0  # cross_entropy uses nll_loss
    assert pts["l1_loss"] == 1 and pts["detection_loss"] == 2
    assert any("nll_loss" in p and "deleted" in p for p in graded[0]["deleted_cell"].problems)


def test_duplicated_solution_cell_runs_in_order_and_is_reported(graded):
    """The copy (a wrong l1_loss) comes last, so it is the definition a kernel would use."""
    r = graded[0]["duplicated_cell"]
    pts = _points(r)
    assert pts["l1_loss"] == 0 and pts["mse_loss"] == 1
    assert any("l1_loss appears 2 times" in p for p in r.problems), r.problems


def test_changed_metadata_does_not_change_the_grading(graded):
    r = graded[0]["changed_metadata"]
    assert r.score == MAX_SCORE
    assert any("l1_loss" in p and "metadata changed" in p for p in r.problems), r.problems


def test_grades_csv_has_a_row_per_student_with_status(graded):
    results, out = graded
    rows = (out / "grades.csv").read_text().splitlines()
    assert rows[0] == "student_id,assignment,score,max_score,status"
    assert len(rows) == 1 + len(results)
    assert f"broken_json,{STEM},0,{MAX_SCORE:g},unreadable" in rows


def test_shards_merge_into_one_grades_csv(tmp_path):
    subs = tmp_path / "submitted"
    for s in ("a", "b", "c"):
        _write(subs, s, json.loads(source_notebook(STEM).read_text()))
    for i in range(2):
        grade_class(STEM, submissions=subs, out=tmp_path / "out", device="cpu", jobs=1, shard=f"{i}/2",
                    progress=False)
    rows = (tmp_path / "out" / "grades.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["a", "b", "c"]


def _bind_a_mistake(stem: str, check: str, mistake: str, target: str) -> str:
    """A last cell that binds `target` to a known mistake's code. The child cannot import the
    grader's catalogue (it holds no correct code), so the cell brings the chapter's source with it,
    as a student copying it would."""
    package = Path(__import__("autograder").__file__).parent
    chapter = (package / "chapters" / f"{stem}.py").read_text()
    library = (package / "mistakes" / "optimizers.py").read_text()
    return ("import sys, types\n"
            "try:\n    import autograder.mistakes.optimizers\nexcept ImportError:\n"
            "    _lib = types.ModuleType('autograder.mistakes.optimizers')\n"
            "    sys.modules[_lib.__name__] = _lib\n"
            f"    exec(compile({library!r}, 'optimizers.py', 'exec'), _lib.__dict__)\n"
            f"_copy = types.ModuleType('_copy_of_{stem}')\nsys.modules[_copy.__name__] = _copy\n"
            f"exec(compile({chapter!r}, '{stem}.py', 'exec'), _copy.__dict__)\n"
            f"{target} = [m for c in _copy.CHECKS if c.name == {check!r} for m in c.mistakes"
            f" if m.name == {mistake!r}][0].impl\n")


@pytest.mark.slow
@pytest.mark.parametrize("stem", ALL_STEMS)
def test_the_sandbox_and_a_kernel_agree_on_every_catalogued_mistake(stem, tmp_path):
    """Each known-wrong answer, bound to its name by a last cell, scores the same check by check
    (visible-test notes included) in the sandboxed runner, which runs the visible tests of function
    exercises itself, and in-process, where they run in the namespace as in nbgrader's kernel."""
    from autograder.checks import load_checks
    from autograder.grading import Grader, grade_submission

    subs = tmp_path / "submitted"
    for name, check in load_checks(stem).items():
        for m in check.mistakes:
            bind = _bind_a_mistake(stem, name, m.name, check.target)
            nb = json.loads(source_notebook(stem).read_text())
            nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                "source": bind})
            d = subs / f"{name}--{m.name}" / stem
            d.mkdir(parents=True)
            (d / f"{stem}.ipynb").write_text(json.dumps(nb))
    grader = Grader(stem, device="cpu")
    for r in grade_class(stem, submissions=subs, out=tmp_path / "out", device="cpu", jobs=2, progress=False):
        kernel = grade_submission(grader, r.student_id, subs / r.student_id / stem, sandboxed=False)
        assert [(c.name, c.points, c.note is None) for c in r.checks] == \
            [(c.name, c.points, c.note is None) for c in kernel.checks], (r.student_id, r.status, [str(p) for p in r.problems], kernel.status)
