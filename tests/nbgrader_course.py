"""Drive nbgrader itself (generate_assignment, validate, autograde) in a scratch course."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from autograder.course import course_root

BIN = Path(sys.executable).parent


def nbgrader(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def course_feedback_preprocessors() -> list[str]:
    """The course's own GenerateFeedback preprocessors, read from its nbgrader_config.py."""
    from traitlets.config import Config

    config = Config()
    path = course_root() / "nbgrader_config.py"
    exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: config, "__file__": str(path)})
    return list(config.GenerateFeedback.preprocessors)


def make_course(tmp: Path, stem: str) -> Path:
    """A scratch nbgrader course with this chapter's source notebook and its gradebook."""
    root = tmp / "course"
    shutil.copytree(course_root() / "solutions" / stem, root / "source" / stem)
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.db_url = 'sqlite:///' + __import__('os').path.abspath('gradebook.db')\n"
        "c.ExecutePreprocessor.timeout = 120\n"
        f"c.GenerateFeedback.preprocessors = {course_feedback_preprocessors()!r}\n"
    )
    proc = nbgrader("generate_assignment", stem, "--force", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


def submit(root: Path, student: str, stem: str, notebook: Path) -> None:
    dest = root / "submitted" / student / stem
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, dest / f"{stem}.ipynb")


def autograde(root: Path, stem: str) -> dict[str, dict[str, float]]:
    """Run `nbgrader autograde`; return {student: {grade_id: score}} from the gradebook."""
    proc = nbgrader("autograde", stem, "--force", "--create", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return gradebook_scores(root, stem)


def gradebook_scores(root: Path, stem: str) -> dict[str, dict[str, float]]:
    """{student: {grade_id: score}} of one assignment, read from the course's gradebook.db."""
    from nbgrader.api import Gradebook

    scores: dict[str, dict[str, float]] = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for sub in gb.assignment_submissions(stem):
            nb = gb.find_submission_notebook(stem, stem, sub.student.id)
            scores[sub.student.id] = {g.name: g.score for g in nb.grades}
    return scores
