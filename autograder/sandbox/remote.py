"""The remote-call proxy: a graded function called by a visible test that the grader runs.

The visible test's code runs in the grader; each call of a graded function
goes to the child (`("call", ...)`), its outputs come back as plain tensors,
and an output that depends on inputs requiring grad is wired into autograd
here (`RemoteGrad`): its backward asks the child for the vector-Jacobian
product (`("vjp", ...)`). Used by the grader (`RemoteFunction`, `pack_args`)
and by the child (`unpack_args`, `tensors_in`).
"""
from __future__ import annotations

import pickle

import torch

from autograder.answer import decode, encode_records
from autograder.sandbox.limits import Unproxyable


class RemoteFunction:
    """Stands in for a graded function in a visible test the grader runs itself:
    calls `executor.call(name, args, kwargs)` (any executor of autograder/executor.py)."""

    def __init__(self, executor, name: str):
        self.executor, self.__name__ = executor, name

    def __call__(self, *args, **kwargs):
        return self.executor.call(self.__name__, args, kwargs)


class RemoteGrad(torch.autograd.Function):
    """Outputs computed in the child, differentiable in the grader: backward asks the child."""

    @staticmethod
    def forward(ctx, link, *inputs):
        ctx.link = link
        return tuple(t.clone() for t in link["outputs"])

    @staticmethod
    def backward(ctx, *grad_outputs):
        outs = ctx.link["outputs"]
        grads = [g if g is not None else torch.zeros_like(o) for g, o in zip(grad_outputs, outs)]
        return (None, *ctx.link["vjp"](grads))


def pack_args(args: tuple, kwargs: dict) -> bytes:
    """A call's arguments for the child: flat tensors and plain values as one record of
    the answers' codec (fast); anything nested as a pickle (the grader's own, read by the child)."""
    flat = {f"a{k}": v for k, v in enumerate(args)} | {f"k{k}": v for k, v in kwargs.items()}
    if all(type(v) is torch.Tensor or v is None or isinstance(v, (bool, int, float, str)) for v in flat.values()):
        grad = [k for k, v in flat.items() if type(v) is torch.Tensor and v.requires_grad]
        return encode_records("arguments", [{"values": flat, "grad": grad}])
    copy = (lambda t: t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t)
    return b"P" + pickle.dumps((map_nested(copy, args), map_nested(copy, kwargs)))


def unpack_args(data: bytes) -> tuple[tuple, dict]:
    """In the child: the arguments `pack_args` made (written by the grader, so trusted)."""
    if data[:1] == b"P":
        return pickle.loads(data[1:])
    a = decode(data)["records"][0]
    values = a["values"]
    for k in a["grad"]:
        values[k].requires_grad_(True)
    args = tuple(values[k] for k in sorted((k for k in values if k[0] == "a"), key=lambda k: int(k[1:])))
    return args, {k[1:]: v for k, v in values.items() if k[0] == "k"}


def map_nested(fn, obj):
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_nested(fn, v) for v in obj)
    if isinstance(obj, dict):
        return {k: map_nested(fn, v) for k, v in obj.items()}
    return fn(obj)


def check_proxyable(obj) -> None:
    """Unproxyable unless `obj` is made of plain tensors and plain values only."""
    if isinstance(obj, (list, tuple)):
        for v in obj:
            check_proxyable(v)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_proxyable(k)
            check_proxyable(v)
    elif not (obj is None or isinstance(obj, (bool, int, float, str, torch.dtype)) or type(obj) is torch.Tensor):
        raise Unproxyable(f"an argument is a {type(obj).__name__}")


def tensors_in(obj) -> list:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_in(v)]
    return []
