"""One bug costs once: a graded function that calls another graded function gets the course's.

A check whose graded function may call another exercise's function (the
capstone's `fit` calls `evaluate`, `cross_entropy` calls `log_softmax` and
`nll_loss`) names those helpers and the course's own code for them. While the
graded code runs, each such name in its module's namespace (the notebook)
is the course's function (for the calls it can answer, the statement's;
a call it raises on goes to the student's own); the student's is put back
afterwards. A bug in
the helper then costs points in the helper's own check only, and the case
label says so. The course's helpers are grader code that the child holds
anyway (like the known mistakes); they are never a solution cell.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

# The course's helpers for graded functions that have a torch function of their own are that torch
# function under the exercise's signature, defined here (the child keeps this module): code that finds
# one in memory and calls it for its own exercise calls torch's, which that exercise's watch forbids.
# Never an elementary reference solution: that one a student could borrow unseen.


def course_log_softmax(input, dim):
    """The losses exercise's log_softmax: torch's."""
    return torch.log_softmax(input, dim)


def course_nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """The losses exercise's nll_loss: torch's."""
    return F.nll_loss(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction)


def course_l1_loss(input, target, reduction="mean"):
    """The losses exercise's l1_loss: torch's."""
    return F.l1_loss(input, target, reduction=reduction)


def course_binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """The losses exercise's binary_cross_entropy_with_logits: torch's."""
    return F.binary_cross_entropy_with_logits(input, target, weight=weight, reduction=reduction,
                                              pos_weight=pos_weight)


def course_sigmoid(input):
    """The activations exercise's sigmoid, from exp(-|x|) (SigmoidFunction may call it, and may not call
    torch's): elementary code, so the sigmoid check guards it (an answer that runs it scores 0)."""
    e = torch.exp(torch.where(input >= 0, -input, input))
    return torch.where(input >= 0, 1 / (1 + e), e / (1 + e))


HELPERS_NOTE = "the course's {names} in place of yours (graded on their own: one bug costs once)"


@contextlib.contextmanager
def helpers_in_place(impl, helpers: tuple[tuple[str, Callable], ...]):
    """While the block runs, each name of `helpers` that `impl`'s module (the notebook) defines
    as a function is the helper given instead; restored afterwards. Yields the names swapped."""
    namespace = getattr(impl, "__globals__", None)
    if namespace is None and isinstance(impl, type):  # a class: its methods' module
        namespace = next((getattr(f, "__globals__", None) for f in vars(impl).values()
                          if hasattr(f, "__globals__")), None)
    swapped: dict[str, Any] = {}
    if isinstance(namespace, dict):
        for name, helper in helpers:
            if callable(namespace.get(name)) and namespace[name] is not helper:
                swapped[name] = namespace[name]
                namespace[name] = _stand_in(helper, namespace[name])
    try:
        yield sorted(swapped)
    finally:
        if swapped:
            namespace.update(swapped)


def _stand_in(helper: Callable, own: Callable) -> Callable:
    """`helper` for every call it can answer (the statement's signature and arguments); a call it
    cannot (a function of the student's own design that only shares the name: it raises) goes to
    the student's own."""
    def call(*args, **kwargs):
        try:
            return helper(*args, **kwargs)
        except Exception:  # noqa: BLE001 - not the statement's call: the student's function answers it
            return own(*args, **kwargs)

    call.__name__, call.__doc__ = getattr(own, "__name__", "helper"), helper.__doc__
    return call


@dataclass(frozen=True)
class WithHelpers:
    """`probe`, with the graded code's calls of `helpers` going to the course's (see above)."""

    probe: Any
    helpers: tuple[tuple[str, Callable], ...] = ()

    @property
    def fake_cuda(self) -> bool:
        return getattr(self.probe, "fake_cuda", False)

    @property
    def guarded(self) -> tuple:
        return getattr(self.probe, "guarded", ())

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        with helpers_in_place(impl, self.helpers):
            return self.probe.run(impl, case, watch)

    def run_fake(self, impl, case, watch=None) -> dict[str, Any]:
        with helpers_in_place(impl, self.helpers):
            return getattr(self.probe, "run_fake", self.probe.run)(impl, case, watch)
