"""Numbers in a chapter's prose come from its executed cells, so the text cannot drift from the code.

A chapter quotes a computed number with myst-nb's glue: a cell calls
`glue("key", value, display=False)` and the prose writes {glue:text}`key:.2f`.
This test scans the prose of every chapter (code cells, inline code and glue
roles removed) for numbers that look computed: decimals, percentages and
powers of ten. Each must be a definitional constant listed in DEFINITIONAL
(a default, a bound, an input the text chooses), or the test fails. Every
glue role must name a key that a code cell of the same chapter glues.

Integers and numbers in words are checked too. An integer in a chapter's prose
(outside mathematics, which holds a formula's constants) is glued, or is one the
chapter's code writes (an input the text describes: 300 steps, batches of 50),
or is at most ten, a year or a list's number, or is in DEFINITIONAL_INTEGERS.
In chapters and in the exercise notebooks' text alike, a hedged number ("about
0.97", "some 25 images", "about half"), a count in words out of another ("seven
of ten") and a number word above ten ("thirty") read as results: the chapter
glues them; a notebook, whose text no cell can fill in, states what the
exercise defines and leaves results to its cells.
"""
from __future__ import annotations

import json
import re

import pytest

from autograder.course import course_root, stems

ROOT = course_root()
BOOK = ROOT / "book"
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

# Integers the prose may write out though no cell of the chapter writes them.
DEFINITIONAL_INTEGERS = {
    "64": "the bits of int64 and float64; the width of a question's layer",
    "1000": "an input the text chooses: e^1000, a logit of +-1000",
    "5000": "a question's run of 5000 steps",
}

SMALL_WORDS = "one two three four five six seven eight nine ten".split()
LARGE_WORDS = ("eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty "
               "thirty forty fifty sixty seventy eighty ninety hundred thousand million billion").split()
NUMBER_WORD = "|".join(SMALL_WORDS + LARGE_WORDS + ["half", "a third", "a quarter", "a tenth"])
# about 0.97, some 25 images, about half, roughly thirty times
HEDGED = re.compile(rf"\b(?:about|some|roughly|nearly|almost|around|approximately)\s+(?:\d[\d,.]*|{NUMBER_WORD})\b",
                    re.I)
# seven of ten, seven of the ten, two out of three
COUNT_OF = re.compile(rf"\b(?:{NUMBER_WORD})\s+(?:out\s+)?of\s+(?:the\s+)?(?:{NUMBER_WORD}|\d+)\b", re.I)
LARGE_WORD = re.compile(rf"\b(?:{'|'.join(LARGE_WORDS)})\b", re.I)
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)
# 25, 1,150; not 0.97 (a decimal), 19 % (a percentage), x_2, v1, 2-D
INTEGER = re.compile(r"(?<![\w.,\\^_{-])(\d{1,3}(?:,\d{3})+|\d+)(?![\w.,]\d|[\w%-])(?!\s?%)")
LIST_NUMBER = re.compile(r"^\s*\d+\.\s", re.M)

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


def numbers_in_words(prose_text: str) -> list[str]:
    """Hedged numbers, counts in words out of another, and number words above ten."""
    found = [m.group(0) for pattern in (HEDGED, COUNT_OF, LARGE_WORD) for m in pattern.finditer(prose_text)]
    return [" ".join(f.split()) for f in found]


def code_literals(text: str) -> set[str]:
    """The integers a chapter's code writes: inputs its prose may describe."""
    return set(re.findall(r"(?<![\w.])\d+(?![\w.])", split_fences(text)[1]))


def typed_integers(text: str) -> list[str]:
    """Integers in the prose (mathematics and list numbers left out) that no cell glues and
    the code does not write, above ten, and neither years nor in DEFINITIONAL_INTEGERS."""
    literals, found = code_literals(text), []
    for m in INTEGER.finditer(LIST_NUMBER.sub(" ", MATH.sub(" ", prose(text)))):
        n = m.group(1).replace(",", "")
        if int(n) > 10 and n not in literals and n not in DEFINITIONAL_INTEGERS \
                and not re.fullmatch(r"(?:19|20)\d\d", n):
            found.append(m.group(1))
    return found


def notebook_text(stem: str) -> str:
    """The markdown cells of a chapter's exercise (the solution notebook; its release has the same text)."""
    cells = json.loads((ROOT / "solutions" / stem / f"{stem}.ipynb").read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


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


@pytest.mark.parametrize("stem", CHAPTERS)
def test_prose_types_no_integer_or_number_word_that_no_cell_computed(stem):
    text = (BOOK / f"{stem}.md").read_text()
    bad = typed_integers(text) + numbers_in_words(prose(text))
    assert not bad, (f"book/{stem}.md types {bad} in its prose: glue them from the cell that computes "
                     f"them, or, if definitional, add them to DEFINITIONAL_INTEGERS")


@pytest.mark.parametrize("stem", stems())
def test_exercise_text_types_no_result(stem):
    bad = numbers_in_words(prose(notebook_text(stem)))
    assert not bad, (f"solutions/{stem}/{stem}.ipynb states {bad}: a result belongs in a cell's output, "
                     f"not in the exercise's text")


def test_the_scan_catches_typed_integers_and_numbers_in_words():
    """The classes the editorial pass fixed are caught; glued, coded and definitional ones are not."""
    page = """# A page

```{code-cell} ipython3
steps = 300
```

The run takes 300 steps over 1,150 images and leaves some 25 images wrong, about half of
them dead and seven of the ten optimizers; the first step is thirty times too large.
Kept: $x^{29}$, 1. a list item, in 2015, {glue:text}`n:d` images, 95 % and float64 with 64 bits.

12. A question numbered twelve is a list item.
"""
    assert typed_integers(page) == ["1,150", "25"]
    assert numbers_in_words(prose(page)) == ["some 25", "about half", "seven of the ten", "thirty", "twelve"]
    assert numbers_in_words("the sigmoid's bound of 1/4 and one of the two layers") == ["one of the two"]


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


def test_every_definitional_integer_is_still_needed():
    """An allow-listed integer that no chapter would be caught for any more is removed."""
    needed = set()
    for stem in CHAPTERS:
        text = (BOOK / f"{stem}.md").read_text()
        literals = code_literals(text)
        for m in INTEGER.finditer(LIST_NUMBER.sub(" ", MATH.sub(" ", prose(text)))):
            if m.group(1) not in literals:
                needed.add(m.group(1))
    assert set(DEFINITIONAL_INTEGERS) <= needed, set(DEFINITIONAL_INTEGERS) - needed
