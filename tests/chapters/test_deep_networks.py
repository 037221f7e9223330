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

from tests.conftest import assert_full_marks, assert_loses_points_naming, grade_impl, grader, reference

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


def _relu_outs(net, X):
    outs = []
    hooks = [m.register_forward_hook(lambda *a: outs.append(a[2])) for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(X)
    for h in hooks:
        h.remove()
    return outs


def _dead_by_max(net, X):
    return torch.stack([(o.amax(dim=0) == 0).to(X.dtype).mean() for o in _relu_outs(net, X)])


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


# -- held-out sets: correct code in other styles, and code with one bug each ------------------------

def _global_hook_dead(net, X):
    """torch's global forward hook (register_module_forward_hook), under inference_mode, removed after."""
    from torch.nn.modules.module import register_module_forward_hook

    outs = []
    handle = register_module_forward_hook(lambda m, i, o: outs.append(o) if isinstance(m, nn.ReLU) else None)
    try:
        with torch.inference_mode():
            net(X)
    finally:
        handle.remove()
    return torch.stack([(torch.count_nonzero(o, dim=0) == 0).to(X.dtype).mean() for o in outs])


def _context_manager_dead(net, X):
    """Hooks held in a contextlib.ExitStack (callbacks remove them), fractions as sum / size."""
    import contextlib

    outs = []
    with contextlib.ExitStack() as stack, torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.ReLU):
                stack.callback(m.register_forward_hook(lambda mod, i, o: outs.append(o)).remove)
        net(X)
    return torch.stack([(o <= 0).all(0).sum().to(X.dtype) / o.shape[1] for o in outs])


def _grad_norms_linalg(net):
    return torch.stack([torch.linalg.norm(m.weight.grad.flatten()) for m in net.modules() if isinstance(m, nn.Linear)])


def _grad_norms_cat(net):
    return torch.cat([m.weight.grad.norm().reshape(1) for m in net.modules() if type(m) is nn.Linear])


def _grad_norms_utils(net):
    """torch.nn.utils' total norm of one tensor at a time (the way training scripts log it)."""
    return torch.stack([torch.nn.utils.get_total_norm([m.weight.grad]) for m in net.modules()
                        if isinstance(m, nn.Linear)])


