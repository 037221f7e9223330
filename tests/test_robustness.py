"""A class run that no submission can stop, hang or corrupt (one class, graded once).

Each malformed or unlucky submission sits beside honest students: the run
finishes, every honest student scores exactly as alone, each bad case is
reported with its own status and message, and every file the run writes is
complete. A second part injects a fault into each stage of the grader itself.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from autograder.cli import main
from autograder.course import release_notebook, source_notebook
from autograder.grading import grade_class
from autograder.sandbox import Limits
from autograder.checks import load_checks
from tests.test_runner import FULL, STEM, _append_to, _notebook_with, _write

LIMITS = Limits(cell_timeout=5, check_timeout=20, submission_timeout=40, memory_bytes=1 << 30, max_processes=32)
SOLUTION = json.loads(source_notebook(STEM).read_text())


def _cells_after(n: int, code=lambda k: f"x_{k} = {k}"):
    """The honest notebook with n one-line code cells appended."""
    def edit(nb):
        nb["cells"] += [{"cell_type": "code", "metadata": {}, "source": code(k), "outputs": [],
                         "execution_count": None} for k in range(n)]
    return edit


_TARGETS = sorted({c.target for c in load_checks(STEM).values()})  # every graded function of the notebook


def _malformed_answers(shape: str) -> str:
    """A cell after which every graded function, when a check calls it, writes a reply of the wrong
    shape inside straight to the child's socket (fd 3) and ends its process: valid JSON with fields
    of the wrong types or missing, records that are not objects, a tensor outside the message."""
    records = {
        "types": '{"values": {"output": [1, {"a": 2}]}, "devices": "cpu", "error": 3, "forbidden": "x", "stdout": 7}',
        "missing": '{"devices": {}, "error": null}',
        "kind": '["not", "an", "answer"]',
        "outside": '{"values": {"output": {"tensor": 0}}, "devices": {}, "error": null}',
    }[shape]
    index = '[["torch.float32", [1000], 0, 4000]]' if shape == "outside" else "[]"
    return ("import sys, os, json, struct\n"
            "def _forge(*args, **kwargs):\n"
            "    frame, n = sys._getframe(1), 1\n"
            "    while frame is not None and not ('z' in frame.f_locals and 'name' in frame.f_locals):\n"
            "        frame = frame.f_back\n"
            "    if frame is not None:\n"
            "        n = len(frame.f_locals['z'].cases[frame.f_locals['name']])\n"
            f"    records = [json.loads('{records}')] * n\n"
            "    if isinstance(records[0], dict) and 'values' not in records[0]:\n"
            "        records = [dict(r, values={}) for r in records]\n"
            f"    meta = json.dumps({{'kind': 'answers', 'records': records, 'index': json.loads('{index}')}}).encode()\n"
            "    payload = b'R' + struct.pack('<Q', len(meta)) + meta\n"
            "    os.write(3, struct.pack('!i', len(payload)) + payload)\n"
            "    os._exit(0)\n"
            f"for _name in {_TARGETS!r}:\n"
            "    globals()[_name] = _forge\n")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("robust")
    subs, out = tmp / "submitted", tmp / "out"
    lazy = tmp / "site"  # a module folder under /tmp, imported only by a submission
    lazy.mkdir()
    (lazy / "lazy_helper_module.py").write_text("VALUE = 41\n")
    honest = SOLUTION
    notebooks = {
        "honest": honest,
        "honest_2": honest,
        "untouched": json.loads(release_notebook(STEM).read_text()),
        # answers of the wrong shape, text that is not UTF-8
        "malformed_types": _notebook_with(_cells_after(1, lambda _, k="types": _malformed_answers(k))),
        "malformed_missing": _notebook_with(_cells_after(1, lambda _, k="missing": _malformed_answers(k))),
        "malformed_kind": _notebook_with(_cells_after(1, lambda _, k="kind": _malformed_answers(k))),
        "malformed_outside": _notebook_with(_cells_after(1, lambda _, k="outside": _malformed_answers(k))),
        "lone_surrogate": _notebook_with(_append_to("l1_loss", (
            "def l1_loss(input, target, reduction='mean'):\n    raise ValueError('bad \\ud800 text \\x1b[31m')"))),
        "twin_raises": _notebook_with(_append_to("l1_loss", (
            "def l1_loss(input, target, reduction='mean'):\n    raise ValueError('bad text')"))),
        "surrogate_in_cell": _notebook_with(_append_to("mse_loss", "raise RuntimeError('\\udcff\\x00')")),
        # notebooks the grader must read with care
        "huge_points": _notebook_with(lambda nb: nb["cells"][3]["metadata"].setdefault("nbgrader", {}).update(
            points=10 ** 400)),
        "many_small_cells": _notebook_with(_cells_after(2000)),
        "lazy_import_under_tmp": _notebook_with(_append_to("l1_loss", (
            "import lazy_helper_module\nassert lazy_helper_module.VALUE == 41\n"
            "import torch\nprint(torch.ones(2))  # printing loads a module lazily"))),
        # a notebook whose every graded function ends the child, after a slow cell
        "kills_every_check": _notebook_with(_cells_after(1, lambda k: (
            "import os, time\ntime.sleep(1)\n"
            f"for name in {_TARGETS!r}:\n"
            "    globals()[name] = lambda *a, **k: os._exit(9)\n"))),
    }
    for student, nb in notebooks.items():
        _write(subs, student, nb)
    _write(subs, "deep_json", "[" * 200_000 + "]" * 200_000)
    _write(subs, "too_many_cells", json.dumps({"cells": [{"cell_type": "code", "source": "x = 1"}] * 100_001}))
    (subs / "dangling_link" / STEM).mkdir(parents=True)
    os.symlink("/nonexistent/notebook.ipynb", subs / "dangling_link" / STEM / f"{STEM}.ipynb")
    (subs / "named_pipe" / STEM).mkdir(parents=True)
    os.mkfifo(subs / "named_pipe" / STEM / f"{STEM}.ipynb")
    (subs / "link_to_solutions" / STEM).mkdir(parents=True)
    os.symlink(source_notebook(STEM), subs / "link_to_solutions" / STEM / f"{STEM}.ipynb")
    (subs / "linked_folder").mkdir()
    os.symlink(source_notebook(STEM).parent, subs / "linked_folder" / STEM)
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(lazy)] + ([old] if old else []))
    try:
        code = main(["grade", STEM, "--submissions", str(subs), "--out", str(out), "--jobs", "2",
                     "--cell-timeout", "5", "--check-timeout", "20"])
    finally:
        os.environ["PYTHONPATH"] = old
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results" / STEM).glob("*.json")}
    return results, out, code, sorted(p.name for p in subs.iterdir())


def _problems(r) -> str:
    return " | ".join(p["text"] for p in r["problems"])


def test_the_run_finishes_and_every_student_has_a_result(graded):
    results, out, code, students = graded
    assert sorted(results) == students
    with open(out / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["student_id"] for r in rows) == students
    for student in students:
        assert (out / "feedback" / student / f"{STEM}.html").is_file(), student
    assert (out / "report.html").is_file()
    for name in ("canvas_grades.csv", "moodle_grades.csv", "lms_report.csv"):
        assert (out / name).is_file(), name
    assert not list(out.rglob(".*.json.*")), "a temporary file was left behind"


def test_honest_students_score_as_alone(graded):
    results = graded[0]
    for student in ("honest", "honest_2", "many_small_cells", "huge_points", "lazy_import_under_tmp"):
        assert results[student]["score"] == FULL, (student, _problems(results[student]))
    assert results["untouched"]["score"] == 0


@pytest.mark.parametrize("student", ["malformed_types", "malformed_missing", "malformed_kind", "malformed_outside"])
def test_answers_of_the_wrong_shape_fail_their_cases_only(graded, student):
    r = graded[0][student]
    assert r["status"] in ("graded", "crashed")  # a message that cannot be decoded ends its child
    assert r["score"] == 0  # every answer was forged after the cells ran
    messages = {v["message"] for c in r["checks"] for v in c["cases"]}
    expected = {"types": "malformed answer", "missing": "missing from your answer", "kind": "unreadable answer",
                "outside": "unreadable answer"}
    messages -= {"raised your code ended the process (exit code 0; os._exit?)"}  # a visible test's call
    allowed = (expected[student.rsplit("_", 1)[1]], "grading stopped: your code ended the grading process")
    assert all(any(a in m for a in allowed) for m in messages), messages  # (restarts are bounded)


def test_text_that_is_not_utf8_is_cleaned_everywhere(graded):
    results, out = graded[0], graded[1]
    r = results["lone_surrogate"]
    assert r["score"] == results["twin_raises"]["score"] < FULL
    for path in [out / "results" / STEM / "lone_surrogate.json", out / "feedback" / "lone_surrogate" / f"{STEM}.html",
                 out / "report.html"]:
        text = path.read_bytes().decode("utf-8")  # strict: every file is valid UTF-8
        assert "\x1b" not in text
    assert "bad ? text" in (out / "feedback" / "lone_surrogate" / f"{STEM}.txt").read_text()
    assert results["surrogate_in_cell"]["score"] == FULL  # a cell that raised after defining what it defines


@pytest.mark.parametrize("student, says", [
    ("deep_json", "nested too deeply"),
    ("too_many_cells", "over the limit of 10000"),
    ("dangling_link", "symbolic link"),
    ("named_pipe", "regular file"),
    ("link_to_solutions", "symbolic link"),
    ("linked_folder", "symbolic link"),
])
def test_notebooks_that_cannot_be_read_safely_are_refused_with_their_reason(graded, student, says):
    r = graded[0][student]
    assert r["status"] == "unreadable", r["status"]
    assert r["score"] == 0
    assert says in _problems(r), _problems(r)


def test_a_notebook_that_kills_every_check_costs_bounded_time(graded):
    r = graded[0]["kills_every_check"]
    assert r["score"] == 0
    assert "ended the process" in _problems(r) or "grading stopped" in _problems(r), _problems(r)


def test_the_time_budget_stops_a_submission_and_says_so(tmp_path):
    subs, out = tmp_path / "s", tmp_path / "o"
    _write(subs, "honest", SOLUTION)
    _write(subs, "slow", _notebook_with(_cells_after(6, lambda k: "import time\ntime.sleep(1.5)")))
    limits = Limits(cell_timeout=5, check_timeout=20, submission_timeout=4)
    results = {r.student_id: r for r in grade_class(STEM, submissions=subs, out=out, jobs=2, limits=limits)}
    assert results["honest"].status == "graded"
    slow = results["slow"]
    assert slow.score < FULL
    assert any(p.kind == "timeout" and "time budget" in p for p in slow.problems), slow.problems


def test_an_output_folder_that_cannot_be_written_stops_with_a_clear_message(tmp_path, capsys):
    subs = tmp_path / "s"
    _write(subs, "honest", SOLUTION)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        grade_class(STEM, submissions=subs, out=blocker / "out", jobs=1, limits=LIMITS)
    assert "cannot write results under" in str(exc.value)


# -- faults in the grader itself -------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["deciding", "recording", "feedback"])
def test_a_fault_in_one_stage_is_that_students_grader_error(tmp_path, monkeypatch, capsys, stage):
    import autograder.feedback as feedback
    import autograder.grading as grading

    subs, out = tmp_path / "s", tmp_path / "o"
    for student in ("alice", "bob", "victim"):
        _write(subs, student, SOLUTION)

    def faulty(original, student_of):
        def wrapper(*args, **kwargs):
            if student_of(*args, **kwargs) == "victim":
                raise RuntimeError(f"injected fault while {stage}")
            return original(*args, **kwargs)
        return wrapper

    if stage == "deciding":
        monkeypatch.setattr(grading, "grade_submission",
                            faulty(grading.grade_submission, lambda grader, student, *a, **k: student))
    elif stage == "recording":
        calls = {"n": 0}
        original = grading.write_result

        def write_once_failing(out_dir, res):
            if res.student_id == "victim" and calls["n"] == 0:
                calls["n"] += 1
                raise OSError(28, "No space left on device")
            return original(out_dir, res)
        monkeypatch.setattr(grading, "write_result", write_once_failing)
    else:
        monkeypatch.setattr(feedback, "write_feedback", faulty(feedback.write_feedback, lambda out, r, *a: r.student_id))
    code = main(["grade", STEM, "--submissions", str(subs), "--out", str(out), "--jobs", "2"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code != 0 and "1 grader error" in last, last
    rows = {r["student_id"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    assert float(rows["alice"]["score"]) == float(rows["bob"]["score"]) == FULL
    assert rows["victim"]["status"] == "grader-error"
    victim = json.loads((out / "results" / STEM / "victim.json").read_text())
    assert any(p["kind"] == "grader-error" and "injected fault" in p["text"] or "No space" in p["text"]
               for p in victim["problems"]), victim["problems"]
    assert (out / "feedback" / "alice" / f"{STEM}.html").is_file() and (out / "report.html").is_file()


def test_an_interrupted_run_resumes_with_the_students_not_yet_graded(tmp_path):
    """--resume keeps a result graded from the same notebook (and checks); a changed notebook,
    a student without a result and a grader error are graded again."""
    subs, out = tmp_path / "s", tmp_path / "o"
    for student in ("done", "changed", "failed", "new"):
        _write(subs, student, SOLUTION)
    first = {r.student_id: r for r in grade_class(STEM, submissions=subs, out=out, jobs=2, limits=LIMITS,
                                                  students=["done", "changed", "failed"])}
    assert all(r.fingerprint for r in first.values())
    failed = json.loads((out / "results" / STEM / "failed.json").read_text())
    failed["status"] = "grader-error"
    (out / "results" / STEM / "failed.json").write_text(json.dumps(failed))
    done = json.loads((out / "results" / STEM / "done.json").read_text())
    done["problems"] = [{"kind": "notebook", "text": "marker: kept from the first run"}]
    (out / "results" / STEM / "done.json").write_text(json.dumps(done))
    _write(subs, "changed", _notebook_with(_append_to("l1_loss", "def l1_loss(input, target, reduction='mean'):\n"
                                                                  "    return input.sum() * 0")))
    again = {r.student_id: r for r in grade_class(STEM, submissions=subs, out=out, jobs=2, limits=LIMITS,
                                                  resume=True)}
    assert sorted(again) == ["changed", "done", "failed", "new"]
    assert any("marker: kept from the first run" in p for p in again["done"].problems)  # not graded again
    assert again["changed"].score < FULL and again["failed"].status == "graded" and again["new"].score == FULL
    rows = (out / "grades.csv").read_text().splitlines()
    assert len(rows) == 5


@pytest.mark.parametrize("failures", [1, 99])
def test_a_child_that_fails_to_start_is_tried_again_then_a_grader_error(tmp_path, monkeypatch, failures):
    """Before any student code runs, a child that does not start is the machine's fault (e.g. the
    kernel has not yet freed the namespaces of ended children): it is started again; only when it
    keeps failing is the submission a grader error (graded again later), never a score of 0."""
    from autograder.sandbox import handle

    subs, out = tmp_path / "s", tmp_path / "o"
    for student in ("alice", "bob"):
        _write(subs, student, SOLUTION)
    original, seen = handle.ZygoteHandle.spawn, {"n": 0}

    def flaky(self):
        seen["n"] += 1
        if seen["n"] <= failures:
            raise handle.SandboxError("could not start a grading child: injected")
        return original(self)
    monkeypatch.setattr(handle.ZygoteHandle, "spawn", flaky)
    results = {r.student_id: r for r in grade_class(STEM, submissions=subs, out=out, jobs=1, limits=LIMITS)}
    if failures == 1:
        assert [results[s].status for s in ("alice", "bob")] == ["graded", "graded"]
        assert results["alice"].score == results["bob"].score == FULL
    else:
        assert {r.status for r in results.values()} == {"grader-error"}
        assert all("did not start (3 attempts" in str(r.problems) for r in results.values())
