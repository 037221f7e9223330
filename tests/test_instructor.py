"""What the instructor gets from a grading run: the nbgrader gradebook, feedback, the class report, the LMS CSV."""
from __future__ import annotations

import json
import re
from pathlib import Path

from autograder.course import release_notebook, source_notebook

STEM = "losses"


def _cell(nb: dict, grade_id: str) -> dict:
    return next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _set_source(nb: dict, grade_id: str, code: str) -> None:
    _cell(nb, grade_id)["source"] = code


def _student(edit=None, base=None) -> dict:
    nb = json.loads((base or source_notebook(STEM)).read_text())
    if edit:
        edit(nb)
    return nb


WRONG_L1 = 'def l1_loss(input, target, reduction="mean"):\n    return apply_reduction((input - target) ** 2, reduction)\n'
WRONG_MSE = 'def mse_loss(input, target, reduction="mean"):\n    return ((input - target) ** 2).mean()\n'
RAISES_CE = ('def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):\n'
             '    raise ValueError("I gave up on cross_entropy")\n')


def make_class(subs: Path) -> dict[str, str]:
    """A small class of `losses` submissions, right, wrong and broken; returns what each one is."""
    students = {
        "perfect": _student(),
        "wrong": _student(lambda nb: (_set_source(nb, "l1_loss", WRONG_L1), _set_source(nb, "mse_loss", WRONG_MSE))),
        "syntax_error": _student(lambda nb: _set_source(nb, "log_softmax", "def log_softmax(input, dim)\n    return 0\n")),
        "deleted_cell": _student(lambda nb: nb["cells"].remove(_cell(nb, "nll_loss"))),
        "raises": _student(lambda nb: _set_source(nb, "cross_entropy", RAISES_CE)),
        "untouched": _student(base=release_notebook(STEM)),
    }
    for sid, nb in students.items():
        d = subs / sid / STEM
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{STEM}.ipynb").write_text(json.dumps(nb, indent=1))
    broken = subs / "broken_json" / STEM
    broken.mkdir(parents=True, exist_ok=True)
    (broken / f"{STEM}.ipynb").write_text(source_notebook(STEM).read_text()[:3000])
    return {**{s: s for s in students}, "broken_json": "broken_json"}
