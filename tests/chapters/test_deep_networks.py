"""The deep_networks chapter's checks, proven both ways.

1. The reference (the source notebook's solution cells) equals a computation
   of the same quantities from the case's tensors, without nn.
2. The dead-unit cases separate the mistakes: dead units and units inactive
   on some examples only.
3. Every catalogued mistake loses points and gets its own hint (tests/test_checks.py).
4. Known-correct alternatives keep full marks.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import assert_full_marks, grade_impl, grader, reference

STEM = "deep_networks"


def _manual_forward(spec, X):
    """The case's MLP computed from its tensors, without nn: (output, pre-activations)."""
    act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
           "leaky_relu": lambda z: F.leaky_relu(z, 0.01)}[spec["activation"]]
    h, pre = X, []
    for k, (w, b) in enumerate(zip(spec["weights"], spec["biases"])):
        z = h @ w.T + b
        if k < len(spec["weights"]) - 1:
            pre.append(z)
            h = act(z)
        else:
            h = z
    return h, pre


@pytest.mark.parametrize("name", ["layer_grad_norms", "dead_unit_fraction"])
def test_diagnostics_equal_a_computation_without_nn(name):
    from autograder.probes import run_probe

    p = grader(STEM).prepared[name]
    ref_impl = reference(STEM)[p.check.target]
    for case in p.cases:
        if case.shape_only:
            continue
        c = case.upcast()
        ours = run_probe(p.check, ref_impl, c)
        assert not ours["error"], ours["error"]
        spec = c.kwargs
        if name == "layer_grad_norms":
            weights = [w.detach().clone().requires_grad_(True) for w in spec["weights"]]
            out, _ = _manual_forward({**spec, "weights": weights}, spec["X"])
            grads = torch.autograd.grad(((out - spec["y"]) ** 2).mean(), weights)
            expected = torch.stack([g.pow(2).sum().sqrt() for g in grads])
        else:
            _, pre = _manual_forward(spec, spec["X"])
            expected = torch.stack([(z <= 0).all(dim=0).double().mean() for z in pre])
        torch.testing.assert_close(ours["values"]["output"], expected, msg=case.label)


def test_the_dead_unit_cases_hold_dead_inactive_and_active_units():
    """Each case separates the catalogued mistakes: some units dead, some active on some examples only."""
    p = grader(STEM).prepared["dead_unit_fraction"]
    for case in p.cases:
        if case.shape_only:
            continue
        _, pre = _manual_forward(case.kwargs, case.kwargs["X"])
        off = [(z <= 0) for z in pre]
        assert any(o.all(0).any() for o in off), case.label  # a dead unit
        assert any((o.any(0) & ~o.all(0)).any() for o in off), case.label  # an inactive-sometimes unit


def _dead_by_max(net, X):
    outs = []
    hooks = [m.register_forward_hook(lambda *a: outs.append(a[2])) for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(X)
    for h in hooks:
        h.remove()
    return torch.stack([(o.amax(dim=0) == 0).float().mean() for o in outs])


def _dead_by_preactivation(net, X):
    """Hooks on the Linear layers followed by a ReLU, walking the model by hand."""
    fractions = []

    def walk(module, h):
        if isinstance(module, nn.Sequential):
            for child in module:
                h = walk(child, h)
            return h
        if isinstance(module, nn.ReLU):
            fractions.append(1 - (h > 0).any(dim=0).to(X.dtype).mean())
        return module(h)

    with torch.no_grad():
        walk(net, X)
    return torch.stack(fractions)


ALTERNATIVES = [
    pytest.param("layer_grad_norms", lambda net: torch.stack(
        [p.grad.pow(2).sum().sqrt() for n, p in net.named_parameters() if n.endswith("weight")]),
        id="layer_grad_norms:named-parameters"),
    pytest.param("layer_grad_norms", lambda net: torch.stack(
        [m.weight.grad.norm() for m in net.modules() if isinstance(m, nn.Linear)]), id="layer_grad_norms:norm"),
    pytest.param("dead_unit_fraction", _dead_by_max, id="dead_unit_fraction:amax-float"),
    pytest.param("dead_unit_fraction", _dead_by_preactivation, id="dead_unit_fraction:walk-by-hand"),
]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


def test_the_issues_catalogue_is_there():
    names = {(c.name, m.name) for c in grader(STEM).checks.values() for m in c.mistakes}
    assert ("dead_unit_fraction", "wrong-dimension") in names
    assert ("dead_unit_fraction", "one-fraction-for-all-layers") in names


def test_a_list_of_floats_fails_the_float64_and_device_expectations():
    result = grade_impl(STEM, "layer_grad_norms", lambda net: torch.tensor(
        [m.weight.grad.norm().item() for m in net.modules() if isinstance(m, nn.Linear)]))
    assert result.points < result.max_points
    assert any("expected dtype torch.float64, got torch.float32" in v.message for v in result.cases)

