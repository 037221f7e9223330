"""Checks for the `deep_networks` chapter: two diagnostics measured on networks the probe builds.

`layer_grad_norms` returns the gradient norm of every nn.Linear layer after
backward (vanishing gradients); `dead_unit_fraction` the fraction of dead
units of every nn.ReLU layer (dying ReLUs), in float32 and float64, with its
hooks removed and its forward pass under no_grad (both graded, as stated).
Both run on a simulated GPU too (the probe makes the network and its
gradients there, and replays the CPU pass's .item()/.tolist()), so code that
builds its answer on the CPU loses that case. Known mistakes are written as the
wrong code a student would write; tests/chapters/test_deep_networks.py
proves each check both ways.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import randn
from autograder.probes.model_diagnostic import ModelDiagnosticProbe


def _dt(dtype) -> str:
    return str(dtype).removeprefix("torch.")


# -- diagnostics: per-layer gradient norms, dead ReLU units -----------------------------------

def _mlp(gen, sizes, *, dtype, device, bias_shift=None):
    """Weights (out, in) with the scale of a default init; bias_shift[k]: added to layer k's biases."""
    weights, biases = [], []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights.append(randn(gen, n_out, n_in, dtype=dtype, device=device, scale=1.5 / math.sqrt(n_in)))
        b = randn(gen, n_out, dtype=dtype, device=device, scale=0.5)
        if bias_shift is not None and k < len(bias_shift):
            b = b + torch.tensor(bias_shift[k], dtype=dtype, device=device)
        biases.append(b)
    return weights, biases


def _grad_norm_cases(gen, *, device, dtype):
    cases = []
    for activation, sizes, nested in [("sigmoid", (4, 6, 6, 6, 6, 2), False), ("tanh", (3, 5, 5, 2), False),
                                      ("relu", (4, 8, 6, 3), False), ("relu", (4, 5, 5, 5, 1), True),
                                      ("leaky_relu", (2, 4, 3), False)]:
        weights, biases = _mlp(gen, sizes, dtype=dtype, device=device)
        X = randn(gen, 10, sizes[0], dtype=dtype, device=device)
        y = randn(gen, 10, sizes[-1], dtype=dtype, device=device)
        kind = "blocks of (Linear, activation)" if nested else "an nn.Sequential"
        cases.append(Case(f"{activation} MLP {'-'.join(map(str, sizes))} as {kind} ({_dt(dtype)})", (),
                          {"weights": weights, "biases": biases, "activation": activation, "nested": nested,
                           "X": X, "y": y}, dtype))
    return cases


def _linears(net):
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


GRAD_NORMS = Check(
    name="layer_grad_norms",
    target="layer_grad_norms",
    make_cases=_grad_norm_cases,
    probe=ModelDiagnosticProbe("grad_norms"),
    mistakes=(
        Mistake("weight-norms-not-gradient-norms", "Take the norm of each weight's gradient (.weight.grad), "
                "not of the weight itself.", lambda net: torch.stack([m.weight.norm() for m in _linears(net)])),
        Mistake("biases-included", "One norm per nn.Linear layer, of its weight's gradient: "
                "net.parameters() also yields the biases.",
                lambda net: torch.stack([p.grad.norm() for p in net.parameters()])),
        Mistake("squared-norm", "The L2 norm is the square root of the sum of squares.",
                lambda net: torch.stack([(m.weight.grad ** 2).sum() for m in _linears(net)])),
        Mistake("top-level-only", "Walk the whole model with net.modules(): iterating over net (its children) "
                "misses layers nested inside blocks.",
                lambda net: torch.stack([m.weight.grad.norm() for m in net.children() if isinstance(m, nn.Linear)])),
        Mistake("mean-absolute-gradient", "Use the L2 norm of the whole gradient (sqrt of the sum of squares), "
                "not the mean absolute value.",
                lambda net: torch.stack([m.weight.grad.abs().mean() for m in _linears(net)])),
    ),
)

# code with two mistakes at once: a hint for each (checks.combined)
GRAD_NORMS = replace(GRAD_NORMS, mistakes=GRAD_NORMS.mistakes + (combined(
    lambda net: torch.stack([(m.weight.grad ** 2).sum() for m in net.children() if isinstance(m, nn.Linear)]),
    *(m for m in GRAD_NORMS.mistakes if m.name in ("squared-norm", "top-level-only"))),))


