"""The tolerance policy has wide margins on both sides, in every chapter.

docs/design.md contract 5: every known-correct variant passes with a wide margin
and every known-wrong variant fails. Here "wide" is measured, check by check,
through the grader's own comparison (`compare_answers`) with the tolerance of
`autograder.tolerance` scaled:

- the reference solution run in float32 (a correct implementation with
  float32 rounding) still passes every case with a tenth of the tolerance;
- every catalogued mistake still fails at least one case with ten times the
  tolerance (or fails it by other means: an error where the reference runs,
  a wrong shape, dtype or integer value).

So neither a slightly different summation order nor a looser or tighter
policy later changes a verdict.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import autograder.compare as compare
from autograder.probes import run_probe
from tests.conftest import all_checks, grader, reference


def _scaled(factor: float):
    base = compare.tolerance

    def tol(dtype, *, numel, scale, inputs=0.0):
        rtol, atol = base(dtype, numel=numel, scale=scale, inputs=inputs)
        return rtol * factor, atol * factor

    return tol


def _as_student(answer, dtype: torch.dtype):
    """A mistake's answer (computed in float64, like the reference) as a student's in the case's dtype."""
    values = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in answer.values.items()}
    return replace(answer, values=values)


@pytest.mark.parametrize("stem,name", all_checks())
def test_float32_reference_passes_with_a_tenth_of_the_tolerance(stem, name, monkeypatch):
    p = grader(stem).prepared[name]
    check = replace(p.check, forbidden=())
    impl = reference(stem)[p.check.target]
    monkeypatch.setattr(compare, "tolerance", _scaled(0.1))
    tried = 0
    for case, ref in zip(p.cases, p.reference):
        if case.shape_only or case.dtype != torch.float32:
            continue
        ours = run_probe(check, impl, case)
        assert not ours["error"], (case.label, ours["error"])
        assert compare.compare_answers(ours, ref, case=case) is None, case.label
        tried += 1
    assert tried, f"{stem}.{name} has no float32 case"


@pytest.mark.parametrize("stem,name", all_checks())
def test_every_mistake_fails_with_ten_times_the_tolerance(stem, name, monkeypatch):
    p = grader(stem).prepared[name]
    monkeypatch.setattr(compare, "tolerance", _scaled(10.0))
    for index, mistake in enumerate(p.check.mistakes):
        caught = []
        for case, ref, answers in zip(p.cases, p.reference, p.mistakes):
            if case.shape_only:
                continue
            answer = _as_student(answers[index][1], case.dtype)
            if answer.get("error") or compare.compare_answers(answer, ref, case=case) is not None:
                caught.append(case.label)
        assert caught, f"{stem}.{name}: mistake {mistake.name} is within 10x the tolerance on every case"


# -- the floor of the absolute tolerance (issue: a tolerance that collapsed) --------------------

def _softmax_grad_case():
    from autograder.checks import Case

    x = torch.tensor([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 999.0]], dtype=torch.float64)
    return Case("logits of ±1000 (float64), dim=1", (x, 1), {}, torch.float64)


def _answer(values):
    from autograder.answer import Answer

    return Answer(values, {k: "cpu" for k in values})


def test_a_rounding_residue_of_a_tiny_softmax_gradient_passes():
    """The float64 softmax gradient at logits of ±1000 is ~1e-218 where the reference is
    smallest; a correct answer off by a rounding residue of 5e-218 keeps the case."""
    case = _softmax_grad_case()
    x = case.args[0].clone().requires_grad_(True)
    out = torch.softmax(x, 1)
    w = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    (g,) = torch.autograd.grad(out, x, w)
    tiny = g.abs() < 1e-200
    assert tiny.any() and g.abs().max() > 1e-3
    ref = {"output": out.detach(), "gradient w.r.t. input": g}
    residue = torch.where(g.abs() > 0, g + 5e-218, g)  # a correct, differently rounded answer
    student = {"output": out.detach(), "gradient w.r.t. input": residue}
    only_tiny = torch.tensor([[1e-218, 0.0, 0.0]], dtype=torch.float64)
    case_tiny = type(case)("a reference whose largest gradient is 1e-218", (only_tiny,), {}, torch.float64)
    assert compare.compare_answers(_answer(student), _answer(ref), case=case) is None
    assert compare.compare_answers(_answer({"gradient w.r.t. input": only_tiny * 5}),
                                   _answer({"gradient w.r.t. input": only_tiny}), case=case_tiny) is None


def test_the_floor_does_not_let_a_wrong_gradient_through():
    case = _softmax_grad_case()
    x = case.args[0]
    g = torch.zeros_like(x)
    ref = {"gradient w.r.t. input": g}
    for wrong in (1e-10, 1e-6, 0.5):
        got = g.clone()
        got[0, 1] = wrong
        assert compare.compare_answers(_answer({"gradient w.r.t. input": got}), _answer(ref), case=case), wrong
    # float32: the floor is eps(float32) times the inputs' scale, still far below a wrong answer
    case32 = type(case)(case.label, (x.float(), 1), {}, torch.float32)
    got = g.float().clone()
    got[1, 2] = 1e-2
    assert compare.compare_answers(_answer({"gradient w.r.t. input": got}), _answer(ref), case=case32)


def test_the_floor_follows_the_inputs_and_the_upstream_gradient():
    from autograder.tolerance import tolerance

    _, atol_small = tolerance(torch.float64, numel=4, scale=1e-218, inputs=1.0)
    _, atol_big = tolerance(torch.float64, numel=4, scale=1e-218, inputs=1000.0)
    assert atol_small == torch.finfo(torch.float64).eps and atol_big == 1000 * atol_small
    _, atol_none = tolerance(torch.float64, numel=4, scale=1e-218)
    assert atol_none < 1e-220  # no inputs given: relative to the reference only, as before
