"""Checks for the `losses` chapter: each function mirrors torch.nn.functional.

Known mistakes are written as the wrong code a student would write; a
student's answer that matches one on a failing case gets its hint. The tests
prove each check both ways (tests/chapters/test_losses.py).
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import bernoulli, rand, randint, randn
from autograder.probes import FunctionProbe
from autograder.probes.function import ParametersProbe
from autograder.probes.helpers import (WithHelpers, course_binary_cross_entropy_with_logits, course_l1_loss,
                                       course_log_softmax, course_nll_loss)

REDUCTIONS = ("none", "mean", "sum")


def reduce(loss, reduction):
    return {"none": lambda: loss, "mean": loss.mean, "sum": loss.sum}[reduction]()


def _label(shape, dtype, **kw) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return f"input of shape {tuple(shape)} ({str(dtype).removeprefix('torch.')}){', ' + opts if opts else ''}"


# -- l1_loss / mse_loss ---------------------------------------------------------

def _pair_cases(gen, *, device, dtype):
    cases = []
    for shape in [(7,), (4, 5), (2, 3, 4)]:
        x = randn(gen, *shape, dtype=dtype, device=device)
        y = randn(gen, *shape, dtype=dtype, device=device)
        for r in REDUCTIONS:
            cases.append(Case(_label(shape, dtype, reduction=r), (x, y), {"reduction": r}, dtype))
    # input == target in every other element: |d| has a kink at d = 0, where torch's gradient is 0
    x = randn(gen, 3, 4, dtype=dtype, device=device)
    y = torch.where(torch.arange(12, device=device).reshape(3, 4) % 2 == 0, x, randn(gen, 3, 4, dtype=dtype,
                                                                                     device=device))
    for r in ("none", "mean"):
        cases.append(Case(_label((3, 4), dtype, reduction=r, note="input equals target at every other element "
                                                                  "(gradient at 0)"), (x, y), {"reduction": r},
                          dtype, edge="zero"))
    return cases


def _ignores_reduction(elementwise):
    def impl(input, target, reduction="mean"):
        return elementwise(input, target).mean()
    return impl


def _sum_for_mean(elementwise):
    def impl(input, target, reduction="mean"):
        loss = elementwise(input, target)
        return loss if reduction == "none" else loss.sum()
    return impl


_REDUCTION_HINT_NONE = ("reduction='none' returns the loss of every element, with the input's shape; "
                        "only 'mean' and 'sum' reduce it to a scalar.")
_REDUCTION_HINT_MEAN = "reduction='mean' divides the summed loss by the number of elements; 'sum' does not."

L1 = Check(
    name="l1_loss",
    target="l1_loss",
    make_cases=_pair_cases,
    probe=FunctionProbe(),
    forbidden=("l1_loss", "smooth_l1_loss", "huber_loss"),
    mistakes=(
        Mistake("squared-error", "L1 loss is the absolute error |input - target|, not the squared error "
                "(that is MSE).", lambda input, target, reduction="mean": reduce((input - target) ** 2, reduction)),
        Mistake("no-absolute-value", "Take the absolute value before reducing: otherwise positive and negative "
                "errors cancel out.", lambda input, target, reduction="mean": reduce(input - target, reduction)),
        Mistake("ignores-reduction", _REDUCTION_HINT_NONE, _ignores_reduction(lambda x, y: (x - y).abs())),
        Mistake("sum-for-mean", _REDUCTION_HINT_MEAN, _sum_for_mean(lambda x, y: (x - y).abs())),
        Mistake("sqrt-of-square", "sqrt((input - target)**2) equals |input - target|, but its gradient at "
                "input == target is 0/0 = nan: use torch.abs (whose gradient there is 0, as torch's l1_loss).",
                lambda input, target, reduction="mean": reduce(((input - target) ** 2).sqrt(), reduction)),
        Mistake("kink-gradient-not-zero", "At input == target, torch's gradient of |input - target| is 0 (the "
                "sign of 0 is 0); yours is ±1 there. torch.abs has the right gradient; torch.where(d >= 0, d, -d) "
                "and clamp-based forms do not.",
                lambda input, target, reduction="mean": reduce(torch.where(input - target >= 0, input - target,
                                                                           target - input), reduction)),
    ),
)

# code with two mistakes at once: a hint for each (checks.combined)
L1 = replace(L1, mistakes=L1.mistakes + (combined(
    lambda input, target, reduction="mean": ((input - target) ** 2).sqrt().mean(),
    *(m for m in L1.mistakes if m.name in ("sqrt-of-square", "ignores-reduction"))),))

MSE = Check(
    name="mse_loss",
    target="mse_loss",
    make_cases=_pair_cases,
    probe=FunctionProbe(),
    forbidden=("mse_loss",),
    mistakes=(
        Mistake("absolute-error", "MSE squares the error (input - target)**2; the absolute error is L1.",
                lambda input, target, reduction="mean": reduce((input - target).abs(), reduction)),
        Mistake("root-mean-square", "MSE has no square root: sqrt(mean(...)) is the RMSE.",
                lambda input, target, reduction="mean": reduce((input - target) ** 2, reduction).sqrt()),
        Mistake("halved", "MSE is mean((input - target)**2), without the factor 1/2 some textbooks use.",
                lambda input, target, reduction="mean": reduce(0.5 * (input - target) ** 2, reduction)),
        Mistake("ignores-reduction", _REDUCTION_HINT_NONE, _ignores_reduction(lambda x, y: (x - y) ** 2)),
        Mistake("sum-for-mean", _REDUCTION_HINT_MEAN, _sum_for_mean(lambda x, y: (x - y) ** 2)),
    ),
)


# -- binary_cross_entropy ---------------------------------------------------------

def _bce_cases(gen, *, device, dtype):
    cases = []
    for shape in [(6,), (3, 4)]:
        p = rand(gen, *shape, dtype=dtype, device=device, low=0.02, high=0.98)
        t = bernoulli(gen, *shape, dtype=dtype, device=device)
        for r in REDUCTIONS:
            cases.append(Case(_label(shape, dtype, reduction=r), (p, t), {"reduction": r}, dtype))
    p = rand(gen, 3, 4, dtype=dtype, device=device, low=0.05, high=0.95)
    t = rand(gen, 3, 4, dtype=dtype, device=device)  # soft targets are allowed
    w = rand(gen, 3, 4, dtype=dtype, device=device, low=0.5, high=2.0)
    cases.append(Case(_label((3, 4), dtype, weight="(3, 4)", targets="soft"), (p, t), {"weight": w}, dtype))
    cases.append(Case(_label((3, 4), dtype, weight="(4,) broadcast", reduction="sum"), (p, t),
                      {"weight": w[0], "reduction": "sum"}, dtype))
    # Probabilities of exactly 0 and 1: torch clamps each log at -100. The
    # gradient there is a convention, so only values are compared.
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30], dtype=dtype, device=device)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=dtype, device=device)
    for r in ("none", "sum"):
        cases.append(Case(_label((6,), dtype, reduction=r, probabilities="exactly 0 and 1"), (p, t),
                          {"reduction": r}, dtype, compare=("output",)))
    return cases


def _bce_terms(input, target, log):
    return -(target * log(input) + (1 - target) * log(1 - input))


def _clamped_log(p):
    return torch.log(p).clamp(min=-100)


def _bce(log):
    def impl(input, target, weight=None, reduction="mean"):
        loss = _bce_terms(input, target, log)
        if weight is not None:
            loss = loss * weight
        return reduce(loss, reduction)
    return impl


BCE = Check(
    name="binary_cross_entropy",
    target="binary_cross_entropy",
    make_cases=_bce_cases,
    probe=FunctionProbe(),
    forbidden=("binary_cross_entropy", "binary_cross_entropy_with_logits"),
    mistakes=(
        Mistake("log-not-clamped", "log(0) is -inf: clamp each log at -100 as torch does "
                "(torch.clamp(torch.log(p), min=-100)), so a probability of exactly 0 or 1 gives a finite loss.",
                _bce(torch.log)),
        Mistake("probability-clamped", "torch clamps the logarithm at -100, not the probability at an epsilon: "
                "clamp(log(p), min=-100), not log(clamp(p, eps, 1 - eps)).",
                _bce(lambda p: torch.log(p.clamp(1e-7, 1 - 1e-7)))),
        Mistake("missing-minus", "Cross-entropy is the negative log-likelihood: -(t log p + (1 - t) log(1 - p)).",
                lambda input, target, weight=None, reduction="mean":
                    -_bce(_clamped_log)(input, target, weight, reduction)),
        Mistake("swapped-terms", "The target multiplies log(p) and (1 - target) multiplies log(1 - p), "
                "not the other way round.",
                lambda input, target, weight=None, reduction="mean":
                    _bce(_clamped_log)(input, 1 - target, weight, reduction)),
        Mistake("weight-ignored", "Multiply each element's loss by `weight` (broadcast) before reducing.",
                lambda input, target, weight=None, reduction="mean":
                    _bce(_clamped_log)(input, target, None, reduction)),
        Mistake("ignores-reduction", _REDUCTION_HINT_NONE,
                lambda input, target, weight=None, reduction="mean":
                    _bce(_clamped_log)(input, target, weight, "mean")),
    ),
)


# -- binary_cross_entropy_with_logits -------------------------------------------------

def _bce_logits_cases(gen, *, device, dtype):
    cases = []
    for shape in [(6,), (3, 4)]:
        x = randn(gen, *shape, dtype=dtype, device=device, scale=3.0)
        t = bernoulli(gen, *shape, dtype=dtype, device=device)
        for r in REDUCTIONS:
            cases.append(Case(_label(shape, dtype, reduction=r), (x, t), {"reduction": r}, dtype))
    x = randn(gen, 5, 3, dtype=dtype, device=device, scale=2.0)
    t = rand(gen, 5, 3, dtype=dtype, device=device)
    w = rand(gen, 5, 3, dtype=dtype, device=device, low=0.5, high=2.0)
    pw = rand(gen, 3, dtype=dtype, device=device, low=0.5, high=4.0)
    cases.append(Case(_label((5, 3), dtype, weight="(5, 3)"), (x, t), {"weight": w}, dtype))
    cases.append(Case(_label((5, 3), dtype, pos_weight="(3,)"), (x, t), {"pos_weight": pw}, dtype))
    cases.append(Case(_label((5, 3), dtype, weight="(5, 3)", pos_weight="(3,)", reduction="none"), (x, t),
                      {"weight": w, "pos_weight": pw, "reduction": "none"}, dtype))
    big = torch.tensor([1000.0, -1000.0, 80.0, -80.0, 0.25, 30.0], dtype=dtype, device=device)
    tb = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0], dtype=dtype, device=device)
    cases.append(Case(_label((6,), dtype, reduction="none", logits="extreme (±1000)"), (big, tb),
                      {"reduction": "none"}, dtype, edge="extreme"))
    cases.append(Case(_label((6,), dtype, pos_weight="(6,)", logits="extreme (±1000)"), (big, tb),
                      {"pos_weight": torch.full((6,), 3.0, dtype=dtype, device=device)}, dtype, edge="extreme"))
    # Logits of exactly 0 (a zero-initialised output layer): the gradient there is sigmoid(0) - t.
    zero = torch.zeros(2, 3, dtype=dtype, device=device)
    tz = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.25]], dtype=dtype, device=device)
    cases.append(Case(_label((2, 3), dtype, reduction="none", logits="exactly 0"), (zero, tz),
                      {"reduction": "none"}, dtype, edge="zero"))
    cases.append(Case(_label((2, 3), dtype, pos_weight="(3,)", logits="exactly 0"), (zero, tz),
                      {"pos_weight": torch.tensor([2.0, 0.5, 3.0], dtype=dtype, device=device)}, dtype, edge="zero"))
    return cases


def _bce_logits_naive(input, target, weight=None, reduction="mean", pos_weight=None):
    s = torch.sigmoid(input)
    pw = 1 if pos_weight is None else pos_weight
    loss = -(pw * target * torch.log(s) + (1 - target) * torch.log(1 - s))
    return reduce(loss if weight is None else loss * weight, reduction)


def _softplus(x):
    return torch.log1p(torch.exp(-x.abs())) + (x.abs() + x) / 2


def _bce_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    pw = 1 if pos_weight is None else pos_weight
    loss = pw * target * _softplus(-input) + (1 - target) * _softplus(input)
    return reduce(loss if weight is None else loss * weight, reduction)


def _bce_logits_clamp_abs(input, target, weight=None, reduction="mean", pos_weight=None):
    """The stable form many libraries write: right everywhere but at x = 0, where clamp and abs each
    take a one-sided derivative (1 and 0) that do not cancel."""
    log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    loss = (1 - target) * input + log_weight * (torch.log1p(torch.exp(-input.abs())) + (-input).clamp(min=0))
    return reduce(loss if weight is None else loss * weight, reduction)


def _pos_weight_on_negatives(input, target, weight=None, reduction="mean", pos_weight=None):
    pw = 1 if pos_weight is None else pos_weight
    loss = target * _softplus(-input) + pw * (1 - target) * _softplus(input)
    return reduce(loss if weight is None else loss * weight, reduction)


BCE_LOGITS = Check(
    name="binary_cross_entropy_with_logits",
    target="binary_cross_entropy_with_logits",
    make_cases=_bce_logits_cases,
    probe=FunctionProbe(),
    forbidden=("binary_cross_entropy_with_logits", "binary_cross_entropy"),
    mistakes=(
        Mistake("sigmoid-then-log", "log(sigmoid(x)) overflows for large |x| (sigmoid rounds to 0 or 1, its log "
                "to -inf): use the stable form (1 - t) * x + log(1 + exp(-|x|)) + max(-x, 0).", _bce_logits_naive),
        Mistake("pos-weight-on-negatives", "pos_weight multiplies the loss of the positive targets, "
                "t * log(sigmoid(x)), not the negative ones.", _pos_weight_on_negatives),
        Mistake("pos-weight-ignored", "Use pos_weight: the positive term becomes pos_weight * t * log(sigmoid(x)).",
                lambda input, target, weight=None, reduction="mean", pos_weight=None:
                    _bce_logits(input, target, weight, reduction)),
        Mistake("weight-ignored", "Multiply each element's loss by `weight` before reducing.",
                lambda input, target, weight=None, reduction="mean", pos_weight=None:
                    _bce_logits(input, target, None, reduction, pos_weight)),
        Mistake("ignores-reduction", _REDUCTION_HINT_NONE,
                lambda input, target, weight=None, reduction="mean", pos_weight=None:
                    _bce_logits(input, target, weight, "mean", pos_weight)),
        Mistake("clamp-abs-gradient-at-zero", "Your gradient is wrong at a logit of exactly 0 (a zero-initialised "
                "output layer gives exactly these): there it is sigmoid(0) - t = 0.5 - t. clamp(-x, min=0) and "
                "abs(x) each take a one-sided derivative at 0 (1 and 0) that do not cancel; write the stable "
                "form so that they do, e.g. softplus(x) = m + log(exp(-m) + exp(x - m)) with m = clamp(x, min=0).",
                _bce_logits_clamp_abs),
    ),
)


# -- log_softmax ------------------------------------------------------------------

def _log_softmax_cases(gen, *, device, dtype):
    cases = []
    x = randn(gen, 4, 6, dtype=dtype, device=device, scale=2.0)
    cases.append(Case(_label((4, 6), dtype, dim=1), (x,), {"dim": 1}, dtype))
    cases.append(Case(_label((4, 6), dtype, dim=0), (x,), {"dim": 0}, dtype))
    cases.append(Case(_label((4, 6), dtype, dim=-1), (x,), {"dim": -1}, dtype))
    y = randn(gen, 2, 3, 5, dtype=dtype, device=device, scale=3.0)
    cases.append(Case(_label((2, 3, 5), dtype, dim=1), (y,), {"dim": 1}, dtype))
    big = torch.tensor([[1000.0, 0.0, -1000.0], [-1000.0, -999.0, -1001.0], [500.0, 500.0, 499.0]],
                       dtype=dtype, device=device)
    cases.append(Case(_label((3, 3), dtype, dim=1, logits="extreme (±1000)"), (big,), {"dim": 1}, dtype,
                      edge="extreme"))
    cases.append(Case(_label((2, 4), dtype, dim=1, logits="exactly 0"), (torch.zeros(2, 4, dtype=dtype,
                                                                                      device=device),), {"dim": 1},
                      dtype, edge="zero"))
    return cases


_NO_MAX_HINT = ("exp overflows for large inputs (exp(1000) is inf): subtract the maximum along `dim` first; "
                "log_softmax(x) = (x - m) - log(sum(exp(x - m))).")


def _stable_log_softmax(x, dim):
    shifted = x - x.amax(dim, keepdim=True)
    return shifted - torch.log(torch.exp(shifted).sum(dim, keepdim=True))


LOG_SOFTMAX = Check(
    name="log_softmax",
    target="log_softmax",
    make_cases=_log_softmax_cases,
    probe=FunctionProbe(),
    forbidden=("log_softmax", "_log_softmax", "softmax", "_softmax", "cross_entropy", "logsumexp"),
    mistakes=(
        Mistake("no-max-subtracted", _NO_MAX_HINT,
                lambda input, dim: torch.log(torch.exp(input) / torch.exp(input).sum(dim, keepdim=True))),
        # The same mistake written as x - log(sum(exp(x))): -inf where the form above gives nan.
        Mistake("no-max-subtracted-logsumexp", _NO_MAX_HINT,
                lambda input, dim: input - torch.exp(input).sum(dim, keepdim=True).log()),
        Mistake("softmax-not-log", "Return the log of the probabilities: log_softmax, not softmax.",
                lambda input, dim: _stable_log_softmax(input, dim).exp()),
        Mistake("max-subtracted-only", "After subtracting the maximum, still subtract log(sum(exp(x - m))).",
                lambda input, dim: input - input.amax(dim, keepdim=True)),
        Mistake("last-dim-only", "Normalise along `dim`, the argument, not always the last dimension.",
                lambda input, dim: _stable_log_softmax(input, -1)),
        Mistake("no-keepdim", "Reduce with keepdim=True so the sum broadcasts back along `dim`.",
                lambda input, dim: input - input.amax(dim, keepdim=True)
                - torch.log(torch.exp(input - input.amax(dim, keepdim=True)).sum(dim))),
    ),
)


# -- nll_loss ---------------------------------------------------------------------

def _nll_cases(gen, *, device, dtype):
    cases = []
    N, C = 8, 5
    logp = torch.log_softmax(randn(gen, N, C, dtype=torch.float64, scale=2.0), 1).to(dtype=dtype, device=device)
    t = randint(gen, C, N, device=device)
    w = rand(gen, C, dtype=dtype, device=device, low=0.2, high=3.0)
    t_ign = t.clone()
    t_ign[::3] = -100
    t_ign7 = t.clone()
    t_ign7[1::2] = 2
    for r in REDUCTIONS:
        cases.append(Case(_label((N, C), dtype, reduction=r), (logp, t), {"reduction": r}, dtype))
        cases.append(Case(_label((N, C), dtype, weight="(C,)", reduction=r), (logp, t),
                          {"weight": w, "reduction": r}, dtype))
    cases.append(Case(_label((N, C), dtype, ignore_index=-100, note="every third target ignored"), (logp, t_ign),
                      {}, dtype))
    cases.append(Case(_label((N, C), dtype, weight="(C,)", ignore_index=2), (logp, t_ign7),
                      {"weight": w, "ignore_index": 2}, dtype))
    # NLL over pixels (segmentation): (N, C, H, W) log-probabilities, (N, H, W) targets.
    img = torch.log_softmax(randn(gen, 2, C, 3, 4, dtype=torch.float64), 1).to(dtype=dtype, device=device)
    ti = randint(gen, C, 2, 3, 4, device=device)
    ti[0, 0, :2] = -100
    for r in REDUCTIONS:
        cases.append(Case(_label((2, C, 3, 4), dtype, weight="(C,)", reduction=r, note="per pixel"), (img, ti),
                          {"weight": w, "reduction": r}, dtype))
    certain = torch.full((3, C), -1000.0, dtype=dtype, device=device)  # log-probabilities: 0 at the target
    certain[torch.arange(3), torch.tensor([0, 2, 4])] = 0.0
    cases.append(Case(_label((3, C), dtype, weight="(C,)", note="log-probabilities of exactly 0 and -1000"),
                      (certain, torch.tensor([0, 1, 4], device=device)), {"weight": w}, dtype, edge="zero"))
    return cases


def _nll(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Elementary NLL (the mistakes below may not call torch's)."""
    w = torch.ones(input.shape[1], dtype=input.dtype, device=input.device) if weight is None else weight
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    wt = w[safe] * valid
    loss = -input.gather(1, safe.unsqueeze(1)).squeeze(1) * wt
    return loss.sum() / wt.sum() if reduction == "mean" else reduce(loss, reduction)


