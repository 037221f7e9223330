"""Shared fixtures and helpers for proving checks both ways."""
from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

# Tests never write into the real home: nbgrader's exchange cache (jupyter_data_dir()/nbgrader_cache),
# Jupyter's and IPython's folders and anything else under ~ go to a scratch home for the session,
# set before anything reads them. tests/test_home.py proves it.
REAL_HOME = os.path.expanduser("~")
SCRATCH_HOME = tempfile.mkdtemp(prefix="autograder-tests-home-")
os.environ["HOME"] = SCRATCH_HOME
for _name, _sub in (("JUPYTER_DATA_DIR", ".local/share/jupyter"), ("JUPYTER_CONFIG_DIR", ".jupyter"),
                    ("JUPYTER_RUNTIME_DIR", ".local/share/jupyter/runtime"), ("IPYTHONDIR", ".ipython")):
    os.environ[_name] = os.path.join(SCRATCH_HOME, _sub)
os.environ.pop("JUPYTER_PATH", None)
# ... and a session that wrote into the real ones anyway fails (pytest_sessionfinish). Kernels' runtime
# files are left out: any Jupyter process on the machine, not only a test, writes them.
REAL_JUPYTER = [os.path.join(REAL_HOME, sub) for sub in (".local/share/jupyter", ".jupyter")]


def _snapshot() -> dict[str, float]:
    seen = {}
    for top in REAL_JUPYTER:
        for folder, subfolders, files in os.walk(top):
            subfolders[:] = [s for s in subfolders if s != "runtime"]
            for name in [""] + files:
                path = os.path.join(folder, name)
                try:
                    seen[path] = os.lstat(path).st_mtime
                except OSError:
                    pass
    return seen


_REAL_BEFORE = _snapshot()


def pytest_sessionfinish(session, exitstatus):
    changed = sorted(set(_snapshot().items()) ^ set(_REAL_BEFORE.items()))
    if changed:
        print(f"\nerror: the tests wrote into the real home: {sorted({p for p, _ in changed})[:10]}")
        session.exitstatus = 1

from autograder.course import stems  # noqa: E402


def full_points(stem: str) -> float:
    """A notebook's points (its check cells'): what the honest notebook of `stem` earns."""
    from autograder.course import source_notebook

    cells = json.loads(source_notebook(stem).read_text())["cells"]
    return float(sum(c["metadata"].get("nbgrader", {}).get("points", 0) for c in cells
                     if c["metadata"].get("nbgrader", {}).get("grade_id", "").startswith("check_")))


@lru_cache(maxsize=None)
def grader(stem: str):
    from autograder.grading import Grader

    return Grader(stem, device="cpu")


def reference(stem: str) -> dict:
    from autograder.reference import reference_namespace

    return reference_namespace(stem)


def grade_impl(stem: str, check_name: str, impl):
    """Grade `impl` as the student's answer to one check, in-process."""
    from autograder.grading import InProcess

    g = grader(stem)
    target = g.checks[check_name].target
    return g.grade_check(check_name, InProcess({**reference(stem), target: impl}))


def checks_of(stem: str):
    from autograder.checks import load_checks

    return [pytest.param(name, id=name) for name in load_checks(stem)]


def assert_mistake_caught(stem: str, check_name: str, mistake) -> None:
    result = grade_impl(stem, check_name, mistake.impl)
    assert result.points < result.max_points, f"{mistake.name} kept full marks on {check_name}"
    for part in mistake.parts:  # code with several mistakes: a hint for each
        assert part.name in result.mistakes and part.hint in result.hints, (
            f"{mistake.name}: no hint for {part.name}; matched: {result.mistakes}")
    assert mistake.parts or mistake.name in result.mistakes and mistake.hint in result.hints, (
        f"{mistake.name} lost points but was not recognised (no hint); matched: {result.mistakes}; "
        f"first failure: {next((v.message for v in result.cases if not v.passed), None)}")


def assert_full_marks(stem: str, check_name: str, impl) -> None:
    result = grade_impl(stem, check_name, impl)
    failures = [f"{v.label}: {v.message}" for v in result.cases if not v.passed]
    assert result.points == result.max_points, "\n".join(failures[:5])


def assert_reference_equals_oracle(stem: str, check_name: str, oracle) -> None:
    """Every case the grader uses (and its float64 twin), with `oracle` (torch) in the reference's place."""
    from dataclasses import replace

    from autograder.compare import compare_answers
    from autograder.probes import run_probe

    p = grader(stem).prepared[check_name]
    ref_impl = reference(stem)[p.check.target]
    check = replace(p.check, forbidden=())
    for case in p.cases:
        if case.shape_only:
            continue
        for c in (case, case.upcast()):
            ours = run_probe(check, ref_impl, c)
            theirs = run_probe(check, oracle, c)
            assert not ours["error"] and not theirs["error"], (ours["error"], theirs["error"])
            assert compare_answers(ours, theirs, case=c) is None, c.label


ALL_STEMS = stems()


def all_checks():
    """pytest params (stem, check name) for every check of every chapter."""
    from autograder.checks import load_checks

    return [pytest.param(stem, name, id=f"{stem}.{name}") for stem in ALL_STEMS for name in load_checks(stem)]


def all_mistakes():
    """pytest params (stem, check name, Mistake) for every catalogued mistake of every chapter."""
    from autograder.checks import load_checks

    return [pytest.param(stem, c.name, m, id=f"{stem}.{c.name}:{m.name}")
            for stem in ALL_STEMS for c in load_checks(stem).values() for m in c.mistakes]


def assert_loses_points_naming(stem: str, check_name: str, impl, bug: str) -> None:
    """Held-out wrong code: it loses points, and what it gets names its bug: `bug` is a catalogued
    mistake's name (its hint must be given), "device-bound" (only device cases fail, with the device
    hint) or words the failing case's message must hold."""
    result = grade_impl(stem, check_name, impl)
    assert result.points < result.max_points, f"{check_name}: kept full marks"
    failing = [v for v in result.cases if not v.passed and not v.inconclusive]
    if bug == "device-bound":
        assert failing and all(v.mistake == "device-bound" for v in failing), [v.message for v in failing]
    elif " " in bug:
        assert any(bug in v.message for v in failing), [v.message for v in failing]
    else:
        hint = next(m.hint for m in grader(stem).checks[check_name].mistakes if m.name == bug)
        assert bug in result.mistakes and hint in result.hints, (result.mistakes, failing[0].message)
