"""Every chapter, whatever its stem: release, leaks, full marks and zero, nbgrader parity."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from autograder.course import course_root, release_notebook, source_notebook, stems
from autograder.notebook import read_cells
from tests.nbgrader_course import autograde, make_course, nbgrader, submit

STEMS = stems()
ROOT = course_root()


def test_every_stem_has_its_files():
    """One stem names a chapter everywhere (docs/design.md)."""
    toc = (ROOT / "_toc.yml").read_text()
    for stem in STEMS:
        assert (ROOT / "book" / f"{stem}.md").is_file(), stem
        assert (ROOT / "autograder" / "chapters" / f"{stem}.py").is_file(), stem
        assert (ROOT / "tests" / "chapters" / f"test_{stem}.py").is_file(), stem
        assert release_notebook(stem).is_file(), stem
        assert f"book/{stem}\n" in toc and f"exercises/{stem}/{stem}\n" in toc, stem


@pytest.mark.parametrize("stem", STEMS)
def test_release_is_what_nbgrader_generates_from_the_source(stem, tmp_path):
    from autograder.release import generate

    fresh = generate(stem, release_dir=tmp_path)
    assert fresh.read_text() == release_notebook(stem).read_text(), (
        f"exercises/{stem}/{stem}.ipynb differs from what nbgrader generates: run `make release`")


def _solution_lines(stem: str) -> list[str]:
    """Lines that occur only inside solution or hidden-test blocks of the source notebook."""
    nb = json.loads(source_notebook(stem).read_text())
    secret, public = [], set()
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        blocks = re.findall(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)(.*?)### END", src, re.S)
        rest = re.sub(r"### BEGIN (?:SOLUTION|HIDDEN TESTS).*?### END[^\n]*", "", src, flags=re.S)
        public.update(ln.strip() for ln in rest.splitlines())
        for block in blocks:
            secret += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 12 and not ln.strip().startswith("#")]
    return [ln for ln in secret if ln not in public]


@pytest.mark.parametrize("stem", STEMS)
def test_release_holds_no_solution_or_hidden_test(stem):
    text = release_notebook(stem).read_text()
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    assert "from autograder" not in text and "autograder.inline" not in text
    cells = read_cells(release_notebook(stem))
    code = "\n".join(c.source for c in cells)
    leaked = [ln for ln in _solution_lines(stem) if ln in code]
    assert not leaked, f"solution lines in the release: {leaked[:3]}"


@pytest.mark.parametrize("stem", STEMS)
def test_notebooks_are_committed_clean(stem):
    for path in (source_notebook(stem), release_notebook(stem)):
        nb = json.loads(path.read_text())
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb["cells"]
                   if c["cell_type"] == "code"), f"{path} has outputs"
        assert all(c.get("id") for c in nb["cells"]), f"{path} lacks cell ids"


@pytest.mark.parametrize("stem", STEMS)
def test_runner_gives_the_source_full_marks_and_the_release_zero(stem, tmp_path):
    from autograder.grading import grade_class

    subs = tmp_path / "submitted"
    for student, nb in (("reference", source_notebook(stem)), ("untouched", release_notebook(stem))):
        (subs / student / stem).mkdir(parents=True)
        (subs / student / stem / f"{stem}.ipynb").write_bytes(nb.read_bytes())
    results = {r.student_id: r for r in grade_class(stem, submissions=subs, out=tmp_path / "out", device="cpu",
                                                      jobs=2, progress=False)}
    ref, stub = results["reference"], results["untouched"]
    assert ref.score == ref.max_score > 0, [c for c in ref.checks if c.points < c.max_points][:1]
    assert stub.score == 0
    assert all(c.passed == 0 for c in stub.checks)
    csv = (tmp_path / "out" / "grades.csv").read_text().splitlines()
    assert csv[0].startswith("student_id,assignment,score,max_score")
    assert f"reference,{stem},{ref.max_score:g},{ref.max_score:g},graded" in csv


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_nbgrader_validate_passes_the_source_and_fails_the_release(stem, tmp_path):
    ok = nbgrader("validate", str(source_notebook(stem)), cwd=tmp_path)
    assert "Success! Your notebook passes all the tests." in ok.stdout, ok.stdout[-2000:] + ok.stderr[-2000:]
    # the release fails every exercise's visible tests (read-only grade cells of 0 points: nbgrader's
    # Validate button shows a student what is left); its check cells hold only what the hidden checks
    # replace, so they fail nothing
    failing = nbgrader("validate", str(release_notebook(stem)), cwd=tmp_path)
    n_visible = sum(1 for c in read_cells(release_notebook(stem)) if c.is_visible_test)
    assert n_visible and f"VALIDATION FAILED ON {n_visible} CELL(S)" in failing.stdout, failing.stdout[-1500:]


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_nbgrader_autograde_and_the_runner_agree_check_by_check(stem, tmp_path):
    from autograder.grading import grade_class

    root = make_course(tmp_path, stem)
    submit(root, "reference", stem, source_notebook(stem))
    submit(root, "untouched", stem, release_notebook(stem))
    by_nbgrader = autograde(root, stem)
    results = grade_class(stem, submissions=root / "submitted", out=tmp_path / "out", device="cpu", jobs=2,
                          progress=False)
    for r in results:
        ours = {c.grade_id: c.points for c in r.checks}
        theirs = {k: v for k, v in by_nbgrader[r.student_id].items() if k in ours}
        assert ours == theirs, r.student_id
