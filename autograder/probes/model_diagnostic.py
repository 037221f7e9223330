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

What comes back: {"output": what impl returned}.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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


@dataclass(frozen=True)
class ModelDiagnosticProbe:
    kind: str  # "grad_norms" | "dead_units"

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        spec = case.kwargs
        net = build_mlp(spec["weights"], spec["biases"], spec["activation"], spec.get("nested", False))
        X = spec["X"]
        watching = watch if watch is not None else contextlib.nullcontext()
        if self.kind == "grad_norms":
            loss = ((net(X) - spec["y"]) ** 2).mean()
            loss.backward()
            with watching:
                out = impl(net)
        elif self.kind == "dead_units":
            with watching:
                out = impl(net, X)
        else:
            raise ValueError(f"unknown diagnostic {self.kind!r}")
        return {"output": out}