ALTERNATIVES = [
    pytest.param("layer_grad_norms", lambda net: torch.stack(
        [p.grad.pow(2).sum().sqrt() for n, p in net.named_parameters() if n.endswith("weight")]),
        id="layer_grad_norms:named-parameters"),
    pytest.param("layer_grad_norms", lambda net: torch.stack(
        [m.weight.grad.norm() for m in net.modules() if isinstance(m, nn.Linear)]), id="layer_grad_norms:norm"),
    pytest.param("dead_unit_fraction", _dead_by_max, id="dead_unit_fraction:amax"),
    pytest.param("dead_unit_fraction", _dead_by_preactivation, id="dead_unit_fraction:walk-by-hand"),
    pytest.param("dead_unit_fraction", _global_hook_dead, id="dead:global-hook-inference-mode"),
    pytest.param("dead_unit_fraction", _context_manager_dead, id="dead:exitstack-sum-over-size"),
    pytest.param("layer_grad_norms", _grad_norms_linalg, id="norms:linalg-flatten"),
    pytest.param("layer_grad_norms", _grad_norms_cat, id="norms:cat-reshape"),
    pytest.param("layer_grad_norms", _grad_norms_utils, id="norms:nn-utils-get-total-norm"),
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



def _dead_float32(net, X):
    return _dead_by_max(net, X).float()


def _dead_moved_to_cpu(net, X):
    return _dead_by_max(net, X).cpu()


def _dead_cpu_preallocated(net, X):
    outs = _relu_outs(net, X)
    fractions = torch.zeros(len(outs), dtype=X.dtype)
    for k, o in enumerate(outs):
        fractions[k] = (o == 0).all(0).to(X.dtype).mean()
    return fractions


def _norms_moved_to_cpu(net):
    return torch.stack([m.weight.grad.norm() for m in net.modules() if isinstance(m, nn.Linear)]).cpu()


def _norms_numpy(net):
    import numpy as np

    return torch.from_numpy(np.array([m.weight.grad.norm().cpu().numpy() for m in net.modules()
                                      if isinstance(m, nn.Linear)]))


def _norms_of_items(net):
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    return torch.tensor([w.grad.norm().item() for w in weights], dtype=weights[0].dtype)


def _norms_numpy_of_cuda(net):
    import numpy as np

    return torch.tensor(np.stack([m.weight.grad.norm().numpy() for m in net.modules() if isinstance(m, nn.Linear)]))


HELD_OUT_WRONG = {  # name -> (check, code, a mistake's name, or what the failing case's message says)
    "dead:global-hook-never-removed": ("dead_unit_fraction", lambda net, X: _global_hook_never_removed(net, X),
                                       "hooks-left-on"),
    "dead:forward-with-autograd": ("dead_unit_fraction", lambda net, X: _autograd_on(net, X), "forward-with-autograd"),
    "dead:float32-always": ("dead_unit_fraction", _dead_float32, "expected dtype torch.float64, got torch.float32"),
    "dead:moved-to-the-cpu": ("dead_unit_fraction", _dead_moved_to_cpu, "device-bound"),
    "dead:preallocated-on-the-cpu": ("dead_unit_fraction", _dead_cpu_preallocated, "device-bound"),
    "norms:moved-to-the-cpu": ("layer_grad_norms", _norms_moved_to_cpu, "device-bound"),
    "norms:through-numpy": ("layer_grad_norms", _norms_numpy, "device-bound"),
    "norms:tensor-of-items": ("layer_grad_norms", _norms_of_items, "device-bound"),
    "norms:numpy-of-a-cuda-tensor": ("layer_grad_norms", _norms_numpy_of_cuda, "can't convert cuda"),
}


def _global_hook_never_removed(net, X):
    from torch.nn.modules.module import register_module_forward_hook

    outs = []
    register_module_forward_hook(lambda m, i, o: outs.append(o) if isinstance(m, nn.ReLU) else None)
    with torch.inference_mode():
        net(X)
    return torch.stack([(torch.count_nonzero(o, dim=0) == 0).to(X.dtype).mean() for o in outs])


def _autograd_on(net, X):
    import contextlib

    outs = []
    with contextlib.ExitStack() as stack:
        for m in net.modules():
            if isinstance(m, nn.ReLU):
                stack.callback(m.register_forward_hook(lambda mod, i, o: outs.append(o)).remove)
        net(X)
    return torch.stack([(o <= 0).all(0).sum().to(X.dtype) / o.shape[1] for o in outs])


@pytest.mark.parametrize("name", list(HELD_OUT_WRONG))
def test_held_out_wrong_code_loses_points_naming_its_bug(name):
    from torch.nn.modules import module as torch_module

    check, impl, bug = HELD_OUT_WRONG[name]
    before = dict(torch_module._global_forward_hooks)
    try:
        assert_loses_points_naming(STEM, check, impl, bug)
    finally:  # a global hook the code left: removed, so that it does not run in the other tests
        for key in set(torch_module._global_forward_hooks) - set(before):
            del torch_module._global_forward_hooks[key]


DEVICE_CASES = {"layer_grad_norms": ["meta", "simulated CUDA"], "dead_unit_fraction": ["meta", "simulated CUDA"]}


def test_the_device_cases_of_every_check():
    """Without a GPU, every check has a meta case and a simulated-CUDA case (the probe builds the network on
    the CPU, places it on the fake device and makes its gradients there: no autograd on the fake device)."""
    kinds = {name: [("simulated CUDA" if c.fake_cuda else "meta") for c in p.cases if c.shape_only]
             for name, p in grader(STEM).prepared.items()}
    assert kinds == DEVICE_CASES


def test_the_sandboxed_runner_replays_items_on_the_simulated_gpu(tmp_path):
    """Through the class runner (the child holds the probe and its replay): norms built from .item() lose the
    simulated-GPU case only; the meta case cannot be judged (no data) and is left out."""
    import json

    from autograder.course import source_notebook
    from autograder.grading import grade_class
    from autograder.notebook import find_cell

    nb = json.loads(source_notebook(STEM).read_text())
    cell = find_cell(nb, "layer_grad_norms")
    cell["source"] = "".join(cell["source"]) + (
        "\n_norms = layer_grad_norms\ndef layer_grad_norms(net):\n"
        "    return torch.tensor([g.item() for g in _norms(net)], dtype=next(net.parameters()).dtype)\n")
    folder = tmp_path / "submitted" / "items" / STEM
    folder.mkdir(parents=True)
    (folder / f"{STEM}.ipynb").write_text(json.dumps(nb))
    (result,) = grade_class(STEM, submissions=tmp_path / "submitted", out=tmp_path / "out", device="cpu", jobs=1,
                            progress=False)
    check = next(c for c in result.checks if c.name == "layer_grad_norms")
    failing = [v for v in check.cases if not v.passed and not v.inconclusive]
    assert [v.mistake for v in failing] == ["device-bound"] and "got cpu" in failing[0].message, failing
    assert next(c for c in result.checks if c.name == "dead_unit_fraction").points == 2
