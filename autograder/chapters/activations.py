"""Checks for the `activations` chapter.

The functions mirror torch.nn.functional (sigmoid, tanh, relu, leaky_relu,
gelu, softmax), PReLU mirrors torch.nn.PReLU, and two activations are
written as torch.autograd.Functions with a hand-written backward (the
diagnostics of deep networks are in deep_networks.py). Known mistakes are written as the wrong code a
student would write; the tests prove each check both ways
(tests/chapters/test_activations.py).

Where a function has a kink (ReLU, LeakyReLU at 0) torch's convention for
the gradient decides: relu'(0) = 0, leaky_relu'(0) = negative_slope.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import randn
from autograder.probes import FunctionProbe
from autograder.probes.activation_module import ActivationModuleProbe
from autograder.probes.autograd_function import AutogradFunctionProbe
from autograder.probes.helpers import WithHelpers, course_sigmoid


def _dt(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _label(shape, dtype, **kw) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return f"input of shape {tuple(shape)} ({_dt(dtype)}){', ' + opts if opts else ''}"


EXTREME = [-1000.0, -88.0, -20.0, -1.5, 1.5, 20.0, 88.0, 1000.0]
AT_ZERO = [-1.0, 0.0, 0.0, 2.0]


def _unary_cases(gen, *, device, dtype, extra_kwargs=({},)):
    """Random inputs of three shapes (moderate and saturating scales), inputs of
    ±1000, and inputs exactly 0 (where a kink's gradient is a convention)."""
    cases = []
    shapes = [((7,), 1.0), ((3, 4), 3.0), ((2, 3, 4), 6.0)]
    for kw in extra_kwargs:
        for shape, scale in shapes:
            x = randn(gen, *shape, dtype=dtype, device=device, scale=scale)
            cases.append(Case(_label(shape, dtype, **kw), (x,), dict(kw), dtype))
        big = torch.tensor(EXTREME, dtype=dtype, device=device)
        cases.append(Case(_label(big.shape, dtype, **kw, values="extreme (±1000)"), (big,), dict(kw), dtype,
                          edge="extreme"))
        zero = torch.tensor(AT_ZERO, dtype=dtype, device=device)
        cases.append(Case(_label(zero.shape, dtype, **kw, values="exactly 0 among them"), (zero,), dict(kw), dtype,
                          edge="zero"))
    return cases


# -- elementary pieces the mistakes are built from (no forbidden calls) ----------

def _stable_sigmoid(x):
    e = torch.exp(torch.where(x >= 0, -x, x))  # exp(-|x|), never overflows
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _stable_tanh(x):
    e = torch.exp(torch.where(x >= 0, -2 * x, 2 * x))  # exp(-2|x|)
    t = (1 - e) / (1 + e)
    return torch.where(x >= 0, t, -t)


# -- sigmoid ---------------------------------------------------------------------

_OVERFLOW_HINT_SIGMOID = (
    "exp overflows: exp(-x) is inf for x = -1000 (and exp(x) for x = +1000), which gives nan in the value or "
    "in the gradient. Compute e = exp(-|x|), which lies in (0, 1], and return 1 / (1 + e) where x >= 0 and "
    "e / (1 + e) where x < 0.")

SIGMOID = Check(
    name="sigmoid",
    target="sigmoid",
    make_cases=_unary_cases,
    probe=FunctionProbe(guarded=(course_sigmoid,)),  # SigmoidFunction's stand-in for it
    forbidden=("sigmoid", "sigmoid_", "special_expit", "log_sigmoid", "silu", "tanh", "tanh_"),
    mistakes=(
        Mistake("overflow-for-negative-inputs", _OVERFLOW_HINT_SIGMOID,
                lambda input: 1 / (1 + torch.exp(-input))),
        Mistake("overflow-for-positive-inputs", _OVERFLOW_HINT_SIGMOID,
                lambda input: torch.exp(input) / (1 + torch.exp(input))),
        Mistake("where-over-unsafe-branches",
                "torch.where computes both branches, and the gradient of the branch it did not pick is still "
                "multiplied in: 0 * inf = nan. Make both branches safe by computing them from e = exp(-|x|).",
                lambda input: torch.where(input >= 0, 1 / (1 + torch.exp(-input)),
                                          torch.exp(input) / (1 + torch.exp(input)))),
        Mistake("abs-kills-gradient-at-zero",
                "At x = 0 your gradient is 0 instead of 0.25: torch gives |x| the gradient 0 at 0. Get exp(-|x|) "
                "as exp(torch.where(x >= 0, -x, x)), whose gradient is right at 0.",
                lambda input: torch.where(input >= 0, 1 / (1 + torch.exp(-input.abs())),
                                          torch.exp(-input.abs()) / (1 + torch.exp(-input.abs())))),
        Mistake("sign-flipped", "sigmoid(x) = 1 / (1 + exp(-x)): it increases from 0 to 1; yours is sigmoid(-x).",
                lambda input: _stable_sigmoid(-input)),
    ),
)


# -- tanh --------------------------------------------------------------------------

TANH = Check(
    name="tanh",
    target="tanh",
    make_cases=_unary_cases,
    probe=FunctionProbe(),
    forbidden=("tanh", "tanh_", "sigmoid", "sigmoid_", "special_expit", "hardtanh"),
    mistakes=(
        Mistake("overflow", "(exp(x) - exp(-x)) / (exp(x) + exp(-x)) is inf / inf = nan for x = ±1000. Use only "
                "e = exp(-2|x|) in (0, 1]: tanh(|x|) = (1 - e) / (1 + e), with the sign of x.",
                lambda input: (torch.exp(input) - torch.exp(-input)) / (torch.exp(input) + torch.exp(-input))),
        Mistake("sigmoid-of-x-not-2x", "tanh(x) = 2 * sigmoid(2x) - 1: the argument of the sigmoid is 2x "
                "(2 * sigmoid(x) - 1 is tanh(x / 2)).", lambda input: 2 * _stable_sigmoid(input) - 1),
        Mistake("abs-kills-gradient-at-zero",
                "At x = 0 your gradient is 0 instead of 1: torch gives |x| and sign(x) the gradient 0 at 0. "
                "Get exp(-2|x|) as exp(torch.where(x >= 0, -2 * x, 2 * x)) and pick the sign with torch.where.",
                lambda input: torch.sign(input) * (1 - torch.exp(-2 * input.abs())) / (1 + torch.exp(-2 * input.abs()))),
        Mistake("where-over-unsafe-branches",
                "torch.where computes both branches, and the gradient of the branch it did not pick is still "
                "multiplied in: 0 * inf = nan. Make both branches safe by computing them from e = exp(-2|x|).",
                lambda input: torch.where(input >= 0, (1 - torch.exp(-2 * input)) / (1 + torch.exp(-2 * input)),
                                          (torch.exp(2 * input) - 1) / (torch.exp(2 * input) + 1))),
    ),
)


# -- relu --------------------------------------------------------------------------

_RELU_FAMILY = ("relu", "relu_", "relu6", "_threshold", "threshold", "threshold_", "leaky_relu", "leaky_relu_",
                "prelu", "_prelu_kernel", "rrelu", "rrelu_", "hardtanh", "hardtanh_")

RELU = Check(
    name="relu",
    target="relu",
    make_cases=_unary_cases,
    probe=FunctionProbe(),
    forbidden=_RELU_FAMILY,
    mistakes=(
        Mistake("clamp-gradient-at-zero",
                "At exactly 0 torch's relu has gradient 0, but clamp(min=0) passes gradient 1 there. "
                "Use torch.where(input > 0, input, 0) or input * (input > 0).",
                lambda input: input.clamp(min=0)),
        Mistake("maximum-gradient-at-zero",
                "At exactly 0 torch's relu has gradient 0, but torch.maximum splits the gradient of a tie in half "
                "(0.5). Use torch.where(input > 0, input, 0) or input * (input > 0).",
                lambda input: torch.maximum(input, torch.zeros_like(input))),
        Mistake("mask-not-values", "relu(x) is x where x > 0 (and 0 elsewhere), not the 0/1 mask (x > 0): "
                "multiply the mask by the input.", lambda input: (input > 0).to(input.dtype)),
        Mistake("absolute-value", "relu(x) is 0 for negative x, not |x|.", lambda input: input.abs()),
    ),
)


# -- leaky_relu ----------------------------------------------------------------------

_SLOPES = ({}, {"negative_slope": 0.1}, {"negative_slope": 0.2})


def _leaky_cases(gen, *, device, dtype):
    return _unary_cases(gen, device=device, dtype=dtype, extra_kwargs=_SLOPES)


def _leaky(input, negative_slope=0.01):
    return torch.where(input > 0, input, negative_slope * input)


LEAKY_RELU = Check(
    name="leaky_relu",
    target="leaky_relu",
    make_cases=_leaky_cases,
    probe=FunctionProbe(),
    forbidden=("leaky_relu", "leaky_relu_", "rrelu", "rrelu_", "prelu", "_prelu_kernel"),
    mistakes=(
        Mistake("slope-ignored", "Use the argument negative_slope for the negative side (0.01 is only its "
                "default).", lambda input, negative_slope=0.01: _leaky(input, 0.01)),
        Mistake("plain-relu", "LeakyReLU keeps a small slope for x < 0: negative_slope * x, not 0.",
                lambda input, negative_slope=0.01: torch.where(input > 0, input, torch.zeros_like(input))),
        Mistake("identity-at-zero",
                "At exactly 0 torch's leaky_relu takes the negative side (gradient negative_slope): it tests "
                "input > 0, not input >= 0.",
                lambda input, negative_slope=0.01: torch.where(input >= 0, input, negative_slope * input)),
        Mistake("maximum-gradient-at-zero",
                "At exactly 0 torch.maximum(x, slope * x) splits the gradient of the tie in half; torch's "
                "leaky_relu has gradient negative_slope there. Use torch.where(input > 0, ...).",
                lambda input, negative_slope=0.01: torch.maximum(input, negative_slope * input)),
        Mistake("slope-on-positive-side", "The slope multiplies the negative inputs; positive inputs pass "
                "unchanged.", lambda input, negative_slope=0.01: torch.where(input > 0, negative_slope * input,
                                                                             input)),
    ),
)


# code with two mistakes at once: a hint for each (checks.combined)
LEAKY_RELU = replace(LEAKY_RELU, mistakes=LEAKY_RELU.mistakes + (combined(
    lambda input, negative_slope=0.01: torch.where(input >= 0, input, 0.01 * input),
    *(m for m in LEAKY_RELU.mistakes if m.name in ("slope-ignored", "identity-at-zero"))),))


# -- gelu ------------------------------------------------------------------------------

def _gelu_cases(gen, *, device, dtype):
    cases = []
    for kw in ({}, {"approximate": "none"}, {"approximate": "tanh"}):
        for shape, scale in [((7,), 1.0), ((3, 4), 2.0)]:
            x = randn(gen, *shape, dtype=dtype, device=device, scale=scale)
            cases.append(Case(_label(shape, dtype, **kw), (x,), dict(kw), dtype))
        # Where the exact GELU and its tanh approximation differ most (|x| near 2 to 3).
        mid = torch.tensor([-3.0, -2.7, -2.0, -1.0, 1.0, 2.0, 2.7, 3.0], dtype=dtype, device=device)
        cases.append(Case(_label(mid.shape, dtype, **kw, values="|x| in 1..3"), (mid,), dict(kw), dtype))
        big = torch.tensor(EXTREME, dtype=dtype, device=device)
        cases.append(Case(_label(big.shape, dtype, **kw, values="extreme (±1000)"), (big,), dict(kw), dtype,
                          edge="extreme"))
        zero = torch.tensor(AT_ZERO, dtype=dtype, device=device)  # gelu(0) = 0, gelu'(0) = 0.5
        cases.append(Case(_label(zero.shape, dtype, **kw, values="exactly 0 among them"), (zero,), dict(kw), dtype,
                          edge="zero"))
    return cases


def _gelu_exact(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


GELU = Check(
    name="gelu",
    target="gelu",
    make_cases=_gelu_cases,
    probe=FunctionProbe(),
    forbidden=("gelu", "gelu_"),
    mistakes=(
        Mistake("tanh-approximation-for-exact",
                "approximate='none' (the default) asks for the exact GELU, x * Phi(x) = "
                "0.5 * x * (1 + erf(x / sqrt(2))); the tanh formula is only its approximation.",
                lambda input, approximate="none": _gelu_tanh(input)),
        Mistake("exact-for-tanh-approximation",
                "approximate='tanh' asks for 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), "
                "not the exact erf formula.",
                lambda input, approximate="none": _gelu_exact(input)),
        Mistake("sigmoid-approximation",
                "x * sigmoid(1.702 x) is a third approximation, which torch does not offer: use erf "
                "(approximate='none') or the tanh formula (approximate='tanh').",
                lambda input, approximate="none": input * _stable_sigmoid(1.702 * input)),
        Mistake("erf-without-sqrt2", "Phi(x) = 0.5 * (1 + erf(x / sqrt(2))): divide by sqrt(2) inside erf.",
                lambda input, approximate="none": 0.5 * input * (1 + torch.erf(input))
                if approximate == "none" else _gelu_tanh(input)),
        Mistake("missing-half", "GELU(x) = x * Phi(x) with Phi(x) = 0.5 * (1 + erf(x / sqrt(2))): "
                "keep the factor 0.5.",
                lambda input, approximate="none": 2 * (_gelu_exact(input) if approximate == "none"
                                                       else _gelu_tanh(input))),
    ),
)


# -- softmax -----------------------------------------------------------------------------

def _softmax_cases(gen, *, device, dtype):
    cases = []
    x = randn(gen, 4, 6, dtype=dtype, device=device, scale=2.0)
    for dim in (1, 0, -1):
        cases.append(Case(_label((4, 6), dtype, dim=dim), (x,), {"dim": dim}, dtype))
    sq = randn(gen, 5, 5, dtype=dtype, device=device, scale=2.0)
    cases.append(Case(_label((5, 5), dtype, dim=1), (sq,), {"dim": 1}, dtype))
    y = randn(gen, 2, 3, 5, dtype=dtype, device=device, scale=3.0)
    cases.append(Case(_label((2, 3, 5), dtype, dim=1), (y,), {"dim": 1}, dtype))
    v = randn(gen, 6, dtype=dtype, device=device)
    cases.append(Case(_label((6,), dtype, dim=0), (v,), {"dim": 0}, dtype))
    big = torch.tensor([[1000.0, 0.0, -1000.0], [-1000.0, -999.0, -1001.0], [500.0, 500.0, 499.0]],
                       dtype=dtype, device=device)
    for dim in (1, 0):
        cases.append(Case(_label((3, 3), dtype, dim=dim, logits="extreme (±1000)"), (big,), {"dim": dim}, dtype,
                          edge="extreme"))
    # a row of zero logits (uniform probabilities) and zeros among others
    zero = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 2.0]], dtype=dtype, device=device)
    cases.append(Case(_label((2, 4), dtype, dim=1, logits="zero logits"), (zero,), {"dim": 1}, dtype, edge="zero"))
    return cases


