"""A differential pass: implementations written by others, judged by the grader.

Issue 15: a fair grader gives every correct answer full marks and catches
every wrong one. The correct answers here are torch's own: its Python
reference implementations (`torch._refs`), its decompositions
(`torch._decomp.decompositions`) and its optimizers' single-tensor code
(`torch.optim.<name>._single_tensor_<name>`, reached through the class with
foreach=False), imported from the pinned torch, never copied into the
project, and adapted to each exercise's signature by a thin wrapper. Each is
judged as the grader judges a student (the same cases, the same
`decide_case`), except that calling torch's own code is allowed here: the
forbidden-call rule is about who wrote the code, not whether it is right.

The wrong answers are written here, in the forms real from-scratch code
takes (a textbook softmax without the max shift, Adam without bias
correction, the clamp/abs form of BCE with logits, ...): each must lose
points with the hint of its mistake.
"""
from __future__ import annotations

import importlib
from dataclasses import replace

import pytest
import torch
from torch._decomp import decompositions as decomp
import torch._refs as refs
import torch._refs.nn.functional as refs_f

from autograder.answer import round_trip
from autograder.compare import decide_case
from autograder.probes import run_probe
from tests.conftest import grader

_REDUCTION = {"none": 0, "mean": 1, "sum": 2}  # torch's Reduction enum, as the decompositions take it


def judge(stem: str, name: str, impl, *, forward_only: bool = False):
    """The verdicts of every case of one check for `impl`, as the grader decides them
    (torch's own code may be called). forward_only: compare outputs only, as torch
    tests its prims-based references (their prims have no eager autograd)."""
    p = grader(stem).prepared[name]
    check = replace(p.check, forbidden=())
    verdicts = []
    for case, ref, mistakes in zip(p.cases, p.reference, p.mistakes):
        if forward_only:
            case = replace(case, compare=("output",))
            impl_run = _no_grad_inputs(impl)
        else:
            impl_run = impl
        verdicts.append(decide_case(case, round_trip(run_probe(check, impl_run, case)), ref, mistakes))
    return verdicts


def _no_grad_inputs(impl):
    """Call impl on detached inputs (its output's value is what is judged)."""
    def call(*args, **kwargs):
        return impl(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)
    return call


def assert_all_pass(stem, name, impl, *, forward_only=False):
    failed = [f"{v.label}: {v.message}" for v in judge(stem, name, impl, forward_only=forward_only)
              if not v.passed]
    assert not failed, "\n".join(failed[:5])


# -- torch's reference implementations, with the exercises' signatures ---------------------------

def _l1(input, target, reduction="mean"):
    return refs_f.l1_loss(input, target, reduction=reduction)


def _mse(input, target, reduction="mean"):
    return refs_f.mse_loss(input, target, reduction=reduction)


def _bce(input, target, weight=None, reduction="mean"):
    if weight is not None:  # the decomposition takes a weight of the input's shape
        weight = weight.expand_as(input)
    return decomp.binary_cross_entropy(input, target, weight, _REDUCTION[reduction])


def _bce_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    return decomp.binary_cross_entropy_with_logits(input, target, weight, pos_weight, _REDUCTION[reduction])


def _log_softmax(input, dim):
    return decomp._log_softmax(input, dim, False)


def _nll(input, target, weight=None, ignore_index=-100, reduction="mean"):
    forward = decomp.nll_loss_forward if input.dim() <= 2 else decomp.nll_loss2d_forward
    return forward(input, target, weight, _REDUCTION[reduction], ignore_index)[0]


def _detection(box_pred, box_target, class_logit, class_target, box_weight=1.0):
    return box_weight * _l1(box_pred, box_target) + _bce_logits(class_logit, class_target)


REFERENCES = [
    ("losses", "l1_loss", _l1, "torch._refs.nn.functional.l1_loss"),
    ("losses", "mse_loss", _mse, "torch._refs.nn.functional.mse_loss"),
    ("losses", "binary_cross_entropy", _bce, "torch._decomp.decompositions.binary_cross_entropy"),
    ("losses", "binary_cross_entropy_with_logits", _bce_logits,
     "torch._decomp.decompositions.binary_cross_entropy_with_logits"),
    ("losses", "log_softmax", _log_softmax, "torch._decomp.decompositions._log_softmax"),
    ("losses", "nll_loss", _nll, "torch._decomp.decompositions.nll_loss_forward / nll_loss2d_forward"),
    ("losses", "detection_loss", _detection, "torch._refs l1_loss + decompositions' BCE with logits"),
    ("final_layers", "softmax", lambda input, dim: decomp._softmax(input, dim, False),
     "torch._decomp.decompositions._softmax"),
]

# prims-based references: no eager autograd, so torch tests them (and this test judges them) forward only
FORWARD_ONLY = [
    ("final_layers", "sigmoid", lambda input: refs.sigmoid(input), "torch._refs.sigmoid"),
    ("final_layers", "softmax", lambda input, dim: refs.softmax(input, dim), "torch._refs.softmax"),
    ("losses", "log_softmax", lambda input, dim: refs.log_softmax(input, dim), "torch._refs.log_softmax"),
]


@pytest.mark.parametrize("stem,name,impl,source", [pytest.param(*r, id=f"{r[0]}.{r[1]}:{r[3]}")
                                                   for r in REFERENCES])
def test_torch_reference_implementation_gets_full_marks(stem, name, impl, source):
    assert_all_pass(stem, name, impl)


@pytest.mark.parametrize("stem,name,impl,source", [pytest.param(*r, id=f"{r[0]}.{r[1]}:{r[3]}")
                                                   for r in FORWARD_ONLY])
