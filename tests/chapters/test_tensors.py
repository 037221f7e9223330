"""The tensors chapter's checks, proven both ways.

1. The reference (the source notebook's solution cells) equals torch, values
   and gradients, on every graded case and on fresh random inputs: torch is the oracle.
2. Every catalogued mistake loses points and gets its own hint.
3. Known-correct alternatives keep full marks.
4. Calling the torch function being implemented is detected, whatever the alias.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import assert_reference_equals_oracle, assert_full_marks, checks_of, grade_impl, reference

STEM = "tensors"
TORCH = {
    "mm": torch.mm,
    "mean": torch.mean,
    "amax": torch.amax,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
}


@pytest.mark.parametrize("name", checks_of(STEM))
def test_reference_equals_torch_on_every_case(name):
    assert_reference_equals_oracle(STEM, name, TORCH[name])


def _grads(fn, *xs):
    leaves = [x.detach().clone().requires_grad_(True) for x in xs]
    out = fn(*leaves)
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    return (out, *torch.autograd.grad(out, leaves, w))


@pytest.mark.parametrize("seed", range(5))
def test_reference_equals_torch_on_fresh_random_inputs(seed):
    ns = reference(STEM)
    g = torch.Generator().manual_seed(seed)
    n, k, m = (int(v) for v in torch.randint(1, 9, (3,), generator=g))
    a = torch.randn(n, k, generator=g, dtype=torch.float64)
    b = torch.randn(k, m, generator=g, dtype=torch.float64)
    for ours, theirs in zip(_grads(ns["mm"], a, b), _grads(torch.mm, a, b)):
        torch.testing.assert_close(ours, theirs)
    x = torch.randn(n, k, m, generator=g, dtype=torch.float64) * 4
    for dim in range(-3, 3):
        for keepdim in (False, True):
            for ours, theirs in zip(_grads(lambda t: ns["mean"](t, dim, keepdim=keepdim), x),
                                    _grads(lambda t: torch.mean(t, dim, keepdim=keepdim), x)):
                torch.testing.assert_close(ours, theirs)
    ties = torch.round(x)  # integer values: many maxima tie
    for dim in range(-3, 3):
        for keepdim in (False, True):
            for ours, theirs in zip(_grads(lambda t: ns["amax"](t, dim, keepdim=keepdim), ties),
                                    _grads(lambda t: torch.amax(t, dim, keepdim=keepdim), ties)):
                torch.testing.assert_close(ours, theirs)
    for name in ("relu", "sigmoid"):
        for ours, theirs in zip(_grads(ns[name], x), _grads(TORCH[name], x)):
            torch.testing.assert_close(ours, theirs)


def test_the_amax_cases_hold_ties_of_two_and_of_three():
    """Without ties every mistake about the gradient's rule would pass unseen."""
    from tests.conftest import grader

    counts = set()
    for case in grader(STEM).prepared["amax"].cases:
        if case.shape_only:
            continue
        x, dim = case.args
        counts |= set((x == x.amax(dim, keepdim=True)).sum(dim).flatten().tolist())
    assert {1, 2, 3} <= counts, counts


def test_amax_gradient_at_ties_is_shared_equally():
    ties = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(reference(STEM)["amax"](ties, 1).sum(), ties)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64))


def test_the_pages_known_results():
    ns = reference(STEM)
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.ones(2, 2)
    c = torch.tensor([[4.0, 5.0], [10.0, 1.0]])
    torch.testing.assert_close(ns["mm"](a, b), torch.tensor([[3.0, 3.0], [7.0, 7.0]]))
    torch.testing.assert_close(ns["sigmoid"](c), torch.tensor([[0.98201376, 0.9933072], [0.9999546, 0.7310586]]))
    torch.testing.assert_close(ns["relu"](c), c)
    torch.testing.assert_close(ns["relu"](torch.tensor([-2.0, -1.0, 1.0, 2.0])), torch.tensor([0.0, 0.0, 1.0, 2.0]))


def _amax_by_weights(input, dim, keepdim=False):
    is_max = (input == input.max(dim, keepdim=True).values).to(input.dtype)
    weights = is_max / is_max.sum(dim, keepdim=True)  # 1/k on each of the k tied maxima
    return (weights * input).sum(dim, keepdim=keepdim)


