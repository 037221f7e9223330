"""A chapter's catalogue of known mistakes, as the book shows it.

The grader already holds, per check, the mistakes students really make and
the hint each one gets (`Mistake(name, hint, impl)` in
autograder/chapters/<stem>.py). A chapter page shows the same catalogue as a
"common mistakes" box, so the page and the feedback never disagree. Only the
names and hints are shown, never the mistakes' code, and nothing of the
solutions. In a book page (a MyST markdown notebook):

    ```{code-cell} ipython3
    ---
    tags: [remove-input]
    mystnb:
      markdown_format: myst
    ---
    from autograder.catalogue import common_mistakes
    common_mistakes("autograd")
    ```

`markdown_format: myst` lets myst-nb parse the admonition the cell returns;
`remove-input` hides the cell's code.
"""
from __future__ import annotations

import re

from autograder.checks import load_checks

# Characters that mean something in MyST markdown (emphasis, roles, links, maths, HTML, tables).
_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|$~^!+])")


def escape(text: str) -> str:
    """Plain text for a MyST paragraph: every special character backslash-escaped,
    line breaks folded into spaces (a hint is one paragraph)."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))


def catalogue(stem: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(graded object, [(mistake name, hint), ...]), ...] in the chapter's check order;
    a check without catalogued mistakes is left out."""
    rows = []
    for check in load_checks(stem).values():
        if check.mistakes:
            rows.append((check.target, [(m.name, m.hint) for m in check.mistakes]))
    return rows


def mistakes_markdown(stem: str, *, title: str = "Common mistakes") -> str:
    """The chapter's catalogue as a MyST admonition: one list per graded object,
    one item per mistake (its name in words, then its hint)."""
    lines = [f":::{{admonition}} {escape(title)}", ":class: tip", "",
             "The grader recognises these mistakes and answers each with the hint below.", ""]
    for target, mistakes in catalogue(stem):
        lines.append(f"**`{target}`**")
        lines.append("")
        for name, hint in mistakes:
            lines.append(f"- *{escape(name.replace('-', ' '))}*: {escape(hint)}")
        lines.append("")
    lines.append(":::")
    return "\n".join(lines) + "\n"


def common_mistakes(stem: str, *, title: str = "Common mistakes"):
    """The box for a book cell: an IPython Markdown object (see the module docstring)."""
    from IPython.display import Markdown

    return Markdown(mistakes_markdown(stem, title=title))
