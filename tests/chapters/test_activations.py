"""The activations chapter's checks, proven both ways.

1. The reference (the source notebook's solution cells) equals torch, values
   and gradients, on every graded case and on fresh random inputs: torch is
   the oracle (torch.nn.PReLU for PReLU; autograd.Functions whose backward is
   torch's own derivative kernel for the hand-written backwards; the
   diagnostics recomputed from the case's tensors without nn).
2. The hand-written backwards pass torch.autograd.gradcheck (here, on the
   reference; students' gradients are compared in the grader's process).
3. Every catalogued mistake loses points and gets its own hint.
4. Known-correct alternatives keep full marks.
5. Calling the torch function being implemented is detected, whatever the
   alias, also inside a hand-written backward.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import assert_reference_equals_oracle, assert_full_marks, grade_impl, grader, reference

STEM = "activations"


class _TorchSigmoid(torch.autograd.Function):
    """The oracle for SigmoidFunction: torch's forward and torch's derivative kernel."""

    @staticmethod
    def forward(ctx, input):
        out = torch.sigmoid(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.sigmoid_backward(grad_output, out)


class _TorchReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        out = torch.relu(input)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad_output, out, 0)


TORCH = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "softmax": torch.softmax,
    "PReLU": nn.PReLU,
    "SigmoidFunction": _TorchSigmoid,
    "ReLUFunction": _TorchReLU,
}


@pytest.mark.parametrize("name", [n for n in TORCH])
def test_reference_equals_torch_on_every_case(name):
    """Oracle: every case the grader uses, with torch in the reference's place."""
    assert_reference_equals_oracle(STEM, name, TORCH[name])


@pytest.mark.parametrize("seed", range(5))
def test_reference_equals_torch_on_fresh_random_inputs(seed):
    ns = reference(STEM)
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(v) for v in torch.randint(1, 6, (3,), generator=g))
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 10
    x.view(-1)[0] = 0.0  # the kink
    w = torch.randn(shape, generator=g, dtype=torch.float64)

    def both(fn, *args, **kwargs):
        leaf = x.clone().requires_grad_(True)
        out = fn(leaf, *args, **kwargs)
        return out, torch.autograd.grad(out, leaf, w)[0]

    pairs = [
        (ns["sigmoid"], torch.sigmoid, (), {}),
        (ns["tanh"], torch.tanh, (), {}),
        (ns["relu"], torch.relu, (), {}),
        (ns["leaky_relu"], F.leaky_relu, (0.3,), {}),
        (ns["gelu"], F.gelu, (), {}),
        (ns["gelu"], F.gelu, (), {"approximate": "tanh"}),
        (ns["SigmoidFunction"].apply, torch.sigmoid, (), {}),
        (ns["ReLUFunction"].apply, torch.relu, (), {}),
    ]
    pairs += [(ns["softmax"], torch.softmax, (dim,), {}) for dim in range(-3, 3)]
    for ours, theirs, args, kwargs in pairs:
        for a, b in zip(both(ours, *args, **kwargs), both(theirs, *args, **kwargs)):
            torch.testing.assert_close(a, b)


def test_reference_gelu_rejects_an_unknown_approximation_as_torch_does():
    """The statement asks for torch's error, a RuntimeError."""
    for gelu in (F.gelu, reference(STEM)["gelu"]):
        with pytest.raises(RuntimeError):
            gelu(torch.zeros(2), approximate="sigmoid")


@pytest.mark.parametrize("name", ["SigmoidFunction", "ReLUFunction"])
def test_reference_backward_passes_gradcheck(name):
    fn = reference(STEM)[name]
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    x = torch.where(x.abs() < 1e-2, x + 0.1, x).requires_grad_(True)  # away from ReLU's kink
    assert torch.autograd.gradcheck(fn.apply, (x,))


def test_reference_prelu_registers_one_parameter_that_learns():
    PReLU = reference(STEM)["PReLU"]
    act = PReLU(num_parameters=3, init=0.1)
    assert [(n, tuple(p.shape)) for n, p in act.named_parameters()] == [("weight", (3,))]
    assert list(act.state_dict()) == ["weight"]
    x, y = torch.randn(8, 3, 4), torch.randn(8, 3, 4)
    opt = torch.optim.SGD(act.parameters(), lr=0.5)
    before = act.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(act(x), y).backward()
        opt.step()
    assert not torch.equal(act.weight.detach(), before)


def test_the_issues_catalogue_is_there():
    """The mistakes the chapter promises hints for."""
    names = {(c.name, m.name) for c in grader(STEM).checks.values() for m in c.mistakes}
    for expected in [("softmax", "no-max-subtracted"), ("sigmoid", "overflow-for-negative-inputs"),
                     ("gelu", "tanh-approximation-for-exact"), ("gelu", "exact-for-tanh-approximation"),
                     ("SigmoidFunction", "backward-returns-forward"), ("ReLUFunction", "backward-returns-forward")]:
        assert expected in names


# -- known-correct alternatives ------------------------------------------------------------------

