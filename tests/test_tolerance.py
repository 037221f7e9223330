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

    def tol(dtype, *, numel, scale):
        rtol, atol = base(dtype, numel=numel, scale=scale)
        return rtol * factor, atol * factor

    return tol


def _as_student(answer: dict, dtype: torch.dtype) -> dict:
    """A mistake's answer (computed in float64, like the reference) as a student's in the case's dtype."""
    values = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in answer.get("values", {}).items()}
    return {**answer, "values": values}


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