def _nll_mean_by_count(input, target, weight=None, ignore_index=-100, reduction="mean"):
    loss = _nll(input, target, weight, ignore_index, reduction="none")
    if reduction != "mean":
        return reduce(loss, reduction)
    return loss.sum() / (target != ignore_index).sum()


def _nll_ignore_not_masked(input, target, weight=None, ignore_index=-100, reduction="mean"):
    C = input.shape[1]
    safe = target.clamp(0, C - 1)
    picked = -input.gather(1, safe.unsqueeze(1)).squeeze(1)
    wt = weight[safe] if weight is not None else torch.ones_like(picked)
    loss = picked * wt
    return loss.sum() / wt.sum() if reduction == "mean" else reduce(loss, reduction)


NLL = Check(
    name="nll_loss",
    target="nll_loss",
    make_cases=_nll_cases,
    probe=FunctionProbe(),
    forbidden=("nll_loss", "nll_loss_nd", "nll_loss2d", "cross_entropy", "cross_entropy_loss"),
    mistakes=(
        Mistake("mean-by-count", "With class weights, reduction='mean' divides by the sum of the weights of the "
                "targets, sum_i weight[target_i], not by the number of targets.", _nll_mean_by_count),
        Mistake("ignore-index-counted", "Targets equal to ignore_index contribute nothing: neither to the loss "
                "nor to the divisor of the mean.", _nll_ignore_not_masked),
        Mistake("missing-minus", "NLL is the *negative* log-likelihood: -input[i, target[i]].",
                lambda input, target, weight=None, ignore_index=-100, reduction="mean":
                    -_nll(input, target, weight, ignore_index, reduction)),
        Mistake("weight-ignored", "Multiply each term by weight[target_i], the weight of its target class.",
                lambda input, target, weight=None, ignore_index=-100, reduction="mean":
                    _nll(input, target, None, ignore_index, reduction)),
        Mistake("ignores-reduction", _REDUCTION_HINT_NONE,
                lambda input, target, weight=None, ignore_index=-100, reduction="mean":
                    _nll(input, target, weight, ignore_index, "mean")),
    ),
)