def _softmax_along(x, dim):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


SOFTMAX = Check(
    name="softmax",
    target="softmax",
    make_cases=_softmax_cases,
    probe=FunctionProbe(),
    forbidden=("softmax", "_softmax", "special_softmax", "log_softmax", "_log_softmax", "special_log_softmax",
               "logsumexp", "softmin", "gumbel_softmax"),
    mistakes=(
        Mistake("no-max-subtracted", "exp overflows for large inputs (exp(1000) is inf, and inf / inf is nan): "
                "subtract the maximum along `dim` first; softmax(x) = softmax(x - max(x)).",
                lambda input, dim: torch.exp(input) / torch.exp(input).sum(dim, keepdim=True)),
        Mistake("last-dim-only", "Normalise along `dim`, the argument, not always the last dimension.",
                lambda input, dim: _softmax_along(input, -1)),
        Mistake("normalised-over-everything", "Sum along `dim` only: each slice along `dim` sums to 1, not the "
                "whole tensor.", lambda input, dim: torch.exp(input - input.max()) / torch.exp(
                    input - input.max()).sum()),
        Mistake("no-keepdim", "Reduce with keepdim=True, so that the sum broadcasts back along `dim`; without it "
                "a square input is divided along the wrong dimension.",
                lambda input, dim: torch.exp(input - input.amax(dim, keepdim=True))
                / torch.exp(input - input.amax(dim, keepdim=True)).sum(dim)),
    ),
)


