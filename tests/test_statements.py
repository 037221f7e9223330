"""The statement is the contract (issue 15): nothing is graded that the exercise does not ask.

Each check's forbidden torch functions, the edge cases its cases grade
(`Case.edge`: logits of exactly 0, of ±1000) and whatever else it declares
(`Check.stated`: an error to raise) must be stated in the exercise's own
text: the markdown cells before its solution cell (back to the previous
exercise), the solution cell's docstring and the visible part of its check
cell, as a student sees them in the released notebook.
"""
from __future__ import annotations

import json
import re

import pytest

from autograder.checks import EDGES, load_checks
from autograder.course import source_notebook
from autograder.notebook import BEGIN_SOLUTION, END_SOLUTION, grade_id_of, marked_lines, visible_part
from tests.conftest import ALL_STEMS

def statement(stem: str, name: str) -> str:
    """The exercise's own text for check `name`, as the released notebook shows it."""
    nb = json.loads(source_notebook(stem).read_text())
    cells = nb["cells"]
    check_index = next(i for i, c in enumerate(cells) if grade_id_of(c) == f"check_{name}")
    start = max((i for i, c in enumerate(cells[:check_index])
                 if (grade_id_of(c) or "").startswith("check_")), default=-1) + 1
    parts = []
    for cell in cells[start:check_index + 1]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(source)
        elif (grade_id_of(cell) or "").startswith("check_"):
            parts.append(visible_part(source))
        else:
            hidden = marked_lines(source, BEGIN_SOLUTION, END_SOLUTION)
            parts.append("".join(line for n, line in enumerate(source.splitlines(keepends=True), 1)
                                 if n not in hidden))
    return "\n".join(parts)


def _said(name: str, text: str) -> bool:
    """A torch function named in the text as code (`torch.softmax`, `F.softmax`, `.softmax`),
    by its name or a public spelling of it: "log-softmax" in prose names no function."""
    base = name.rstrip("_")
    spellings = {base, base.replace("special_", "special."), base.removeprefix("special_")}
    return any(re.search(rf"[.`]{re.escape(s)}(?![\w])", text) for s in spellings)


def is_public(name: str) -> bool:
    """A torch function a student can call by this name (torch.*, F.*, torch.special.*, a method);
    internal names (torch._C._nn.cross_entropy_loss, private ones) are aliases of public ones."""
    import torch
    import torch.nn.functional as F

    if name.startswith("_"):
        return False
    return (hasattr(torch, name) or hasattr(F, name) or hasattr(torch.Tensor, name)
            or hasattr(torch.special, name.removeprefix("special_")))


def _params(kind):
    out = []
    for stem in ALL_STEMS:
        for name, check in load_checks(stem).items():
            out.append(pytest.param(stem, name, id=f"{stem}.{name}"))
    return out


@pytest.mark.parametrize("stem,name", _params("forbidden"))
def test_every_forbidden_function_is_named_in_the_statement(stem, name):
    check = load_checks(stem)[name]
    text = statement(stem, name)
    public = [f for f in check.forbidden if is_public(f)]  # the others are internal aliases of these
    missing = [f for f in public if not _said(f, text)]
    assert not missing, f"{stem}.{name} forbids {missing}, which its statement never names"


@pytest.mark.parametrize("stem,name", _params("edges"))
def test_every_graded_edge_case_and_error_is_stated(stem, name):
    check = load_checks(stem)[name]
    text = statement(stem, name)
    edges = sorted({c.edge for c in check.cases(device="cpu") if c.edge})
    missing = [e for e in edges if not re.search(EDGES[e], text, re.IGNORECASE)]
    missing += [s for s in check.stated if not re.search(s, text, re.IGNORECASE)]
    assert not missing, f"{stem}.{name} grades {missing}, which its statement never states"


