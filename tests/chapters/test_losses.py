"""The losses chapter's checks, proven both ways.

1. The reference (the source notebook's solution cells) equals torch.nn.functional,
   values and gradients, on randomized inputs: torch is the oracle.
2. Every catalogued mistake loses points and gets its own hint.
3. Known-correct alternatives keep full marks.
4. Calling the torch function being implemented is detected, whatever the alias.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import assert_reference_equals_oracle, assert_full_marks, checks_of, grade_impl, grader, reference

STEM = "losses"
TORCH = {
    "l1_loss": F.l1_loss,
    "mse_loss": F.mse_loss,
    "binary_cross_entropy": F.binary_cross_entropy,
    "binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
    "log_softmax": F.log_softmax,
    "nll_loss": F.nll_loss,
    "cross_entropy": F.cross_entropy,
    "detection_loss": lambda bp, bt, cl, ct, box_weight=1.0:
        box_weight * F.l1_loss(bp, bt) + F.binary_cross_entropy_with_logits(cl, ct),
    "l1_penalized_loss": lambda loss, parameters, lam:
        loss + lam * sum(torch.linalg.vector_norm(p, ord=1) for p in parameters),
}


@pytest.mark.parametrize("name", checks_of(STEM))
def test_reference_equals_torch_on_every_case(name):
    """Oracle: every case the grader uses, with torch in the reference's place."""
    assert_reference_equals_oracle(STEM, name, TORCH[name])


@pytest.mark.parametrize("seed", range(5))
def test_reference_equals_torch_on_fresh_random_inputs(seed):
    ns = reference(STEM)
    g = torch.Generator().manual_seed(seed)
    N, C = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(2, 7, (1,), generator=g))
    x = torch.randn(N, C, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, C, (N, 3), generator=g)
    t[0, 0] = -100
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.1
    for r in ("none", "mean", "sum"):
        for eps in (0.0, 0.15):
            ours = ns["cross_entropy"](x, t, weight=w, reduction=r, label_smoothing=eps)
            theirs = F.cross_entropy(x, t, weight=w, reduction=r, label_smoothing=eps)
            torch.testing.assert_close(ours, theirs)
            gw = torch.randn_like(ours)
            torch.testing.assert_close(torch.autograd.grad(ours, x, gw)[0], torch.autograd.grad(theirs, x, gw)[0])
    p = torch.rand(N, C, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(N, C, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ns["binary_cross_entropy"](p, y), F.binary_cross_entropy(p, y))
    z = torch.randn(N, C, generator=g, dtype=torch.float64) * 50
    pw = torch.rand(C, generator=g, dtype=torch.float64) * 3
    torch.testing.assert_close(ns["binary_cross_entropy_with_logits"](z, y, pos_weight=pw),
                               F.binary_cross_entropy_with_logits(z, y, pos_weight=pw))


def _lse_log_softmax(input, dim):
    return input - torch.logsumexp(input, dim=dim, keepdim=True)


def test_log_softmax_through_logsumexp_is_the_forbidden_call_the_statement_names():
    """The statement forbids torch.logsumexp (it does the max trick the exercise teaches)."""
    result = grade_impl("losses", "log_softmax", _lse_log_softmax)
    assert result.points == 0
    assert any("logsumexp" in v.message and "asks you to write yourself" in v.message for v in result.cases)


def _float64_l1(input, target, reduction="mean"):
    loss = (input.double() - target.double()).abs()
    loss = {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]
    return loss.to(input.dtype)


def _bce_logits_via_logsigmoid(input, target, weight=None, reduction="mean", pos_weight=None):
    pw = 1 if pos_weight is None else pos_weight
    log_sig = -torch.nn.functional.softplus(-input)  # log(sigmoid(x)), stable
    loss = -(pw * target * log_sig + (1 - target) * (log_sig - input))
    loss = loss if weight is None else loss * weight
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _nll_by_one_hot(input, target, weight=None, ignore_index=-100, reduction="mean"):
    C = input.shape[1]
    valid = target != ignore_index
    onehot = torch.nn.functional.one_hot(target.clamp(min=0), C).movedim(-1, 1).to(input.dtype)
    w = torch.ones(C, dtype=input.dtype, device=input.device) if weight is None else weight
    shape = [1] * input.dim()
    shape[1] = C
    wt = (onehot * w.view(shape)).sum(1) * valid
    loss = -(input * onehot).sum(1) * wt
    return loss.sum() / wt.sum() if reduction == "mean" else {"none": loss, "sum": loss.sum()}[reduction]


def _penalty_by_loop(loss, parameters, lam):
    params = list(parameters)  # a list may be walked as often as needed
    total = loss
    for p in params:
        total = total + lam * p.abs().sum()
    return total


ALTERNATIVES = [
    pytest.param("l1_loss", _float64_l1, id="l1_loss:float64-then-cast-back"),
    pytest.param("binary_cross_entropy_with_logits", _bce_logits_via_logsigmoid, id="bce_logits:softplus-form"),
    pytest.param("nll_loss", _nll_by_one_hot, id="nll_loss:one-hot-mask"),
    pytest.param("l1_penalized_loss", lambda loss, parameters, lam:
                 loss + lam * torch.cat([p.flatten() for p in parameters]).abs().sum(), id="l1_penalty:cat-then-abs"),
    pytest.param("l1_penalized_loss", _penalty_by_loop, id="l1_penalty:loop-over-a-list"),
    pytest.param("mse_loss", lambda input, target, reduction="mean":
                 {"none": (input - target).pow(2), "mean": ((input - target) ** 2).sum() / input.numel(),
                  "sum": torch.einsum("...,...->", input - target, input - target)}[reduction],
                 id="mse_loss:einsum-and-explicit-divide"),
]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


@pytest.mark.parametrize("call", [
    pytest.param(lambda input, target, reduction="mean": F.l1_loss(input, target, reduction=reduction), id="F.l1_loss"),
    pytest.param(lambda input, target, reduction="mean": torch.nn.L1Loss(reduction=reduction)(input, target),
                 id="nn.L1Loss"),
    pytest.param(lambda input, target, reduction="mean": torch._C._nn.l1_loss(input, target,
                 {"none": 0, "mean": 1, "sum": 2}[reduction]), id="torch._C._nn.l1_loss"),
])
def test_calling_the_torch_function_being_implemented_scores_zero_with_a_message(call):
    result = grade_impl(STEM, "l1_loss", call)
    assert result.points == 0
    assert any("the torch function this exercise asks you to write" in v.message for v in result.cases)


def test_stub_scores_zero_and_says_not_implemented():
    def stub(input, target, reduction="mean"):
        raise NotImplementedError()

    result = grade_impl(STEM, "l1_loss", stub)
    assert result.points == 0
    assert all("NotImplementedError" in v.message for v in result.cases)


def test_hard_coded_cpu_tensor_fails_the_device_case():
    def on_cpu(input, target, reduction="mean"):
        loss = (input - target).abs() + torch.zeros(input.shape, dtype=input.dtype)  # no device=
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]

    result = grade_impl(STEM, "l1_loss", on_cpu)
    meta = [v for v in result.cases if v.label.startswith("on the meta device")]
    fake = [v for v in result.cases if v.label.startswith("on a CUDA device")]
    assert meta and not meta[0].passed and fake and not fake[0].passed
    assert result.passed == result.total - 2


