"""Probe functions that take a function: a gradient helper and a gradient-descent loop.

Both graded functions receive a Python function from the probe (`fn` for
`grad_of`, `loss_fn` for `gradient_descent`), chosen by name from the tables
below, so a case stays plain data that crosses to the sandboxed child. The
probe hands the graded code copies of the case's tensors (a wrong answer may
change its arguments in place) and reports what happened to them.

`GradOfProbe` calls `impl(fn, x)` twice on the same `x`. What comes back, by
name (compared in this order):

    gradient                           the first call's answer
    gradient, second call              the second call's (backward() accumulates: it doubles)
    x.requires_grad afterwards         the caller's flag, unchanged
    x.grad afterwards                  the caller's .grad: "None", or the tensor it held before
    gradient reaching the tensor x came from   (x a non-leaf) "none": grad_of must not
                                       backpropagate into the caller's graph

The case's kwargs: `fn` (a key of FUNCTIONS), `x`, and `state`: "plain"
(requires_grad=False), "leaf" (requires_grad=True and a .grad of 7s already
there) or "non-leaf" (x = 1.0 * base with base requiring grad).

`DescentProbe` calls `impl(loss_fn, x0, lr, steps)` once. What comes back:

    trajectory                  (steps + 1, *x0.shape): x0, then x after each step
    x0 afterwards               the caller's x0, unchanged
    x0.requires_grad afterwards False, unchanged

The case's kwargs: `problem` (a key of PROBLEMS), `data` (its fixed tensors),
`x0`, `lr`, `steps`. Making a torch.optim optimizer, or calling its code, is
reported as forbidden (the optimizer probe's watch, constructors included).

Both run autograd inside the graded code, which the simulated CUDA device
cannot: their device case is on meta, where copies to the CPU behave as on a
GPU (`MetaToCpu`), so an answer kept on the CPU is seen there.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from torch.overrides import TorchFunctionMode

from autograder.probes.core import _CallWatch

# -- the meta case: copies to the CPU as a GPU makes them --------------------------------

class MetaToCpu(TorchFunctionMode):
    """On the meta device, what a GPU does when code copies a tensor to the CPU: `.cpu()`,
    `.to("cpu")` give an empty CPU tensor of the shape and dtype (a meta tensor has no data to
    copy, and torch raises there), and writing a meta tensor into a CPU one (`rows[k] = x`,
    `.copy_`) leaves the CPU tensor a CPU tensor. So code that keeps its answer on the CPU
    returns a CPU tensor, which the device comparison sees, instead of raising an error that
    says nothing (inconclusive); code that copies to the CPU and back gets a meta tensor again.
    Reading data (`.item()`, `.tolist()`) still raises: not judged there."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if src is not None and src.device.type == "meta":
            if func is torch.Tensor.cpu:
                return torch.empty(src.shape, dtype=src.dtype)
            if func is torch.Tensor.to:
                target = _to_the_cpu(args[1:], kwargs)
                if target is not None:
                    return torch.empty(src.shape, dtype=target or src.dtype)
        if src is not None and src.device.type == "cpu":
            value = args[2] if func is torch.Tensor.__setitem__ and len(args) > 2 else \
                args[1] if func is torch.Tensor.copy_ and len(args) > 1 else None
            if isinstance(value, torch.Tensor) and value.device.type == "meta":
                return src if func is torch.Tensor.copy_ else None
        return func(*args, **kwargs)


def _to_the_cpu(args, kwargs):
    """For Tensor.to(*args, **kwargs): None when it does not go to the CPU, else the dtype it
    asks for (False: the tensor's own)."""
    dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), False)
    for a in [*args, kwargs.get("device"), kwargs.get("other")]:
        if isinstance(a, torch.Tensor):
            return a.dtype if a.device.type == "cpu" else None
        if isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
            try:
                return dtype if torch.device(a).type == "cpu" else None
            except (RuntimeError, TypeError):
                return None
    return None


def on_meta(case) -> bool:
    return any(t.device.type == "meta" for t in case.tensors())