GRADIENT_PROBES = {"FunctionProbe", "ModuleProbe", "AutogradFunctionProbe", "ActivationModuleProbe"}
# checks whose derivative has no kink and no special point at 0 worth a case, with why
NO_KINK = {("losses", "binary_cross_entropy"): "its input is a probability: at 0 and 1 the derivative is infinite",
           ("network_classes", "count_parameters"): "no gradient",
           ("tensors", "mm"): "bilinear: no kink, no special point at 0",
           ("tensors", "mean"): "linear: no kink, no special point at 0"}


@pytest.mark.parametrize("stem,name", _params("kinks"))
def test_every_differentiable_check_has_a_case_at_zero(stem, name):
    check = load_checks(stem)[name]
    probe = getattr(check.probe, "probe", check.probe)  # the probe inside a wrapper (WithHelpers)
    if type(probe).__name__ not in GRADIENT_PROBES or (stem, name) in NO_KINK:
        pytest.skip(NO_KINK.get((stem, name), "no gradients compared"))
    probe_grad = getattr(probe, "grad", True)
    if not probe_grad:
        pytest.skip("no gradients compared")
    assert any(c.edge == "zero" for c in check.cases(device="cpu")), (
        f"{stem}.{name}: no case at 0 or at a kink (Case(..., edge='zero'))")


def test_the_statement_test_fails_when_a_forbidden_name_or_an_edge_is_not_stated(monkeypatch):
    """Both ways: the same statement with a forbidden name or the edge case removed fails."""
    import tests.test_statements as me

    text = statement("losses", "log_softmax")
    monkeypatch.setattr(me, "statement", lambda stem, name: text.replace("F.softmax", "F.XXX")
                        .replace("`torch.softmax`", "torch.XXX"))
    with pytest.raises(AssertionError, match="softmax"):
        test_every_forbidden_function_is_named_in_the_statement("losses", "log_softmax")
    monkeypatch.setattr(me, "statement", lambda stem, name: re.sub(EDGES["zero"], "XXX", text, flags=re.I))
    with pytest.raises(AssertionError, match="zero"):
        test_every_graded_edge_case_and_error_is_stated("losses", "log_softmax")
    monkeypatch.setattr(me, "statement", lambda stem, name: text)
    test_every_forbidden_function_is_named_in_the_statement("losses", "log_softmax")
    test_every_graded_edge_case_and_error_is_stated("losses", "log_softmax")


def test_a_check_without_a_case_at_zero_fails_the_kink_test(monkeypatch):
    from dataclasses import replace as dc_replace

    import tests.test_statements as me

    check = load_checks("losses")["l1_loss"]
    flat = dc_replace(check, make_cases=lambda gen, **kw: [dc_replace(c, edge="") for c in
                                                             check.make_cases(gen, **kw)])
    monkeypatch.setattr(me, "load_checks", lambda stem: {"l1_loss": flat})
    with pytest.raises(AssertionError, match="no case at 0"):
        test_every_differentiable_check_has_a_case_at_zero("losses", "l1_loss")


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_visible_tests_are_advisory_and_the_notebook_says_so(stem):
    """The visible tests' role, decided once: they sit in a read-only cell of their own, worth 0
    points, before the check cell, which holds only the hidden checks. So no visible test can gate
    or steer a check's points (nbgrader scores the check cell alone; the runner runs no visible
    test in the grader or the child on its behalf), and the released notebook says so."""
    from autograder.course import release_notebook
    from autograder.reference import visible_tests

    assert visible_tests(stem) == {}, f"{stem}: a check cell holds visible tests"
    nb = json.loads(source_notebook(stem).read_text())
    ids = [grade_id_of(c) or "" for c in nb["cells"]]
    for k, gid in enumerate(ids):
        if gid.startswith("check_"):
            name = gid.removeprefix("check_")
            assert ids[k - 1] == f"visible_{name}", (stem, gid, ids[k - 1])
            meta = nb["cells"][k - 1]["metadata"]["nbgrader"]
            # nbgrader's own form of a test that scores nothing: a read-only grade cell of 0 points
            # (`nbgrader validate` reports it failing; autograde gives it 0 of 0)
            assert meta["locked"] and meta["grade"] and meta["points"] == 0 and not meta["solution"], (stem, meta)
            assert "no points" in "".join(nb["cells"][k - 1]["source"]), stem
    nb = json.loads(release_notebook(stem).read_text())
    first_check = next(i for i, c in enumerate(nb["cells"]) if (grade_id_of(c) or "").startswith("check_"))
    text = " ".join(" ".join("".join(c["source"]) for c in nb["cells"][:first_check]
                             if c["cell_type"] == "markdown").split())
    assert re.search(r"They give \*\*no\s*points\*\*", text), stem
    assert "scores 0**" not in text, stem


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_the_visible_tests_run_without_the_repository(stem):
    """A student runs the visible tests with torch and the notebook's own setup: none imports the grader."""
    from autograder.course import release_notebook

    nb = json.loads(release_notebook(stem).read_text())
    cells = [c for c in nb["cells"] if (grade_id_of(c) or "").startswith("visible_")]
    assert cells, stem
    for c in cells:
        source = "".join(c["source"])
        assert "import autograder" not in source and "from autograder" not in source, grade_id_of(c)


