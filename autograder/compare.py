"""Decide one case: the student's answer against the reference's.

Order of the questions, as torch.testing asks them: did it run, did it call
a forbidden function, then for each output: is it a tensor, its shape, dtype,
device, and only then its values (`torch.testing.assert_close` with the
tolerance policy of tolerance.py). A failing case is matched against the
known mistakes computed on the same inputs (an error against a mistake that
raises the same one), single mistakes first, then combinations of them
(code with several bugs: a hint for each); a match names the hints. A
device-only case (meta, simulated CUDA) fails device-bound code with
DEVICE_HINT. A case that cannot be judged there (data-dependent code, which
a device without data cannot run, where the same code ran on the CPU) is
*inconclusive*: left out of the check's share, never counted as passed.

An outcome case (`Case.judge`, e.g. the capstone's held-out accuracy) is
decided by its judge, here in the grader, once the outputs it names in
`compare` equal the reference's; its mistakes are recognised by those
outputs only, never by the outcome.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from autograder.answer import Answer
from autograder.checks import Case, Mistake
from autograder.probes import NOT_DIFFERENTIABLE
from autograder.probes.core import COURSE_CODE, TAMPERED, THREADED, UPSTREAM
from autograder.probes.fake_cuda import NOT_RUN
from autograder.tolerance import input_scale, tolerance


@dataclass
class CaseVerdict:
    label: str
    passed: bool
    message: str = ""  # what went wrong, for the student
    mistake: str | None = None  # the matched known mistake's name
    hint: str | None = None
    # the first differing output, in short (for feedback); None when it did not get that far
    output: str | None = None
    expected: str | None = None
    got: str | None = None
    # code with several known mistakes at once: each one's name and hint (mistake/hint name the whole)
    mistakes: list[str] | None = None
    hints: list[str] | None = None
    # not judged (the device-only part could not run, where the same code ran on the CPU): left
    # out of the check's share, neither passed nor failed
    inconclusive: bool = False

    def matched(self) -> list[tuple[str, str]]:
        """(mistake, hint) for each known mistake this case matched: one, or each part of a combination."""
        if self.mistakes and self.hints:
            return list(zip(self.mistakes, self.hints))
        return [(self.mistake, self.hint)] if self.mistake and self.hint else []


class Difference(str):
    """What differs, in words (a plain str for every caller), with its parts kept for feedback."""

    output: str
    expected: str
    got: str

    def __new__(cls, key: str, expected: str, got: str, detail: str = "") -> "Difference":
        self = super().__new__(cls, f"{key}: expected {expected}, got {got}" + (f". {detail}" if detail else ""))
        self.output, self.expected, self.got = key, expected, got
        return self


def _fmt(t: torch.Tensor, limit: int = 6) -> str:
    flat = t.detach().reshape(-1)
    vals = ", ".join(f"{float(v):.6g}" if t.is_floating_point() else str(v.item()) for v in flat[:limit])
    more = ", ..." if flat.numel() > limit else ""
    if t.dim() == 0:
        return vals
    return f"[{vals}{more}] (shape {tuple(t.shape)})"


def compare_value(key: str, got: Any, want: Any, *, case: Case, got_device: str | None,
                  want_device: str | None) -> str | None:
    """None when `got` matches `want`, else what differs, in words."""
    if any(isinstance(v, str) and v == NOT_RUN for v in (got, want)):
        return None  # a simulated device could not run one of them: inconclusive
    if isinstance(want, torch.Tensor):
        if isinstance(got, str) and got == NOT_DIFFERENTIABLE:
            return (f"{key}: your output is not differentiable with respect to it "
                    "(was it computed with .item(), numpy, .detach() or a new tensor?)")
        if type(got) is not torch.Tensor:
            return Difference(key, "a tensor", f"{type(got).__name__} {str(got)[:80]}")
        if got.shape != want.shape:
            return Difference(key, f"shape {tuple(want.shape)}", f"{tuple(got.shape)}")
        expected_dtype = case.dtype if want.is_floating_point() and case.dtype.is_floating_point else want.dtype
        if got.dtype != expected_dtype:
            return Difference(key, f"dtype {expected_dtype}", f"{got.dtype}")
        if want_device is not None and got_device != want_device:
            return (f"{key}: expected it on device {want_device} (the inputs' device), "
                    f"got {got_device}")
        if case.shape_only:
            return None
        if want.is_floating_point():
            finite = want[torch.isfinite(want)]
            scale = float(finite.abs().max()) if finite.numel() else 1.0
            upstream = max(UPSTREAM) if key.startswith("gradient") else 0.0
            rtol, atol = tolerance(got.dtype, numel=case.numel(), scale=scale,
                                   inputs=case_input_scale(case, upstream))
            got_cmp = got.double()
            want_cmp = want.double()
        else:
            rtol = atol = 0.0
            got_cmp, want_cmp = got, want
        if want.is_floating_point() and bool(torch.isclose(got_cmp, want_cmp, rtol=rtol, atol=atol,
                                                           equal_nan=True).all()):
            return None  # what assert_close decides for these float64 tensors, without its overhead
        try:
            torch.testing.assert_close(got_cmp, want_cmp, rtol=rtol, atol=atol, equal_nan=True,
                                       check_device=False)
        except AssertionError as exc:
            detail = " ".join(str(exc).split("\n")[1:4]).strip()
            return Difference(key, _fmt(want), _fmt(got), detail)
        return None
    if isinstance(want, float):
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return Difference(key, "a number", type(got).__name__)
        if not (abs(got - want) <= 1e-6 * max(1.0, abs(want)) or (got != got and want != want)):
            return Difference(key, f"{want:.6g}", f"{got:.6g}")
        return None
    if got != want or type(got) is not type(want):
        return Difference(key, repr(want)[:200], repr(got)[:200])
    return None


def case_input_scale(case: Case, upstream: float) -> float:
    """`tolerance.input_scale` of the case's inputs, computed once per case (a trusted input the
    grader made: it is the same for every answer compared on it)."""
    cache = case.__dict__.get("_input_scales")
    if cache is None:
        cache = {}
        object.__setattr__(case, "_input_scales", cache)  # a frozen dataclass: a cache, not a field
    if upstream not in cache:
        cache[upstream] = input_scale(case.tensors(), upstream=upstream)
    return cache[upstream]


def compare_answers(student: Answer, reference: Answer, *, case: Case) -> str | None:
    """None when every compared output matches, else the first difference."""
    keys = case.compare or tuple(reference.values)
    for key in keys:
        if key not in reference.values:
            continue
        if key not in student.values:
            return f"{key}: missing from your answer"
        msg = compare_value(
            key, student.values[key], reference.values[key], case=case,
            got_device=student.devices.get(key), want_device=reference.devices.get(key),
        )
        if msg:
            return msg
    return None


DEVICE_HINT = ("Keep every tensor on the inputs' device: make new tensors with device=input.device (or "
               "torch.zeros_like(input)), never .cpu(), .numpy() or a tensor made without a device; the grader "
               "runs your code on a GPU too.")

# Messages torch gives when tensors on two devices meet (a hard-coded device).
_DEVICE_MISMATCH = re.compile(r"same device|expected device|two devices|tensor on device|on device cpu",
                              re.IGNORECASE)


def inconclusive(label: str, why: str) -> CaseVerdict:
    """A case left out of the check's share (neither passed nor failed), saying why."""
    return CaseVerdict(label, False, "not judged: " + why, inconclusive=True)


