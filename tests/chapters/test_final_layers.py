"""The final_layers chapter's checks, proven both ways.

1. The reference (the source notebook's solution cells) equals an oracle built
   from torch, values and gradients, on every graded case and on fresh random
   inputs; its outputs have the ranges, sums and shapes the chapter promises,
   and stay finite at logits of ±1000.
2. Every catalogued mistake loses points and gets its own hint.
3. Known-correct alternatives keep full marks.
4. Calling the torch function being implemented is detected.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import assert_reference_equals_oracle, assert_full_marks, checks_of, grade_impl, reference

STEM = "final_layers"


def oracle_head(task, in_features, num_classes=None):
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(in_features, num_classes if task == "multiclass" else 1)

        def forward(self, X):
            z = self.linear(X)
            return {"regression": z, "binary": torch.sigmoid(z), "multiclass": torch.softmax(z, 1)}[task]

    return Head()


def oracle_task_loss(output, target, task, from_logits=False):
    if task == "regression":
        return ((output - target) ** 2).mean()
    if task == "binary":
        if from_logits:
            return F.binary_cross_entropy_with_logits(output, target)
        return -(target * torch.log(output) + (1 - target) * torch.log(1 - output)).mean()
    logp = torch.log_softmax(output, 1) if from_logits else torch.log(output)
    return -logp.gather(1, target[:, None]).mean()


def oracle_predict(output, task, from_logits=False):
    if task == "regression":
        return output.reshape(-1)
    if task == "binary":
        p = torch.sigmoid(output) if from_logits else output
        return (p.reshape(-1) > 0.5).to(torch.int64)
    return torch.max(output, dim=1).indices


ORACLE = {
    "sigmoid": torch.sigmoid,
    "softmax": torch.softmax,
    "make_head": oracle_head,
    "task_loss": oracle_task_loss,
    "predict": oracle_predict,
}


@pytest.mark.parametrize("name", checks_of(STEM))
def test_reference_equals_the_oracle_on_every_case(name):
    assert_reference_equals_oracle(STEM, name, ORACLE[name])


def _value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    w = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    return out, torch.autograd.grad(out, x, w)[0]


@pytest.mark.parametrize("seed", range(5))
def test_reference_equals_torch_on_fresh_random_inputs(seed):
    ns = reference(STEM)
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(v) for v in torch.randint(1, 6, (3,), generator=g))
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 10 ** float(torch.rand(1, generator=g) * 3)
    for ours, theirs in zip(_value_and_grad(ns["sigmoid"], x), _value_and_grad(torch.sigmoid, x)):
        torch.testing.assert_close(ours, theirs)
    for dim in range(-3, 3):
        for ours, theirs in zip(_value_and_grad(lambda t: ns["softmax"](t, dim), x),
                                _value_and_grad(lambda t: torch.softmax(t, dim), x)):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_is_finite_with_the_right_ranges_at_logits_of_1000(dtype):
    ns = reference(STEM)
    z = torch.tensor([[-1000.0, 1000.0, 0.5], [1000.0, 999.0, -1000.0]], dtype=dtype)
    for fn, check in [(ns["sigmoid"], lambda p: ((p >= 0) & (p <= 1)).all()),
                      (lambda t: ns["softmax"](t, 1), lambda p: torch.allclose(p.sum(1), torch.ones(2, dtype=dtype)))]:
        p, grad = _value_and_grad(fn, z)
        assert torch.isfinite(p).all() and torch.isfinite(grad).all()
        assert check(p)
    loss_z = z[:, :1]
    loss = ns["task_loss"](loss_z, torch.tensor([[0.0], [0.0]], dtype=dtype), "binary", from_logits=True)
    torch.testing.assert_close(loss, torch.tensor(500.0, dtype=dtype))  # mean of softplus(-1000), softplus(1000)
    ce = ns["task_loss"](z, torch.tensor([0, 2]), "multiclass", from_logits=True)
    assert torch.isfinite(ce) and float(ce) > 1000


def test_reference_heads_have_the_promised_shapes_ranges_and_sums():
    ns = reference(STEM)
    X = torch.randn(5, 7) * 50
    assert ns["make_head"]("regression", 7)(X).shape == (5, 1)
    p = ns["make_head"]("binary", 7)(X)
    assert p.shape == (5, 1) and ((p >= 0) & (p <= 1)).all()
    P = ns["make_head"]("multiclass", 7, num_classes=4)(X)
    assert P.shape == (5, 4) and (P >= 0).all()
    torch.testing.assert_close(P.sum(1), torch.ones(5))
    with pytest.raises(ValueError):
        ns["make_head"]("ranking", 7)


class _HeadClass(nn.Module):
    """A custom class instead of nn.Sequential, with torch's functions in forward."""

    def __init__(self, task, in_features, num_classes=None):
        super().__init__()
        self.task = task
        self.scores = nn.Linear(in_features, num_classes if task == "multiclass" else 1)

    def forward(self, X):
        z = self.scores(X)
        if self.task == "binary":
            return torch.sigmoid(z)
        if self.task == "multiclass":
            return F.softmax(z, dim=-1)
        return z


def _sequential_with_names(task, in_features, num_classes=None):
    layers = OrderedDict(linear=nn.Linear(in_features, num_classes if task == "multiclass" else 1))
    if task == "binary":
        layers["probability"] = nn.Sigmoid()
    if task == "multiclass":
        layers["probabilities"] = nn.Softmax(dim=-1)
    return nn.Sequential(layers)