ALTERNATIVES = [
    pytest.param("mm", lambda input, mat2: (input.unsqueeze(2) * mat2.unsqueeze(0)).sum(1), id="mm:unsqueeze"),
    pytest.param("mm", lambda input, mat2: torch.stack([(row[:, None] * mat2).sum(0) for row in input]),
                 id="mm:row-by-row"),
    pytest.param("mm", lambda input, mat2: (input.T[:, :, None] * mat2[:, None, :]).sum(0), id="mm:sum-of-outers"),
    pytest.param("mean", lambda input, dim, keepdim=False: torch.sum(input, dim, keepdim) * (1.0 / input.size(dim)),
                 id="mean:times-reciprocal"),
    pytest.param("mean", lambda input, dim, keepdim=False:
                 (input.double().sum(dim, keepdim=keepdim) / input.shape[dim]).to(input.dtype),
                 id="mean:float64-then-cast-back"),
    pytest.param("amax", lambda input, dim, keepdim=False: torch.where(
        input == input.max(dim, keepdim=True).values, input, float("nan")).nanmean(dim, keepdim=keepdim),
        id="amax:nanmean-over-the-maxima"),
    pytest.param("amax", _amax_by_weights, id="amax:weights-summing-to-one"),
    pytest.param("relu", lambda input: input * (input > 0), id="relu:times-mask"),
    pytest.param("relu", lambda input: torch.where(input > 0, input, 0.0), id="relu:where-scalar"),
    pytest.param("relu", lambda input: input.masked_fill(input <= 0, 0.0), id="relu:masked-fill"),
    pytest.param("sigmoid", lambda input: 0.5 * (1 + torch.tanh(input / 2)), id="sigmoid:tanh-form"),
    pytest.param("sigmoid", lambda input: torch.exp(input) / (1 + torch.exp(input)), id="sigmoid:exp-over-1-plus-exp"),
    pytest.param("sigmoid", lambda input: (1 + (-input).exp()).reciprocal(), id="sigmoid:reciprocal"),
]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


@pytest.mark.parametrize("impl", [
    pytest.param(lambda input: input.clamp(min=0), id="clamp"),
    pytest.param(lambda input: torch.maximum(input, torch.zeros_like(input)), id="maximum"),
    pytest.param(lambda input: (input + input.abs()) / 2, id="half-sum-with-abs"),
])
def test_relu_with_another_gradient_at_zero_loses_only_the_cases_at_zero(impl):
    """The right values everywhere; at exactly 0 the gradient is 1 or 0.5 where torch's is 0."""
    result = grade_impl(STEM, "relu", impl)
    failed = [v.label for v in result.cases if not v.passed]
    assert failed and all("exactly 0" in label for label in failed), failed


@pytest.mark.parametrize("name, call", [
    pytest.param("mm", lambda input, mat2: input @ mat2, id="@"),
    pytest.param("mm", lambda input, mat2: torch.einsum("ik,kj->ij", input, mat2), id="einsum"),
    pytest.param("mm", lambda input, mat2: F.linear(input, mat2.T), id="F.linear"),
    pytest.param("mean", lambda input, dim, keepdim=False: input.mean(dim, keepdim=keepdim), id="Tensor.mean"),
    pytest.param("amax", lambda input, dim, keepdim=False: input.amax(dim, keepdim=keepdim), id="Tensor.amax"),
    pytest.param("amax", lambda input, dim, keepdim=False: torch.amax(input, dim, keepdim), id="torch.amax"),
    pytest.param("relu", lambda input: F.relu(input), id="F.relu"),
    pytest.param("relu", lambda input: torch.nn.ReLU()(input), id="nn.ReLU"),
    pytest.param("sigmoid", lambda input: torch.special.expit(input), id="torch.special.expit"),
    pytest.param("sigmoid", lambda input: torch.nn.Sigmoid()(input), id="nn.Sigmoid"),
])
def test_calling_the_torch_function_being_implemented_scores_zero_with_a_message(name, call):
    result = grade_impl(STEM, name, call)
    assert result.points == 0
    assert any("the torch function this exercise asks you to write" in v.message for v in result.cases)


def test_stub_scores_zero_and_says_not_implemented():
    def stub(input, mat2):
        raise NotImplementedError()

    result = grade_impl(STEM, "mm", stub)
    assert result.points == 0
    assert all("NotImplementedError" in v.message for v in result.cases)


def test_hard_coded_cpu_tensor_fails_the_device_case():
    result = grade_impl(STEM, "relu", lambda input: torch.where(input > 0, input, torch.zeros(input.shape,
                                                                                          dtype=input.dtype)))
    meta = [v for v in result.cases if v.label.startswith("on the meta device")]
    assert meta and not meta[0].passed
    device_cases = [v for v in result.cases if v.label.startswith(("on the meta device", "on a CUDA device"))]
    assert all(not v.passed for v in device_cases)
    assert result.passed == result.total - len(device_cases)  # every other case passes


def test_float32_hard_coded_fails_the_float64_cases():
    result = grade_impl(STEM, "sigmoid", lambda input: 1 / (1 + torch.exp(-input.float())))
    assert 0 < result.points < result.max_points
    assert any("expected dtype torch.float64, got torch.float32" in v.message for v in result.cases)


def test_detached_output_loses_the_gradient_cases():
    result = grade_impl(STEM, "relu", lambda input: input.detach().clamp(min=0))
    assert result.points == 0
    assert any("not differentiable" in v.message for v in result.cases)