def meta_inconclusive(case: Case, verdict: CaseVerdict, student: Answer, twin: Answer | None) -> CaseVerdict:
    """A meta case whose code raised: inconclusive when the same code ran without error on the
    CPU case the meta case was made from (`twin`), so that the error is the meta device's (no
    data: .item(), masks, nonzero), and it is no device mismatch. Judged from what the code
    did on the CPU, never from the error's wording: code that raises on the CPU too fails."""
    if (case.shape_only and not case.fake_cuda and student.error and not verdict.passed
            and verdict.mistake != "device-bound" and twin is not None and not twin.error):
        return inconclusive(case.label, "your code ran on the CPU but not on the meta device, which has no "
                                        "data (.item(), masks, nonzero): " + student.error[:200])
    return verdict


def decide_case(case: Case, student: Answer, reference: Answer,
                mistakes: list[tuple[Mistake, Answer]]) -> CaseVerdict:
    if student.error:
        err = student.error
        if case.shape_only and _DEVICE_MISMATCH.search(err):
            return CaseVerdict(case.label, False, f"raised {err}", hint=DEVICE_HINT, mistake="device-bound")
        matched = match_mistake(student, mistakes, case=case, reference=reference)
        return CaseVerdict(case.label, False, f"raised {err}", **(_matched_fields(matched) if matched else {}))
    if TAMPERED in student.forbidden:
        return CaseVerdict(case.label, False,
                           "switched off or went around the grader's watch on torch calls (popped its torch function "
                           "or dispatch mode, set the profile hook, used ctypes or torch's private operator lookup), "
                           "so the call could not be checked; write the function with elementary tensor "
                           "operations and leave torch's modes alone", mistake="forbidden-call")
    if THREADED in student.forbidden:
        return CaseVerdict(case.label, False,
                           "started a thread or a process (or left one running) while the graded code ran, so the "
                           "grader could not see what it called; graded code runs in the calling thread only",
                           mistake="forbidden-call")
    course = [f[len(COURSE_CODE) + 1:] for f in student.forbidden if f.startswith(COURSE_CODE)]
    if course:
        return CaseVerdict(case.label, False,
                           f"ran the grader's own {', '.join(course)} (the course's code, which another check "
                           "uses in place of yours) instead of your own; write the function yourself",
                           mistake="forbidden-call")
    if student.forbidden:
        names = ", ".join(student.forbidden)
        return CaseVerdict(case.label, False,
                           f"called {names}, the torch function this exercise asks you to write "
                           "yourself; implement it with elementary tensor operations",
                           mistake="forbidden-call")
    problem = compare_answers(student, reference, case=case)
    if problem is None and case.judge is not None:
        problem = case.judge(student.values)
    if problem is None:
        if case.fake_cuda and any(isinstance(v, str) and v == NOT_RUN and reference.values.get(k) != NOT_RUN
                                  for k, v in student.values.items()):
            return inconclusive(case.label, "your code ran on the CPU (as the other cases grade it) but not on "
                                            "the simulated CUDA device, which has no data (.item(), masks, nonzero)")
        return CaseVerdict(case.label, True)
    parts = ({"output": problem.output, "expected": problem.expected, "got": problem.got}
             if isinstance(problem, Difference) else {})
    if case.shape_only and "device" in str(problem):
        return CaseVerdict(case.label, False, str(problem), mistake="device-bound", hint=DEVICE_HINT, **parts)
    matched = match_mistake(student, mistakes, case=case, reference=reference)
    if matched is None:
        return CaseVerdict(case.label, False, str(problem), **parts)
    return CaseVerdict(case.label, False, str(problem), **_matched_fields(matched), **parts)


