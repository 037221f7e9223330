"""Probe an nn.Module class (or a function that builds one), and functions of a module.

`ModuleProbe` builds the student's network and the reference's from the
same constructor arguments, gives both the same weights, runs both forward
on the same inputs after `.to(device)`, and returns what a student can get
wrong: whether construction raised, which parameters are registered, the
output, the gradients of the output, and tensors that `.to()` left behind.

Why the weights travel as a list and not as a state_dict: parameter names
are the student's choice (`fc1`, `hidden`, `layers.0`), so the case carries
the reference's parameters in the reference's order, and each of the
student's parameters takes the first unused one of the same shape. Networks
that register their layers in another order still get the same weights.

A case for `ModuleProbe` is made by `module_case`:

    Case.args              the constructor's positional arguments (plain values)
    Case.kwargs["init"]    its keyword arguments; those named in `ModuleProbe.classes`
                           hold the name of a torch.nn class ("Tanh") and are passed as the class
    Case.kwargs["weights"] the parameters, in the reference's registration order
    Case.kwargs["inputs"]  the forward pass's positional inputs

`OnModuleProbe` calls a function on a torch module built in the probe from a
plain description (modules cannot cross the process boundary; descriptions can).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autograder.checks import Case
from autograder.probes.core import NOT_DIFFERENTIABLE, _CallWatch, grad_weights

CONSTRUCTED = "nothing"  # the value of "constructing it raised" when it did not


def module_case(label: str, *, args: tuple = (), init: dict | None = None, weights: list[torch.Tensor],
                inputs: list[torch.Tensor], dtype: torch.dtype) -> Case:
    """A Case for ModuleProbe (see the module docstring)."""
    return Case(label, tuple(args), {"init": dict(init or {}), "weights": list(weights), "inputs": list(inputs)},
                dtype)


def shape_text(t: torch.Tensor | torch.Size) -> str:
    return str(tuple(t.shape if isinstance(t, torch.Tensor) else t))


def _assign(params: list[torch.Tensor], weights: list[torch.Tensor]) -> list[int] | None:
    """For each given weight, the index of the parameter that takes it (None if shapes differ)."""
    free = list(range(len(params)))
    owner: list[int] = []
    for w in weights:
        match = next((i for i in free if params[i].shape == w.shape), None)
        if match is None:
            return None
        free.remove(match)
        owner.append(match)
    return owner if not free else None


def stray_tensors(net: nn.Module, device: torch.device) -> list[str]:
    """Tensors kept as plain attributes (not parameters or buffers), which
    `.to()` does not move, that are not on `device`."""
    stray = []
    for prefix, module in net.named_modules():
        for name, value in vars(module).items():
            found = [value] if isinstance(value, torch.Tensor) else (
                [v for v in value if isinstance(v, torch.Tensor)] if isinstance(value, (list, tuple)) else [])
            if any(t.device != device for t in found):
                stray.append(f"{prefix}.{name}" if prefix else name)
    return sorted(stray)


@dataclass(frozen=True)
class ModuleProbe:
    """Build with `impl(*args, **init)`, load the weights, `.to(device)`, run forward.

    classes: keyword arguments of the constructor that name a torch.nn class.
    """

    classes: tuple[str, ...] = ()
    fake_cuda = True  # its forward pass runs on a simulated CUDA device (probes/fake_cuda.py, run_fake)

    def _init(self, case) -> dict:
        init = dict(case.kwargs.get("init", {}))
        for key in self.classes:
            if key in init:
                init[key] = getattr(nn, init[key])
        return init

    def run_fake(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        """The forward pass on the simulated CUDA device: built on the CPU (no random numbers on a
        fake device), in the inputs' dtype, placed on their device as `.to()` would; only the
        output is compared there (its device, shape and dtype). A module that cannot be built
        this way is left to the other cases (nothing comes back: inconclusive)."""
        from autograder.probes.fake_cuda import module_forward

        inputs: list[torch.Tensor] = list(case.kwargs.get("inputs", []))
        floating = [t for t in inputs if t.is_floating_point()]
        dtype = floating[0].dtype if floating else torch.get_default_dtype()
        return module_forward(lambda: impl(*case.args, **self._init(case)), inputs, dtype, watch)

    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        init = self._init(case)
        weights: list[torch.Tensor] = list(case.kwargs.get("weights", []))
        inputs: list[torch.Tensor] = list(case.kwargs.get("inputs", []))
        floating = [t for t in (*inputs, *weights) if t.is_floating_point()]
        dtype = floating[0].dtype if floating else torch.get_default_dtype()
        device = inputs[0].device if inputs else torch.device("cpu")
        result: dict[str, Any] = {}
        with watch if watch is not None else contextlib.nullcontext():
            try:
                net = impl(*case.args, **init)
            except Exception as exc:  # noqa: BLE001 - a failed construction is a result with a hint
                result["constructing it raised"] = f"{type(exc).__name__}: {exc}"[:300]
                return result
            result["constructing it raised"] = CONSTRUCTED
            result["it is an nn.Module"] = isinstance(net, nn.Module)
            if not isinstance(net, nn.Module):
                return result
            params = list(net.parameters())
            result["registered parameter shapes"] = sorted(shape_text(p) for p in params)
            owner = _assign(params, weights)
            if owner is None:
                return result  # not the reference's parameters: nothing else is comparable
            net.to(dtype=dtype)
            params = list(net.parameters())
            with torch.no_grad():
                for w, i in zip(weights, owner):
                    if w.device.type != "meta":
                        params[i].copy_(w)
            net.to(device)
            result["tensors .to() did not move"] = stray_tensors(net, device)
            leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
            out = net(*leaves)
        result["output"] = out
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return result
        params = list(net.parameters())
        wrt = [(f"gradient w.r.t. input {k}" if len(leaves) > 1 else "gradient w.r.t. the input", x)
               for k, x in enumerate(leaves) if x.requires_grad]
        wrt += [(f"gradient w.r.t. weights[{j}] (shape {shape_text(w)})", params[i])
                for j, (w, i) in enumerate(zip(weights, owner))]
        if not out.requires_grad:
            result.update({name: NOT_DIFFERENTIABLE for name, _ in wrt})
            return result
        grads = torch.autograd.grad(out, [t for _, t in wrt], grad_outputs=grad_weights(out), allow_unused=True)
        for (name, t), g in zip(wrt, grads):
            result[name] = torch.zeros_like(t) if g is None else g
        return result


def build_module(spec: list) -> nn.Module:
    """A torch module from a plain description: a list of layers, each
    [name, *args] with name a torch.nn class; "Sequential" takes a list of layers."""
    layers = []
    for name, *args in spec:
        layers.append(build_module(args[0]) if name == "Sequential" else getattr(nn, name)(*args))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class OnModuleProbe:
    """Calls `impl(net)` on the module described by case.kwargs["layers"] (see
    build_module), with the parameters of the layers listed in
    case.kwargs["frozen"] set to requires_grad=False; returns the output."""

    def run(self, impl, case, watch: _CallWatch | None = None) -> dict[str, Any]:
        torch.manual_seed(0)
        net = build_module(case.kwargs["layers"])
        for k in case.kwargs.get("frozen", []):
            net[k].requires_grad_(False)
        with watch if watch is not None else contextlib.nullcontext():
            out = impl(net)
        return {"output": out}