# -- cross_entropy ------------------------------------------------------------------

def _ce_cases(gen, *, device, dtype):
    cases = []
    N, C = 6, 4
    x = randn(gen, N, C, dtype=dtype, device=device, scale=2.0)
    t = randint(gen, C, N, device=device)
    w = rand(gen, C, dtype=dtype, device=device, low=0.3, high=3.0)
    t_ign = t.clone()
    t_ign[::2] = -100
    # first, as the device cases (meta, simulated CUDA) are copies of the first case: label smoothing without
    # class weights, where an implementation makes its own weights (torch.ones(C) hard-codes the CPU)
    cases.append(Case(_label((N, C), dtype, label_smoothing=0.1, ignore_index=-100, note="half the targets ignored; "
                             "with the course's log_softmax and nll_loss in place of yours (graded on their own: "
                             "one bug costs once)"), (x, t_ign), {"label_smoothing": 0.1}, dtype))
    for r in REDUCTIONS:
        cases.append(Case(_label((N, C), dtype, reduction=r), (x, t), {"reduction": r}, dtype))
    cases.append(Case(_label((N, C), dtype, weight="(C,)"), (x, t), {"weight": w}, dtype))
    cases.append(Case(_label((N, C), dtype, ignore_index=-100, note="half the targets ignored"), (x, t_ign), {},
                      dtype))
    for r in REDUCTIONS:
        cases.append(Case(_label((N, C), dtype, label_smoothing=0.1, reduction=r), (x, t),
                          {"label_smoothing": 0.1, "reduction": r}, dtype))
    cases.append(Case(_label((N, C), dtype, weight="(C,)", label_smoothing=0.2, ignore_index=-100), (x, t_ign),
                      {"weight": w, "label_smoothing": 0.2}, dtype))
    # K-dimensional: (N, C, d1, d2) logits, (N, d1, d2) targets.
    xk = randn(gen, 2, C, 3, 2, dtype=dtype, device=device)
    tk = randint(gen, C, 2, 3, 2, device=device)
    cases.append(Case(_label((2, C, 3, 2), dtype, note="per pixel"), (xk, tk), {}, dtype))
    cases.append(Case(_label((2, C, 3, 2), dtype, weight="(C,)", label_smoothing=0.1, note="per pixel"), (xk, tk),
                      {"weight": w, "label_smoothing": 0.1}, dtype))
    big = torch.tensor([[1000.0, -1000.0, 0.0, 5.0], [-1000.0, 1000.0, 999.0, 0.0]], dtype=dtype, device=device)
    cases.append(Case(_label((2, C), dtype, logits="extreme (±1000)", reduction="none"), (big, torch.tensor(
        [1, 2], device=device)), {"reduction": "none"}, dtype, edge="extreme"))
    cases.append(Case(_label((N, C), dtype, logits="exactly 0", label_smoothing=0.1), (torch.zeros(
        N, C, dtype=dtype, device=device), t), {"label_smoothing": 0.1}, dtype, edge="zero"))
    return cases


