"""Checks for the `tensors` warm-up: each function mirrors its torch namesake.

`mm` is a matrix product written with broadcasting and a sum, `mean` a
reduction along `dim` with `keepdim`, `amax` a maximum along `dim` whose
gradient follows torch's rule at ties (shared equally among the tied
entries), `relu` and `sigmoid` elementwise
functions from elementary operations, graded at exactly 0 too (relu's kink,
where torch's gradient is 0). Known mistakes are the wrong code a
student would write; tests/chapters/test_tensors.py proves each check both ways.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import randn
from autograder.probes import FunctionProbe


def _label(*shapes, dtype, **kw) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    what = " and ".join(str(tuple(s)) for s in shapes)
    kind = "inputs" if len(shapes) > 1 else "input"
    return f"{kind} of shape {what} ({str(dtype).removeprefix('torch.')}){', ' + opts if opts else ''}"


# -- mm: a matrix product from broadcasting and a sum ---------------------------

def _mm_cases(gen, *, device, dtype):
    cases = []
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype, device=device)
    b = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=dtype, device=device)
    cases.append(Case(_label((2, 2), (2, 2), dtype=dtype, note="the page's a and b"), (a, b), {}, dtype))
    for n, k, m in [(3, 3, 3), (3, 4, 5), (1, 6, 1), (5, 1, 3), (4, 7, 2)]:
        x = randn(gen, n, k, dtype=dtype, device=device)
        y = randn(gen, k, m, dtype=dtype, device=device)
        cases.append(Case(_label((n, k), (k, m), dtype=dtype), (x, y), {}, dtype))
    return cases


def _bmm_sum(input, mat2, dim):
    return (input[:, :, None] * mat2[None, :, :]).sum(dim)


MM = Check(
    name="mm",
    target="mm",
    make_cases=_mm_cases,
    probe=FunctionProbe(grad=(("input", 0), ("mat2", 1))),
    forbidden=("mm", "matmul", "__matmul__", "__rmatmul__", "bmm", "einsum", "tensordot", "dot", "vdot",
               "mv", "addmm", "addmv", "addbmm", "baddbmm", "linear", "inner", "chain_matmul", "multi_dot"),
    mistakes=(
        Mistake("elementwise-product", "input * mat2 multiplies element by element; the matrix product sums "
                "input[i, k] * mat2[k, j] over k.", lambda input, mat2: input * mat2),
        Mistake("rows-times-rows", "Line up input's rows with mat2's columns: input[:, :, None] * mat2[None, :, :] "
                "has shape (n, k, m); input[:, None, :] * mat2[None] pairs rows with rows (input @ mat2.T).",
                lambda input, mat2: (input[:, None, :] * mat2[None, :, :]).sum(-1)),
        Mistake("summed-over-wrong-dim", "Sum over the shared dimension k (dim 1 of the (n, k, m) product), "
                "not over the rows of input.", lambda input, mat2: _bmm_sum(input, mat2, 0)),
        Mistake("transposed-result", "The result of an (n, k) by (k, m) product has shape (n, m); yours is "
                "its transpose.", lambda input, mat2: _bmm_sum(input, mat2, 1).T),
    ),
)


# -- mean: a reduction along a dimension ------------------------------------------

def _mean_cases(gen, *, device, dtype):
    cases = []
    x = randn(gen, 4, 5, dtype=dtype, device=device)
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            cases.append(Case(_label((4, 5), dtype=dtype, dim=dim, keepdim=keepdim), (x, dim),
                              {"keepdim": keepdim}, dtype))
    y = randn(gen, 2, 3, 4, dtype=dtype, device=device)
    for dim, keepdim in [(1, False), (1, True), (-3, True), (2, False)]:
        cases.append(Case(_label((2, 3, 4), dtype=dtype, dim=dim, keepdim=keepdim), (y, dim),
                          {"keepdim": keepdim}, dtype))
    v = randn(gen, 6, dtype=dtype, device=device)
    cases.append(Case(_label((6,), dtype=dtype, dim=0), (v, 0), {}, dtype))
    return cases


MEAN = Check(
    name="mean",
    target="mean",
    make_cases=_mean_cases,
    probe=FunctionProbe(),
    forbidden=("mean", "nanmean"),
    mistakes=(
        Mistake("keepdim-ignored", "With keepdim=True the reduced dimension stays, with size 1 "
                "(a (4, 5) input averaged over dim 1 gives (4, 1)); pass keepdim on to .sum.",
                lambda input, dim, keepdim=False: input.sum(dim) / input.shape[dim]),
        Mistake("divided-by-numel", "Divide by the number of elements along `dim` (input.shape[dim]), "
                "not by the number of elements of the whole tensor.",
                lambda input, dim, keepdim=False: input.sum(dim, keepdim=keepdim) / input.numel()),
        Mistake("last-dim-only", "Reduce along `dim`, the argument, not always the last dimension.",
                lambda input, dim, keepdim=False: input.sum(-1, keepdim=keepdim) / input.shape[-1]),
        Mistake("sum-not-mean", "A mean is the sum divided by the number of elements along `dim`.",
                lambda input, dim, keepdim=False: input.sum(dim, keepdim=keepdim)),
    ),
)


# code with two mistakes at once: a hint for each (checks.combined)
MEAN = replace(MEAN, mistakes=MEAN.mistakes + (combined(
    lambda input, dim, keepdim=False: input.sum(dim) / input.numel(),
    *(m for m in MEAN.mistakes if m.name in ("keepdim-ignored", "divided-by-numel"))),))


# -- amax: a maximum along a dimension, with torch's gradient at ties ------------------

def _amax_cases(gen, *, device, dtype):
    """Inputs with integer values, so that maxima tie: twos, threes and whole rows of equal entries."""
    cases = []
    ties = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [5.0, -1.0, 0.0]], dtype=dtype, device=device)
    for dim in (0, 1):  # a tie is amax's kink: its gradient there is torch's convention
        cases.append(Case(_label((3, 3), dtype=dtype, dim=dim, note="ties of two and three"), (ties, dim), {}, dtype,
                          edge="zero"))
    x = torch.round(randn(gen, 4, 5, dtype=dtype, device=device, scale=1.2))
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            cases.append(Case(_label((4, 5), dtype=dtype, dim=dim, keepdim=keepdim, note="rounded, with ties"),
                              (x, dim), {"keepdim": keepdim}, dtype))
    y = randn(gen, 2, 3, 4, dtype=dtype, device=device)
    for dim, keepdim in [(1, False), (-3, True), (2, True)]:
        cases.append(Case(_label((2, 3, 4), dtype=dtype, dim=dim, keepdim=keepdim), (y, dim),
                          {"keepdim": keepdim}, dtype))
    c = torch.tensor([[4.0, 5.0], [10.0, 1.0]], dtype=dtype, device=device)
    cases.append(Case(_label((2, 2), dtype=dtype, dim=1, note="the page's c"), (c, 1), {}, dtype))
    return cases


def _amax_one_winner(input, dim, keepdim=False):
    return input.max(dim=dim, keepdim=keepdim).values


def _amax_full_gradient(input, dim, keepdim=False):
    top = input.max(dim=dim, keepdim=True).values
    out = (input * (input == top)).sum(dim=dim, keepdim=True)
    out = top.detach() + out - out.detach()  # the value of the maximum, a gradient of 1 to every tied entry
    return out if keepdim else out.squeeze(dim)


def _amax_pairwise(input, dim, keepdim=False):
    out = input.select(dim, 0)
    for k in range(1, input.shape[dim]):
        out = torch.maximum(out, input.select(dim, k))
    return out.unsqueeze(dim) if keepdim else out


def _amax_keepdim_ignored(input, dim, keepdim=False):
    is_max = (input == input.max(dim=dim, keepdim=True).values).to(input.dtype)
    return (input * is_max).sum(dim=dim) / is_max.sum(dim=dim)


AMAX = Check(
    name="amax",
    target="amax",
    make_cases=_amax_cases,
    probe=FunctionProbe(),
    forbidden=("amax", "aminmax", "logsumexp"),
    mistakes=(
        Mistake("gradient-to-one-tie", "torch.max(input, dim).values sends the whole gradient to one of the "
                "tied maxima; amax shares it equally among them (1/k each for k ties). Average the input over "
                "the mask of its maxima.", _amax_one_winner),
        Mistake("gradient-not-shared", "With k tied maxima, each receives 1/k of the gradient, not all of it: "
                "divide by the number of tied entries.", _amax_full_gradient),
        Mistake("pairwise-maximum", "torch.maximum splits the gradient of a tie between its two arguments, so "
                "folding it along dim gives a three-way tie 1/4, 1/4, 1/2 instead of 1/3 each.", _amax_pairwise),
        Mistake("keepdim-ignored", "With keepdim=True the reduced dimension stays, with size 1.",
                _amax_keepdim_ignored),
        Mistake("minimum", "amax is the largest entry along dim, not the smallest.",
                lambda input, dim, keepdim=False: input.min(dim=dim, keepdim=keepdim).values),
    ),
)


# -- relu and sigmoid: elementwise, from elementary operations ----------------------

def _elementwise_cases(scale):
    def make(gen, *, device, dtype):
        cases = [Case(_label((4,), dtype=dtype, note="two positive, two negative"),
                      (torch.tensor([-2.0, -0.5, 0.5, 3.0], dtype=dtype, device=device),), {}, dtype),
                 Case(_label((2, 2), dtype=dtype, note="the page's c"),
                      (torch.tensor([[4.0, 5.0], [10.0, 1.0]], dtype=dtype, device=device),), {}, dtype)]
        for shape in [(7,), (3, 4), (2, 3, 4), ()]:
            x = randn(gen, math.prod(shape), dtype=dtype, device=device, scale=scale).reshape(shape)
            cases.append(Case(_label(shape, dtype=dtype), (x,), {}, dtype))
        # relu's kink: torch's gradient at exactly 0 is 0 (sigmoid's is 0.25)
        cases.append(Case(_label((4,), dtype=dtype, note="exactly 0 among them"),
                          (torch.tensor([-1.0, 0.0, 0.0, 2.0], dtype=dtype, device=device),), {}, dtype, edge="zero"))
        return cases
    return make


RELU = Check(
    name="relu",
    target="relu",
    make_cases=_elementwise_cases(2.0),
    probe=FunctionProbe(),
    forbidden=("relu", "relu_", "threshold", "threshold_", "relu6", "hardtanh"),
    mistakes=(
        Mistake("absolute-value", "ReLU sets negative inputs to 0; it does not flip their sign (that is abs).",
                lambda input: input.abs()),
        Mistake("mask-returned", "(input > 0) is the mask of the positive entries (ReLU's derivative); "
                "ReLU returns the input where the mask is true and 0 elsewhere.",
                lambda input: (input > 0).to(input.dtype)),
        Mistake("negative-part", "ReLU keeps the positive part max(x, 0), not the negative part min(x, 0).",
                lambda input: torch.where(input < 0, input, torch.zeros_like(input))),
        Mistake("max-reduces", "torch.max(input, 0) reduces along dimension 0 (and returns values and indices); "
                "relu is elementwise: torch.where(input > 0, input, 0).",
                lambda input: torch.max(input, 0)),
        Mistake("clamp-gradient-at-zero", "At exactly 0 torch's relu has gradient 0, but clamp(min=0) passes "
                "gradient 1 there. Use torch.where(input > 0, input, 0) or input * (input > 0).",
                lambda input: input.clamp(min=0)),
        Mistake("maximum-gradient-at-zero", "At exactly 0 torch's relu has gradient 0, but torch.maximum splits "
                "the gradient of a tie in half (0.5). Use torch.where(input > 0, input, 0) or input * (input > 0).",
                lambda input: torch.maximum(input, torch.zeros_like(input))),
    ),
)

SIGMOID = Check(
    name="sigmoid",
    target="sigmoid",
    make_cases=_elementwise_cases(3.0),
    probe=FunctionProbe(),
    forbidden=("sigmoid", "sigmoid_", "special_expit", "expit", "logsigmoid", "log_sigmoid", "softmax"),
    mistakes=(
        Mistake("sign-flipped", "sigmoid(x) = 1 / (1 + exp(-x)): the exponent is -x, so large x gives values "
                "near 1.", lambda input: 1 / (1 + torch.exp(input))),
        Mistake("minus-in-denominator", "The denominator is 1 + exp(-x), a sum, so it never reaches 0.",
                lambda input: 1 / (1 - torch.exp(-input))),
        Mistake("tanh", "tanh has range (-1, 1); sigmoid has range (0, 1): sigmoid(x) = 1 / (1 + exp(-x)).",
                lambda input: torch.tanh(input)),
    ),
)

CHECKS = [MM, MEAN, AMAX, RELU, SIGMOID]
