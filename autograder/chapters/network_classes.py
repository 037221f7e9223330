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

# -- ResidualNetwork: F.relu in forward, and a skip connection nn.Sequential cannot express ---------

def _residual_cases(gen, *, device, dtype):
    cases = []
    for sizes, batch in [((4, 8, 3), (5, 4)), ((6, 16, 2), (1, 6)), ((3, 5, 7), (2, 4, 3))]:
        n_in, hidden, n_out = sizes
        weights = _linear_weights(gen, (n_in, hidden, hidden, n_out), dtype=dtype, device=device)
        X = randn(gen, *batch, dtype=dtype, device=device)
        label = f"ResidualNetwork{sizes} on {_batch_text(batch)} ({_dt(dtype)})"
        cases.append(module_case(label, args=sizes, weights=weights, inputs=[X], dtype=dtype))
    weights = _zero_units(_linear_weights(gen, (4, 8, 8, 3), dtype=dtype, device=device))
    X = randn(gen, 5, 4, dtype=dtype, device=device)
    cases.append(replace(module_case(f"ResidualNetwork(4, 8, 3) with half its first hidden units "
                                     f"zero-initialised: ReLU at exactly 0 ({_dt(dtype)})", args=(4, 8, 3),
                                     weights=weights, inputs=[X], dtype=dtype), edge="zero"))
    return cases