@pytest.mark.parametrize("stem", ALL_STEMS)
def test_check_cell_headers_say_their_points_in_plain_english(stem):
    """Each check cell's header says its points as a reader would: "(1 point)", "(2 points)"."""
    from autograder.course import release_notebook

    nb = json.loads(release_notebook(stem).read_text())
    headers = [ln for c in nb["cells"] if (grade_id_of(c) or "").startswith("check_")
               for ln in "".join(c["source"]).splitlines() if re.search(r"\(\d+(\.\d+)? points?\)", ln)]
    assert headers, stem
    wrong = [h for h in headers if re.search(r"\(1 points\)|\((?!1 )\d+(\.\d+)? point\)", h)]
    assert not wrong, wrong


# -- the newer chapters (issue 23): dtypes, devices and the rules their checks grade -------------

NEWER = ("autograd", "deep_networks", "capstone")


def _notebook_rules(stem: str) -> str:
    """The chapter's own rules: the markdown before its first exercise (dtypes, devices)."""
    nb = json.loads(source_notebook(stem).read_text())
    first = next(i for i, c in enumerate(nb["cells"]) if BEGIN_SOLUTION in "".join(c["source"]))
    return "\n".join("".join(c["source"]) for c in nb["cells"][:first] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("stem,name", [pytest.param(s, n, id=f"{s}.{n}") for s in NEWER for n in load_checks(s)])
def test_the_newer_chapters_state_the_dtypes_and_devices_they_grade(stem, name):
    check = load_checks(stem)[name]
    text = statement(stem, name) + "\n" + _notebook_rules(stem)
    missing = [str(d).removeprefix("torch.") for d in check.dtypes if str(d).removeprefix("torch.") not in text]
    assert not missing, f"{stem}.{name} grades {missing}, which neither its statement nor the notebook's rules name"
    devices = check.meta_case or check.fake_cuda_case or name == "fit"  # fit trains once more on meta itself
    assert not devices or re.search(r"device", text), f"{stem}.{name} has device cases its text never mentions"


@pytest.mark.parametrize("stem,name,rule", [
    ("capstone", "fit", "accumulating"), ("capstone", "fit", "`meta` device"),
    ("capstone", "evaluate", "Python float"), ("deep_networks", "dead_unit_fraction", "remove the hooks"),
    ("autograd", "AbsFunction", "ctx.save_for_backward"),
])
def test_a_graded_rule_taken_out_of_its_statement_fails_the_statement_test(monkeypatch, stem, name, rule):
    """Both ways for the rules these chapters grade (Check.stated): the statement without it fails."""
    import tests.test_statements as me

    text = statement(stem, name)
    assert rule in text
    monkeypatch.setattr(me, "statement", lambda s, n: text.replace(rule, "XXX"))
    with pytest.raises(AssertionError, match="never states"):
        test_every_graded_edge_case_and_error_is_stated(stem, name)
