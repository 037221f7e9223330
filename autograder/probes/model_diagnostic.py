"""Probe a diagnostic function of a model: it gets a network the probe builds.

The probe builds a small deterministic MLP from the case's tensors (so the
student's code, the reference and the known mistakes all measure the same
network), prepares it, and calls the graded function on it:

    kind="grad_norms"   after one backward pass of mean((net(X) - y)^2):
                        returns impl(net)
    kind="dead_units"   returns impl(net, X)

The case's kwargs describe the network:

    weights     [W_1, ..., W_L]: the nn.Linear weights, (out, in) each
    biases      [b_1, ..., b_L]
    activation  "relu" | "sigmoid" | "tanh" | "leaky_relu": after every layer but the last
    nested      True: each (Linear, activation) pair is its own nn.Sequential block,
                as in a network made of blocks; False: one flat nn.Sequential
    X, y        the batch (y only for grad_norms)

What comes back: {"output": what impl returned}; for dead_units also the forward
hooks it left on the network (HOOKS_LEFT, 0 when it removed its own) and whether
its forward pass was recorded by autograd (RECORDED: it runs under no_grad).
On the simulated CUDA device (`run_fake`) the same network, on the fake device.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autograder.probes.replay import recording, replaying

ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def build_mlp(weights, biases, activation: str, nested: bool = False) -> nn.Module:
    """nn.Linear layers with the given weights, an activation after each but the last."""
    layers: list[nn.Module] = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        if k < len(weights) - 1:
            pair = [lin, ACTIVATIONS[activation]()]
            layers.extend([nn.Sequential(*pair)] if nested else pair)
        else:
            layers.append(lin)
    return nn.Sequential(*layers)


HOOKS_LEFT = "forward hooks left on the network afterwards"
RECORDED = "the forward pass recorded by autograd"


def _forward_hooks(net: nn.Module) -> int:
    """The forward hooks registered on net's modules and torch's global ones."""
    from torch.nn.modules import module as torch_module

    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) + \
        len(torch_module._global_forward_hooks) + len(torch_module._global_forward_pre_hooks)


@dataclass(frozen=True)
class ModelDiagnosticProbe:
    kind: str  # "grad_norms" | "dead_units"

    fake_cuda = True  # runs on a simulated CUDA device (probes/fake_cuda.py), through run_fake

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        spec = case.kwargs
        net = build_mlp(spec["weights"], spec["biases"], spec["activation"], spec.get("nested", False))
        if self.kind == "grad_norms":
            loss = ((net(spec["X"]) - spec["y"]) ** 2).mean()
            loss.backward()
        with recording(case):  # for the simulated-CUDA pass that follows (run_fake)
            return self._call(impl, net, spec["X"], watch)

    def _call(self, impl, net, X, watch) -> dict[str, Any]:
        watching = watch if watch is not None else contextlib.nullcontext()
        if self.kind == "grad_norms":
            with watching:
                return {"output": impl(net)}
        if self.kind != "dead_units":
            raise ValueError(f"unknown diagnostic {self.kind!r}")
        recorded: list[bool] = []
        before = _forward_hooks(net)
        handle = net.register_forward_hook(lambda m, i, o: recorded.append(torch.is_grad_enabled()))
        try:
            with watching:
                out = impl(net, X)
        finally:
            handle.remove()
        return {"output": out, HOOKS_LEFT: _forward_hooks(net) - before, RECORDED: any(recorded)}

    def run_fake(self, impl, case, watch=None) -> dict[str, Any]:
        """On the simulated CUDA device: the network built on the CPU and placed on the inputs'
        (fake) device, its gradients (grad_norms) fake tensors of the weights' shapes there; then
        the graded code runs on it as on a GPU (no autograd needed: the probe made the gradients)."""
        from autograder.probes.fake_cuda import build_on_the_cpu, place_on

        spec = case.kwargs
        X = spec["X"]
        shapes = [(tuple(w.shape), tuple(b.shape)) for w, b in zip(spec["weights"], spec["biases"])]

        def make():
            weights = [torch.zeros(w, dtype=X.dtype) for w, _ in shapes]
            biases = [torch.zeros(b, dtype=X.dtype) for _, b in shapes]
            return build_mlp(weights, biases, spec["activation"], spec.get("nested", False))

        net = build_on_the_cpu(make)
        place_on(net, X.device)
        if self.kind == "grad_norms":
            for p in net.parameters():
                p.grad = torch.empty(p.shape, dtype=p.dtype, device=X.device)
        with replaying():
            return self._call(impl, net, X, watch)
