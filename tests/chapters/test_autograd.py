"""The autograd chapter's checks, proven both ways.

1. The reference (the source notebook's solution cells) equals torch on every
   graded case and on fresh random inputs: torch.func.grad for `grad_of`,
   torch.abs's forward and derivative for `AbsFunction` (whose backward also
   passes torch.autograd.gradcheck), torch.optim.SGD for `gradient_descent`,
   torch.round with an identity backward for `straight_through_round`.
2. Every catalogued mistake loses points with its own hint (tests/test_checks.py).
3. Known-correct alternatives keep full marks.
4. Calling what the exercise asks for (torch.abs, autograd inside backward,
   torch.optim) is detected, whatever name reaches it.
"""
from __future__ import annotations

import pytest
import torch

from autograder.chapters.autograd import _abs_function
from tests.conftest import (assert_full_marks, assert_loses_points_naming, assert_reference_equals_oracle, checks_of,
                            grade_impl, grader, reference)

STEM = "autograd"


def _torch_grad_of(fn, x):
    return torch.func.grad(lambda t: fn(t).sum())(x.detach())


class _TorchAbs(torch.autograd.Function):
    """torch.abs's forward, and its derivative as torch defines it (grad * sgn(input))."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.abs(input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * input.sgn()


def _torch_descent(loss_fn, x0, lr, steps):
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=lr)
    rows = [x.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(x).backward()
        opt.step()
        rows.append(x.detach().clone())
    return torch.stack(rows)


class _TorchSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        return torch.round(input)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


TORCH = {
    "grad_of": _torch_grad_of,
    "AbsFunction": _TorchAbs,
    "gradient_descent": _torch_descent,
    "straight_through_round": _TorchSTE.apply,
}


@pytest.mark.parametrize("name", checks_of(STEM))
def test_reference_equals_torch_on_every_case(name):
    assert_reference_equals_oracle(STEM, name, TORCH[name])


@pytest.mark.parametrize("seed", range(3))
def test_reference_equals_torch_on_fresh_random_inputs(seed):
    ns = reference(STEM)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    fn = lambda t: torch.sin(t) * t.sum(0)  # noqa: E731 - each output depends on a whole column
    torch.testing.assert_close(ns["grad_of"](fn, x), _torch_grad_of(fn, x))

    leaf = x.clone().requires_grad_(True)
    ours = ns["AbsFunction"].apply(leaf)
    theirs = torch.abs(x)
    torch.testing.assert_close(ours, theirs)
    (gx,) = torch.autograd.grad(ours, leaf, torch.ones_like(ours) * 2)
    torch.testing.assert_close(gx, 2 * torch.sign(x))

    target = torch.randn(5, generator=g, dtype=torch.float64)
    loss_fn = lambda w: ((w - target) ** 4).sum() + (w ** 2).sum()  # noqa: E731
    x0 = torch.randn(5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ns["gradient_descent"](loss_fn, x0, 0.01, 7), _torch_descent(loss_fn, x0, 0.01, 7))

    torch.testing.assert_close(ns["straight_through_round"](x), torch.round(x))


def test_reference_backward_passes_gradcheck_and_has_torchs_convention_at_zero():
    fn = reference(STEM)["AbsFunction"]
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    assert torch.autograd.gradcheck(fn.apply, (x,))
    zero = torch.tensor([-1.0, 0.0, -0.0, 2.0], requires_grad=True)
    fn.apply(zero).sum().backward()
    ref = zero.detach().clone().requires_grad_(True)
    torch.abs(ref).sum().backward()
    torch.testing.assert_close(zero.grad, ref.grad)


def test_the_pages_statements_about_the_reference():
    ns = reference(STEM)
    # grad_of leaves a leaf's .grad and a plain tensor's flag alone, and answers the same twice.
    w = torch.ones(3, requires_grad=True)
    w.grad = torch.full((3,), 7.0)
    for _ in range(2):
        torch.testing.assert_close(ns["grad_of"](lambda t: (t * t).sum(), w), 2 * torch.ones(3))
    torch.testing.assert_close(w.grad, torch.full((3,), 7.0))
    # The visible test's closed form: each step multiplies x by 1 - 2 lr.
    x0 = torch.tensor([3.0, -2.0])
    traj = ns["gradient_descent"](lambda x: (x ** 2).sum(), x0, 0.25, 3)
    torch.testing.assert_close(traj, torch.stack([x0 * 0.5 ** k for k in range(4)]))
    assert not x0.requires_grad
    # Halves go to the even neighbour, as torch.round does.
    halves = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    torch.testing.assert_close(ns["straight_through_round"](halves), torch.tensor([-2.0, -2.0, -0.0, 0.0, 2.0, 2.0]))


# -- known-correct alternatives ---------------------------------------------------------------------

def _grad_of_backward_on_copy(fn, x):
    xd = x.detach().clone().requires_grad_(True)
    fn(xd).sum().backward()
    return xd.grad


def _grad_of_ones(fn, x):
    xd = x.detach().requires_grad_(True)
    out = fn(xd)
    return torch.autograd.grad(out, xd, grad_outputs=torch.ones_like(out))[0]


class _AbsSaveSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        s = torch.sign(input)
        ctx.save_for_backward(s)
        return input * s

    @staticmethod
    def backward(ctx, grad_output):
        (s,) = ctx.saved_tensors
        return grad_output * s


class _AbsMasks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.maximum(input, -input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * ((input > 0).to(grad_output.dtype) - (input < 0).to(grad_output.dtype))


class _AbsSetupContext(torch.autograd.Function):
    @staticmethod
    def forward(input):
        return torch.where(input < 0, -input, input)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return torch.where(input == 0, torch.zeros_like(grad_output), torch.where(input > 0, grad_output,
                                                                                  -grad_output))


def _descent_grad_none(loss_fn, x0, lr, steps):
    x = x0.clone().detach().requires_grad_(True)
    rows = [x0.clone()]
    for _ in range(steps):
        loss_fn(x).backward()
        with torch.no_grad():
            x.sub_(lr * x.grad)
        x.grad = None
        rows.append(x.detach().clone())
    return torch.stack(rows)


def _descent_rebind(loss_fn, x0, lr, steps):
    x = x0.detach().requires_grad_(True)
    rows = [x0.detach().clone()]
    for _ in range(steps):
        (g,) = torch.autograd.grad(loss_fn(x), x)
        x = (x - lr * g).detach().requires_grad_(True)
        rows.append(x.detach().clone())
    return torch.stack(rows)


def _descent_preallocated(loss_fn, x0, lr, steps):
    out = torch.empty((steps + 1, *x0.shape), dtype=x0.dtype, device=x0.device)
    x = x0.detach().clone().requires_grad_(True)
    out[0] = x0
    for k in range(steps):
        x.grad = None
        loss_fn(x).backward()
        with torch.no_grad():
            x -= lr * x.grad
            out[k + 1] = x
    return out


# held-out correct code in other styles

def _grad_of_vjp(fn, x):
    """torch.autograd.functional.vjp with a vector of ones made like the output."""
    out, vjp = torch.autograd.functional.vjp(fn, x.detach(), v=torch.ones_like(fn(x.detach())))
    return vjp


def _grad_of_func_vjp(fn, x):
    out, pullback = torch.func.vjp(fn, x.detach())
    return pullback(torch.ones(out.shape, dtype=out.dtype, device=out.device))[0]


class _AbsOnceDifferentiable(torch.autograd.Function):
    """The torch docs' style: once_differentiable, the sign saved as a mask product."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return input * ((input > 0).to(input.dtype) * 2 - 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * input.sign()


