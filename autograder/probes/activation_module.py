"""Probe an activation written as an nn.Module with learnable parameters (PReLU).

`ActivationModuleProbe` builds `impl(**case.kwargs)`, moves it to the input's
device and dtype with `.to()` (which only works on registered parameters),
and returns, by name (compared in this order):

    registered parameters       ["weight (3,)", ...]: name and shape of each named parameter
    initial weight              the parameter `weight` as constructed
    output                      module(input)
    gradient w.r.t. input       with a fixed, non-uniform upstream gradient
    gradient w.r.t. weight      the same backward pass; a slope that is not a
                                trainable parameter, or that no gradient reaches, says so
    weight after K SGD steps    K steps of torch.optim.SGD on mean((module(input) - target)^2):
                                the slope learns, and learns what torch's does

The case's args are (input, target); its kwargs are the constructor's.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from autograder.probes.core import _CallWatch, grad_weights

NOT_TRAINABLE = "not a trainable parameter (wrap it in nn.Parameter, with requires_grad=True)"
NO_GRADIENT = "no gradient reaches it (is it detached, or used through .data, in forward?)"


@dataclass(frozen=True)
class ActivationModuleProbe:
    steps: int = 3
    lr: float = 0.5
    fake_cuda = True  # its forward pass runs on a simulated CUDA device (probes/fake_cuda.py, run_fake)

    def run_fake(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        """The forward pass on the simulated CUDA device (as ModuleProbe.run_fake): built on the
        CPU in the input's dtype, its parameters placed on the input's device; only the output
        is compared there."""
        from autograder.probes.fake_cuda import module_forward

        x = case.args[0]
        return module_forward(lambda: impl(**case.kwargs), [x], x.dtype, watch)

    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        x, target = case.args[0], case.args[1]
        watching = watch if watch is not None else contextlib.nullcontext()
        with watching:
            module = impl(**case.kwargs)
        if not isinstance(module, torch.nn.Module):
            return {"registered parameters": f"{type(module).__name__}, not an nn.Module"}
        module = module.to(device=x.device, dtype=x.dtype)
        named = dict(module.named_parameters())
        result: dict[str, Any] = {
            "registered parameters": [f"{n} {tuple(p.shape)}" for n, p in named.items()],
        }
        weight = named.get("weight", getattr(module, "weight", None))
        if isinstance(weight, torch.Tensor):
            result["initial weight"] = weight.detach().clone()
        trainable = "weight" in named and named["weight"].requires_grad
        xl = x.detach().clone().requires_grad_(True)
        with watching:
            out = module(xl)
        result["output"] = out
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return result
        leaves = [xl] + ([named["weight"]] if trainable else [])
        grads = torch.autograd.grad(out, leaves, grad_outputs=grad_weights(out), allow_unused=True)
        result["gradient w.r.t. input"] = torch.zeros_like(xl) if grads[0] is None else grads[0]
        if not trainable:
            result["gradient w.r.t. weight"] = NOT_TRAINABLE
            return result
        w = named["weight"]
        if grads[1] is None:
            result["gradient w.r.t. weight"] = NO_GRADIENT
            return result
        result["gradient w.r.t. weight"] = grads[1]
        optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=self.lr)
        for _ in range(self.steps):
            optimizer.zero_grad()
            with watching:
                y_hat = module(x)
            ((y_hat - target) ** 2).mean().backward()
            optimizer.step()
        result[f"weight after {self.steps} SGD steps"] = w.detach().clone()
        return result