# -- PReLU -----------------------------------------------------------------------------------

def _prelu_cases(gen, *, device, dtype):
    cases = []
    for kwargs, shape in [({}, (7,)), ({}, (4, 5)), ({"init": 0.1}, (3, 4)),
                          ({"num_parameters": 3}, (4, 3)), ({"num_parameters": 3, "init": -0.2}, (2, 3, 5)),
                          ({"num_parameters": 3, "init": 0.05}, (2, 3, 4, 3))]:
        x = randn(gen, *shape, dtype=dtype, device=device, scale=2.0)
        target = randn(gen, *shape, dtype=dtype, device=device)
        what = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "default arguments"
        cases.append(Case(f"PReLU({what}) on an input of shape {shape} ({_dt(dtype)})", (x, target), kwargs,
                          dtype))
    # inputs of exactly 0: torch takes the negative side there (the input's gradient is the slope)
    zero = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 0.5, 0.0]], dtype=dtype, device=device)
    target = randn(gen, 2, 3, dtype=dtype, device=device)
    cases.append(Case(f"PReLU(num_parameters=3, init=0.1) on an input of shape (2, 3) with exactly 0 among its "
                      f"entries ({_dt(dtype)})", (zero, target), {"num_parameters": 3, "init": 0.1}, dtype,
                      edge="zero"))
    return cases