class _ResidualBase(nn.Module):
    """The mistakes' shared layers: first, block (hidden -> hidden), last."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.first = nn.Linear(input_size, hidden_size)
        self.block = nn.Linear(hidden_size, hidden_size)
        self.last = nn.Linear(hidden_size, output_size)


class _ResidualNoSkip(_ResidualBase):
    def forward(self, X):
        H = torch.relu(self.first(X))
        return self.last(torch.relu(self.block(H)))


class _ResidualSkipInsideRelu(_ResidualBase):
    def forward(self, X):
        H = torch.relu(self.first(X))
        return self.last(torch.relu(H + self.block(H)))


class _ResidualReluAtEnd(_ResidualBase):
    def forward(self, X):
        H = torch.relu(self.first(X))
        H = H + torch.relu(self.block(H))
        return torch.relu(self.last(H))


class _ResidualClamp(_ResidualBase):
    def forward(self, X):
        H = self.first(X).clamp(min=0)
        H = H + self.block(H).clamp(min=0)
        return self.last(H)


class _ResidualInList(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.layers = [nn.Linear(input_size, hidden_size), nn.Linear(hidden_size, hidden_size),
                       nn.Linear(hidden_size, output_size)]

    def forward(self, X):
        first, block, last = self.layers
        H = torch.relu(first(X))
        return last(H + torch.relu(block(H)))


class _ResidualNoSuper(_ResidualBase):
    def __init__(self, input_size, hidden_size, output_size):  # noqa: super().__init__() missing on purpose
        self.first = nn.Linear(input_size, hidden_size)
        self.block = nn.Linear(hidden_size, hidden_size)
        self.last = nn.Linear(hidden_size, output_size)

    def forward(self, X):
        H = torch.relu(self.first(X))
        return self.last(H + torch.relu(self.block(H)))


RESIDUAL = Check(
    name="ResidualNetwork",
    target="ResidualNetwork",
    make_cases=_residual_cases,
    probe=ModuleProbe(),
    mistakes=(
        Mistake("no-super-init", _NO_SUPER, _ResidualNoSuper),
        Mistake("layers-in-a-python-list", _PYTHON_LIST, _ResidualInList),
        Mistake("no-skip-connection", "Add the block's output to its input: H = H + F.relu(block(H)). "
                "Without the skip the network is a plain chain of layers.", _ResidualNoSkip),
        Mistake("skip-inside-the-relu", "The skip adds the block's activated output to H, "
                "H + F.relu(block(H)), not F.relu(H + block(H)).", _ResidualSkipInsideRelu),
        Mistake("activation-after-last-layer", _AFTER_LAST, _ResidualReluAtEnd),
        Mistake("relu-gradient-at-zero", "Where a unit's input is exactly 0, ReLU's gradient is 0, as "
                "F.relu gives; clamp(min=0) passes a gradient of 1 there. Use F.relu.", _ResidualClamp),
    ),
)


# -- SequenceClassifier: nn.LSTM, its last hidden state into a Linear layer ----------------------

def _lstm_weights(gen, n_in, hidden, n_out, *, dtype, device):
    """nn.LSTM's weight_ih (4H, D), weight_hh (4H, H), bias_ih, bias_hh (4H,), then the Linear's."""
    scale = 1 / math.sqrt(hidden)
    lstm = [randn(gen, 4 * hidden, n_in, dtype=dtype, device=device, scale=scale),
            randn(gen, 4 * hidden, hidden, dtype=dtype, device=device, scale=scale),
            randn(gen, 4 * hidden, dtype=dtype, device=device, scale=scale),
            randn(gen, 4 * hidden, dtype=dtype, device=device, scale=scale)]
    return lstm + _linear_weights(gen, (hidden, n_out), dtype=dtype, device=device)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _sequence_cases(gen, *, device, dtype):
    cases = []
    for sizes, shape in [((3, 5, 4), (2, 6, 3)), ((4, 8, 2), (5, 3, 4)), ((2, 3, 3), (1, 7, 2)),
                         ((5, 4, 1), (3, 1, 5))]:
        n_in, hidden, n_out = sizes
        weights = _lstm_weights(gen, n_in, hidden, n_out, dtype=dtype, device=device)
        X = randn(gen, *shape, dtype=dtype, device=device)
        label = (f"SequenceClassifier{sizes} on {_count(shape[0], 'sequence')} of "
                 f"{_count(shape[1], 'step')}, X of shape {shape} ({_dt(dtype)})")
        cases.append(module_case(label, args=sizes, weights=weights, inputs=[X], dtype=dtype))
    weights = _lstm_weights(gen, 3, 4, 2, dtype=dtype, device=device)
    X = randn(gen, 3, 5, 3, dtype=dtype, device=device)
    X[:, 3:] = 0  # padded steps: inputs of exactly 0
    cases.append(replace(module_case(f"SequenceClassifier(3, 4, 2) on sequences whose last 2 steps are inputs "
                                     f"of exactly 0 ({_dt(dtype)})", args=(3, 4, 2), weights=weights,
                                     inputs=[X], dtype=dtype), edge="zero"))
    return cases


class _SequenceBase(nn.Module):
    batch_first = True

    def __init__(self, input_size, hidden_size, num_classes):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=self.batch_first)
        self.head = nn.Linear(hidden_size, num_classes)


class _SequenceFirstStep(_SequenceBase):
    def forward(self, X):
        output, _ = self.lstm(X)
        return self.head(output[:, 0])


class _SequenceNotBatchFirst(_SequenceBase):
    batch_first = False

    def forward(self, X):
        _, (h_n, _) = self.lstm(X)
        return self.head(h_n[-1])


class _SequenceCellState(_SequenceBase):
    def forward(self, X):
        _, (_, c_n) = self.lstm(X)
        return self.head(c_n[-1])


class _SequenceMeanOverTime(_SequenceBase):
    def forward(self, X):
        output, _ = self.lstm(X)
        return self.head(output.mean(dim=1))


class _SequenceSoftmax(_SequenceBase):
    def forward(self, X):
        _, (h_n, _) = self.lstm(X)
        return torch.softmax(self.head(h_n[-1]), dim=1)


class _SequenceLastOfBatch(_SequenceBase):
    def forward(self, X):
        output, _ = self.lstm(X)
        return self.head(output[-1]).expand(X.shape[0], -1)


SEQUENCE = Check(
    name="SequenceClassifier",
    target="SequenceClassifier",
    make_cases=_sequence_cases,
    probe=ModuleProbe(),
    mistakes=(
        Mistake("not-batch-first", "X is (N, T, input_size), batch first: create nn.LSTM(..., batch_first=True). "
                "Without it the LSTM reads the batch as time and the steps as the batch.", _SequenceNotBatchFirst),
        Mistake("first-step-output", "output[:, 0] is the hidden state after the first step only; the whole "
                "sequence is summarised by the last one, h_n[-1] (equal to output[:, -1]).", _SequenceFirstStep),
        Mistake("cell-state-not-hidden", "nn.LSTM returns output, (h_n, c_n): the last hidden state is h_n, "
                "not the cell state c_n.", _SequenceCellState),
        Mistake("mean-over-time", "Classify from the last hidden state, h_n[-1], not the mean of the outputs "
                "over time.", _SequenceMeanOverTime),
        Mistake("softmax-at-the-end", "Return the logits of the Linear layer: CrossEntropyLoss applies "
                "log_softmax itself.", _SequenceSoftmax),
        Mistake("last-of-the-batch", "With batch_first=True, output[-1] is the last sequence of the batch, "
                "not the last step: use h_n[-1] or output[:, -1].", _SequenceLastOfBatch),
    ),
)

CHECKS = [MY_FIRST_NETWORK, MLP, COUNT_PARAMETERS, RESIDUAL, SEQUENCE]