def _descent_d2l(loss_fn, x0, lr, steps):
    """d2l's sgd(params, lr, batch_size) style: update the parameter under no_grad, then param.grad.zero_()."""
    params = [x0.detach().clone().requires_grad_(True)]
    history = [params[0].detach().clone()]
    for _ in range(steps):
        loss_fn(params[0]).backward()
        with torch.no_grad():
            for param in params:
                param -= lr * param.grad
                param.grad.zero_()
        history.append(params[0].detach().clone())
    return torch.stack(history)


ALTERNATIVES = [
    pytest.param("grad_of", _grad_of_backward_on_copy, id="grad_of:backward-on-a-fresh-leaf"),
    pytest.param("grad_of", _grad_of_ones, id="grad_of:grad_outputs-ones"),
    pytest.param("grad_of", _torch_grad_of, id="grad_of:torch.func.grad"),
    pytest.param("AbsFunction", _AbsSaveSign, id="AbsFunction:saves-the-sign"),
    pytest.param("AbsFunction", _AbsMasks, id="AbsFunction:two-masks"),
    pytest.param("AbsFunction", _AbsSetupContext, id="AbsFunction:setup-context"),
    pytest.param("gradient_descent", _descent_grad_none, id="gradient_descent:grad-set-to-None"),
    pytest.param("gradient_descent", _descent_rebind, id="gradient_descent:autograd.grad-and-a-new-leaf"),
    pytest.param("gradient_descent", _descent_preallocated, id="gradient_descent:preallocated-rows"),
    pytest.param("straight_through_round", lambda input: input.round().detach() + input - input.detach(),
                 id="straight_through_round:plus-x-minus-detached-x"),
    pytest.param("straight_through_round", _TorchSTE.apply, id="straight_through_round:autograd.Function"),
    pytest.param("grad_of", _grad_of_vjp, id="grad_of:autograd.functional.vjp"),
    pytest.param("grad_of", _grad_of_func_vjp, id="grad_of:torch.func.vjp"),
    pytest.param("AbsFunction", _AbsOnceDifferentiable, id="AbsFunction:once-differentiable"),
    pytest.param("gradient_descent", _descent_d2l, id="gradient_descent:d2l-sgd"),
    pytest.param("straight_through_round", lambda input: input + (input.round() - input).detach(),
                 id="straight_through_round:method-round"),
]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


