"""Numbers in a chapter's prose come from its executed cells, so the text cannot drift from the code.

A chapter quotes a computed number with myst-nb's glue: a cell calls
`glue("key", value, display=False)` and the prose writes {glue:text}`key:.2f`.
This test scans the prose of every chapter (code cells, inline code and glue
roles removed) for numbers that look computed: decimals, percentages and
powers of ten. Each must be a definitional constant listed in DEFINITIONAL
(a default, a bound, an input the text chooses), or the test fails. Every
glue role must name a key that a code cell of the same chapter glues.
"""
from __future__ import annotations

import re

import pytest

from autograder.course import course_root

BOOK = course_root() / "book"
CHAPTERS = sorted(p.stem for p in BOOK.glob("*.md") if p.stem not in {"intro", "instructors"})

# Constants the prose may write out: they define something, they are not results.
DEFINITIONAL = {
    "0.1": "an input the text chooses (p = 0.1, a slope, a noise level, a learning rate)",
    "0.5": "sigma(0), a threshold, a learning rate",
    "0.9": "a probability the text chooses; momentum 0.9",
    "0.01": "LeakyReLU's default negative_slope; a threshold",
    "0.999": "Adam's default beta_2",
    "0.3": "a learning rate the text chooses",
    "1.5": "the starting point (-1.5, 2) the text chooses",
    "95 %": "a scenario the text sets up (class imbalance)",
    "0.19": "an exercise's worked answer: m_2 = (0.9 * 0.1 + 0.1) g",
    "0.012": "an exercise's worked answer: Rprop's step 0.01 * 1.2 (checked against torch.optim.Rprop)",
    "0.006": "an exercise's worked answer: Rprop's step 0.012 * 0.5 (checked against torch.optim.Rprop)",
    "10^6": "ASGD's default t0",
}

INLINE_CODE = re.compile(r"``.*?``|`[^`\n]*`")
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]*)`")
FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
# 0.59, 4.5 \cdot 10^{-5}, 4.5e-05, 19 %, 10^{-12}, 1e-8
NUMBER = re.compile(r"(?<![\w.])(?:\d+\.\d+(?:[eE][-+]?\d+)?|\d+(?:\.\d+)?\s?%|10\^\{?-?\d+\}?|\d+[eE]-?\d+)(?![\w])")


def split_fences(text: str) -> tuple[str, str]:
    """(prose, code): a fenced block is code when it is a code cell or a plain code block; the
    content of a directive such as an admonition (the answers to the questions) is prose."""
    prose_lines, code_lines, fence = [], [], None
    for line in FRONT_MATTER.sub("", text).splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if fence is None:
                info = stripped[3:].strip()
                fence = "code" if not info.startswith("{") or info.startswith("{code-cell}") else "directive"
            else:
                fence = None
            continue
        (code_lines if fence == "code" else prose_lines).append(line)
    return "\n".join(prose_lines), "\n".join(code_lines)


def prose(text: str) -> str:
    """The chapter without front matter, code, glue roles and inline code."""
    return INLINE_CODE.sub("", GLUE_ROLE.sub("", split_fences(text)[0]))


def hard_coded_numbers(text: str) -> list[str]:
    """Numbers in the prose that no cell computed and that are not definitional."""
    found = [m.group(0).replace("\u00a0", " ") for m in NUMBER.finditer(prose(text))]
    return [n for n in found if n not in DEFINITIONAL and n.replace(" ", "") not in DEFINITIONAL]


def glue_keys_used(text: str) -> set[str]:
    return {role.split(":")[0] for role in GLUE_ROLE.findall(split_fences(text)[0])}


def glue_keys_defined(text: str) -> set[str]:
    code = split_fences(text)[1]
    return set(re.findall(r"""glue\(\s*f?["']([\w{}]+)["']""", code))


def _defined(key: str, defined: set[str]) -> bool:
    """A literal key, or one made by an f-string such as f"ratio_{name}"."""
    return key in defined or any(
        "{" in d and re.fullmatch(re.sub(r"\\\{\w+\\\}", r"\\w+", re.escape(d)), key) for d in defined)


@pytest.mark.parametrize("stem", CHAPTERS)
def test_prose_quotes_no_number_that_no_cell_computed(stem):
    text = (BOOK / f"{stem}.md").read_text()
    bad = hard_coded_numbers(text)
    assert not bad, (f"book/{stem}.md quotes {bad} in its prose: glue them from the cell that computes them "
                     f"(myst_nb.glue and {{glue:text}}), or, if definitional, add them to DEFINITIONAL")


@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_glued_number_is_computed_by_a_cell_of_the_chapter(stem):
    text = (BOOK / f"{stem}.md").read_text()
    defined = glue_keys_defined(text)
    missing = [k for k in glue_keys_used(text) if not _defined(k, defined)]
    assert not missing, f"book/{stem}.md quotes glue keys no cell defines: {missing}"


def test_the_scan_catches_a_hard_coded_number():
    """The test can fail: the errors the editorial pass fixed are caught, glued numbers are not."""
    page = """# A page

```{code-cell} ipython3
glue("dead", 0.59, display=False)
x = 0.123  # numbers in code are code
```

Most units start dead: 0.59 of them, that is 59 %, and the sigmoid passes
$4.5 \\cdot 10^{-5}$ of the gradient; `torch.tensor(0.25)` is code.
Glued instead: {glue:text}`dead:.2f` and {glue:text}`dead:.0%`. A default: 0.01.

```{admonition} Answers
:class: dropdown

An answer is prose too: 2.30.
```
"""
    assert hard_coded_numbers(page) == ["0.59", "59 %", "4.5", "10^{-5}", "2.30"]
    assert glue_keys_used(page) == {"dead"} and glue_keys_defined(page) == {"dead"}
    assert glue_keys_used(page + "\n{glue:text}`undefined:.1f`\n") - glue_keys_defined(page) == {"undefined"}


def test_every_definitional_constant_is_still_used():
    """An allow-list entry no chapter needs any more is removed, so the list cannot grow stale."""
    texts = [prose((BOOK / f"{stem}.md").read_text()) for stem in CHAPTERS]
    unused = [n for n in DEFINITIONAL if not any(
        n in [m.group(0) for m in NUMBER.finditer(t)] for t in texts)]
    assert not unused, unused