def _matched_fields(mistake: Mistake) -> dict:
    """A verdict's mistake and hint; for a combination of mistakes, also each part's (several hints)."""
    fields = {"mistake": mistake.name, "hint": mistake.hint}
    if mistake.parts:
        fields.update(mistakes=[m.name for m in mistake.parts], hints=[m.hint for m in mistake.parts])
    return fields


def _error_text(error: str) -> str:
    """An error without where it happened (the cell and line differ between the student and a mistake)."""
    return re.sub(r" \(cell [^)]*\)$", "", error.strip()).split("\n")[0]


def match_mistake(student: Answer, mistakes: list[tuple[Mistake, Answer]], *, case: Case,
                  reference: Answer | None = None) -> Mistake | None:
    """The first known mistake whose answer the student's equals: single mistakes first (in
    catalogue order), then combinations of them (Mistake.parts: code with several bugs);
    an error matches a mistake that raises the same error. In an outcome case, a mistake
    whose compared outputs equal the reference's is recognised by nothing (only the outcome
    differs, and the outcome is the judge's)."""
    if case.shape_only:
        return None
    ordered = sorted(mistakes, key=lambda ma: len(ma[0].parts))
    for mistake, answer in ordered:
        if case.judge is not None and reference is not None and not answer.error \
                and compare_answers(answer, reference, case=case) is None:
            continue
        if student.error or answer.error:
            if student.error and answer.error and _error_text(student.error) == _error_text(answer.error):
                return mistake
            continue
        if compare_answers(student, answer, case=case) is None:
            return mistake
    return None
