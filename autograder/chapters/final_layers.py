"""Checks for the `final_layers` chapter: the last layer, its loss, its predictions.

`sigmoid` and `softmax` mirror torch's and must stay finite at logits of
±1000; `make_head` builds the final layer a task needs (probed as a module
with the reference's weights); `task_loss` pairs an output with its loss;
`predict` turns outputs into predictions. Known mistakes are the wrong code
a student would write; tests/chapters/test_final_layers.py proves each check
both ways.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import bernoulli, randint, randn
from autograder.probes import FunctionProbe
from autograder.probes.module import ModuleProbe, module_case

EXTREME = [-1000.0, -100.0, -30.0, -5.0, -0.5, 0.25, 5.0, 30.0, 100.0, 1000.0]


def _dt(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _label(shape, dtype, **kw) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return f"input of shape {tuple(shape)} ({_dt(dtype)}){', ' + opts if opts else ''}"


# -- sigmoid, stable ----------------------------------------------------------------

def _sigmoid_cases(gen, *, device, dtype):
    cases = []
    for shape in [(7,), (3, 4), (2, 3, 4), ()]:
        x = randn(gen, math.prod(shape), dtype=dtype, device=device, scale=4.0).reshape(shape)
        cases.append(Case(_label(shape, dtype), (x,), {}, dtype))
    big = torch.tensor(EXTREME, dtype=dtype, device=device)
    cases.append(Case(_label(big.shape, dtype, logits="extreme (up to ±1000)"), (big,), {}, dtype, edge="extreme"))
    zero = torch.tensor([0.0, -0.0, 0.0, 1.0], dtype=dtype, device=device)
    cases.append(Case(_label(zero.shape, dtype, logits="exactly 0 (gradient 0.25)"), (zero,), {}, dtype,
                      edge="zero"))
    return cases


def _where_both_branches(input):
    return torch.where(input >= 0, 1 / (1 + torch.exp(-input)), torch.exp(input) / (1 + torch.exp(input)))


SIGMOID = Check(
    name="sigmoid",
    target="sigmoid",
    make_cases=_sigmoid_cases,
    probe=FunctionProbe(),
    forbidden=("sigmoid", "sigmoid_", "special_expit", "expit", "logsigmoid", "log_sigmoid", "softmax",
               "_softmax", "binary_cross_entropy_with_logits"),
    mistakes=(
        Mistake("naive-overflows-negative", "For x = -1000, exp(-x) overflows to inf: the value still comes out 0, "
                "but the gradient is nan. Only ever take exp of -|x|, which lies in (0, 1].",
                lambda input: 1 / (1 + torch.exp(-input))),
        Mistake("naive-overflows-positive", "For x = 1000, exp(x) / (1 + exp(x)) is inf / inf = nan. Only ever "
                "take exp of -|x|, which lies in (0, 1].", lambda input: torch.exp(input) / (1 + torch.exp(input))),
        Mistake("where-computes-both-branches", "torch.where evaluates both branches on every element: the branch "
                "not taken still overflows, and its nan gradient leaks into the result. Compute e = exp(-|x|) once; "
                "then both branches, 1 / (1 + e) and e / (1 + e), are finite.", _where_both_branches),
        Mistake("sign-flipped", "sigmoid(x) = 1 / (1 + exp(-x)) is near 1 for large positive x; yours is sigmoid(-x).",
                lambda input: torch.tanh(-input / 2) * 0.5 + 0.5),
        Mistake("abs-gradient-at-zero", "Your gradient at x = 0 is 0, not sigmoid'(0) = 0.25: torch's gradient of "
                "abs() at 0 is 0, so exp(-abs(x)) looks flat there. Compute -|x| as torch.where(x >= 0, -x, x), "
                "whose gradient at 0 is -1 on the branch taken.",
                lambda input: torch.where(input >= 0, 1 / (1 + torch.exp(-input.abs())),
                                          torch.exp(-input.abs()) / (1 + torch.exp(-input.abs())))),
    ),
)


# -- softmax, stable ------------------------------------------------------------------

def _softmax_cases(gen, *, device, dtype):
    cases = []
    x = randn(gen, 4, 6, dtype=dtype, device=device, scale=2.0)
    for dim in (1, 0, -1):
        cases.append(Case(_label((4, 6), dtype, dim=dim), (x, dim), {}, dtype))
    y = randn(gen, 2, 3, 5, dtype=dtype, device=device, scale=3.0)
    cases.append(Case(_label((2, 3, 5), dtype, dim=1), (y, 1), {}, dtype))
    v = randn(gen, 5, dtype=dtype, device=device)
    cases.append(Case(_label((5,), dtype, dim=0), (v, 0), {}, dtype))
    sq = randn(gen, 4, 4, dtype=dtype, device=device, scale=2.0)
    cases.append(Case(_label((4, 4), dtype, dim=1), (sq, 1), {}, dtype))
    # The last column keeps some gradients away from 0 along dim 0: a reference whose every
    # entry is ~1e-218 would set the (scale-relative) tolerance far below rounding error.
    big = torch.tensor([[1000.0, 0.0, -1000.0, 1.0], [-1000.0, -999.0, -1001.0, 2.0], [500.0, 500.0, 499.0, 0.5]],
                       dtype=dtype, device=device)
    for dim in (1, 0):
        cases.append(Case(_label((3, 4), dtype, dim=dim, logits="extreme (±1000)"), (big, dim), {}, dtype,
                          edge="extreme"))
    cases.append(Case(_label((3, 5), dtype, dim=1, logits="exactly 0"), (torch.zeros(3, 5, dtype=dtype,
                                                                                     device=device), 1), {},
                      dtype, edge="zero"))
    return cases


def _softmax_shifted_by(shift):
    def impl(input, dim):
        e = torch.exp(input - shift(input, dim))
        return e / e.sum(dim, keepdim=True)
    return impl


SOFTMAX = Check(
    name="softmax",
    target="softmax",
    make_cases=_softmax_cases,
    probe=FunctionProbe(),
    forbidden=("softmax", "_softmax", "log_softmax", "_log_softmax", "logsumexp", "special_softmax",
               "special_log_softmax", "cross_entropy"),
    mistakes=(
        Mistake("no-max-subtracted", "exp(1000) is inf and inf / inf is nan: subtract the maximum along `dim` "
                "first; softmax(x) = softmax(x - m) for any constant m.",
                _softmax_shifted_by(lambda x, dim: 0)),
        Mistake("global-max-subtracted", "Subtract the maximum along `dim` (x.amax(dim, keepdim=True)), not the "
                "maximum of the whole tensor: a row far below the global maximum underflows to 0 / 0.",
                _softmax_shifted_by(lambda x, dim: x.max())),
        Mistake("normalised-over-everything", "Divide by the sum along `dim` (keepdim=True), not by the sum of "
                "the whole tensor: each slice along `dim` must sum to 1.",
                lambda input, dim: torch.exp(input - input.amax(dim, keepdim=True))
                / torch.exp(input - input.amax(dim, keepdim=True)).sum()),
        Mistake("last-dim-only", "Normalise along `dim`, the argument, not always the last dimension.",
                lambda input, dim: _softmax_shifted_by(lambda x, d: x.amax(-1, keepdim=True))(input, -1)),
        Mistake("no-keepdim", "Reduce with keepdim=True so that the max and the sum broadcast back along `dim`; "
                "without it they line up with the last dimension.",
                lambda input, dim: torch.exp(input - input.amax(dim)) / torch.exp(input - input.amax(dim)).sum(dim)),
    ),
)


# code with two mistakes at once: a hint for each (checks.combined)
SOFTMAX = replace(SOFTMAX, mistakes=SOFTMAX.mistakes + (combined(
    lambda input, dim: torch.exp(input) / torch.exp(input).sum(-1, keepdim=True),
    *(m for m in SOFTMAX.mistakes if m.name in ("no-max-subtracted", "last-dim-only"))),))


# -- make_head: the final layer a task needs ----------------------------------------------

def _head_weights(gen, out_features, in_features, *, dtype, scale=1.0):
    w = randn(gen, out_features, in_features, dtype=dtype, scale=scale / math.sqrt(in_features))
    b = randn(gen, out_features, dtype=dtype, scale=0.5 * scale)
    return [w, b]


def _head_cases(gen, *, device, dtype):
    cases = []
    specs = [("regression", 5, None, 8, 1.0), ("binary", 5, None, 8, 3.0), ("multiclass", 5, 4, 8, 2.0),
             ("regression", 3, None, 1, 1.0), ("binary", 7, None, 3, 1.0), ("multiclass", 6, 10, 5, 1.0),
             ("binary", 4, None, 6, 400.0), ("multiclass", 4, 3, 6, 400.0)]
    for task, n_in, n_cls, batch, scale in specs:
        weights = [t.to(device) for t in _head_weights(gen, n_cls or 1, n_in, dtype=dtype, scale=scale)]
        X = randn(gen, batch, n_in, dtype=dtype, device=device)
        init = {"num_classes": n_cls} if n_cls else {}
        extreme = ", logits in the hundreds" if scale > 100 else ""
        label = (f"make_head({task!r}, {n_in}{', num_classes=' + str(n_cls) if n_cls else ''}) on a batch of "
                 f"{batch} ({_dt(dtype)}){extreme}")
        cases.append(module_case(label, args=(task, n_in), init=init, weights=weights, inputs=[X], dtype=dtype))
    for task, n_cls in (("binary", None), ("multiclass", 3)):  # zero-initialised: every logit exactly 0
        zeros = [torch.zeros(n_cls or 1, 4, dtype=dtype, device=device), torch.zeros(n_cls or 1, dtype=dtype,
                                                                                      device=device)]
        X = randn(gen, 5, 4, dtype=dtype, device=device)
        label = f"make_head({task!r}, 4{', num_classes=3' if n_cls else ''}) with zero weights: logits exactly 0"
        case = module_case(label, args=(task, 4), init={"num_classes": n_cls} if n_cls else {}, weights=zeros,
                           inputs=[X], dtype=dtype)
        cases.append(replace(case, edge="zero"))
    return cases


def _head(task, in_features, num_classes=None, *, regression=(), binary=(nn.Sigmoid,),
          multiclass=(lambda: nn.Softmax(dim=1),), binary_outputs=1):
    extra = {"regression": regression, "binary": binary, "multiclass": multiclass}[task]
    out = {"regression": 1, "binary": binary_outputs, "multiclass": num_classes}[task]
    return nn.Sequential(nn.Linear(in_features, out), *(make() for make in extra))


MAKE_HEAD = Check(
    name="make_head",
    target="make_head",
    make_cases=_head_cases,
    probe=ModuleProbe(),
    mistakes=(
        Mistake("softmax-over-the-batch", "nn.Softmax(dim=0) normalises each class over the batch; the "
                "probabilities of one example are a row: nn.Softmax(dim=1).",
                lambda task, in_features, num_classes=None:
                    _head(task, in_features, num_classes, multiclass=(lambda: nn.Softmax(dim=0),))),
        Mistake("binary-without-sigmoid", "A binary head ends with a sigmoid, so that its output is the "
                "probability of the positive class, in (0, 1).",
                lambda task, in_features, num_classes=None: _head(task, in_features, num_classes, binary=())),
        Mistake("multiclass-without-softmax", "A multi-class head ends with a softmax over the classes, so that "
                "each row is a probability distribution (non-negative, summing to 1).",
                lambda task, in_features, num_classes=None: _head(task, in_features, num_classes, multiclass=())),
        Mistake("sigmoid-for-multiclass", "A sigmoid per class gives values in (0, 1) that do not sum to 1: the "
                "classes exclude each other, so use a softmax over them.",
                lambda task, in_features, num_classes=None:
                    _head(task, in_features, num_classes, multiclass=(nn.Sigmoid,))),
        Mistake("binary-with-two-outputs", "The binary head has ONE output, the probability of the positive "
                "class (the other is 1 minus it): nn.Linear(in_features, 1) and a sigmoid.",
                lambda task, in_features, num_classes=None:
                    _head(task, in_features, num_classes, binary=(lambda: nn.Softmax(dim=1),), binary_outputs=2)),
        Mistake("activation-on-regression", "A regression head is linear: an activation after it (ReLU, "
                "sigmoid) limits the range of the predicted value.",
                lambda task, in_features, num_classes=None:
                    _head(task, in_features, num_classes, regression=(nn.ReLU,))),
    ),
)


# -- task_loss: the loss that goes with the output ---------------------------------------------

def _task_loss_cases(gen, *, device, dtype):
    cases = []
    N, C = 6, 4

    def add(task, from_logits, output, target, note=""):
        label = (f"task={task!r}, from_logits={from_logits}, output of shape {tuple(output.shape)} "
                 f"({_dt(dtype)}){note}")
        edge = "zero" if "exactly 0" in note else "extreme" if "1000" in note else ""
        cases.append(Case(label, (output.to(device), target.to(device), task),
                          {"from_logits": from_logits}, dtype, edge=edge))

    add("regression", False, randn(gen, N, 1, dtype=dtype, scale=3.0), randn(gen, N, 1, dtype=dtype, scale=3.0))
    z = randn(gen, N, 1, dtype=torch.float64, scale=3.0)
    t = bernoulli(gen, N, 1, dtype=dtype)
    add("binary", False, torch.sigmoid(z).to(dtype), t)
    add("binary", True, z.to(dtype), t)
    z = randn(gen, N, C, dtype=torch.float64, scale=2.0)
    y = randint(gen, C, N)
    add("multiclass", False, torch.softmax(z, 1).to(dtype), y)
    add("multiclass", True, z.to(dtype), y)
    add("regression", True, randn(gen, 3, 1, dtype=dtype), randn(gen, 3, 1, dtype=dtype), note=" (no logits here)")
    zb = torch.tensor([[1000.0], [-1000.0], [30.0], [-2.0]], dtype=dtype)
    add("binary", True, zb, torch.tensor([[0.0], [1.0], [0.0], [1.0]], dtype=dtype), note=", logits of ±1000")
    zm = torch.tensor([[1000.0, -1000.0, 0.0], [0.0, 1000.0, -1000.0], [1.0, 2.0, 3.0]], dtype=dtype)
    add("multiclass", True, zm, torch.tensor([1, 0, 2]), note=", logits of ±1000")
    add("binary", True, torch.zeros(4, 1, dtype=dtype), torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=dtype),
        note=", logits exactly 0")
    add("multiclass", True, torch.zeros(3, C, dtype=dtype), torch.tensor([0, 3, 1]), note=", logits exactly 0")
    return cases


def _task_loss(output, target, task, from_logits=False, *, binary=None, multiclass=None):
    if task == "regression":
        return F.mse_loss(output, target)
    if task == "binary":
        return (binary or (lambda o, t: F.binary_cross_entropy_with_logits(o, t) if from_logits
                           else F.binary_cross_entropy(o, t)))(output, target)
    return (multiclass or (lambda o, t: F.cross_entropy(o, t) if from_logits
                           else F.nll_loss(torch.log(o), t)))(output, target)


TASK_LOSS = Check(
    name="task_loss",
    target="task_loss",
    make_cases=_task_loss_cases,
    probe=FunctionProbe(grad=(("output", 0),)),
    mistakes=(
        Mistake("softmax-twice", "cross_entropy applies log_softmax itself: give it logits. On probabilities "
                "(from_logits=False) take their log and use nll_loss.",
                lambda output, target, task, from_logits=False:
                    _task_loss(output, target, task, from_logits, multiclass=F.cross_entropy)),
        Mistake("nll-without-log", "nll_loss expects LOG-probabilities: pass torch.log(probabilities) (or, on "
                "logits, use cross_entropy).",
                lambda output, target, task, from_logits=False:
                    _task_loss(output, target, task, from_logits,
                               multiclass=lambda o, t: F.cross_entropy(o, t) if from_logits else F.nll_loss(o, t))),
        Mistake("sigmoid-twice", "binary_cross_entropy_with_logits applies the sigmoid itself: give it logits. "
                "On probabilities (from_logits=False) use binary_cross_entropy.",
                lambda output, target, task, from_logits=False:
                    _task_loss(output, target, task, from_logits, binary=F.binary_cross_entropy_with_logits)),
        Mistake("unfused-sigmoid-then-bce", "On logits use binary_cross_entropy_with_logits: sigmoid(1000) is "
                "exactly 1 in floating point, so sigmoid followed by binary_cross_entropy loses the loss of large "
                "logits (torch caps each log at -100).",
                lambda output, target, task, from_logits=False:
                    _task_loss(output, target, task, from_logits,
                               binary=lambda o, t: F.binary_cross_entropy(torch.sigmoid(o) if from_logits else o, t))),
        Mistake("unfused-softmax-then-log", "On logits use cross_entropy (or log_softmax): log(softmax(z)) is "
                "log(0) = -inf for a logit 1000 below the largest, while log_softmax stays finite.",
                lambda output, target, task, from_logits=False:
                    _task_loss(output, target, task, from_logits,
                               multiclass=lambda o, t: F.nll_loss(torch.log(torch.softmax(o, 1) if from_logits else o),
                                                                  t))),
        Mistake("l1-for-regression", "The regression output pairs with the mean squared error (mse_loss) here, "
                "as in the chapter.",
                lambda output, target, task, from_logits=False:
                    F.l1_loss(output, target) if task == "regression" else _task_loss(output, target, task,
                                                                                       from_logits)),
    ),
)


# -- predict: outputs to predictions --------------------------------------------------------

def _predict_cases(gen, *, device, dtype):
    cases = []

    def add(task, from_logits, output, note=""):
        label = (f"task={task!r}, from_logits={from_logits}, output of shape {tuple(output.shape)} "
                 f"({_dt(dtype)}){note}")
        cases.append(Case(label, (output.to(device), task), {"from_logits": from_logits}, dtype,
                          edge="zero" if "exactly 0" in note else ""))

    for n in (8, 1):
        z = randn(gen, n, 1, dtype=torch.float64, scale=3.0)
        add("binary", False, torch.sigmoid(z).to(dtype))
        add("binary", True, z.to(dtype))
    add("binary", True, torch.tensor([[0.3], [-0.2], [0.45], [-0.45], [2.0]], dtype=dtype),
        note=", logits near 0")
    add("binary", True, torch.tensor([[0.0], [-0.0], [1.0]], dtype=dtype), note=", logits exactly 0 (class 0)")
    add("binary", False, torch.tensor([[0.5], [0.75]], dtype=dtype), note=", a probability of exactly 0.5 "
        "(class 0)")
    for n in (7, 1):
        z = randn(gen, n, 4, dtype=torch.float64, scale=2.0)
        add("multiclass", False, torch.softmax(z, 1).to(dtype))
        add("multiclass", True, z.to(dtype))
    add("regression", False, randn(gen, 5, 1, dtype=dtype, scale=20.0))
    add("regression", False, randn(gen, 1, 1, dtype=dtype, scale=20.0))
    return cases


def _predict(output, task, from_logits=False, *, threshold=None, dim=1, squeeze=lambda t: t.squeeze(-1),
             as_labels=lambda t: t.long()):
    if task == "regression":
        return squeeze(output)
    if task == "binary":
        cut = threshold if threshold is not None else (0.0 if from_logits else 0.5)
        return as_labels(squeeze(output > cut))
    return output.argmax(dim=dim)


PREDICT = Check(
    name="predict",
    target="predict",
    make_cases=_predict_cases,
    probe=FunctionProbe(grad=()),
    mistakes=(
        Mistake("half-on-logits", "A logit z is positive exactly when sigmoid(z) > 0.5: on logits the threshold "
                "is 0, not 0.5.",
                lambda output, task, from_logits=False: _predict(output, task, from_logits, threshold=0.5)),
        Mistake("zero-on-probabilities", "Probabilities are never negative: on probabilities the threshold is 0.5.",
                lambda output, task, from_logits=False: _predict(output, task, from_logits, threshold=0.0)),
        Mistake("argmax-over-the-batch", "The predicted class of each example is the argmax over its classes, "
                "dim=1, not over the batch.",
                lambda output, task, from_logits=False: _predict(output, task, from_logits, dim=0)),
        Mistake("boolean-labels", "Return class labels as integers (int64, like the targets): convert the "
                "comparison's booleans with .long().",
                lambda output, task, from_logits=False: _predict(output, task, from_logits, as_labels=lambda t: t)),
        Mistake("ties-to-positive", "The positive class needs a probability strictly above 0.5 (a logit "
                "strictly above 0): at exactly 0.5 (logit 0) the prediction is class 0. Compare with >, not >=.",
                lambda output, task, from_logits=False:
                    (output[:, 0] >= (0.0 if from_logits else 0.5)).long() if task == "binary"
                    else _predict(output, task, from_logits)),
        Mistake("float-labels", "Return class labels as integers (int64, like the targets), not as floats: "
                "use .long().",
                lambda output, task, from_logits=False:
                    _predict(output, task, from_logits, as_labels=lambda t: t.to(output.dtype))),
        Mistake("squeezed-the-batch", "squeeze() removes every dimension of size 1, the batch too when it holds "
                "one example: remove only the last one, squeeze(-1) or [:, 0].",
                lambda output, task, from_logits=False:
                    _predict(output, task, from_logits, squeeze=lambda t: t.squeeze())),
        Mistake("kept-the-output-dimension", "One prediction per example: shape (N,), not the output's (N, 1). "
                "Remove the last dimension with squeeze(-1) or [:, 0].",
                lambda output, task, from_logits=False:
                    _predict(output, task, from_logits, squeeze=lambda t: t)),
    ),
)

CHECKS = [SIGMOID, SOFTMAX, MAKE_HEAD, TASK_LOSS, PREDICT]