class _PReLUBase(nn.Module):
    """The right parameter; subclasses get the forward wrong."""

    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init)))

    def slope(self, input):
        w = self.weight
        return w.reshape(1, -1, *([1] * (input.dim() - 2))) if input.dim() >= 2 else w


class _PReLUBuffer(nn.Module):
    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.register_buffer("weight", torch.full((num_parameters,), float(init)))

    def forward(self, input):
        w = self.weight.reshape(1, -1, *([1] * (input.dim() - 2))) if input.dim() >= 2 else self.weight
        return torch.where(input > 0, input, w * input)


class _PReLUScalar(nn.Module):
    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(float(init)))

    def forward(self, input):
        return torch.where(input > 0, input, self.weight * input)


class _PReLULastDim(_PReLUBase):
    def forward(self, input):
        return torch.where(input > 0, input, self.weight * input)


class _PReLUInitIgnored(_PReLUBase):
    def __init__(self, num_parameters=1, init=0.25):
        super().__init__(num_parameters, 0.25)

    def forward(self, input):
        return torch.where(input > 0, input, self.slope(input) * input)


class _PReLUIdentityAtZero(_PReLUBase):
    def forward(self, input):
        return torch.where(input >= 0, input, self.slope(input) * input)


class _PReLUReluDifference(_PReLUBase):
    def forward(self, input):
        return torch.relu(input) - self.slope(input) * torch.relu(-input)