def test_torch_prims_reference_passes_every_forward_case(stem, name, impl, source):
    assert_all_pass(stem, name, impl, forward_only=True)


# -- torch's optimizers, single-tensor code ------------------------------------------------------

SINGLE_TENSOR = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "Adamax", "ASGD", "Rprop"]


def single_tensor(name: str):
    """torch.optim.<name> made to run its single-tensor function (foreach=False)."""
    base = getattr(torch.optim, name)

    class SingleTensor(base):
        def __init__(self, params, **options):
            super().__init__(params, foreach=False, **options)

    SingleTensor.__name__ = name
    return SingleTensor


@pytest.mark.parametrize("name", SINGLE_TENSOR)
def test_torch_single_tensor_optimizer_gets_full_marks(name, monkeypatch):
    module = importlib.import_module(f"torch.optim.{name.lower()}")
    kernel = f"_single_tensor_{name.lower()}"
    calls = []
    original = getattr(module, kernel)
    monkeypatch.setattr(module, kernel, lambda *a, **k: calls.append(1) or original(*a, **k))
    assert_all_pass("optimizers", name, single_tensor(name))
    assert calls, f"{kernel} never ran"


@pytest.mark.parametrize("name", ["SparseAdam", "LBFGS"])
def test_torch_optimizer_without_foreach_gets_full_marks(name):
    assert_all_pass("optimizers", name, getattr(torch.optim, name))


# -- from-scratch code in its real forms: right ones at full marks, wrong ones with their hints ------

def _textbook_softmax(input, dim):
    e = torch.exp(input)
    return e / e.sum(dim, keepdim=True)


def _bce_logits_clamp_abs(input, target, weight=None, reduction="mean", pos_weight=None):
    log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    loss = (1 - target) * input + log_weight * (torch.log1p(torch.exp(-input.abs())) + (-input).clamp(min=0))
    loss = loss if weight is None else loss * weight
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


class AdamNoBiasCorrection(torch.optim.Optimizer):
    """Adam as often written from scratch: m and v, no bias correction."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + group["weight_decay"] * p
                st = self.state[p]
                if not st:
                    st["m"], st["v"], st["vmax"] = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                v = torch.maximum(st["vmax"], st["v"], out=st["vmax"]) if group["amsgrad"] else st["v"]
                p.sub_(group["lr"] * st["m"] / (v.sqrt() + group["eps"]))


class Adagrad(torch.optim.Optimizer):
    """Adagrad the way a textbook writes it: no eps argument (eps fixed inside the square
    root), p[:] updates: several mistakes, each to get its hint."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"], st["s"] = 0, torch.full_like(p, group["initial_accumulator_value"])
                st["step"] += 1
                g = p.grad + group["weight_decay"] * p
                lr = group["lr"] / (1 + (st["step"] - 1) * group["lr_decay"])
                st["s"] += g * g
                p[:] = p - lr * g / torch.sqrt(st["s"] + 1e-6)


WRONG = [
    ("final_layers", "softmax", _textbook_softmax, ["no-max-subtracted"]),
    ("losses", "binary_cross_entropy_with_logits", _bce_logits_clamp_abs, ["clamp-abs-gradient-at-zero"]),
    ("final_layers", "sigmoid", lambda input: torch.where(input >= 0, 1 / (1 + torch.exp(-input.abs())),
                                                          torch.exp(-input.abs()) / (1 + torch.exp(-input.abs()))),
     ["abs-gradient-at-zero"]),
    ("losses", "l1_loss", lambda input, target, reduction="mean": {
        "none": lambda d: d, "mean": torch.mean, "sum": torch.sum}[reduction](((input - target) ** 2).sqrt()),
     ["sqrt-of-square"]),
    ("optimizers", "Adam", AdamNoBiasCorrection, ["no-bias-correction"]),
    # its eps inside the square root is 1e-6 and cannot be set: invisible next to the gradients' squares
    ("optimizers", "Adagrad", Adagrad, ["no-eps-argument", "p-slice-update"]),
]


@pytest.mark.parametrize("stem,name,impl,expected", [pytest.param(*w, id=f"{w[0]}.{w[1]}:{'+'.join(w[3])}")
                                                     for w in WRONG])
def test_from_scratch_mistake_loses_points_with_a_hint_per_bug(stem, name, impl, expected):
    verdicts = judge(stem, name, impl)
    assert not all(v.passed for v in verdicts)
    matched = {m for v in verdicts for m, _ in v.matched()}
    assert set(expected) <= matched, f"expected hints for {expected}, matched {sorted(matched)}"


def _softmax_with_shift(input, dim):
    e = torch.exp(input - input.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def _bce_logits_logaddexp(input, target, weight=None, reduction="mean", pos_weight=None):
    pw = 1 if pos_weight is None else pos_weight
    zero = torch.zeros_like(input)
    loss = pw * target * torch.logaddexp(zero, -input) + (1 - target) * torch.logaddexp(zero, input)
    loss = loss if weight is None else loss * weight
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


RIGHT = [
    ("final_layers", "softmax", _softmax_with_shift),
    ("losses", "binary_cross_entropy_with_logits", _bce_logits_logaddexp),
    ("losses", "l1_loss", lambda input, target, reduction="mean": {
        "none": lambda d: d, "mean": torch.mean, "sum": torch.sum}[reduction]((input - target).abs())),
]


@pytest.mark.parametrize("stem,name,impl", [pytest.param(*r, id=f"{r[0]}.{r[1]}:{k}") for k, r in enumerate(RIGHT)])
def test_from_scratch_correct_code_gets_full_marks(stem, name, impl):
    assert_all_pass(stem, name, impl)
