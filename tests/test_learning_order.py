"""One learning path: no chapter's code uses what a later chapter teaches.

The reading order is `_toc.yml`'s, including the places reserved by
`# slot: <stem>` comments for chapters still on their way. Each concept below
is taught by one chapter; its code patterns may appear in the code cells of
that chapter's page and of every later chapter (page and source notebook),
never earlier. A chapter not yet in the book (a slot) still counts at its
place, so that `autograd` comes right after `tensors`.
"""
from __future__ import annotations

import json
import re

import pytest

from autograder.course import course_root

ROOT = course_root()

# concept: (the chapter that teaches it, code patterns that use it)
TAUGHT_BY = {
    "autograd": ("autograd", r"\.backward\(|torch\.autograd|requires_grad|\.grad\b|no_grad|\.detach\(|retain_grad"),
    "activation modules": ("activations", r"nn\.(?:ReLU|Sigmoid|Tanh|GELU|LeakyReLU|PReLU|Softmax)\b"
                                          r"|F\.(?:gelu|leaky_relu|softmax|prelu|log_softmax)\b"),
    "a module with parameters": ("activations", r"nn\.Module\b|nn\.Parameter\b"),
    "network building blocks": ("network_classes", r"nn\.(?:Linear|Sequential|ModuleList|ModuleDict|Dropout|"
                                                   r"BatchNorm1d)\b|state_dict\(|register_buffer"),
    "loss functions": ("losses", r"F\.(?:mse_loss|l1_loss|cross_entropy|nll_loss|binary_cross_entropy\w*)\b"
                                 r"|nn\.(?:MSELoss|L1Loss|CrossEntropyLoss|NLLLoss|BCELoss|BCEWithLogitsLoss)\b"),
    "optimizers": ("optimizers", r"torch\.optim\b"),
    "hooks and initialisation": ("deep_networks", r"register_forward_hook|nn\.init\.kaiming"),
}


def reading_order() -> list[str]:
    """Chapter stems in `_toc.yml` order, slots included."""
    order = []
    for line in (ROOT / "_toc.yml").read_text().splitlines():
        m = re.match(r"\s*- file: book/(\w+)\s*$", line) or re.match(r"\s*# slot: (\w+)", line)
        if m and m.group(1) not in ("intro", "instructors") and m.group(1) not in order:
            order.append(m.group(1))
    return order


def chapter_code(stem: str) -> str:
    """The code of a chapter: its page's code cells and its source notebook's code cells."""
    code = []
    page = ROOT / "book" / f"{stem}.md"
    if page.is_file():
        code += re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", page.read_text(), re.S)
    nb = ROOT / "solutions" / stem / f"{stem}.ipynb"
    if nb.is_file():
        code += ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    # comments and strings may name what comes later ("the optimizers chapter"): only code counts
    return "\n".join(re.sub(r"#[^\n]*", "", c) for c in code)


def uses_before_taught(order: list[str], code_of) -> list[str]:
    problems = []
    for concept, (teacher, pattern) in TAUGHT_BY.items():
        assert teacher in order, f"{teacher} (teaches {concept}) is neither in _toc.yml nor a slot"
        for stem in order[:order.index(teacher)]:
            hits = sorted(set(re.findall(pattern, code_of(stem))))
            if hits:
                problems.append(f"{stem} uses {concept} ({', '.join(hits)}), taught later by {teacher}")
    return problems


def test_the_order_has_the_chapters_and_their_slots():
    order = reading_order()
    assert order[:2] == ["tensors", "autograd"], order
    assert order.index("activations") < order.index("network_classes") < order.index("losses") \
        < order.index("final_layers") < order.index("optimizers") < order.index("deep_networks"), order


def test_no_chapter_uses_what_a_later_chapter_teaches():
    problems = uses_before_taught(reading_order(), chapter_code)
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_chapter_that_uses_what_comes_later():
    """The test can fail: the old order (activations last, backward from the first chapter) is caught."""
    old = ["tensors", "network_classes", "final_layers", "losses", "optimizers", "activations", "autograd",
           "deep_networks"]
    problems = uses_before_taught(old, chapter_code)
    assert any(p.startswith("network_classes uses activation modules") for p in problems), problems
    assert any(p.startswith("losses uses autograd") for p in problems), problems


@pytest.mark.parametrize("stem", [s for s in reading_order() if (ROOT / "book" / f"{s}.md").is_file()])
def test_every_chapter_page_has_objectives_a_summary_and_questions(stem):
    text = (ROOT / "book" / f"{stem}.md").read_text()
    for heading in ("**After this chapter you can**", "## Summary", "## Questions and exercises"):
        assert heading in text, f"book/{stem}.md has no {heading}"
    assert text.index("**After this chapter you can**") < text.index("## Summary") \
        < text.index("## Questions and exercises"), stem
    assert "```{admonition} Answers" in text, f"book/{stem}.md: the questions have no answers"
