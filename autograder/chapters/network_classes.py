"""Checks for the `network_classes` chapter: networks written as nn.Module classes.

`MyFirstNetwork` and `MLP` are probed as modules (autograder/probes/module.py):
built from the case's arguments, given the reference's weights, moved with
`.to(device)`, run forward on batches of several sizes. `count_parameters`
is called on torch modules built in the probe. Known mistakes are the wrong
code students write (a missing super().__init__(), layers in a Python list,
an activation after the last layer, ...); tests/chapters/test_network_classes.py
proves each check both ways.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import randn
from autograder.probes.module import ModuleProbe, OnModuleProbe, module_case


def _dt(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _linear_weights(gen, sizes, *, dtype, device):
    """Weights and biases of the Linear layers between consecutive sizes, in order."""
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        out.append(randn(gen, n_out, n_in, dtype=dtype, device=device, scale=1.5 / math.sqrt(n_in)))
        out.append(randn(gen, n_out, dtype=dtype, device=device, scale=0.5))
    return out


def _batch_text(shape) -> str:
    return f"a batch of {shape[0]}" if len(shape) == 2 else f"inputs of shape {tuple(shape)}"


_NO_SUPER = ("Call super().__init__() first in __init__: nn.Module sets up the registries of parameters and "
             "submodules there, and assigning a layer before that raises "
             "'cannot assign module before Module.__init__() call'.")
_PYTHON_LIST = ("Layers kept in a plain Python list are invisible to nn.Module: their parameters are not "
                "registered (parameters() is empty, an optimizer would train nothing, .to() and state_dict() "
                "skip them). Assign each layer to an attribute, or use nn.ModuleList / nn.Sequential.")
_AFTER_LAST = ("No activation after the last layer: the output layer is linear, so the network can output "
               "negative values and the chosen loss (or a later layer) decides what the output means.")


# -- MyFirstNetwork: Linear -> ReLU -> Linear ----------------------------------------------------

def _first_cases(gen, *, device, dtype):
    cases = []
    for sizes, batch in [((4, 8, 3), (5, 4)), ((4, 8, 3), (1, 4)), ((10, 16, 1), (7, 10)), ((3, 5, 7), (2, 4, 3))]:
        weights = _linear_weights(gen, sizes, dtype=dtype, device=device)
        X = randn(gen, *batch, dtype=dtype, device=device)
        label = f"MyFirstNetwork{sizes} on {_batch_text(batch)} ({_dt(dtype)})"
        cases.append(module_case(label, args=sizes, weights=weights, inputs=[X], dtype=dtype))
    sizes = (4, 8, 3)
    weights = _zero_units(_linear_weights(gen, sizes, dtype=dtype, device=device))
    X = randn(gen, 5, 4, dtype=dtype, device=device)
    cases.append(replace(module_case(f"MyFirstNetwork{sizes} with half its hidden units zero-initialised: ReLU "
                                     f"at exactly 0 ({_dt(dtype)})", args=sizes, weights=weights, inputs=[X],
                                     dtype=dtype), edge="zero"))
    return cases


def _zero_units(weights):
    """The first layer's weights and biases with every other unit set to exactly 0, so that those
    units' pre-activations are exactly 0 (where ReLU has a kink; torch's gradient there is 0)."""
    w, b, *rest = weights
    w, b = w.clone(), b.clone()
    w[::2] = 0
    b[::2] = 0
    return [w, b, *rest]


class _FirstNoSuper(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):  # noqa: super().__init__() missing on purpose
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, X):
        return self.fc2(torch.relu(self.fc1(X)))


class _FirstInList(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.layers = [nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, output_size)]

    def forward(self, X):
        for layer in self.layers:
            X = layer(X)
        return X


class _FirstReluAtEnd(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, X):
        return torch.relu(self.fc2(torch.relu(self.fc1(X))))


class _FirstClampRelu(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, X):
        return self.fc2(self.fc1(X).clamp(min=0))


class _FirstClampReluAtEnd(_FirstClampRelu):
    def forward(self, X):
        return self.fc2(self.fc1(X).clamp(min=0)).clamp(min=0)


class _FirstNoRelu(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, X):
        return self.fc2(self.fc1(X))


MY_FIRST_NETWORK = Check(
    name="MyFirstNetwork",
    target="MyFirstNetwork",
    make_cases=_first_cases,
    probe=ModuleProbe(),
    mistakes=(
        Mistake("no-super-init", _NO_SUPER, _FirstNoSuper),
        Mistake("layers-in-a-python-list", _PYTHON_LIST, _FirstInList),
        Mistake("activation-after-last-layer", _AFTER_LAST, _FirstReluAtEnd),
        Mistake("activation-not-applied", "Creating nn.ReLU() in __init__ is not enough: call it in forward, "
                "between the two linear layers. Without it the two layers collapse into one linear map.",
                _FirstNoRelu),
        Mistake("relu-gradient-at-zero", "Where a hidden unit's input is exactly 0 (zero-initialised weights), "
                "ReLU's gradient is 0, as torch's nn.ReLU and torch.relu give; clamp(min=0) passes a gradient of 1 "
                "there. Use nn.ReLU.", _FirstClampRelu),
    ),
)


# code with two mistakes at once: a hint for each (checks.combined)
MY_FIRST_NETWORK = replace(MY_FIRST_NETWORK, mistakes=MY_FIRST_NETWORK.mistakes + (combined(
    _FirstClampReluAtEnd,
    *(m for m in MY_FIRST_NETWORK.mistakes if m.name in ("activation-after-last-layer", "relu-gradient-at-zero"))),))


# -- MLP(sizes, activation) ---------------------------------------------------------------------

def _mlp_cases(gen, *, device, dtype):
    cases = []
    specs = [([4, 8, 3], None, (5, 4)), ([4, 16, 16, 2], "Tanh", (6, 4)), ([6, 1], "ReLU", (3, 6)),
             ([3, 8, 8, 8, 5], "Sigmoid", (1, 3)), ([5, 7, 2], "GELU", (2, 3, 5))]
    for sizes, activation, batch in specs:
        weights = _linear_weights(gen, sizes, dtype=dtype, device=device)
        X = randn(gen, *batch, dtype=dtype, device=device)
        init = {"activation": activation} if activation else {}
        act = f", activation=nn.{activation}" if activation else ""
        label = f"MLP({sizes}{act}) on {_batch_text(batch)} ({_dt(dtype)})"
        cases.append(module_case(label, args=(sizes,), init=init, weights=weights, inputs=[X], dtype=dtype))
    sizes = [4, 6, 3]
    weights = _zero_units(_linear_weights(gen, sizes, dtype=dtype, device=device))
    X = randn(gen, 5, 4, dtype=dtype, device=device)
    cases.append(replace(module_case(f"MLP({sizes}) with half its first hidden units zero-initialised: ReLU at "
                                     f"exactly 0 ({_dt(dtype)})", args=(sizes,), weights=weights, inputs=[X],
                                     dtype=dtype), edge="zero"))
    return cases


class _MLPBase(nn.Module):
    """The mistakes' shared skeleton: `layers(sizes, activation)` makes the list of layers."""

    def __init__(self, sizes, activation=nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(*self.layers(list(sizes), activation))

    @staticmethod
    def layers(sizes, activation):
        out = []
        for i in range(len(sizes) - 1):
            if i > 0:
                out.append(activation())
            out.append(nn.Linear(sizes[i], sizes[i + 1]))
        return out

    def forward(self, X):
        return self.net(X)


class _MLPActivationAtEnd(_MLPBase):
    @staticmethod
    def layers(sizes, activation):
        return [m for i in range(len(sizes) - 1) for m in (nn.Linear(sizes[i], sizes[i + 1]), activation())]


class _MLPIgnoresActivation(_MLPBase):
    @staticmethod
    def layers(sizes, activation):
        return _MLPBase.layers(sizes, nn.ReLU)


class _MLPOneTooFew(_MLPBase):
    @staticmethod
    def layers(sizes, activation):
        return _MLPBase.layers(sizes[:-1], activation) if len(sizes) > 2 else [nn.Identity()]


class _MLPClassNotInstance(_MLPBase):
    @staticmethod
    def layers(sizes, activation):
        return [activation if isinstance(m, nn.Module) and not isinstance(m, nn.Linear) else m
                for m in _MLPBase.layers(sizes, activation)]


class _MLPInList(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU):
        super().__init__()
        self.layers = _MLPBase.layers(list(sizes), activation)

    def forward(self, X):
        for layer in self.layers:
            X = layer(X)
        return X


class _MLPNoSuper(_MLPBase):
    def __init__(self, sizes, activation=nn.ReLU):  # noqa: super().__init__() missing on purpose
        self.net = nn.Sequential(*self.layers(list(sizes), activation))


MLP = Check(
    name="MLP",
    target="MLP",
    make_cases=_mlp_cases,
    probe=ModuleProbe(classes=("activation",)),
    mistakes=(
        Mistake("no-super-init", _NO_SUPER, _MLPNoSuper),
        Mistake("layers-in-a-python-list", _PYTHON_LIST, _MLPInList),
        Mistake("activation-after-last-layer", _AFTER_LAST, _MLPActivationAtEnd),
        Mistake("activation-ignored", "Use the `activation` argument (a class such as nn.Tanh): create "
                "activation() between the linear layers instead of always nn.ReLU().", _MLPIgnoresActivation),
        Mistake("one-linear-layer-too-few", "sizes lists every layer width, input and output included: "
                "[4, 16, 16, 2] means 3 linear layers (4->16, 16->16, 16->2), one per consecutive pair.",
                _MLPOneTooFew),
        Mistake("activation-class-not-instantiated", "`activation` is a class (nn.ReLU): create a module "
                "with activation() before putting it into nn.Sequential or nn.ModuleList.", _MLPClassNotInstance),
    ),
)


# -- count_parameters(model) ------------------------------------------------------------------

def _spec_text(spec) -> str:
    parts = []
    for name, *args in spec:
        inner = _spec_text(args[0]) if name == "Sequential" else ", ".join(map(str, args))
        parts.append(f"{name}({inner})")
    return ", ".join(parts)


def _count_cases(gen, *, device, dtype):
    specs = [
        ([["Linear", 4, 8], ["ReLU"], ["Linear", 8, 2]], []),
        ([["Linear", 4, 8], ["BatchNorm1d", 8], ["ReLU"], ["Linear", 8, 2]], []),
        ([["Linear", 10, 20], ["ReLU"], ["Linear", 20, 3]], [0]),
        ([["Linear", 10, 3, False]], []),
        ([["Sequential", [["Linear", 3, 4], ["Tanh"]]], ["Linear", 4, 1]], [1]),
        ([["Embedding", 10, 4], ["Linear", 4, 2]], [0]),
    ]
    cases = []
    for layers, frozen in specs:
        note = f", layers {frozen} frozen (requires_grad=False)" if frozen else ""
        cases.append(Case(f"nn.Sequential({_spec_text(layers)}){note}", (), {"layers": layers, "frozen": frozen},
                          dtype))
    return cases


def _count_weights_only(model):
    return sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and name.endswith("weight"))


COUNT_PARAMETERS = Check(
    name="count_parameters",
    target="count_parameters",
    make_cases=_count_cases,
    probe=OnModuleProbe(),
    dtypes=(torch.float32,),
    meta_case=False,  # no tensors in the cases: the model is built in the probe
    mistakes=(
        Mistake("frozen-counted", "Count only trainable parameters: skip those with requires_grad=False "
                "(a frozen layer).", lambda model: sum(p.numel() for p in model.parameters())),
        Mistake("tensors-counted", "Count numbers, not tensors: add up p.numel() of each parameter, not 1 per "
                "parameter tensor.", lambda model: len([p for p in model.parameters() if p.requires_grad])),
        Mistake("state-dict-counted", "state_dict() also holds buffers (BatchNorm's running statistics), which "
                "are not parameters, and frozen parameters: iterate over model.parameters().",
                lambda model: sum(t.numel() for t in model.state_dict().values())),
        Mistake("weights-only", "Biases are parameters too: count every parameter, not only the weights.",
                _count_weights_only),
    ),
)

CHECKS = [MY_FIRST_NETWORK, MLP, COUNT_PARAMETERS]
