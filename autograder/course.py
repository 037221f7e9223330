"""Where a chapter's files live. One stem names a chapter everywhere."""
from __future__ import annotations

import os
from pathlib import Path


def course_root() -> Path:
    """The course repository: $AUTOGRADER_COURSE_ROOT, else the checkout
    this package was installed from (editable install)."""
    env = os.environ.get("AUTOGRADER_COURSE_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parent.parent
    if not (root / "solutions").is_dir():
        raise FileNotFoundError(
            f"no solutions/ folder under {root}: set AUTOGRADER_COURSE_ROOT to the course checkout"
        )
    return root


def source_notebook(stem: str, root: Path | None = None) -> Path:
    return (root or course_root()) / "solutions" / stem / f"{stem}.ipynb"


def release_notebook(stem: str, root: Path | None = None) -> Path:
    return (root or course_root()) / "exercises" / stem / f"{stem}.ipynb"


def stems(root: Path | None = None) -> list[str]:
    """Every chapter that has a source notebook, in a stable order."""
    base = (root or course_root()) / "solutions"
    return sorted(p.parent.name for p in base.glob("*/*.ipynb") if p.stem == p.parent.name)