def _sig(x):
    e = torch.exp(torch.where(x >= 0, -x, x))
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _sigmoid_clamped_branches(input):
    pos = 1 / (1 + torch.exp(-input.clamp(min=0)))
    e = torch.exp(input.clamp(max=0))
    return torch.where(input >= 0, pos, e / (1 + e))


def _tanh_expm1(input):
    m = torch.expm1(-2 * torch.where(input >= 0, input, -input))  # exp(-2|x|) - 1, gradient right at 0
    t = -m / (2 + m)
    return torch.where(input >= 0, t, -t)


class _SigmoidSavesInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return _sig(input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        s = _sig(input)
        return grad_output * (s - s * s)


class _SigmoidSetupContext(torch.autograd.Function):
    """The newer style: forward without ctx, then setup_context."""

    @staticmethod
    def forward(input):
        return _sig(input)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad_output):
        (s,) = ctx.saved_tensors
        return grad_output * s * (1 - s)


class _ReLUMaskedFill(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        mask = input > 0
        ctx.save_for_backward(mask)
        return input * mask

    @staticmethod
    def backward(ctx, grad_output):
        (mask,) = ctx.saved_tensors
        return grad_output.masked_fill(~mask, 0)


ALTERNATIVES = [
    pytest.param("sigmoid", lambda input: torch.exp(-torch.logaddexp(torch.zeros_like(input), -input)),
                 id="sigmoid:exp-of-minus-logaddexp"),
    pytest.param("sigmoid", _sigmoid_clamped_branches, id="sigmoid:clamped-branches"),
    pytest.param("sigmoid", lambda input: _sig(input.double()).to(input.dtype), id="sigmoid:float64-then-cast"),
    pytest.param("tanh", lambda input: 2 * _sig(2 * input) - 1, id="tanh:2-sigmoid-2x-minus-1"),
    pytest.param("tanh", _tanh_expm1, id="tanh:expm1"),
    pytest.param("relu", lambda input: input * (input > 0), id="relu:times-mask"),
    pytest.param("relu", lambda input: torch.where(input > 0, input, 0.0), id="relu:where-scalar"),
    pytest.param("relu", lambda input: input.masked_fill(input <= 0, 0.0), id="relu:masked-fill"),
    pytest.param("leaky_relu", lambda input, negative_slope=0.01:
                 input * ((input > 0) + negative_slope * (input <= 0)), id="leaky_relu:mask-arithmetic"),
    pytest.param("leaky_relu", lambda input, negative_slope=0.01:
                 torch.where(input > 0, 1.0, negative_slope) * input, id="leaky_relu:where-of-slopes"),
    pytest.param("gelu", lambda input, approximate="none":
                 0.5 * input * torch.erfc(-input / math.sqrt(2)) if approximate == "none"
                 else input * _sig(2 * math.sqrt(2 / math.pi) * (input + 0.044715 * input ** 3)),
                 id="gelu:erfc-and-sigmoid-form"),
    pytest.param("softmax", lambda input, dim: torch.exp(input - input.max(dim, keepdim=True).values)
                 / torch.exp(input - input.max(dim, keepdim=True).values).sum(dim, keepdim=True),
                 id="softmax:max-not-detached"),
    pytest.param("softmax", lambda input, dim: torch.exp(
        input - input.amax(dim, keepdim=True)
        - torch.log(torch.exp(input - input.amax(dim, keepdim=True)).sum(dim, keepdim=True))),
        id="softmax:exp-of-log-softmax"),
    pytest.param("SigmoidFunction", _SigmoidSavesInput, id="SigmoidFunction:saves-input"),
    pytest.param("SigmoidFunction", _SigmoidSetupContext, id="SigmoidFunction:setup-context"),
    pytest.param("ReLUFunction", _ReLUMaskedFill, id="ReLUFunction:masked-fill"),
]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


# -- forbidden calls -----------------------------------------------------------------------------

class _SigmoidBackwardByAutograd(torch.autograd.Function):
    """A 'hand-written' backward that asks autograd instead."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return _sig(input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        with torch.enable_grad():
            x = input.detach().requires_grad_(True)
            return torch.autograd.grad(_sig(x), x, grad_output)[0]


class _SigmoidBackwardCallsTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return _sig(input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        s = torch.sigmoid(input)
        return grad_output * s * (1 - s)


class _ReLUForwardCallsTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return F.relu(input)

    @staticmethod
    def backward(ctx, grad_output):
        (input,) = ctx.saved_tensors
        return grad_output * (input > 0)


class _PReLUCallsTorch(nn.Module):
    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init)))

    def forward(self, input):
        return F.prelu(input, self.weight)


@pytest.mark.parametrize("name, call", [
    pytest.param("sigmoid", lambda input: torch.sigmoid(input), id="torch.sigmoid"),
    pytest.param("sigmoid", lambda input: input.sigmoid(), id="Tensor.sigmoid"),
    pytest.param("sigmoid", lambda input: torch.special.expit(input), id="torch.special.expit"),
    pytest.param("sigmoid", lambda input: nn.Sigmoid()(input), id="nn.Sigmoid"),
    pytest.param("sigmoid", lambda input: 0.5 * (1 + torch.tanh(input / 2)), id="via-torch.tanh"),
    pytest.param("tanh", lambda input: torch.tanh(input), id="torch.tanh"),
    pytest.param("tanh", lambda input: 2 * torch.sigmoid(2 * input) - 1, id="via-torch.sigmoid"),
    pytest.param("relu", lambda input: F.relu(input), id="F.relu"),
    pytest.param("relu", lambda input: nn.ReLU()(input), id="nn.ReLU"),
    pytest.param("relu", lambda input: F.threshold(input, 0.0, 0.0), id="F.threshold"),
    pytest.param("leaky_relu", lambda input, negative_slope=0.01: F.leaky_relu(input, negative_slope),
                 id="F.leaky_relu"),
    pytest.param("gelu", lambda input, approximate="none": F.gelu(input, approximate=approximate), id="F.gelu"),
    pytest.param("gelu", lambda input, approximate="none": nn.GELU(approximate)(input), id="nn.GELU"),
    pytest.param("softmax", lambda input, dim: F.softmax(input, dim), id="F.softmax"),
    pytest.param("softmax", lambda input, dim: input.softmax(dim), id="Tensor.softmax"),
    pytest.param("softmax", lambda input, dim: torch.exp(input - torch.logsumexp(input, dim, keepdim=True)),
                 id="via-logsumexp"),
    pytest.param("PReLU", _PReLUCallsTorch, id="F.prelu"),
    pytest.param("SigmoidFunction", _SigmoidBackwardCallsTorch, id="torch.sigmoid-in-backward"),
    pytest.param("SigmoidFunction", _SigmoidBackwardByAutograd, id="autograd.grad-in-backward"),
    pytest.param("ReLUFunction", _ReLUForwardCallsTorch, id="F.relu-in-forward"),
])
def test_calling_the_torch_function_being_implemented_scores_zero_with_a_message(name, call):
    result = grade_impl(STEM, name, call)
    assert result.points == 0
    assert any("the torch function this exercise asks you to write" in v.message for v in result.cases)


# -- what students get for other wrong answers ------------------------------------------------

def test_a_plain_function_is_not_an_autograd_function():
    result = grade_impl(STEM, "SigmoidFunction", _sig)
    assert result.points == 0
    assert any("not a subclass of torch.autograd.Function" in v.message for v in result.cases)


def test_a_backward_left_unimplemented_scores_zero():
    class Half(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            return _sig(input)

    result = grade_impl(STEM, "SigmoidFunction", Half)
    assert result.points == 0


def test_stubs_score_zero_and_say_not_implemented():
    def stub(input):
        raise NotImplementedError()

    for name in ("sigmoid", "relu"):
        result = grade_impl(STEM, name, stub)
        assert result.points == 0
        assert all("NotImplementedError" in v.message for v in result.cases)


def test_hard_coded_cpu_tensor_fails_the_device_case():
    result = grade_impl(STEM, "relu", lambda input: torch.where(
        input > 0, input, torch.zeros(input.shape, dtype=input.dtype)))
    meta = [v for v in result.cases if v.label.startswith("on the meta device")]
    assert meta and not meta[0].passed
    device_cases = [v for v in result.cases if v.label.startswith(("on the meta device", "on a CUDA device"))]
    assert all(not v.passed for v in device_cases)
    assert result.passed == result.total - len(device_cases)  # every other case passes



def test_a_bug_in_sigmoid_is_not_paid_for_again_in_sigmoid_function():
    """SigmoidFunction calls the notebook's sigmoid (wrong: it overflows): graded with the course's in its
    place, SigmoidFunction keeps full marks and says why; the course's sigmoid used as the notebook's own
    sigmoid scores 0 there (the sigmoid check guards it)."""
    from autograder.probes.helpers import course_sigmoid

    namespace = {"torch": torch}
    exec("def sigmoid(input):\n    return 1 / (1 + torch.exp(-input))\n"
         "class SigmoidFunction(torch.autograd.Function):\n"
         "    @staticmethod\n    def forward(ctx, input):\n        out = sigmoid(input)\n"
         "        ctx.save_for_backward(out)\n        return out\n"
         "    @staticmethod\n    def backward(ctx, grad_output):\n        (out,) = ctx.saved_tensors\n"
         "        return grad_output * out * (1 - out)\n", namespace)
    own = namespace["sigmoid"]
    assert grade_impl("activations", "sigmoid", own).points < grade_impl("activations", "sigmoid",
                                                                        reference("activations")["sigmoid"]).points
    result = grade_impl("activations", "SigmoidFunction", namespace["SigmoidFunction"])
    assert result.points == result.max_points, [v.message for v in result.cases if not v.passed][:3]
    assert "the course's sigmoid" in result.cases[0].label and namespace["sigmoid"] is own
    borrowed = grade_impl("activations", "sigmoid", course_sigmoid)
    assert borrowed.points == 0 and "grader's own course_sigmoid" in borrowed.cases[0].message