# -- the functions grad_of is asked to differentiate: x -> a tensor ----------------------

FUNCTIONS = {
    "cube_sum": ("(x ** 3).sum()", lambda x: (x**3).sum()),
    "exp_mean": ("x.exp().mean()", lambda x: x.exp().mean()),
    "square": ("x * x (not a scalar)", lambda x: x * x),
    "sigmoid": ("1 / (1 + torch.exp(-x)) (not a scalar)", lambda x: 1 / (1 + torch.exp(-x))),
    "times_sum": ("x * x.sum() (not a scalar, each output depends on every input)", lambda x: x * x.sum()),
    "row_norms": ("(x ** 2).sum(dim=-1).sqrt() (one value per row)", lambda x: (x**2).sum(dim=-1).sqrt()),
}


def describe_function(key: str) -> str:
    return FUNCTIONS[key][0]


def _fresh(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _snapshot(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class GradOfProbe:
    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        kw = case.kwargs
        fn = FUNCTIONS[kw["fn"]][1]
        state = kw["state"]
        base = None
        if state == "plain":
            x = _fresh(kw["x"])
        elif state == "leaf":
            x = _fresh(kw["x"]).requires_grad_(True)
            x.grad = torch.full_like(x, 7.0)
        elif state == "non-leaf":
            base = _fresh(kw["x"]).requires_grad_(True)
            x = 1.0 * base
        else:
            raise ValueError(f"unknown state {state!r}")
        with MetaToCpu() if on_meta(case) else contextlib.nullcontext(), \
                watch if watch is not None else contextlib.nullcontext():
            first = _snapshot(impl(fn, x))
            second = _snapshot(impl(fn, x))
        out: dict[str, Any] = {"gradient": first, "gradient, second call": second,
                               "x.requires_grad afterwards": bool(x.requires_grad)}
        if base is None:
            out["x.grad afterwards"] = "None" if x.grad is None else x.grad
        else:
            out["gradient reaching the tensor x came from"] = "none" if base.grad is None else "some"
        return out


# -- the losses gradient_descent minimises: loss(x, data) -> a scalar ------------------------

def quadratic(x, data):
    """0.5 * sum(a * (x - c)^2), a > 0: a bowl with its minimum at c."""
    return 0.5 * (data["a"] * (x - data["c"]) ** 2).sum()


def least_squares(x, data):
    """mean((X @ x - y)^2): fit the weights x (d,) of a linear model."""
    return ((data["X"] @ x - data["y"]) ** 2).mean()


def double_well(x, data):
    """sum((x^2 - 1)^2): not convex, minima at x = ±1."""
    return ((x**2 - 1) ** 2).sum()


def logistic(x, data):
    """mean(log(1 + exp(-y * (X @ x)))), labels y = ±1."""
    return torch.log(1 + torch.exp(-data["y"] * (data["X"] @ x))).mean()


PROBLEMS = {
    "quadratic": ("0.5 * sum(a * (x - c) ** 2)", quadratic),
    "least_squares": ("mean((X @ x - y) ** 2)", least_squares),
    "double_well": ("sum((x ** 2 - 1) ** 2)", double_well),
    "logistic": ("mean(log(1 + exp(-y * (X @ x))))", logistic),
}


def describe_problem(key: str) -> str:
    return PROBLEMS[key][0]


@dataclass(frozen=True)
class DescentProbe:
    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        from autograder.probes.optimizer import watching  # torch.optim's code, reported as forbidden

        kw = case.kwargs
        loss_of = PROBLEMS[kw["problem"]][1]
        data = kw.get("data", {})
        x0 = _fresh(kw["x0"])

        def loss_fn(x):
            return loss_of(x, data)

        with MetaToCpu() if on_meta(case) else contextlib.nullcontext(), watching(watch, constructors=True):
            trajectory = impl(loss_fn, x0, kw["lr"], kw["steps"])
        return {"trajectory": trajectory, "x0 afterwards": x0, "x0.requires_grad afterwards": bool(x0.requires_grad)}