class _PReLUDetached(_PReLUBase):
    def forward(self, input):
        return torch.where(input > 0, input, self.slope(input).detach() * input)


PRELU = Check(
    name="PReLU",
    target="PReLU",
    make_cases=_prelu_cases,
    probe=ActivationModuleProbe(),
    forbidden=("prelu", "_prelu_kernel", "leaky_relu", "leaky_relu_", "rrelu", "rrelu_"),
    mistakes=(
        Mistake("slope-not-a-parameter", "Register the slope as nn.Parameter (self.weight = "
                "nn.Parameter(...)): a plain tensor or a buffer is not in net.parameters(), so no optimizer "
                "ever updates it and .to() may not move it.", _PReLUBuffer),
        Mistake("scalar-weight", "weight has shape (num_parameters,), one slope per channel, like "
                "torch.nn.PReLU's: torch.full((num_parameters,), init).", _PReLUScalar),
        Mistake("slopes-along-last-dim", "The channels are dimension 1 of the input (N, C, ...): reshape the "
                "(C,) weight to (1, C, 1, ...) before multiplying; as it is, it broadcasts along the last "
                "dimension.", _PReLULastDim),
        Mistake("init-ignored", "Fill the weight with the argument init (0.25 is only its default).",
                _PReLUInitIgnored),
        Mistake("slope-detached", "The slope must get a gradient to learn: do not .detach() it (or use .data) "
                "in forward.", _PReLUDetached),
        Mistake("identity-at-zero", "At exactly 0 torch's PReLU takes the negative side: the input's gradient "
                "there is the slope, not 1. Test input > 0, not input >= 0.", _PReLUIdentityAtZero),
        Mistake("relu-difference-at-zero", "relu(x) - a * relu(-x) has the right values, but at exactly 0 both "
                "relus pass gradient 0, where torch's PReLU passes the slope a. Use torch.where(input > 0, input, "
                "a * input).", _PReLUReluDifference),
    ),
)