def test_a_cross_entropy_that_hard_codes_the_cpu_loses_its_device_case():
    """Its own class weights made with torch.ones(C) (no device=), used with label smoothing: the meta case
    (a copy of the first case, label smoothing without weights) fails it, with the device hint."""
    ns = reference(STEM)

    def ones_on_the_cpu(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        weight = torch.ones(input.shape[1], dtype=input.dtype) if weight is None else weight
        return ns["cross_entropy"](input, target, weight, ignore_index, reduction, label_smoothing)

    result = grade_impl(STEM, "cross_entropy", ones_on_the_cpu)
    failing = [v for v in result.cases if not v.passed]
    assert failing and all(v.mistake == "device-bound" for v in failing), [v.message for v in failing]


def test_a_bug_in_log_softmax_is_not_paid_for_again_in_cross_entropy():
    """The notebook's cross_entropy calls its own log_softmax (wrong: no max subtracted): graded with the
    course's log_softmax and nll_loss in their place, cross_entropy keeps full marks; the student's
    functions are put back afterwards."""
    import torch.nn.functional as F

    namespace = {"torch": torch, "F": F}
    exec("def log_softmax(input, dim):\n    return input - input.exp().sum(dim, keepdim=True).log()\n"
         "def nll_loss(input, target, weight=None, ignore_index=-100, reduction='mean'):\n"
         "    return F.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)\n"
         "def cross_entropy(input, target, weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0):\n"
         "    logp = log_softmax(input, dim=1)\n"
         "    nll = nll_loss(logp, target, weight=weight, ignore_index=ignore_index, reduction=reduction)\n"
         "    if label_smoothing == 0:\n        return nll\n"
         "    w = torch.ones(input.shape[1], dtype=input.dtype, device=input.device) if weight is None else weight\n"
         "    shape = [1] * input.dim()\n    shape[1] = -1\n    valid = target != ignore_index\n"
         "    smooth = -(logp * w.view(shape)).sum(1) * valid\n"
         "    if reduction == 'mean':\n        smooth = smooth.sum() / (w[target.clamp(min=0)] * valid).sum()\n"
         "    elif reduction == 'sum':\n        smooth = smooth.sum()\n"
         "    return (1 - label_smoothing) * nll + label_smoothing / input.shape[1] * smooth\n", namespace)
    _assert_paid_for_once(namespace, "log_softmax", "cross_entropy", "the course's log_softmax and nll_loss")


def _assert_paid_for_once(namespace: dict, helper: str, check: str, note: str) -> None:
    """The notebook's `helper` (wrong) costs points in its own check; `check`, whose function calls it,
    keeps full marks and says why in its first case; the notebook's helper is put back afterwards."""
    own = namespace[helper]
    assert grade_impl(STEM, helper, own).points < grade_impl(STEM, helper, reference(STEM)[helper]).points
    result = grade_impl(STEM, check, namespace[check])
    assert result.points == result.max_points, [v.message for v in result.cases if not v.passed][:3]
    assert note in result.cases[0].label
    assert namespace[helper] is own


def test_wrong_dtype_output_is_reported():
    result = grade_impl(STEM, "mse_loss", lambda input, target, reduction="mean":
                        reference(STEM)["mse_loss"](input.double(), target.double(), reduction))
    assert result.points < result.max_points
    assert any("expected dtype torch.float32, got torch.float64" in v.message for v in result.cases)


def test_detached_output_loses_the_gradient_cases():
    ref = reference(STEM)["l1_loss"]
    result = grade_impl(STEM, "l1_loss", lambda input, target, reduction="mean": ref(input, target, reduction).detach())
    assert result.points == 0
    assert any("not differentiable" in v.message for v in result.cases)


def test_l1_penalty_on_a_model_trains_its_weights_towards_zero():
    """The reference on model.parameters(): the value by hand, lam * sign(w) added to each gradient."""
    penalized = reference(STEM)["l1_penalized_loss"]
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    X, y = torch.randn(6, 4), torch.randn(6, 3)
    data = F.mse_loss(model(X), y)
    (g_data,) = torch.autograd.grad(data, model.weight, retain_graph=True)
    total = penalized(data, model.parameters(), 0.25)
    torch.testing.assert_close(total, data + 0.25 * sum(p.abs().sum() for p in model.parameters()))
    total.backward()
    torch.testing.assert_close(model.weight.grad, g_data + 0.25 * model.weight.sign())


def test_a_penalty_walked_twice_over_model_parameters_is_named():
    """model.parameters() is a generator: code that walks it twice adds no penalty, and is told why."""
    def count_then_sum(loss, parameters, lam):
        n = len(list(parameters))
        return loss + lam * sum(p.abs().sum() for p in parameters) / max(n, 1) * n

    result = grade_impl(STEM, "l1_penalized_loss", count_then_sum)
    assert result.points < result.max_points
    assert any("one-pass iterator" in (v.hint or "") for v in result.cases), [v.hint for v in result.cases][:3]


def test_a_bug_in_l1_loss_is_not_paid_for_again_in_detection_loss():
    """detection_loss calls the notebook's l1_loss (wrong: a sum) and binary_cross_entropy_with_logits:
    graded with the course's in their place, detection_loss keeps full marks, says so in its first case,
    and the student's functions are put back afterwards."""
    import torch.nn.functional as F

    namespace = {"torch": torch, "F": F}
    exec("def l1_loss(input, target, reduction='mean'):\n    return (input - target).abs().sum()\n"
         "def binary_cross_entropy_with_logits(input, target, weight=None, reduction='mean', pos_weight=None):\n"
         "    return F.binary_cross_entropy_with_logits(input, target, reduction=reduction)\n"
         "def detection_loss(box_pred, box_target, class_logit, class_target, box_weight=1.0):\n"
         "    box = l1_loss(box_pred, box_target, reduction='mean')\n"
         "    cls = binary_cross_entropy_with_logits(class_logit, class_target, reduction='mean')\n"
         "    return box_weight * box + cls\n", namespace)
    _assert_paid_for_once(namespace, "l1_loss", "detection_loss", "the course's l1_loss")
