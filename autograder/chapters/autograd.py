"""Checks for the `autograd` chapter: what the later chapters take for granted.

`grad_of` returns a gradient with torch.autograd.grad and leaves its argument
as it was (the later chapters' visible tests use such a helper);
`AbsFunction` is a torch.autograd.Function with a hand-written backward,
graded at exactly 0 where torch's convention decides (abs'(0) = 0);
`gradient_descent` is the loop every training loop grows from: backward,
an update under torch.no_grad(), and the gradient zeroed before the next step;
`straight_through_round` is the detach trick: the forward value of one
expression with the gradient of another. Known mistakes are the wrong code a
student would write; tests/chapters/test_autograd.py proves each check both ways.

Device cases: grad_of and gradient_descent run autograd inside the graded code,
which the simulated GPU cannot, so their device case is on meta, where copies
to the CPU behave as on a GPU (probes/gradient.MetaToCpu) and grad_of's output
is not a scalar (a gradient made for it on the CPU meets it there); AbsFunction
runs its backward on meta the same way, and its forward on the simulated GPU.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import torch

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import randn
from autograder.probes import FunctionProbe
from autograder.probes.autograd_function import AutogradFunctionProbe
from autograder.probes.gradient import DescentProbe, GradOfProbe, describe_function, describe_problem


def _dt(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _randn(gen, shape, **kw):
    """randn of any shape, () included."""
    return randn(gen, max(1, math.prod(shape)), **kw).reshape(shape)


# -- grad_of: the gradient of fn(x).sum(), x left as it was ------------------------------------

_STATES = {"plain": "x a plain tensor (requires_grad=False)",
           "leaf": "x a leaf with requires_grad=True whose .grad already holds 7s",
           "non-leaf": "x a non-leaf (x = 1.0 * base, base requires grad)"}


def _grad_of_cases(gen, *, device, dtype):
    cases = []
    # the first case (of which the meta case is a copy) has a non-scalar output: a gradient made for it on the
    # CPU (grad_outputs=torch.ones(out.shape)) meets a meta output there, as it would meet a GPU's
    specs = [("square", (3, 4), "plain"), ("cube_sum", (5,), "plain"), ("sigmoid", (6,), "plain"),
             ("times_sum", (4,), "plain"), ("row_norms", (3, 5), "plain"), ("exp_mean", (2, 3), "plain"),
             ("square", (4,), "leaf"), ("cube_sum", (2, 3), "leaf"),
             ("sigmoid", (5,), "non-leaf"), ("exp_mean", (4,), "non-leaf")]
    for fn, shape, state in specs:
        x = randn(gen, *shape, dtype=dtype, device=device)
        cases.append(Case(f"fn(x) = {describe_function(fn)}, x of shape {shape} ({_dt(dtype)}), {_STATES[state]}",
                          (), {"fn": fn, "x": x, "state": state}, dtype))
    return cases


def _grad_of_mean(fn, x):
    xd = x.detach().requires_grad_(True)
    return torch.autograd.grad(fn(xd).mean(), xd)[0]


def _grad_of_backward(fn, x):
    x.requires_grad_(True)
    fn(x).sum().backward()
    with warnings.catch_warnings():  # .grad of a non-leaf: None, with a warning
        warnings.simplefilter("ignore")
        return x.grad


def _grad_of_flag_set(fn, x):
    x.requires_grad_(True)
    return torch.autograd.grad(fn(x).sum(), x)[0]


def _grad_of_grad_reset(fn, x):
    x.requires_grad_(True)
    with warnings.catch_warnings():  # .grad of a non-leaf: None, with a warning
        warnings.simplefilter("ignore")
        x.grad = None
        fn(x).sum().backward()
        return x.grad


GRAD_OF = Check(
    name="grad_of",
    fake_cuda_case=False,  # autograd runs inside the graded code: on a simulated GPU it aborts
    target="grad_of",
    make_cases=_grad_of_cases,
    probe=GradOfProbe(),
    mistakes=(
        Mistake("mean-not-sum", "The gradient of fn(x).sum(), not of fn(x).mean(): a mean divides every entry "
                "of the gradient by the number of outputs (the two agree only when fn(x) is already a scalar).",
                _grad_of_mean),
        Mistake("backward-accumulates", "backward() adds into x.grad, so a second call returns twice the gradient "
                "(and it changes the caller's x). Take the gradient with torch.autograd.grad on a detached copy of x "
                "that requires grad: it returns the gradient and touches no .grad.",
                _grad_of_backward),
        Mistake("callers-tensor-changed", "x.requires_grad_(True) switches on gradient tracking for the caller's "
                "own tensor, which stays that way after grad_of returns. Work on a detached copy, made to "
                "require grad.", _grad_of_flag_set),
        Mistake("callers-grad-overwritten", "Setting x.grad = None and calling backward() replaces whatever the "
                "caller kept in x.grad (and sets x.requires_grad). torch.autograd.grad on a detached copy "
                "returns the gradient without touching the caller's tensor.", _grad_of_grad_reset),
    ),
)


# -- AbsFunction: |x| with a hand-written backward -----------------------------------------------

AT_ZERO = [-1.5, 0.0, 0.0, 2.0, -0.0]
EXTREME = [-1e4, -3.0, 3.0, 1e4]


def _abs_cases(gen, *, device, dtype):
    cases = []
    for shape in [(7,), (3, 4), (2, 3, 4)]:
        x = randn(gen, *shape, dtype=dtype, device=device, scale=2.0)
        cases.append(Case(f"input of shape {shape} ({_dt(dtype)})", (x,), {}, dtype))
    zero = torch.tensor(AT_ZERO, dtype=dtype, device=device)
    cases.append(Case(f"input {AT_ZERO} ({_dt(dtype)}): exactly 0 (and -0.0) among them", (zero,), {}, dtype,
                      edge="zero"))
    big = torch.tensor(EXTREME, dtype=dtype, device=device)
    cases.append(Case(f"input {EXTREME} ({_dt(dtype)})", (big,), {}, dtype))
    return cases


def _where_abs(x):
    return torch.where(x > 0, x, -x)


def _abs_function(saves: str, derivative):
    """|x| as a torch.autograd.Function whose forward saves the input or the output
    (`saves`) and whose backward returns derivative(grad_output, saved)."""

    class AbsMistake(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            out = _where_abs(input)
            ctx.save_for_backward(out if saves == "output" else input)
            return out

        @staticmethod
        def backward(ctx, grad_output):
            (saved,) = ctx.saved_tensors
            return derivative(grad_output, saved)

    return AbsMistake


_AbsReturnsForward = _abs_function("output", lambda g, out: g * out)
_AbsOneAtZero = _abs_function("input", lambda g, input: torch.where(input >= 0, g, -g))
_AbsNoUpstream = _abs_function("input", lambda g, input: torch.sign(input))
_AbsSignOfOutput = _abs_function("output", lambda g, out: g * torch.sign(out))


class _AbsOnCtx(torch.autograd.Function):
    """The input kept as an attribute of ctx instead of ctx.save_for_backward."""

    @staticmethod
    def forward(ctx, input):
        ctx.input = input
        return _where_abs(input)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * torch.sign(ctx.input)


ABS_FUNCTION = Check(
    name="AbsFunction",
    target="AbsFunction",
    make_cases=_abs_cases,
    probe=AutogradFunctionProbe(saved=True),
    forbidden=("abs", "abs_", "absolute", "absolute_", "grad", "backward"),
    stated=(r"ctx\.save_for_backward", r"autograd itself .*in either"),
    mistakes=(
        Mistake("backward-returns-forward", "backward returns grad_output times the derivative of |x|, which is "
                "sign(x) (-1, 0 or +1), not times the forward's value |x|.", _AbsReturnsForward),
        Mistake("gradient-one-at-zero", "At exactly 0 torch's convention for |x| is gradient 0 (sign(0) = 0); "
                "yours passes the gradient there as if x were positive.", _AbsOneAtZero),
        Mistake("upstream-gradient-dropped", "Multiply the local derivative sign(x) by grad_output (the chain "
                "rule); without it the gradient ignores everything that comes after |x|.", _AbsNoUpstream),
        Mistake("sign-of-the-output", "The derivative of |x| is the sign of the input: the output |x| is never "
                "negative, so its sign is wrong for every x < 0. Save the input in forward.", _AbsSignOfOutput),
        Mistake("not-saved-for-backward", "Keep the tensors backward needs with ctx.save_for_backward, passing "
                "them to it, and read them back from ctx.saved_tensors: a tensor kept as an attribute of ctx (ctx.input = input) "
                "escapes autograd's checks (an in-place change after forward goes unnoticed) and can keep memory "
                "alive.", _AbsOnCtx),
    ),
)


# -- gradient_descent: the loop every training loop grows from ------------------------------------

def _problem_data(gen, problem, shape, dtype, device):
    if problem == "quadratic":
        return {"a": _randn(gen, shape, dtype=dtype, device=device).abs() + 0.5,
                "c": _randn(gen, shape, dtype=dtype, device=device)}
    if problem in ("least_squares", "logistic"):
        X = randn(gen, 8, shape[0], dtype=dtype, device=device)
        y = randn(gen, 8, dtype=dtype, device=device)
        return {"X": X, "y": torch.where(y > 0, 1.0, -1.0).to(dtype) if problem == "logistic" else y}
    return {}


def _descent_cases(gen, *, device, dtype):
    cases = []
    for problem, shape, lr, steps in [("quadratic", (3,), 0.3, 6), ("quadratic", (2, 3), 0.1, 4),
                                      ("least_squares", (3,), 0.05, 8), ("double_well", (4,), 0.05, 5),
                                      ("logistic", (2,), 0.5, 5), ("quadratic", (), 0.2, 3),
                                      ("quadratic", (3,), 0.3, 1), ("double_well", (2,), 0.1, 0)]:
        data = _problem_data(gen, problem, shape, dtype, device)
        x0 = _randn(gen, shape, dtype=dtype, device=device)
        label = (f"loss_fn(x) = {describe_problem(problem)}, x0 of shape {shape} ({_dt(dtype)}), "
                 f"lr={lr}, steps={steps}")
        cases.append(Case(label, (), {"problem": problem, "data": data, "x0": x0, "lr": lr, "steps": steps},
                          dtype))
    return cases


def _descend(loss_fn, x0, lr, steps, *, zero=True, sign=-1.0, snapshot=lambda x: x.detach().clone(),
             start=lambda x0: x0.detach().clone().requires_grad_(True)):
    x = start(x0)
    rows = [snapshot(x)]
    for _ in range(steps):
        loss_fn(x).backward()
        with torch.no_grad():
            x += sign * lr * x.grad
        if zero:
            x.grad.zero_()
        rows.append(snapshot(x))
    return torch.stack(rows)


GRADIENT_DESCENT = Check(
    name="gradient_descent",
    fake_cuda_case=False,  # autograd runs inside the graded code: on a simulated GPU it aborts
    target="gradient_descent",
    make_cases=_descent_cases,
    probe=DescentProbe(),
    forbidden=("_fused_sgd_",),  # and torch.optim's own code, which the probe watches
    mistakes=(
        Mistake("gradient-accumulates", "backward() adds the new gradient to x.grad: without x.grad.zero_() "
                "(or x.grad = None) after each update, step k moves by the sum of all k gradients so far.",
                lambda loss_fn, x0, lr, steps: _descend(loss_fn, x0, lr, steps, zero=False)),
        Mistake("snapshot-shares-storage", "x.detach() is the same memory as x, so the in-place updates change "
                "every row you kept: all rows end up equal to the last x. Keep x.detach().clone().",
                lambda loss_fn, x0, lr, steps: _descend(loss_fn, x0, lr, steps, snapshot=lambda x: x.detach())),
        Mistake("x0-changed-in-place", "x0.requires_grad_() and in-place updates of x0 change the caller's "
                "tensor. Start from a copy of x0 that requires grad: x0.detach().clone().requires_grad_(True).",
                lambda loss_fn, x0, lr, steps: _descend(loss_fn, x0, lr, steps,
                                                        start=lambda x0: x0.requires_grad_(True))),
        Mistake("gradient-ascent", "Descent moves against the gradient: x - lr * grad, not x + lr * grad.",
                lambda loss_fn, x0, lr, steps: _descend(loss_fn, x0, lr, steps, sign=1.0)),
    ),
)


# -- straight_through_round: round's value with the identity's gradient ---------------------------

# round jumps at the halves (ties go to the even neighbour); at exactly 0 (and -0.0) its value is 0 and the
# straight-through gradient is 1 there too
HALVES = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -0.51, 0.0, -0.0]


def _ste_cases(gen, *, device, dtype):
    cases = []
    for shape, scale in [((7,), 2.0), ((3, 4), 5.0), ((2, 3, 4), 3.0)]:
        x = randn(gen, *shape, dtype=dtype, device=device, scale=scale)
        cases.append(Case(f"input of shape {shape} ({_dt(dtype)})", (x,), {}, dtype))
    halves = torch.tensor(HALVES, dtype=dtype, device=device)
    cases.append(Case(f"input {HALVES} ({_dt(dtype)}): halves round to the even neighbour, exactly 0 stays 0",
                      (halves,), {}, dtype, edge="zero"))
    return cases


STRAIGHT_THROUGH_ROUND = Check(
    name="straight_through_round",
    target="straight_through_round",
    make_cases=_ste_cases,
    probe=FunctionProbe(),
    mistakes=(
        Mistake("correction-not-detached", "x + (torch.round(x) - x) has round's gradient, 0 (1 from x, -1 from "
                "the correction): detach the correction, so that only x carries a gradient.",
                lambda input: input + (torch.round(input) - input)),
        Mistake("whole-output-detached", "Detaching the whole result cuts it from the graph: no gradient "
                "reaches the input at all. Detach only the correction round(x) - x.",
                lambda input: (input + (torch.round(input) - input)).detach()),
        Mistake("wrong-term-detached", "Detach the correction round(x) - x, not x: with x detached the gradient "
                "comes from -x and is -1 instead of 1.",
                lambda input: input.detach() + (torch.round(input) - input)),
        Mistake("rounds-half-up", "floor(x + 0.5) rounds halves up; torch.round rounds them to the even "
                "neighbour (2.5 to 2, -0.5 to -0, 1.5 to 2). Use torch.round.",
                lambda input: input + (torch.floor(input + 0.5) - input).detach()),
    ),
)


# code with two mistakes at once: a hint for each (checks.combined)
STRAIGHT_THROUGH_ROUND = replace(STRAIGHT_THROUGH_ROUND, mistakes=STRAIGHT_THROUGH_ROUND.mistakes + (combined(
    lambda input: input + (torch.floor(input + 0.5) - input),
    *(m for m in STRAIGHT_THROUGH_ROUND.mistakes if m.name in ("correction-not-detached", "rounds-half-up"))),))


CHECKS = [GRAD_OF, ABS_FUNCTION, GRADIENT_DESCENT, STRAIGHT_THROUGH_ROUND]
