"""Probe a function: its output and the gradients of the output (ParametersProbe: with respect to
the loss and the parameters a penalty is added for)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from autograder.probes.core import NOT_DIFFERENTIABLE, _CallWatch, grad_weights


@dataclass(frozen=True)
class FunctionProbe:
    """Calls `impl(*case.args, **case.kwargs)`; returns the output and the
    gradients of the output with respect to the arguments named in `grad`
    (name -> position in args)."""

    fake_cuda = True  # runs on a simulated CUDA device (probes/fake_cuda.py)

    grad: tuple[tuple[str, int], ...] = (("input", 0),)
    # the course's own code for this function, which another check runs in place of the student's:
    # graded code that runs it is recorded (probes/core.py)
    guarded: tuple = ()

    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        args = list(case.args)
        leaves: list[tuple[str, torch.Tensor]] = []
        for name, pos in self.grad:
            a = args[pos] if pos < len(args) else None
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                args[pos] = a.detach().clone().requires_grad_(True)
                leaves.append((name, args[pos]))
        with watch if watch is not None else contextlib.nullcontext():
            out = impl(*args, **case.kwargs)
        result: dict[str, Any] = {"output": out}
        if not leaves or not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return result
        if not out.requires_grad:
            for name, _ in leaves:
                result[f"gradient w.r.t. {name}"] = NOT_DIFFERENTIABLE
            return result
        grads = torch.autograd.grad(
            out, [t for _, t in leaves], grad_outputs=grad_weights(out), allow_unused=True
        )
        for (name, leaf), g in zip(leaves, grads):
            result[f"gradient w.r.t. {name}"] = torch.zeros_like(leaf) if g is None else g
        return result


@dataclass(frozen=True)
class ParametersProbe:
    """Calls `impl(loss, parameters, *rest)` with `parameters` a one-pass iterator over tensors, as
    `model.parameters()` is; returns the output and its gradients with respect to the loss and to
    every parameter (a penalty added to a loss)."""

    fake_cuda = True

    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        loss, params, *rest = case.args
        loss = loss.detach().clone().requires_grad_(True)
        params = [p.detach().clone().requires_grad_(True) for p in params]
        with watch if watch is not None else contextlib.nullcontext():
            out = impl(loss, iter(params), *rest, **case.kwargs)
        result: dict[str, Any] = {"output": out}
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return result
        names = ["the loss"] + [f"parameter {i}" for i in range(len(params))]
        if not out.requires_grad:
            result.update({f"gradient w.r.t. {n}": NOT_DIFFERENTIABLE for n in names})
            return result
        grads = torch.autograd.grad(out, [loss, *params], grad_outputs=grad_weights(out), allow_unused=True)
        for name, leaf, g in zip(names, [loss, *params], grads):
            result[f"gradient w.r.t. {name}"] = torch.zeros_like(leaf) if g is None else g
        return result