# -- forbidden calls ----------------------------------------------------------------------------------

class _AbsForwardCallsTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return input.abs()

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * torch.sign(input)


class _AbsBackwardByAutograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return torch.where(input > 0, input, -input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        with torch.enable_grad():
            x = input.detach().requires_grad_(True)
            return torch.autograd.grad(torch.where(x > 0, x, -x), x, grad_output)[0]


def _descent_with_sgd(loss_fn, x0, lr, steps):
    return _torch_descent(loss_fn, x0, lr, steps)


@pytest.mark.parametrize("name, call", [
    pytest.param("AbsFunction", _AbsForwardCallsTorch, id="Tensor.abs-in-forward"),
    pytest.param("AbsFunction", _AbsBackwardByAutograd, id="autograd.grad-in-backward"),
    pytest.param("gradient_descent", _descent_with_sgd, id="torch.optim.SGD"),
])
def test_calling_what_the_exercise_asks_for_scores_zero_with_a_message(name, call):
    result = grade_impl(STEM, name, call)
    assert result.points == 0
    assert any("the torch function this exercise asks you to write" in v.message for v in result.cases)


def test_a_stub_scores_zero_and_says_not_implemented():
    def stub(fn, x):
        raise NotImplementedError()

    result = grade_impl(STEM, "grad_of", stub)
    assert result.points == 0
    assert all("NotImplementedError" in v.message for v in result.cases)


def test_grad_of_on_the_callers_tensor_fails_for_a_plain_tensor():
    # autograd.grad on x itself raises when x does not require grad: the plain-tensor cases fail.
    result = grade_impl(STEM, "grad_of", lambda fn, x: torch.autograd.grad(fn(x).sum(), x)[0])
    plain = [v for v in result.cases if "plain tensor" in v.label and not v.label.startswith("on the meta")]
    assert plain and not any(v.passed for v in plain)
    assert 0 < result.points < result.max_points


# -- held-out code with one bug each ----------------------------------------------------------------

def _grad_of_ones_on_the_cpu(fn, x):
    xd = x.detach().requires_grad_(True)
    out = fn(xd)
    return torch.autograd.grad(out, xd, grad_outputs=torch.ones(out.shape, dtype=out.dtype))[0]


def _descent_rows_on_the_cpu():
    """_descent_preallocated with its rows made without device=: on a GPU they stay on the CPU."""
    import inspect

    source = inspect.getsource(_descent_preallocated).replace(", device=x0.device)", ")")
    namespace = {"torch": torch}
    exec(source, namespace)
    return namespace["_descent_preallocated"]


class _AbsGradInForward(torch.autograd.Function):
    """autograd run inside forward to get the sign: forbidden there too, as the statement says."""

    @staticmethod
    def forward(ctx, input):
        with torch.enable_grad():
            x = input.detach().requires_grad_(True)
            ctx.save_for_backward(torch.autograd.grad(torch.where(x > 0, x, -x).sum(), x)[0])
        return torch.where(input > 0, input, -input)

    backward = staticmethod(lambda ctx, grad_output: grad_output * ctx.saved_tensors[0])


class _AbsKeptOnCtx(torch.autograd.Function):
    forward = staticmethod(lambda ctx, input: (setattr(ctx, "sign", torch.sign(input)), input * ctx.sign)[1])
    backward = staticmethod(lambda ctx, grad_output: grad_output * ctx.sign)


HELD_OUT_WRONG = {  # name -> (check, code, a mistake's name, "device-bound", or what a failing case says)
    "grad_of:ones-on-the-cpu": ("grad_of", _grad_of_ones_on_the_cpu, "device-bound"),
    "grad_of:answer-moved-to-the-cpu": ("grad_of", lambda fn, x: _grad_of_ones(fn, x).cpu(), "device-bound"),
    "gradient_descent:rows-moved-to-the-cpu": ("gradient_descent", lambda loss_fn, x0, lr, steps: _descent_d2l(
        loss_fn, x0, lr, steps).to("cpu"), "device-bound"),
    "gradient_descent:rows-on-the-cpu": ("gradient_descent", _descent_rows_on_the_cpu(), "device-bound"),
    "AbsFunction:backward-on-the-cpu": ("AbsFunction", _abs_function("input", lambda g, x: g * torch.sign(x.cpu())),
                                        "device-bound"),
    "AbsFunction:grad-in-forward": ("AbsFunction", _AbsGradInForward, "the torch function this exercise asks"),
    "AbsFunction:kept-on-ctx": ("AbsFunction", _AbsKeptOnCtx, "not-saved-for-backward"),
    "gradient_descent:snapshots-through-the-cpu": ("gradient_descent", lambda loss_fn, x0, lr, steps: _descent_d2l(
        loss_fn, x0.cpu().to(x0.device), lr, steps), "fine"),
    "straight_through_round:rounded-on-the-cpu": ("straight_through_round",
                                                  lambda input: input + (input.cpu().round().to(input.device)
                                                                         - input).detach(), "fine"),
}


@pytest.mark.parametrize("name", list(HELD_OUT_WRONG))
def test_held_out_wrong_code_loses_points_naming_its_bug(name):
    check, impl, bug = HELD_OUT_WRONG[name]
    if bug == "fine":  # moved to the CPU and back: correct on a GPU too
        assert_full_marks(STEM, check, impl)
    else:
        assert_loses_points_naming(STEM, check, impl, bug)


DEVICE_CASES = {"grad_of": ["meta"], "AbsFunction": ["meta", "simulated CUDA"], "gradient_descent": ["meta"],
                "straight_through_round": ["meta", "simulated CUDA"]}


def test_the_device_cases_of_every_check():
    """grad_of and gradient_descent run autograd inside the graded code, which a simulated GPU cannot:
    their device case is on meta, where grad_of's output is not a scalar (a CPU-made gradient for it meets
    the meta output)."""
    p = grader(STEM).prepared
    kinds = {name: [("simulated CUDA" if c.fake_cuda else "meta") for c in q.cases if c.shape_only]
             for name, q in p.items()}
    assert kinds == DEVICE_CASES
    meta = next(c for c in p["grad_of"].cases if c.shape_only)
    assert "not a scalar" in meta.label or meta.kwargs["fn"] in ("square", "sigmoid", "times_sum", "row_norms")
