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

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        with helpers_in_place(impl, self.helpers):
            return self.probe.run(impl, case, watch)

    def run_fake(self, impl, case, watch=None) -> dict[str, Any]:
        with helpers_in_place(impl, self.helpers):
            return getattr(self.probe, "run_fake", self.probe.run)(impl, case, watch)


# -- the course's own helpers (the losses chapter's cross_entropy calls them) ---------------------
# They live here, in a probe module, because a child keeps its probes (and nothing of the chapters'
# modules, whose namespaces the zygote empties: autograder/sandbox/zygote.py).

def course_log_softmax(input, dim):
    """log_softmax(input, dim), stable: (x - max) - log(sum(exp(x - max)))."""
    import torch

    top = torch.amax(input, dim=dim, keepdim=True).detach()
    return (input - top) - torch.log(torch.exp(input - top).sum(dim=dim, keepdim=True))


def course_nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """nll_loss as torch.nn.functional's: (N, C, d1, ...) log-probabilities, (N, d1, ...) targets."""
    import torch

    keep = target != ignore_index
    index = torch.where(keep, target, torch.zeros_like(target))
    w = torch.ones(input.shape[1], dtype=input.dtype, device=input.device) if weight is None else weight
    per_target = w[index] * keep
    losses = -torch.gather(input, 1, index.unsqueeze(1)).squeeze(1) * per_target
    if reduction == "none":
        return losses
    return losses.sum() / per_target.sum() if reduction == "mean" else losses.sum()