def _dead_cases(gen, *, device, dtype):
    cases = []
    specs = [((3, 8, 6, 2), [[-4.0] * 3 + [0.0] * 5, [-3.0] * 2 + [0.0] * 4], False, 12),
             ((4, 10, 1), [[-5.0] * 4 + [1.0] * 6], False, 16),
             ((2, 6, 6, 6, 1), [[0.0] * 6, [-2.0] * 3 + [0.5] * 3, [-6.0] + [0.0] * 5], True, 9),
             ((5, 7, 4, 3), [[-1.0] * 7, [-1.0] * 4], False, 20)]
    for sizes, shifts, nested, n in specs:
        weights, biases = _mlp(gen, sizes, dtype=dtype, device=device, bias_shift=shifts)
        X = randn(gen, n, sizes[0], dtype=dtype, device=device)
        kind = "blocks of (Linear, ReLU)" if nested else "an nn.Sequential"
        cases.append(Case(f"ReLU MLP {'-'.join(map(str, sizes))} as {kind}, a batch of {n} ({_dt(dtype)})", (),
                          {"weights": weights, "biases": biases, "activation": "relu", "nested": nested, "X": X},
                          dtype))
    return cases


def _relu_outputs(net, X):
    outs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: outs.append(out)) for m in net.modules()
             if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(X)
    finally:
        for h in hooks:
            h.remove()
    return outs


def _dead_by(reduce):
    return lambda net, X: torch.stack([reduce(out).to(X.dtype) for out in _relu_outputs(net, X)])


def _hooks_kept(net, X):
    outs = []
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda mod, inp, out: outs.append(out))
    with torch.no_grad():
        net(X)
    return torch.stack([(out == 0).all(dim=0).to(X.dtype).mean() for out in outs])


def _with_autograd(net, X):
    outs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: outs.append(out)) for m in net.modules()
             if isinstance(m, nn.ReLU)]
    net(X)
    for h in hooks:
        h.remove()
    return torch.stack([(out == 0).all(dim=0).to(X.dtype).mean() for out in outs])


DEAD_UNITS = Check(
    name="dead_unit_fraction",
    target="dead_unit_fraction",
    make_cases=_dead_cases,
    probe=ModelDiagnosticProbe("dead_units"),
    stated=(r"remove the hooks", r"torch\.no_grad\(\)", r"float32 and float64", r"hook of yours left"),
    mistakes=(
        Mistake("wrong-dimension", "A unit is dead when its output is 0 for every example: reduce with "
                ".all(dim=0) over the batch (dimension 0), then average over the units; .all(dim=1) asks "
                "whether an example switched every unit off.",
                _dead_by(lambda out: (out == 0).all(dim=1).to(out.dtype).mean())),
        Mistake("inactive-on-some-example", "A unit that is 0 on some examples is only inactive there, not "
                "dead; dead means 0 on every example: .all(dim=0), not .any(dim=0).",
                _dead_by(lambda out: (out == 0).any(dim=0).to(out.dtype).mean())),
        Mistake("fraction-of-zero-activations", "Count units, not activations: the fraction of zeros in the "
                "output is its sparsity. A unit is dead when its column is 0 for every example.",
                _dead_by(lambda out: (out == 0).to(out.dtype).mean())),
        Mistake("count-not-fraction", "Divide the number of dead units by the number of units of the layer "
                "(a fraction in [0, 1]).", _dead_by(lambda out: (out == 0).all(dim=0).to(out.dtype).sum())),
        Mistake("one-fraction-for-all-layers", "Return one fraction per ReLU layer, in order: a (L,) tensor.",
                lambda net, X: torch.cat([(out == 0).all(dim=0) for out in _relu_outputs(net, X)]).to(X.dtype)
                .mean()),
        Mistake("hooks-left-on", "Remove every hook you register (handle.remove(), in a finally block): a hook "
                "left on the network runs again at every later forward pass and keeps its outputs alive.",
                _hooks_kept),
        Mistake("forward-with-autograd", "Run the forward pass under torch.no_grad(): a diagnostic needs no "
                "gradient, and with autograd on every ReLU output keeps its graph in memory.", _with_autograd),
    ),
)


CHECKS = [GRAD_NORMS, DEAD_UNITS]