def _ce_via(log_softmax):
    def impl(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        logp = log_softmax(input)
        nll = F.nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
        if label_smoothing == 0:
            return nll
        w = torch.ones(input.shape[1], dtype=input.dtype, device=input.device) if weight is None else weight
        shape = [1] * input.dim()
        shape[1] = -1
        valid = target != ignore_index
        smooth = -(logp * w.view(shape)).sum(1) * valid
        if reduction == "mean":
            smooth = smooth.sum() / (w[target.clamp(min=0)] * valid).sum()
        else:
            smooth = reduce(smooth, reduction)
        return (1 - label_smoothing) * nll + label_smoothing / input.shape[1] * smooth
    return impl


def _ce_smoothing_over_others(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    C = input.shape[1]
    valid = target != ignore_index
    onehot = F.one_hot(target.clamp(min=0), C).movedim(-1, 1).to(input.dtype)
    q = onehot * (1 - label_smoothing) + (1 - onehot) * label_smoothing / (C - 1)
    loss = -(q * torch.log_softmax(input, 1)).sum(1) * valid
    if weight is not None:
        loss = loss * weight[target.clamp(min=0)]
    if reduction == "mean":
        denom = (weight[target.clamp(min=0)] * valid).sum() if weight is not None else valid.sum()
        return loss.sum() / denom
    return reduce(loss, reduction)


CROSS_ENTROPY = Check(
    name="cross_entropy",
    target="cross_entropy",
    make_cases=_ce_cases,
    # the notebook's cross_entropy may call its log_softmax and nll_loss: it gets the course's (one bug costs once)
    probe=WithHelpers(FunctionProbe(), (("log_softmax", course_log_softmax), ("nll_loss", course_nll_loss))),
    forbidden=("cross_entropy", "cross_entropy_loss"),
    stated=(r"the course's `log_softmax`\s+and\s+`nll_loss`",),
    mistakes=(
        Mistake("softmax-not-log-softmax", "cross_entropy is nll_loss of log_softmax(input, dim=1): "
                "the log of the probabilities, not the probabilities.",
                lambda input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0:
                    F.nll_loss(torch.softmax(input, 1), target, weight, ignore_index=ignore_index,
                               reduction=reduction)),
        Mistake("unstable-log-softmax", "Computing log(softmax(x)) without subtracting the maximum overflows for "
                "large logits: use a stable log_softmax.",
                _ce_via(lambda x: torch.log(torch.exp(x) / torch.exp(x).sum(1, keepdim=True)))),
        Mistake("label-smoothing-ignored", "With label_smoothing=ε the target distribution is (1 - ε) on the "
                "target class plus ε/C spread over all C classes.",
                lambda input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0:
                    _ce_via(lambda x: _stable_log_softmax(x, 1))(input, target, weight, ignore_index, reduction)),
        Mistake("smoothing-over-other-classes", "torch spreads ε over all C classes (ε/C each, the target class "
                "included), not ε/(C-1) over the other classes.", _ce_smoothing_over_others),
        Mistake("classes-on-last-dim", "Classes are on dim 1 (input is (N, C, d1, ...)), not the last dimension.",
                _ce_via(lambda x: torch.log_softmax(x, -1))),
        Mistake("weight-ignored", "Pass the class weights on: each term is weighted by weight[target_i], "
                "and the mean divides by the sum of those weights.",
                lambda input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0:
                    _ce_via(lambda x: _stable_log_softmax(x, 1))(input, target, None, ignore_index, reduction,
                                                                  label_smoothing)),
    ),
)


# -- the combined detection loss ------------------------------------------------------

DETECTION_NOTE = ("with the course's l1_loss and binary_cross_entropy_with_logits in place of yours (graded on "
                  "their own: one bug costs once)")


def _detection_cases(gen, *, device, dtype):
    cases = []
    for n, box_weight in [(5, 1.0), (8, 2.5), (3, 0.0)]:
        box_pred = randn(gen, n, 4, dtype=dtype, device=device)
        box_target = randn(gen, n, 4, dtype=dtype, device=device)
        logit = randn(gen, n, dtype=dtype, device=device, scale=3.0)
        is_ped = bernoulli(gen, n, dtype=dtype, device=device)
        cases.append(Case(f"{n} detections ({str(dtype).removeprefix('torch.')}), box_weight={box_weight}"
                          + (f"; {DETECTION_NOTE}" if not cases else ""),
                          (box_pred, box_target, logit, is_ped), {"box_weight": box_weight}, dtype))
    box = randn(gen, 4, 4, dtype=dtype, device=device)
    exact = torch.where(torch.rand(4, 4, generator=gen) < 0.5, box.cpu(), randn(gen, 4, 4, dtype=dtype)).to(device)
    cases.append(Case(f"4 detections ({str(dtype).removeprefix('torch.')}), logits exactly 0 and half the boxes "
                      "exactly right (gradients at 0)", (exact, box, torch.zeros(4, dtype=dtype, device=device),
                                                          bernoulli(gen, 4, dtype=dtype, device=device)),
                      {"box_weight": 2.0}, dtype, edge="zero"))
    return cases


DETECTION = Check(
    name="detection_loss",
    target="detection_loss",
    make_cases=_detection_cases,
    # the notebook's detection_loss may call its l1_loss and binary_cross_entropy_with_logits: it gets the
    # course's (one bug costs once)
    probe=WithHelpers(FunctionProbe(grad=(("box_pred", 0), ("class_logit", 2))),
                      (("l1_loss", course_l1_loss),
                       ("binary_cross_entropy_with_logits", course_binary_cross_entropy_with_logits))),
    stated=(r"the course's own versions",),
    mistakes=(
        Mistake("box-weight-ignored", "Multiply the box loss by box_weight before adding the classification loss.",
                lambda bp, bt, cl, ct, box_weight=1.0:
                    F.l1_loss(bp, bt) + F.binary_cross_entropy_with_logits(cl, ct)),
        Mistake("weight-on-classification", "box_weight scales the box term, not the classification term.",
                lambda bp, bt, cl, ct, box_weight=1.0:
                    F.l1_loss(bp, bt) + box_weight * F.binary_cross_entropy_with_logits(cl, ct)),
        Mistake("mse-for-boxes", "The box term is the mean absolute (L1) error, which is less sensitive to "
                "outliers than MSE.",
                lambda bp, bt, cl, ct, box_weight=1.0:
                    box_weight * F.mse_loss(bp, bt) + F.binary_cross_entropy_with_logits(cl, ct)),
        Mistake("summed-not-averaged", "Average both terms over the batch (reduction='mean'), so the loss does not "
                "grow with the batch size.",
                lambda bp, bt, cl, ct, box_weight=1.0:
                    box_weight * F.l1_loss(bp, bt, reduction="sum")
                    + F.binary_cross_entropy_with_logits(cl, ct, reduction="sum")),
    ),
)

# -- an L1 penalty added to a loss ---------------------------------------------------

def _penalty_cases(gen, *, device, dtype):
    cases = []
    dt = str(dtype).removeprefix("torch.")
    for shapes, lam in [([(4, 3), (4,)], 0.1), ([(2, 5), (2,), (1, 2), (1,)], 0.01), ([(6,)], 1.0),
                        ([(3, 3)], 0.0)]:
        params = [randn(gen, *shape, dtype=dtype, device=device) for shape in shapes]
        loss = randn(gen, 1, dtype=dtype, device=device).abs().reshape(())
        tensors = "1 parameter tensor" if len(shapes) == 1 else f"{len(shapes)} parameter tensors"
        cases.append(Case(f"{tensors} of shapes {shapes} ({dt}), lam={lam}", (loss, params, lam), {}, dtype))
    w = randn(gen, 3, 4, dtype=dtype, device=device)
    w[:, ::2] = 0
    cases.append(Case(f"a weight (3, 4) whose every other column is exactly 0 ({dt}), lam=0.5 (the "
                      "gradient of |w| at 0)", (randn(gen, 1, dtype=dtype, device=device).abs().reshape(()),
                                                [w, randn(gen, 3, dtype=dtype, device=device)], 0.5), {},
                      dtype, edge="zero"))
    return cases


def _penalty_of(term):
    def impl(loss, parameters, lam):
        return loss + lam * sum(term(p) for p in parameters)
    return impl


def _penalty_first_only(loss, parameters, lam):
    return loss + lam * next(iter(parameters)).abs().sum()


def _penalty_detached(loss, parameters, lam):
    return loss + lam * sum(p.detach().abs().sum() for p in parameters)


def _penalty_iterated_twice(loss, parameters, lam):
    count = sum(1 for _ in parameters)  # consumes model.parameters()
    return loss + lam * sum(p.abs().sum() for p in parameters) if count else loss


def _penalty_lam_ignored(loss, parameters, lam):
    return loss + sum(p.abs().sum() for p in parameters)


L1_PENALTY = Check(
    name="l1_penalized_loss",
    target="l1_penalized_loss",
    make_cases=_penalty_cases,
    probe=ParametersProbe(),
    mistakes=(
        Mistake("squared-penalty", "An L1 penalty sums the absolute values |w|; summing w**2 is the L2 penalty "
                "(weight decay), which shrinks weights but rarely makes them 0.",
                _penalty_of(lambda p: p.pow(2).sum())),
        Mistake("mean-not-sum", "Sum |w| over every element of every tensor: a mean per tensor makes the "
                "penalty of a large layer as small as that of a bias.", _penalty_of(lambda p: p.abs().mean())),
        Mistake("norm-not-l1", "p.norm() is the Euclidean (L2) norm sqrt(sum w**2); the L1 penalty is "
                "p.abs().sum().", _penalty_of(lambda p: p.norm())),
        Mistake("lam-ignored", "Multiply the penalty by lam: it sets how strongly the weights are pulled to 0.",
                _penalty_lam_ignored),
        Mistake("first-tensor-only", "Penalise every tensor in `parameters`, not only the first.",
                _penalty_first_only),
        Mistake("penalty-detached", "The penalty must stay in the graph: with .detach(), .item() or "
                "torch.no_grad() it adds a number but no gradient, so it regularises nothing.",
                _penalty_detached),
        Mistake("parameters-iterated-twice", "`parameters` may be a one-pass iterator such as "
                "model.parameters(): a second loop over it sees nothing. Go over it once.",
                _penalty_iterated_twice),
        Mistake("sqrt-of-square", "sqrt(w**2) equals |w| but its gradient at w = 0 is nan: use abs(), whose "
                "gradient there is 0, as torch's.", _penalty_of(lambda p: (p ** 2).sqrt().sum())),
    ),
    description="a loss plus lam times the L1 norm of the parameters, with gradients",
)

CHECKS = [L1, MSE, BCE, BCE_LOGITS, LOG_SOFTMAX, NLL, CROSS_ENTROPY, DETECTION, L1_PENALTY]
