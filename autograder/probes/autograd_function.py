"""Probe a torch.autograd.Function subclass: its forward and its hand-written backward.

`AutogradFunctionProbe` calls `impl.apply(*case.args)` and returns the output
and the gradients autograd gets from the class's own `backward` (the forward
runs with autograd off, so no other gradient exists). What comes back, by
name (compared in this order):

    is a torch.autograd.Function   True, or what impl is instead
    output                         impl.apply(...)
    gradient w.r.t. <name>         from impl.backward, with a fixed, non-uniform upstream gradient
    SAVED (with saved=True)        whether forward saved tensors with ctx.save_for_backward

The autograd engine runs `backward` outside any torch function mode, so the
forbidden-call watch would not see what it calls; the probe runs the class
through a subclass whose `backward` enters the watch around the student's.
On meta (the device case that runs backward: the simulated CUDA one runs
forward only) copies to the CPU behave as on a GPU (`gradient.MetaToCpu`), so a
backward that computes on the CPU meets the meta gradient and fails there.
Whether the backward is right is decided by the trusted parent, comparing
these gradients with the reference's; `torch.autograd.gradcheck` runs on the
reference in the tests, never as a verdict reported by the child.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from autograder.probes.core import NOT_DIFFERENTIABLE, _CallWatch, grad_weights
from autograder.probes.gradient import MetaToCpu, on_meta


SAVED = "forward kept what backward needs with ctx.save_for_backward"


def is_autograd_function(impl) -> bool:
    return isinstance(impl, type) and issubclass(impl, torch.autograd.Function)


def watched_function(impl, watch: _CallWatch | None, mode=None):
    """impl, with its backward run inside `watch` (it keeps impl's forward and name), and inside
    a fresh `mode()` when given (the engine runs backward outside the caller's modes)."""
    if watch is None and mode is None:
        return impl
    student_backward = impl.backward

    def backward(ctx, *grads):
        with mode() if mode is not None else contextlib.nullcontext(), \
                watch if watch is not None else contextlib.nullcontext():
            return student_backward(ctx, *grads)

    return type(impl.__name__, (impl,), {"backward": staticmethod(backward), "__module__": impl.__module__})


@dataclass(frozen=True)
class AutogradFunctionProbe:
    """Calls `impl.apply(*case.args)`; returns the output and the gradients of
    the arguments named in `grad` (name -> position in args)."""

    fake_cuda = True  # runs on a simulated CUDA device (probes/fake_cuda.py)

    grad: tuple[tuple[str, int], ...] = (("input", 0),)
    # also report whether forward kept tensors with ctx.save_for_backward (SAVED), where the statement asks it
    saved: bool = False

    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        if not is_autograd_function(impl):
            what = type(impl).__name__ if not isinstance(impl, type) else f"the class {impl.__name__}"
            return {"is a torch.autograd.Function": f"{what}, not a subclass of torch.autograd.Function"}
        fn = watched_function(impl, watch, MetaToCpu if on_meta(case) else None)
        args = list(case.args)
        leaves: list[tuple[str, torch.Tensor]] = []
        for name, pos in self.grad:
            a = args[pos] if pos < len(args) else None
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                args[pos] = a.detach().clone().requires_grad_(True)
                leaves.append((name, args[pos]))
        meta = MetaToCpu() if on_meta(case) else contextlib.nullcontext()  # backward's device case
        with meta:
            return self._apply_and_differentiate(fn, args, case, leaves, watch)

    def _apply_and_differentiate(self, fn, args, case, leaves, watch) -> dict[str, Any]:
        with watch if watch is not None else contextlib.nullcontext():
            out = fn.apply(*args, **case.kwargs)
        result: dict[str, Any] = {"is a torch.autograd.Function": True, "output": out}
        if not leaves or not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return result
        if not out.requires_grad:
            for name, _ in leaves:
                result[f"gradient w.r.t. {name}"] = NOT_DIFFERENTIABLE
            return result
        if self.saved:  # read before backward, which frees them
            try:
                saved = getattr(out.grad_fn, "saved_tensors", ())
                result[SAVED] = bool(saved) and all(isinstance(t, torch.Tensor) for t in saved)
            except RuntimeError:  # torch could not give them back (not this probe's question): not held against it
                result[SAVED] = True
        # The engine calls fn.backward, which enters the watch itself.
        grads = torch.autograd.grad(out, [t for _, t in leaves], grad_outputs=grad_weights(out),
                                    allow_unused=True)
        for (name, leaf), g in zip(leaves, grads):
            result[f"gradient w.r.t. {name}"] = torch.zeros_like(leaf) if g is None else g
        return result
