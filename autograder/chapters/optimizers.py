"""Checks for the `optimizers` chapter: each class mirrors torch.optim.

A case runs K steps of an optimizer on a small deterministic problem
(probes/optimizer.py) and compares the trajectory of the parameters with
the reference's, computed in float64. Settings cover every flag of each
optimizer, weight decay, two param groups with different learning rates, a
parameter that gets no gradient, a step after zero_grad(), and a
state_dict() saved to bytes and loaded into a fresh optimizer.

Known mistakes are written as the wrong code a student would write: the
optimizers of autograder/mistakes/optimizers.py with one bug switched on each.
"""
from __future__ import annotations


import torch

import autograder.mistakes.optimizers as optim_bugs
from autograder.checks import Case, Check, Mistake, combined
from autograder.inputs import randint, randn
from autograder.probes.optim_problems import PROBLEMS
from autograder.probes.optimizer import OptimizerProbe, TrainingLoopProbe

# torch's fused optimizer kernels (torch functions, seen by the call watch);
# torch.optim's Python code is watched by the probe itself.
FORBIDDEN = ("_fused_sgd_", "_fused_adam_", "_fused_adamw_", "_fused_adagrad_")


# -- cases --------------------------------------------------------------------------------

def _fmt_options(options: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def setting(problem: str, steps: int = 6, *, groups=None, unused: bool = False, resume: int | None = None,
            closure: bool = False, idle: bool = True, report=None, expect_error: bool = False, **options):
    """One optimizer setting; becomes a case per dtype."""
    return dict(problem=problem, steps=steps, groups=groups, unused=unused, resume=resume, closure=closure,
                idle=idle and not closure, report=report, expect_error=expect_error, options=options)


def optimizer_cases(cls_name: str, settings: list[dict]):
    def make_cases(gen, *, device, dtype):
        cases = []
        for s in settings:
            params, data, what = PROBLEMS[s["problem"]].draw(gen, dtype)
            notes = []
            if s["unused"]:
                params = params + [randn(gen, 3, dtype=dtype)]
                notes.append("a parameter that gets no gradient")
            if s["groups"]:
                groups = [dict(g) for g in s["groups"]]
                for g in groups:
                    if g.get("params") == "rest":
                        g["params"] = list(range(len(groups[0]["params"]), len(params)))
                notes.append("two param groups (" + "; ".join(
                    _fmt_options({k: v for k, v in g.items() if k != "params"}) for g in groups) + ")")
            else:
                groups = None
            if s["resume"]:
                notes.append(f"state_dict() saved after step {s['resume']} and loaded into a new optimizer")
            if s["idle"]:
                notes.append("then zero_grad() and one step with no gradients")
            if s["closure"]:
                notes.append("step(closure)")
            steps = "one step" if s["expect_error"] else f"{s['steps']} steps"
            label = (f"{cls_name}({_fmt_options(s['options'])}) on {what}, {steps}"
                     + "".join(f"; {n}" for n in notes) + f" ({str(dtype).removeprefix('torch.')})")
            kwargs = {"problem": s["problem"], "data": {k: v.to(device) for k, v in data.items()},
                      "params": [p.to(device) for p in params], "unused": int(s["unused"]), "groups": groups,
                      "options": dict(s["options"]), "steps": s["steps"], "closure": s["closure"],
                      "idle_step": s["idle"], "resume_after": s["resume"],
                      "report_state": tuple(s["report"] or ()), "expect_error": s["expect_error"]}
            cases.append(Case(label, (), kwargs, dtype))
        return cases
    return make_cases


# -- hints shared by several optimizers ------------------------------------------------------

H_NO_GRAD = ("step() runs with autograd on, as in a training loop: decorate it with @torch.no_grad() so the "
             "in-place updates of the parameters are not recorded (a leaf that requires grad cannot be "
             "changed in place under autograd).")
H_REBIND = ("`p = p - lr * update` makes a new tensor and rebinds the name: the parameter never changes. "
            "Update it in place, p.add_(update, alpha=-lr), under torch.no_grad().")
H_GRAD_NONE = ("A parameter whose .grad is None took no part in the loss (or zero_grad() just ran): skip it, "
               "as torch does; reading it as a zero gradient still moves it through momentum or weight decay.")
H_STATE = ("Keep per-parameter state in self.state[p] (a dict the base class creates): state_dict() and "
           "load_state_dict() save and restore only self.state and self.param_groups, so state kept anywhere "
           "else restarts from zero after a checkpoint is loaded.")
H_DECOUPLED = ("torch's weight_decay here is an L2 penalty: add weight_decay * p to the gradient first, before "
               "any other use of the gradient (momentum, averages, scaling). Shrinking the parameter directly, "
               "p *= 1 - lr * weight_decay, or adding the decay after the momentum is decoupled weight decay "
               "(AdamW's), a different optimizer.")
H_EPS_INSIDE = "eps is added after the square root, sqrt(v) + eps, not inside it: sqrt(v + eps)."
H_NO_EPS = ("Take eps as a constructor argument, with torch's default (the case passes eps=...): an eps "
            "written into the update cannot be set, and differs from torch's default.")
H_SLICE = ("p[:] = ... fails on a 0-dim parameter (a scalar bias: slice() cannot be applied to a 0-dim tensor): "
           "update in place with p.add_(...), p.sub_(...) or p.copy_(...) under torch.no_grad().")


def _generic(*names: str) -> tuple[tuple[str, str], ...]:
    table = {"no-no-grad": H_NO_GRAD, "rebind": H_REBIND, "grad-none-as-zero": H_GRAD_NONE,
             "state-outside-self-state": H_STATE, "weight-decay-decoupled": H_DECOUPLED,
             "no-eps-argument": H_NO_EPS, "p-slice-update": H_SLICE}
    return tuple((n, table[n]) for n in names)


def mistakes(cls, pairs, combos=()) -> tuple[Mistake, ...]:
    """One Mistake per (name, hint), then one per combination of those names (code with several bugs,
    as real code has: each part gets its hint)."""
    single = {name: Mistake(name, hint, optim_bugs.with_bugs(cls, name)) for name, hint in pairs}
    both = tuple(combined(optim_bugs.with_bugs(cls, *names), *(single[n] for n in names)) for names in combos)
    return tuple(single.values()) + both


def optimizer_check(name: str, cls, settings, pairs, combos=(), **kw) -> Check:
    kw.setdefault("fake_cuda_case", True)  # two steps on a simulated GPU: state made on the CPU fails
    return Check(name=name, target=name, make_cases=optimizer_cases(name, settings), probe=OptimizerProbe(),
                 mistakes=mistakes(cls, pairs, combos), forbidden=FORBIDDEN, meta_case=False, **kw)


def two_groups(lr_a: float, lr_b: float, **extra_b):
    return [{"params": [0], "lr": lr_a}, {"params": "rest", "lr": lr_b, **extra_b}]


# -- the checks ---------------------------------------------------------------------------------

SGD = optimizer_check("SGD", optim_bugs.BuggableSGD, [
    setting("quadratic", lr=0.1),
    setting("quadratic", unused=True, lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1),
    setting("least_squares", groups=two_groups(0.1, 0.02, weight_decay=0.05), lr=0.05, momentum=0.8,
            nesterov=True, weight_decay=0.2),
    setting("rosenbrock", resume=3, lr=1e-3, momentum=0.5),
    setting("logistic", unused=True, resume=2, lr=0.5, momentum=0.9, weight_decay=0.1),
], _generic("no-no-grad", "rebind", "grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled",
            "p-slice-update") + (
    ("momentum-buffer-from-zero", "The momentum buffer starts as a copy of the first gradient, buf = g "
     "(torch.clone(g).detach()), not as zeros followed by the dampened update: with dampening the first step "
     "would be (1 - dampening) times too small."),
    ("dampening-inverted", "The buffer update is buf = momentum * buf + (1 - dampening) * g: dampening "
     "removes a fraction of the new gradient."),
    ("nesterov-ignored", "With nesterov=True the step uses g + momentum * buf (a look-ahead), not buf."),
    ("nesterov-without-momentum-factor", "Nesterov's look-ahead is g + momentum * buf, with the momentum factor."),
), combos=[("nesterov-ignored", "weight-decay-decoupled")])

ADAGRAD = optimizer_check("Adagrad", optim_bugs.BuggableAdagrad, [
    setting("quadratic", lr=0.5),
    setting("least_squares", unused=True, lr=0.3, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5,
            eps=0.1),
    setting("logistic", groups=two_groups(0.4, 0.1), resume=3, lr=0.2, initial_accumulator_value=0.1),
    setting("rosenbrock", lr=0.05, eps=1e-3),
], _generic("grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled", "no-eps-argument",
            "p-slice-update") + (
    ("eps-inside-sqrt", H_EPS_INSIDE),
    ("lr-decay-off-by-one", "The decayed rate of step t (counted from 1) is lr / (1 + (t - 1) * lr_decay): "
     "the first step uses lr itself."),
    ("initial-accumulator-ignored", "The sum of squared gradients starts at initial_accumulator_value, "
     "torch.full_like(p, initial_accumulator_value), not at zero."),
), combos=[
    ("eps-inside-sqrt", "p-slice-update"), ("lr-decay-off-by-one", "initial-accumulator-ignored")])

RMSPROP = optimizer_check("RMSprop", optim_bugs.BuggableRMSprop, [
    setting("quadratic", lr=0.05),
    setting("least_squares", unused=True, lr=0.02, alpha=0.9, eps=0.1, weight_decay=0.1, momentum=0.5),
    setting("logistic", resume=3, lr=0.05, alpha=0.8, centered=True),
    setting("quadratic", groups=two_groups(0.02, 0.005), lr=0.01, centered=True, momentum=0.9, eps=1e-3),
], _generic("grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled", "no-eps-argument",
            "p-slice-update") + (
    ("eps-inside-sqrt", H_EPS_INSIDE),
    ("alpha-swapped", "square_avg = alpha * square_avg + (1 - alpha) * g^2: alpha (close to 1) weighs the "
     "old average."),
    ("centered-ignored", "With centered=True, subtract the square of the running mean of the gradients: "
     "avg = sqrt(square_avg - grad_avg^2) + eps, an estimate of their variance."),
    ("momentum-before-scaling", "With momentum, the buffer accumulates the scaled gradient: "
     "buf = momentum * buf + g / avg, then p -= lr * buf."),
), combos=[
    ("eps-inside-sqrt", "p-slice-update"), ("centered-ignored", "momentum-before-scaling")])

ADADELTA = optimizer_check("Adadelta", optim_bugs.BuggableAdadelta, [
    setting("quadratic", lr=1.0),
    setting("least_squares", unused=True, lr=2.0, rho=0.8, eps=1e-3, weight_decay=0.1),
    setting("logistic", groups=two_groups(3.0, 0.5), resume=3, lr=1.0, rho=0.5),
], _generic("state-outside-self-state", "weight-decay-decoupled", "no-eps-argument", "p-slice-update") + (
    ("eps-outside-sqrt", "Adadelta adds eps inside both square roots: sqrt(acc_delta + eps) / sqrt(square_avg "
     "+ eps). At the start acc_delta is 0, so sqrt(acc_delta) + eps would make the first steps tiny."),
    ("lr-ignored", "torch's Adadelta multiplies the step by lr (default 1.0): p -= lr * delta."),
    ("rho-swapped", "square_avg = rho * square_avg + (1 - rho) * g^2 (and the same for acc_delta): rho weighs "
     "the old average."),
), combos=[
    ("lr-ignored", "p-slice-update"), ("rho-swapped", "eps-outside-sqrt")])

ADAM = optimizer_check("Adam", optim_bugs.BuggableAdam, [
    setting("quadratic", lr=0.1),
    setting("least_squares", unused=True, lr=0.05, betas=(0.8, 0.9), eps=0.1, weight_decay=0.1),
    setting("logistic", resume=3, lr=0.1, betas=(0.5, 0.6), amsgrad=True),
    setting("rosenbrock", groups=None, lr=0.05, betas=(0.9, 0.99), amsgrad=True),
    setting("quadratic", groups=two_groups(0.1, 0.01, amsgrad=True), lr=0.05),
], _generic("no-no-grad", "rebind", "grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled",
            "no-eps-argument", "p-slice-update") + (
    ("no-bias-correction", "m and v start at zero, so early on they are too small: divide by the bias "
     "corrections 1 - beta1^t and 1 - beta2^t (t counted from 1)."),
    ("bias-correction-off-by-one", "The bias corrections use the number of steps taken so far, this one "
     "included: t = 1 on the first step, so 1 - beta1^1 = 1 - beta1."),
    ("bias-correction-from-step-zero", "Increment the step counter before using it: with t = 0 on the first "
     "step, 1 - beta1^0 = 0 and the step divides by zero."),
    ("eps-inside-sqrt", "Adam's denominator is sqrt(v_hat) + eps, with v_hat = v / (1 - beta2^t): eps goes "
     "after the square root."),
    ("amsgrad-ignored", "With amsgrad=True keep the running maximum of v in state and use it in place of v."),
    ("amsgrad-max-of-corrected", "AMSGrad (as torch does it) keeps the maximum of the raw v and bias-corrects "
     "that maximum with the current step's 1 - beta2^t, not the maximum of bias-corrected values."),
    ("eps-before-bias-correction", "torch's Adam adds eps after the bias correction: sqrt(v) / sqrt(1 - beta2^t) "
     "+ eps, not (sqrt(v) + eps) / sqrt(1 - beta2^t) (the paper's 'efficient' form, which scales eps too)."),
), combos=[
    ("no-eps-argument", "p-slice-update"), ("no-bias-correction", "eps-inside-sqrt"),
    ("eps-before-bias-correction", "amsgrad-ignored")])

ADAMAX = optimizer_check("Adamax", optim_bugs.BuggableAdamax, [
    setting("quadratic", lr=0.1),
    setting("least_squares", unused=True, lr=0.05, betas=(0.8, 0.9), eps=0.1, weight_decay=0.1),
    setting("logistic", groups=two_groups(0.2, 0.05), resume=3, lr=0.1, betas=(0.5, 0.7)),
], _generic("state-outside-self-state", "weight-decay-decoupled", "no-eps-argument", "p-slice-update") + (
    ("no-bias-correction", "Divide the step by 1 - beta1^t (t counted from 1): m starts at zero."),
    ("eps-outside-max", "torch adds eps to |g| inside the maximum: u = max(beta2 * u, |g| + eps); u itself is "
     "the denominator."),
    ("infinity-norm-bias-corrected", "Only m is bias-corrected in Adamax; the infinity norm u is not (a "
     "maximum is not biased towards zero the way an average is)."),
), combos=[("no-bias-correction", "eps-outside-max")])

ASGD = optimizer_check("ASGD", optim_bugs.BuggableASGD, [
    setting("quadratic", report=("ax",), lr=0.1),
    setting("least_squares", unused=True, report=("ax",), lr=0.1, lambd=0.5, alpha=0.75, t0=2, weight_decay=0.1),
    setting("logistic", resume=3, report=("ax",), lr=0.3, lambd=0.3, alpha=1.0, t0=1),
], _generic("state-outside-self-state", "weight-decay-decoupled",
            "p-slice-update") + (
    ("no-decay-term", "ASGD first shrinks the parameter, p *= 1 - lambd * eta, then takes the step -eta * g."),
    ("eta-off-by-one", "Step t uses the eta computed at the end of step t - 1 (eta = lr on the first step); "
     "then eta = lr / (1 + lambd * lr * t)^alpha for the next one."),
    ("average-from-start", "The average starts at step t0: mu = 1 / max(1, t - t0), so until then ax just "
     "follows p."),
), combos=[("no-decay-term", "eta-off-by-one")])

RPROP = optimizer_check("Rprop", optim_bugs.BuggableRprop, [
    setting("quadratic", lr=0.05),
    setting("rosenbrock", steps=8, lr=0.03, step_sizes=(0.02, 0.05)),
    setting("least_squares", unused=True, groups=two_groups(0.1, 0.01), resume=3, lr=0.05, etas=(0.3, 1.5)),
], _generic("rebind", "state-outside-self-state") + (
    ("etas-swapped", "etas = (etaminus, etaplus): shrink the step size by etaminus when the gradient changes "
     "sign, grow it by etaplus when the sign stays."),
    ("no-clamp", "Clamp the step sizes to step_sizes = (min, max) after every change."),
    ("grad-kept-after-sign-change", "Where the gradient changed sign, set it to zero: that coordinate does not "
     "move this step, and the next step then sees no sign change there."),
    ("gradient-magnitude", "Rprop uses only the sign of the gradient: p -= sign(g) * step_size."),
), combos=[("etas-swapped", "no-clamp")])

SPARSE_ADAM = optimizer_check("SparseAdam", optim_bugs.BuggableSparseAdam, [
    setting("embedding", lr=0.1),
    setting("embedding", resume=3, lr=0.1, betas=(0.5, 0.8), eps=0.1),
    setting("embedding", unused=True, groups=two_groups(0.2, 0.05), lr=0.1),
    setting("embedding_dense", expect_error=True, lr=0.1),
], _generic("grad-none-as-zero", "state-outside-self-state", "no-eps-argument") + (
    ("no-dense-check", "SparseAdam takes only sparse gradients: check p.grad.is_sparse and raise "
     "RuntimeError('SparseAdam does not support dense gradients, please consider Adam instead'), as torch does."),
    ("not-coalesced", "A sparse gradient may list a row more than once (a batch that repeats a word): "
     "coalesce() it first, which sums the repeats, before the non-linear update."),
    ("dense-update", "SparseAdam updates only the rows present in the gradient: the moments and parameters of "
     "the other rows stay as they are (plain Adam would decay and move them)."),
    ("no-bias-correction", "Divide by the bias corrections: step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)."),
    ("eps-as-in-adam", "torch's SparseAdam adds eps to sqrt(v) before the bias correction: "
     "p -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps), unlike Adam's sqrt(v_hat) + eps."),
), combos=[("no-bias-correction", "not-coalesced")])

LBFGS = optimizer_check("LBFGS", optim_bugs.BuggableLBFGS, [
    setting("quadratic", steps=3, closure=True, lr=0.5, max_iter=3),
    setting("least_squares", steps=4, closure=True, resume=2, lr=0.5, max_iter=3, history_size=2),
    setting("logistic", steps=4, closure=True, unused=True, lr=0.5, max_iter=6, max_eval=3, history_size=3),
    setting("rosenbrock", steps=3, closure=True, lr=0.5, max_iter=4, history_size=2),
], (
    ("no-no-grad", H_NO_GRAD),
    ("closure-without-enable-grad", "step() runs under torch.no_grad(), so the closure must be called with "
     "autograd on: closure = torch.enable_grad()(closure), as torch's LBFGS does; otherwise backward() fails."),
    ("first-step-not-scaled", "The very first step of L-BFGS is t = min(1, 1 / sum|g|) * lr; later ones use "
     "t = lr."),
    ("no-initial-hessian-scaling", "After each curvature pair (s, y) is stored, scale the initial inverse "
     "Hessian: H_diag = (y . s) / (y . y)."),
    ("history-size-ignored", "Keep at most history_size pairs (s, y): drop the oldest when the list is full."),
    ("state-reset-each-step", "Keep the history, the direction d, the step t and the previous gradient in "
     "self.state between calls of step(): L-BFGS continues where the previous step stopped."),
    ("returns-last-loss", "step(closure) returns the loss of the first closure() call of this step (before any "
     "update), as torch does."),
    ("max-eval-ignored", "Stop the iterations of one step once max_eval closure evaluations were used."),
), description="L-BFGS without line search")


# -- the training loop -------------------------------------------------------------------------

def _loop_cases(gen, *, device, dtype):
    cases = []
    for model, loss, n, d_in, d_out, batch, lr, momentum in [
        ("linear", "mse", 12, 3, 2, 4, 0.1, 0.0),
        ("linear", "mse", 12, 3, 2, 3, 0.05, 0.9),
        ("mlp", "cross_entropy", 16, 4, 3, 4, 0.2, 0.5),
    ]:
        X = randn(gen, n, d_in, dtype=dtype)
        if loss == "mse":
            y = randn(gen, n, d_out, dtype=dtype)
            weights = [randn(gen, d_out, d_in, dtype=dtype, scale=0.5), randn(gen, d_out, dtype=dtype, scale=0.5)]
        else:
            y = randint(gen, d_out, n)
            hidden = 5
            weights = [randn(gen, hidden, d_in, dtype=dtype, scale=0.5), randn(gen, hidden, dtype=dtype, scale=0.5),
                       randn(gen, d_out, hidden, dtype=dtype, scale=0.5), randn(gen, d_out, dtype=dtype, scale=0.5)]
        desc = "a linear layer" if model == "linear" else "a 2-layer MLP"
        label = (f"{desc} with {'MSE' if loss == 'mse' else 'cross-entropy'}, {n} samples in batches of {batch}, "
                 f"SGD(lr={lr}, momentum={momentum}) ({str(dtype).removeprefix('torch.')})")
        cases.append(Case(label, (), {"model": model, "loss": loss, "X": X.to(device), "y": y.to(device),
                                      "weights": [w.to(device) for w in weights], "batch_size": batch, "lr": lr,
                                      "momentum": momentum}, dtype))
    return cases


def _loop(zero_grad="before", result="mean", train_mode=True):
    """A training loop with switchable mistakes."""
    def train_one_epoch(net, loader, loss_fn, optimizer):
        if train_mode:
            net.train()
        losses, kept = [], []
        for X, y in loader:
            if zero_grad == "before":
                optimizer.zero_grad()
            loss = loss_fn(net(X), y)
            if zero_grad == "step-first":
                optimizer.step()
                optimizer.zero_grad()
                loss.backward()
            else:
                loss.backward()
                if zero_grad == "between":
                    optimizer.zero_grad()
                optimizer.step()
            losses.append(loss.item())
            kept.append(loss)
        if result == "sum":
            return sum(losses)
        if result == "last":
            return losses[-1]
        if result == "tensor":
            return sum(kept) / len(kept)
        return sum(losses) / len(losses)
    return train_one_epoch


TRAIN_ONE_EPOCH = Check(
    name="train_one_epoch",
    target="train_one_epoch",
    make_cases=_loop_cases,
    probe=TrainingLoopProbe(),
    meta_case=False,
    mistakes=(
        Mistake("no-zero-grad", "Call optimizer.zero_grad() for every batch: backward() adds to .grad, so without "
                "it each step uses the sum of the gradients of all batches so far.", _loop(zero_grad="never")),
        Mistake("zero-grad-between-backward-and-step", "zero_grad() between backward() and step() throws the "
                "gradients away before they are used: nothing is learned. Clear them before backward().",
                _loop(zero_grad="between")),
        Mistake("step-before-backward", "The order is zero_grad(), forward, loss, backward(), step(): step() uses "
                "the gradients backward() just computed.", _loop(zero_grad="step-first")),
        Mistake("returns-sum", "Return the mean of the batch losses: their sum grows with the number of batches.",
                _loop(result="sum")),
        Mistake("returns-last-loss", "Return the mean loss over the epoch, not the loss of the last batch.",
                _loop(result="last")),
        Mistake("loss-tensors-kept", "Accumulate loss.item() (a number), not the loss tensor: each tensor keeps "
                "its batch's whole autograd graph alive, and the result should be a plain number.",
                _loop(result="tensor")),
        Mistake("no-train-mode", "Put the model in training mode with net.train() at the start of the epoch "
                "(dropout and batch norm behave differently in eval mode).", _loop(train_mode=False)),
    ),
)

CHECKS = [SGD, ADAGRAD, RMSPROP, ADADELTA, ADAM, ADAMAX, ASGD, RPROP, SPARSE_ADAM, LBFGS, TRAIN_ONE_EPOCH]
