"""Regenerate exercises/ from solutions/ with nbgrader's generate_assignment.

The release is committed; tests/test_course.py regenerates it into a
temporary folder and fails on any difference, so exercises/ never drifts
from its source and is never edited by hand.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from autograder.course import course_root, stems as all_stems


def generate(stem: str, *, release_dir: Path, root: Path | None = None, db: Path | None = None) -> Path:
    """Run `nbgrader generate_assignment` for one chapter into `release_dir`."""
    root = root or course_root()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{db or Path(tmp) / 'gradebook.db'}"
        cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", stem, "--force", "--log-level=WARN",
               f"--CourseDirectory.root={root}", f"--CourseDirectory.release_directory={release_dir}",
               f"--CourseDirectory.db_url={db_url}"]
        # nbgrader runs `alembic` from PATH: put this interpreter's bin/ first.
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment {stem} failed:\n{proc.stdout}\n{proc.stderr}")
    return Path(release_dir) / stem / f"{stem}.ipynb"


def release(stems: list[str] | None = None) -> list[str]:
    """exercises/ for the book and the student repository, every chapter by default. The course's
    gradebook is left alone: an assignment enters it when the instructor adds or releases it
    (`nbgrader db assignment add`, `nbgrader release_assignment`) or grades it, never because its
    notebook was regenerated (else `nbgrader export` lists rows of zeros for what was never given)."""
    root = course_root()
    chosen = stems or all_stems(root)
    for stem in chosen:
        generate(stem, release_dir=root / "exercises", root=root)  # a scratch gradebook
    return chosen