def _task_loss_by_modules(output, target, task, from_logits=False):
    if task == "regression":
        return nn.MSELoss()(output, target)
    if task == "binary":
        return (nn.BCEWithLogitsLoss() if from_logits else nn.BCELoss())(output, target)
    return nn.CrossEntropyLoss()(output, target) if from_logits else nn.NLLLoss()(torch.log(output), target)


def _task_loss_by_logsigmoid(output, target, task, from_logits=False):
    if task == "binary" and from_logits:
        return -(target * F.logsigmoid(output) + (1 - target) * F.logsigmoid(-output)).mean()
    if task == "multiclass" and from_logits:
        return F.nll_loss(F.log_softmax(output, dim=1), target)
    return reference(STEM)["task_loss"](output, target, task, from_logits)


ALTERNATIVES = [
    pytest.param("sigmoid", lambda input: 0.5 * (1 + torch.tanh(input / 2)), id="sigmoid:tanh-form"),
    pytest.param("sigmoid", lambda input: torch.exp(-F.softplus(-input)), id="sigmoid:exp-of-minus-softplus"),
    pytest.param("sigmoid", lambda input: 1 / (1 + torch.exp(-input.clamp(-80, 80))), id="sigmoid:clamped"),
    pytest.param("sigmoid", lambda input: 0.5 * (1 + torch.tanh(input / 2)), id="sigmoid:tanh-form"),
    pytest.param("sigmoid", lambda input: (lambda e: torch.where(input >= 0, 1 / (1 + e), e / (1 + e)))(
                 torch.exp(torch.where(input >= 0, -input, input))), id="sigmoid:minus-abs-by-where"),
    pytest.param("softmax", lambda input, dim: torch.exp(input - input.max(dim, keepdim=True).values)
                 / torch.exp(input - input.max(dim, keepdim=True).values).sum(dim, keepdim=True),
                 id="softmax:max-values-not-detached"),
    pytest.param("softmax", lambda input, dim: (lambda e: e * e.sum(dim, keepdim=True).reciprocal())(
                 torch.exp(input - input.amax(dim, keepdim=True))), id="softmax:times-reciprocal"),
    pytest.param("make_head", _HeadClass, id="make_head:custom-class"),
    pytest.param("make_head", _sequential_with_names, id="make_head:named-sequential-dim-minus-1"),
    pytest.param("task_loss", _task_loss_by_modules, id="task_loss:loss-modules"),
    pytest.param("task_loss", _task_loss_by_logsigmoid, id="task_loss:logsigmoid-and-log-softmax"),
    pytest.param("predict", lambda output, task, from_logits=False:
                 output.view(-1) if task == "regression" else
                 torch.where(output[:, 0] > (0 if from_logits else 0.5), 1, 0) if task == "binary" else
                 output.argmax(-1), id="predict:view-where-argmax-last"),
    pytest.param("predict", lambda output, task, from_logits=False:
                 output.squeeze(1) if task == "regression" else
                 (torch.sigmoid(output) if from_logits else output).round().long().squeeze(1) if task == "binary" else
                 torch.softmax(output, 1).argmax(1), id="predict:round-the-probability"),
]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


@pytest.mark.parametrize("name, call", [
    pytest.param("sigmoid", lambda input: torch.sigmoid(input), id="torch.sigmoid"),
    pytest.param("sigmoid", lambda input: nn.Sigmoid()(input), id="nn.Sigmoid"),
    pytest.param("sigmoid", lambda input: torch.special.expit(input), id="torch.special.expit"),
    pytest.param("softmax", lambda input, dim: F.softmax(input, dim), id="F.softmax"),
    pytest.param("softmax", lambda input, dim: torch.exp(input - torch.logsumexp(input, dim, keepdim=True)),
                 id="logsumexp"),
])
def test_calling_the_torch_function_being_implemented_scores_zero_with_a_message(name, call):
    result = grade_impl(STEM, name, call)
    assert result.points == 0
    assert any("the torch function this exercise asks you to write" in v.message for v in result.cases)


def test_a_head_that_is_not_a_module_is_told_so():
    def as_function(task, in_features, num_classes=None):
        linear = nn.Linear(in_features, 1)
        return lambda X: torch.sigmoid(linear(X))

    result = grade_impl(STEM, "make_head", as_function)
    assert result.points == 0
    assert any("it is an nn.Module: expected True, got False" in v.message for v in result.cases)


def test_a_head_holding_a_plain_cpu_tensor_fails_the_device_case():
    class Scaled(nn.Module):
        def __init__(self, task, in_features, num_classes=None):
            super().__init__()
            self.head = reference(STEM)["make_head"](task, in_features, num_classes)
            self.one = torch.ones(1)  # a plain attribute: .to() leaves it on the CPU

        def forward(self, X):
            return self.head(X) * self.one

    result = grade_impl(STEM, "make_head", Scaled)
    meta = [v for v in result.cases if v.label.startswith("on the meta device")]
    assert meta and not meta[0].passed and "device" in meta[0].message
    assert result.passed == result.total - 1


def test_predictions_may_be_made_without_gradients():
    ref = reference(STEM)["predict"]

    def no_grad_predict(output, task, from_logits=False):
        with torch.no_grad():
            return ref(output, task, from_logits)

    assert_full_marks(STEM, "predict", no_grad_predict)