# -- autograd.Functions ---------------------------------------------------------------------

class _SigmoidReturnsForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        out = _stable_sigmoid(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        return grad_output * out


class _SigmoidOfInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return _stable_sigmoid(input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * input * (1 - input)


class _SigmoidNoUpstream(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        out = _stable_sigmoid(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        return out * (1 - out)


class _SigmoidNaiveForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        out = torch.exp(input) / (1 + torch.exp(input))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        return grad_output * out * (1 - out)


def _fn_cases(gen, *, device, dtype):
    return _unary_cases(gen, device=device, dtype=dtype)


SIGMOID_HELPER_NOTE = "with the course's sigmoid in place of yours (graded on its own: one bug costs once)"


def _sigmoid_fn_cases(gen, *, device, dtype):
    cases = _fn_cases(gen, device=device, dtype=dtype)
    return [replace(cases[0], label=f"{cases[0].label}; {SIGMOID_HELPER_NOTE}")] + cases[1:]


_BACKWARD_RETURNS_FORWARD = ("backward returns the derivative times grad_output, not the forward's value: "
                             "for sigmoid that is grad_output * s * (1 - s), with s = sigmoid(input) saved in "
                             "forward by ctx.save_for_backward.")

SIGMOID_FUNCTION = Check(
    name="SigmoidFunction",
    target="SigmoidFunction",
    make_cases=_sigmoid_fn_cases,
    # the notebook's SigmoidFunction may call its sigmoid: it gets the course's (one bug costs once)
    probe=WithHelpers(AutogradFunctionProbe(), (("sigmoid", course_sigmoid),)),
    forbidden=("sigmoid", "sigmoid_", "special_expit", "log_sigmoid", "sigmoid_backward", "grad", "backward",
               "tanh", "tanh_"),
    stated=(r"the course's own sigmoid",),
    mistakes=(
        Mistake("backward-returns-forward", _BACKWARD_RETURNS_FORWARD, _SigmoidReturnsForward),
        Mistake("derivative-of-the-input", "sigmoid's derivative is s * (1 - s) with s = sigmoid(x), the "
                "forward's output, not x * (1 - x): save the output in forward and use it in backward.",
                _SigmoidOfInput),
        Mistake("upstream-gradient-dropped", "Multiply the local derivative by grad_output (the chain rule): "
                "backward returns grad_output * s * (1 - s).", _SigmoidNoUpstream),
        Mistake("forward-overflows", _OVERFLOW_HINT_SIGMOID, _SigmoidNaiveForward),
    ),
)


class _ReLUReturnsForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        out = torch.where(input > 0, input, torch.zeros_like(input))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        return grad_output * out


class _ReLUMaskAtZero(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.where(input > 0, input, torch.zeros_like(input))

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * (input >= 0)


class _ReLUNoUpstream(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.where(input > 0, input, torch.zeros_like(input))

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return (input > 0).to(grad_output.dtype)


RELU_FUNCTION = Check(
    name="ReLUFunction",
    target="ReLUFunction",
    make_cases=_fn_cases,
    probe=AutogradFunctionProbe(),
    forbidden=_RELU_FAMILY + ("threshold_backward", "grad", "backward"),
    mistakes=(
        Mistake("backward-returns-forward", "backward returns the derivative times grad_output, not the "
                "forward's value: ReLU's derivative is the 0/1 mask (input > 0), so return "
                "grad_output times that mask.", _ReLUReturnsForward),
        Mistake("mask-one-at-zero", "torch's convention at exactly 0 is gradient 0: the mask is input > 0, "
                "not input >= 0.", _ReLUMaskAtZero),
        Mistake("upstream-gradient-dropped", "Multiply the mask by grad_output (the chain rule): backward "
                "returns grad_output times the mask (input > 0).", _ReLUNoUpstream),
    ),
)


CHECKS = [SIGMOID, TANH, RELU, LEAKY_RELU, GELU, SOFTMAX, PRELU, SIGMOID_FUNCTION, RELU_FUNCTION]
