"""Tests never write into the real home: nbgrader's exchange keeps a cache of every submission under
jupyter_data_dir()/nbgrader_cache/<course id>, which a real course's `fetch_feedback` then reads. The
session's home and Jupyter's folders are scratch ones (tests/conftest.py); this proves it with nbgrader
itself, a fetch and a submit through a scratch exchange."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import REAL_HOME, SCRATCH_HOME
from tests.nbgrader_course import nbgrader


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.is_dir() else set()


def test_jupyter_folders_are_the_scratch_home():
    from jupyter_core.paths import jupyter_config_dir, jupyter_data_dir, jupyter_runtime_dir

    assert os.path.expanduser("~") == SCRATCH_HOME != REAL_HOME
    for folder in (jupyter_data_dir(), jupyter_config_dir(), jupyter_runtime_dir()):
        assert Path(folder).resolve().is_relative_to(Path(SCRATCH_HOME).resolve()), folder


def test_a_submission_through_the_exchange_leaves_the_real_home_alone(tmp_path):
    real = Path(REAL_HOME) / ".local" / "share" / "jupyter"
    before = _tree(real)
    course, exchange, student = tmp_path / "course", tmp_path / "exchange", tmp_path / "student"
    for d in (course / "release" / "hw", exchange, student):
        d.mkdir(parents=True)
    config = f"c = get_config()\nc.CourseDirectory.course_id = 'scratch-course'\nc.Exchange.root = {str(exchange)!r}\n"
    (course / "nbgrader_config.py").write_text(config)
    (student / "nbgrader_config.py").write_text(config)
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (course / "release" / "hw" / "hw.ipynb").write_text(json.dumps(nb))
    for args, cwd in ((("release_assignment", "hw", "--force"), course),
                      (("fetch_assignment", "hw", "--course", "scratch-course"), student),
                      (("submit", "hw", "--course", "scratch-course"), student)):
        proc = nbgrader(*args, cwd=cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _tree(real) == before, "nbgrader wrote into the real ~/.local/share/jupyter"
    cache = Path(SCRATCH_HOME) / ".local" / "share" / "jupyter" / "nbgrader_cache" / "scratch-course"
    assert any(cache.iterdir()), "the submission was not cached in the scratch home (where did it go?)"


def test_the_session_guard_sees_a_write(tmp_path, monkeypatch):
    """conftest's pytest_sessionfinish fails the run when a real Jupyter folder changed: its snapshot sees
    a new file and a changed one."""
    import tests.conftest as conftest

    monkeypatch.setattr(conftest, "REAL_JUPYTER", [str(tmp_path)])
    (tmp_path / "kept").write_text("1")
    before = conftest._snapshot()
    assert conftest._snapshot() == before
    (tmp_path / "nbgrader_cache").mkdir()
    assert conftest._snapshot() != before
    after = conftest._snapshot()
    os.utime(tmp_path / "kept", (1, 1))
    assert conftest._snapshot() != after
