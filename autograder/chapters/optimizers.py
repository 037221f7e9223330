"""Checks for the `optimizers` chapter: each class mirrors torch.optim.

A case runs K steps of an optimizer on a small deterministic problem
(probes/optimizer.py) and compares the trajectory of the parameters with
the reference's, computed in float64. Settings cover every flag of each
optimizer, weight decay, two param groups with different learning rates, a
parameter that gets no gradient, a step after zero_grad(), and a
state_dict() saved to bytes and loaded into a fresh optimizer.

Known mistakes are written as the wrong code a student would write: one
compact implementation per optimizer with switches (`bugs`) that turn on one
mistake each, on a base class that can also make the mistakes every
optimizer can make (no torch.no_grad(), rebinding instead of updating in
place, a missing gradient read as zero, state kept outside self.state, weight
decay applied to the parameter directly). With no switch on, each one equals
torch.optim (tests/chapters/test_optimizers.py proves it), so a mistake
differs from torch by its one bug only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.optim import Optimizer

from autograder.checks import Case, Check, Mistake
from autograder.inputs import bernoulli, randint, randn
from autograder.probes.optimizer import OptimizerProbe, TrainingLoopProbe

# torch's fused optimizer kernels (torch functions, seen by the call watch);
# torch.optim's Python code is watched by the probe itself.
FORBIDDEN = ("_fused_sgd_", "_fused_adam_", "_fused_adamw_", "_fused_adagrad_")


# -- cases --------------------------------------------------------------------------------

def _problem(gen, dtype, name):
    """(params, data, description) of one problem, drawn in float64 and cast."""
    def r(*shape, scale=1.0):
        return randn(gen, *shape, dtype=dtype, scale=scale)

    if name == "quadratic":
        n = 7
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        eig = torch.linspace(0.5, 6.0, n, dtype=torch.float64)
        A = (q * eig) @ q.T
        A = ((A + A.T) / 2).to(dtype)
        return [r(2, 2), r(3)], {"A": A, "b": r(n)}, "a quadratic 0.5 z^T A z - b^T z (params 2x2 and 3)"
    if name == "least_squares":
        return ([r(2, 3, scale=0.5), r(2, scale=0.5)], {"X": r(8, 3), "Y": r(8, 2)},
                "least squares, a linear layer W 2x3, c 2 fit to 8 points")
    if name == "rosenbrock":
        start = torch.tensor([-1.2, 1.0], dtype=torch.float64) + 0.1 * torch.randn(2, generator=gen,
                                                                                   dtype=torch.float64)
        return [start.to(dtype)], {}, "the Rosenbrock function from near (-1.2, 1)"
    if name == "logistic":
        return ([r(4, scale=0.3), r(1, scale=0.3).reshape(())], {"X": r(10, 4), "y": bernoulli(gen, 10, dtype=dtype)},
                "a logistic regression (w of shape 4, a 0-d bias b)")
    if name in ("embedding", "embedding_dense"):
        index = torch.tensor([[0, 2, 2, 5], [1, 2, 7, 7], [5, 0, 3, 0]])
        return ([r(8, 3)], {"index": index, "target": r(3, 4, 3)},
                "an 8x3 embedding looked up by batches that repeat rows"
                + (" (sparse gradients)" if name == "embedding" else " (dense gradients)"))
    raise ValueError(name)


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
            params, data, what = _problem(gen, dtype, s["problem"])
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


# -- implementations with switchable mistakes ---------------------------------------------------

class _Base(Optimizer):
    """The loop every optimizer shares; `rule` computes one parameter's change."""

    bugs: frozenset = frozenset()

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        self._outside: dict = {}  # where "state-outside-self-state" keeps its state

    def _state(self, p):
        if "state-outside-self-state" in self.bugs:
            return self._outside.setdefault(p, {})
        return self.state[p]

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if "no-no-grad" in self.bugs:
            self._update()
        else:
            with torch.no_grad():
                self._update()
        return loss

    def _update(self):
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    if "grad-none-as-zero" not in self.bugs:
                        continue
                    g = torch.zeros_like(p)
                wd = group.get("weight_decay", 0)
                decoupled = wd != 0 and "weight-decay-decoupled" in self.bugs
                if wd != 0 and not decoupled:
                    g = g.add(p, alpha=wd)
                state = self._state(p)
                d = self.rule(p, g, group, state)
                if decoupled:
                    d = d - group["lr"] * wd * p
                if "rebind" in self.bugs:
                    p = p + d  # noqa: F841 - the mistake: a new tensor, the parameter unchanged
                else:
                    p.add_(d)
                self.after(p, group, state)

    def after(self, p, group, state):
        pass


class RefSGD(_Base):
    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def rule(self, p, g, group, st):
        mu, damp = group["momentum"], group["dampening"]
        if mu != 0:
            buf = st.get("momentum_buffer")
            if buf is None:
                if "momentum-buffer-from-zero" in self.bugs:
                    buf = torch.zeros_like(p).add_(g, alpha=1 - damp)
                else:
                    buf = g.clone()
                st["momentum_buffer"] = buf
            else:
                buf.mul_(mu).add_(g, alpha=damp if "dampening-inverted" in self.bugs else 1 - damp)
            if group["nesterov"] and "nesterov-ignored" not in self.bugs:
                g = g + (buf if "nesterov-without-momentum-factor" in self.bugs else mu * buf)
            else:
                g = buf
        return -group["lr"] * g


class RefAdagrad(_Base):
    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def rule(self, p, g, group, st):
        if not st:
            init = 0 if "initial-accumulator-ignored" in self.bugs else group["initial_accumulator_value"]
            st["step"], st["sum"] = 0, torch.full_like(p, init)
        st["step"] += 1
        t = st["step"] if "lr-decay-off-by-one" in self.bugs else st["step"] - 1
        clr = group["lr"] / (1 + t * group["lr_decay"])
        st["sum"].addcmul_(g, g)
        if "eps-inside-sqrt" in self.bugs:
            std = (st["sum"] + group["eps"]).sqrt()
        else:
            std = st["sum"].sqrt() + group["eps"]
        return -clr * g / std


class RefRMSprop(_Base):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def rule(self, p, g, group, st):
        a, eps, mu = group["alpha"], group["eps"], group["momentum"]
        if not st:
            st["step"], st["square_avg"] = 0, torch.zeros_like(p)
            st["grad_avg"], st["momentum_buffer"] = torch.zeros_like(p), torch.zeros_like(p)
        st["step"] += 1
        if "alpha-swapped" in self.bugs:
            st["square_avg"].mul_(1 - a).addcmul_(g, g, value=a)
        else:
            st["square_avg"].mul_(a).addcmul_(g, g, value=1 - a)
        sq = st["square_avg"]
        if group["centered"] and "centered-ignored" not in self.bugs:
            st["grad_avg"].mul_(a).add_(g, alpha=1 - a)
            sq = sq - st["grad_avg"] ** 2
        avg = (sq + eps).sqrt() if "eps-inside-sqrt" in self.bugs else sq.sqrt() + eps
        if mu > 0:
            if "momentum-before-scaling" in self.bugs:
                st["momentum_buffer"].mul_(mu).add_(g)
                return -group["lr"] * st["momentum_buffer"] / avg
            st["momentum_buffer"].mul_(mu).add_(g / avg)
            return -group["lr"] * st["momentum_buffer"]
        return -group["lr"] * g / avg


class RefAdadelta(_Base):
    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def rule(self, p, g, group, st):
        rho, eps = group["rho"], group["eps"]
        if not st:
            st["step"], st["square_avg"], st["acc_delta"] = 0, torch.zeros_like(p), torch.zeros_like(p)
        st["step"] += 1
        if "rho-swapped" in self.bugs:
            st["square_avg"].mul_(1 - rho).addcmul_(g, g, value=rho)
        else:
            st["square_avg"].mul_(rho).addcmul_(g, g, value=1 - rho)
        if "eps-outside-sqrt" in self.bugs:
            delta = (st["acc_delta"].sqrt() + eps) / (st["square_avg"].sqrt() + eps) * g
        else:
            delta = (st["acc_delta"] + eps).sqrt() / (st["square_avg"] + eps).sqrt() * g
        st["acc_delta"].mul_(rho).addcmul_(delta, delta, value=1 - rho)
        return -delta if "lr-ignored" in self.bugs else -group["lr"] * delta


class RefAdam(_Base):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def rule(self, p, g, group, st):
        b1, b2 = group["betas"]
        if not st:
            st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
            if group["amsgrad"]:
                st["max_exp_avg_sq"] = torch.zeros_like(p)
        st["step"] += 1
        t = st["step"]
        st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        if "no-bias-correction" in self.bugs:
            bc1 = bc2 = 1.0
        elif "bias-correction-off-by-one" in self.bugs:
            bc1, bc2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        elif "bias-correction-from-step-zero" in self.bugs:
            bc1, bc2 = 1 - b1 ** (t - 1), 1 - b2 ** (t - 1)
        else:
            bc1, bc2 = 1 - b1**t, 1 - b2**t
        step_size = group["lr"] / bc1
        v = st["exp_avg_sq"]
        if group["amsgrad"] and "amsgrad-ignored" not in self.bugs:
            if "amsgrad-max-of-corrected" in self.bugs:
                st["max_exp_avg_sq"] = torch.maximum(st["max_exp_avg_sq"], v / bc2)
                v, bc2 = st["max_exp_avg_sq"], 1.0
            else:
                st["max_exp_avg_sq"] = torch.maximum(st["max_exp_avg_sq"], v)
                v = st["max_exp_avg_sq"]
        if "eps-inside-sqrt" in self.bugs:
            denom = (v / bc2 + group["eps"]).sqrt()
        else:
            denom = v.sqrt() / math.sqrt(bc2) + group["eps"]
        return -step_size * st["exp_avg"] / denom


class RefAdamax(_Base):
    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def rule(self, p, g, group, st):
        b1, b2 = group["betas"]
        eps = group["eps"]
        if not st:
            st["step"], st["exp_avg"], st["exp_inf"] = 0, torch.zeros_like(p), torch.zeros_like(p)
        st["step"] += 1
        t = st["step"]
        st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        if "eps-outside-max" in self.bugs:
            st["exp_inf"] = torch.maximum(st["exp_inf"] * b2, g.abs())
            u = st["exp_inf"] + eps
        else:
            st["exp_inf"] = torch.maximum(st["exp_inf"] * b2, g.abs() + eps)
            u = st["exp_inf"]
        if "infinity-norm-bias-corrected" in self.bugs:
            u = u / (1 - b2**t)
        clr = group["lr"] if "no-bias-correction" in self.bugs else group["lr"] / (1 - b1**t)
        return -clr * st["exp_avg"] / u


class RefASGD(_Base):
    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0):
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay))

    def _eta(self, group, t):
        return group["lr"] / (1 + group["lambd"] * group["lr"] * t) ** group["alpha"]

    def rule(self, p, g, group, st):
        if not st:
            st["step"], st["eta"], st["mu"], st["ax"] = 0, group["lr"], 1.0, torch.zeros_like(p)
        st["step"] += 1
        eta = self._eta(group, st["step"]) if "eta-off-by-one" in self.bugs else st["eta"]
        if "no-decay-term" in self.bugs:
            return -eta * g
        return -group["lambd"] * eta * p - eta * g

    def after(self, p, group, st):
        if "ax" not in st:
            return
        t = st["step"]
        if st["mu"] != 1:
            st["ax"].add_((p - st["ax"]) * st["mu"])
        else:
            st["ax"].copy_(p)
        st["eta"] = self._eta(group, t)
        st["mu"] = 1 / t if "average-from-start" in self.bugs else 1 / max(1, t - group["t0"])


class RefRprop(_Base):
    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50)):
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes))

    def rule(self, p, g, group, st):
        etaminus, etaplus = group["etas"]
        if "etas-swapped" in self.bugs:
            etaminus, etaplus = etaplus, etaminus
        lo, hi = group["step_sizes"]
        if not st:
            st["step"], st["prev"], st["step_size"] = 0, torch.zeros_like(p), torch.full_like(p, group["lr"])
        st["step"] += 1
        s = (g * st["prev"]).sign()
        factor = torch.ones_like(s)
        factor[s > 0] = etaplus
        factor[s < 0] = etaminus
        st["step_size"].mul_(factor)
        if "no-clamp" not in self.bugs:
            st["step_size"].clamp_(lo, hi)
        if "grad-kept-after-sign-change" not in self.bugs:
            g = torch.where(s < 0, torch.zeros_like(g), g)
        st["prev"] = g.clone()
        if "gradient-magnitude" in self.bugs:
            return -g * st["step_size"]
        return -g.sign() * st["step_size"]


class RefSparseAdam(_Base):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    def rule(self, p, g, group, st):
        b1, b2 = group["betas"]
        if not g.is_sparse:
            if "no-dense-check" in self.bugs:
                g.coalesce()  # raises, without saying why
            raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")
        if not st:
            st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
        st["step"] += 1
        t = st["step"]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        bc1, bc2 = (1.0, 1.0) if "no-bias-correction" in self.bugs else (1 - b1**t, 1 - b2**t)
        if "dense-update" in self.bugs:
            dense = g.to_dense()
            m.mul_(b1).add_(dense, alpha=1 - b1)
            v.mul_(b2).addcmul_(dense, dense, value=1 - b2)
            return -group["lr"] * math.sqrt(bc2) / bc1 * m / (v.sqrt() + group["eps"])
        if "not-coalesced" not in self.bugs:
            g = g.coalesce()
        rows, values = g._indices()[0], g._values()
        m[rows] = b1 * m[rows] + (1 - b1) * values  # with repeated rows, the last one wins
        v[rows] = b2 * v[rows] + (1 - b2) * values**2
        d = torch.zeros_like(p)
        if "eps-as-in-adam" in self.bugs:
            d[rows] = -group["lr"] / bc1 * m[rows] / (v[rows].sqrt() / math.sqrt(bc2) + group["eps"])
        else:
            d[rows] = -group["lr"] * math.sqrt(bc2) / bc1 * m[rows] / (v[rows].sqrt() + group["eps"])
        return d


class RefLBFGS(Optimizer):
    """torch's L-BFGS without line search, with switchable mistakes."""

    bugs: frozenset = frozenset()

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))
        self._params = self.param_groups[0]["params"]

    def _flat_grad(self):
        return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                          for p in self._params])

    def _add(self, t, d):
        i = 0
        for p in self._params:
            p.add_(d[i:i + p.numel()].view_as(p), alpha=t)
            i += p.numel()

    def step(self, closure):
        if "no-no-grad" in self.bugs:
            return self._step(closure)
        with torch.no_grad():
            return self._step(closure)

    def _step(self, closure):
        if "closure-without-enable-grad" not in self.bugs:
            closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tol_grad, tol_change, history = group["tolerance_grad"], group["tolerance_change"], group["history_size"]
        state = self.state[self._params[0]]
        if "state-reset-each-step" in self.bugs:
            state.clear()
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss = float(orig_loss.detach())
        evals = 1
        g = self._flat_grad()
        if g.abs().max() <= tol_grad:
            return orig_loss
        d, t = state.get("d"), state.get("t")
        old_y, old_s, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_g, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d, old_y, old_s, ro, H_diag = -g, [], [], [], 1
            else:
                y, s = g - prev_g, d * t
                ys = y.dot(s)
                if ys > 1e-10:
                    if len(old_y) == history and "history-size-ignored" not in self.bugs:
                        old_y.pop(0), old_s.pop(0), ro.pop(0)
                    old_y.append(y), old_s.append(s), ro.append(1.0 / ys)
                    if "no-initial-hessian-scaling" not in self.bugs:
                        H_diag = ys / y.dot(y)
                al = [None] * len(old_y)
                q = -g
                for i in range(len(old_y) - 1, -1, -1):
                    al[i] = old_s[i].dot(q) * ro[i]
                    q = q - al[i] * old_y[i]
                r = q * H_diag
                for i in range(len(old_y)):
                    be = old_y[i].dot(r) * ro[i]
                    r = r + (al[i] - be) * old_s[i]
                d = r
            prev_g, prev_loss = g.clone(), loss
            if state["n_iter"] == 1 and "first-step-not-scaled" not in self.bugs:
                t = min(1.0, 1.0 / g.abs().sum()) * lr
            else:
                t = lr
            if g.dot(d) > -tol_change:
                break
            self._add(t, d)
            if n_iter != max_iter:
                loss = float(closure().detach())
                g = self._flat_grad()
                evals += 1
            if n_iter == max_iter:
                break
            if evals >= max_eval and "max-eval-ignored" not in self.bugs:
                break
            if g.abs().max() <= tol_grad or (d * t).abs().max() <= tol_change or abs(loss - prev_loss) < tol_change:
                break
        state.update(d=d, t=t, old_dirs=old_y, old_stps=old_s, ro=ro, H_diag=H_diag, prev_flat_grad=prev_g,
                     prev_loss=prev_loss)
        return loss if "returns-last-loss" in self.bugs else orig_loss


def buggy(cls, *bugs: str):
    """cls with the given mistakes switched on."""
    return type(cls.__name__.removeprefix("Ref"), (cls,), {"bugs": frozenset(bugs)})


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


def _generic(*names: str) -> tuple[tuple[str, str], ...]:
    table = {"no-no-grad": H_NO_GRAD, "rebind": H_REBIND, "grad-none-as-zero": H_GRAD_NONE,
             "state-outside-self-state": H_STATE, "weight-decay-decoupled": H_DECOUPLED}
    return tuple((n, table[n]) for n in names)


def mistakes(cls, pairs) -> tuple[Mistake, ...]:
    return tuple(Mistake(name, hint, buggy(cls, name)) for name, hint in pairs)


def optimizer_check(name: str, cls, settings, pairs, **kw) -> Check:
    return Check(name=name, target=name, make_cases=optimizer_cases(name, settings), probe=OptimizerProbe(),
                 mistakes=mistakes(cls, pairs), forbidden=FORBIDDEN, meta_case=False, **kw)


def two_groups(lr_a: float, lr_b: float, **extra_b):
    return [{"params": [0], "lr": lr_a}, {"params": "rest", "lr": lr_b, **extra_b}]


# -- the checks ---------------------------------------------------------------------------------

SGD = optimizer_check("SGD", RefSGD, [
    setting("quadratic", lr=0.1),
    setting("quadratic", unused=True, lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1),
    setting("least_squares", groups=two_groups(0.1, 0.02, weight_decay=0.05), lr=0.05, momentum=0.8,
            nesterov=True, weight_decay=0.2),
    setting("rosenbrock", resume=3, lr=1e-3, momentum=0.5),
    setting("logistic", unused=True, resume=2, lr=0.5, momentum=0.9, weight_decay=0.1),
], _generic("no-no-grad", "rebind", "grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled") + (
    ("momentum-buffer-from-zero", "The momentum buffer starts as a copy of the first gradient, buf = g "
     "(torch.clone(g).detach()), not as zeros followed by the dampened update: with dampening the first step "
     "would be (1 - dampening) times too small."),
    ("dampening-inverted", "The buffer update is buf = momentum * buf + (1 - dampening) * g: dampening "
     "removes a fraction of the new gradient."),
    ("nesterov-ignored", "With nesterov=True the step uses g + momentum * buf (a look-ahead), not buf."),
    ("nesterov-without-momentum-factor", "Nesterov's look-ahead is g + momentum * buf, with the momentum factor."),
))

ADAGRAD = optimizer_check("Adagrad", RefAdagrad, [
    setting("quadratic", lr=0.5),
    setting("least_squares", unused=True, lr=0.3, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5,
            eps=0.1),
    setting("logistic", groups=two_groups(0.4, 0.1), resume=3, lr=0.2, initial_accumulator_value=0.1),
    setting("rosenbrock", lr=0.05, eps=1e-3),
], _generic("grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled") + (
    ("eps-inside-sqrt", H_EPS_INSIDE),
    ("lr-decay-off-by-one", "The decayed rate of step t (counted from 1) is lr / (1 + (t - 1) * lr_decay): "
     "the first step uses lr itself."),
    ("initial-accumulator-ignored", "The sum of squared gradients starts at initial_accumulator_value, "
     "torch.full_like(p, initial_accumulator_value), not at zero."),
))

RMSPROP = optimizer_check("RMSprop", RefRMSprop, [
    setting("quadratic", lr=0.05),
    setting("least_squares", unused=True, lr=0.02, alpha=0.9, eps=0.1, weight_decay=0.1, momentum=0.5),
    setting("logistic", resume=3, lr=0.05, alpha=0.8, centered=True),
    setting("quadratic", groups=two_groups(0.02, 0.005), lr=0.01, centered=True, momentum=0.9, eps=1e-3),
], _generic("grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled") + (
    ("eps-inside-sqrt", H_EPS_INSIDE),
    ("alpha-swapped", "square_avg = alpha * square_avg + (1 - alpha) * g^2: alpha (close to 1) weighs the "
     "old average."),
    ("centered-ignored", "With centered=True, subtract the square of the running mean of the gradients: "
     "avg = sqrt(square_avg - grad_avg^2) + eps, an estimate of their variance."),
    ("momentum-before-scaling", "With momentum, the buffer accumulates the scaled gradient: "
     "buf = momentum * buf + g / avg, then p -= lr * buf."),
))

ADADELTA = optimizer_check("Adadelta", RefAdadelta, [
    setting("quadratic", lr=1.0),
    setting("least_squares", unused=True, lr=2.0, rho=0.8, eps=1e-3, weight_decay=0.1),
    setting("logistic", groups=two_groups(3.0, 0.5), resume=3, lr=1.0, rho=0.5),
], _generic("state-outside-self-state", "weight-decay-decoupled") + (
    ("eps-outside-sqrt", "Adadelta adds eps inside both square roots: sqrt(acc_delta + eps) / sqrt(square_avg "
     "+ eps). At the start acc_delta is 0, so sqrt(acc_delta) + eps would make the first steps tiny."),
    ("lr-ignored", "torch's Adadelta multiplies the step by lr (default 1.0): p -= lr * delta."),
    ("rho-swapped", "square_avg = rho * square_avg + (1 - rho) * g^2 (and the same for acc_delta): rho weighs "
     "the old average."),
))

ADAM = optimizer_check("Adam", RefAdam, [
    setting("quadratic", lr=0.1),
    setting("least_squares", unused=True, lr=0.05, betas=(0.8, 0.9), eps=0.1, weight_decay=0.1),
    setting("logistic", resume=3, lr=0.1, betas=(0.5, 0.6), amsgrad=True),
    setting("rosenbrock", groups=None, lr=0.05, betas=(0.9, 0.99), amsgrad=True),
    setting("quadratic", groups=two_groups(0.1, 0.01, amsgrad=True), lr=0.05),
], _generic("no-no-grad", "rebind", "grad-none-as-zero", "state-outside-self-state", "weight-decay-decoupled") + (
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
))

ADAMAX = optimizer_check("Adamax", RefAdamax, [
    setting("quadratic", lr=0.1),
    setting("least_squares", unused=True, lr=0.05, betas=(0.8, 0.9), eps=0.1, weight_decay=0.1),
    setting("logistic", groups=two_groups(0.2, 0.05), resume=3, lr=0.1, betas=(0.5, 0.7)),
], _generic("state-outside-self-state", "weight-decay-decoupled") + (
    ("no-bias-correction", "Divide the step by 1 - beta1^t (t counted from 1): m starts at zero."),
    ("eps-outside-max", "torch adds eps to |g| inside the maximum: u = max(beta2 * u, |g| + eps); u itself is "
     "the denominator."),
    ("infinity-norm-bias-corrected", "Only m is bias-corrected in Adamax; the infinity norm u is not (a "
     "maximum is not biased towards zero the way an average is)."),
))

ASGD = optimizer_check("ASGD", RefASGD, [
    setting("quadratic", report=("ax",), lr=0.1),
    setting("least_squares", unused=True, report=("ax",), lr=0.1, lambd=0.5, alpha=0.75, t0=2, weight_decay=0.1),
    setting("logistic", resume=3, report=("ax",), lr=0.3, lambd=0.3, alpha=1.0, t0=1),
], _generic("state-outside-self-state", "weight-decay-decoupled") + (
    ("no-decay-term", "ASGD first shrinks the parameter, p *= 1 - lambd * eta, then takes the step -eta * g."),
    ("eta-off-by-one", "Step t uses the eta computed at the end of step t - 1 (eta = lr on the first step); "
     "then eta = lr / (1 + lambd * lr * t)^alpha for the next one."),
    ("average-from-start", "The average starts at step t0: mu = 1 / max(1, t - t0), so until then ax just "
     "follows p."),
))

RPROP = optimizer_check("Rprop", RefRprop, [
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
))

SPARSE_ADAM = optimizer_check("SparseAdam", RefSparseAdam, [
    setting("embedding", lr=0.1),
    setting("embedding", resume=3, lr=0.1, betas=(0.5, 0.8), eps=0.1),
    setting("embedding", unused=True, groups=two_groups(0.2, 0.05), lr=0.1),
    setting("embedding_dense", expect_error=True, lr=0.1),
], _generic("grad-none-as-zero", "state-outside-self-state") + (
    ("no-dense-check", "SparseAdam takes only sparse gradients: check p.grad.is_sparse and raise "
     "RuntimeError('SparseAdam does not support dense gradients, please consider Adam instead'), as torch does."),
    ("not-coalesced", "A sparse gradient may list a row more than once (a batch that repeats a word): "
     "coalesce() it first, which sums the repeats, before the non-linear update."),
    ("dense-update", "SparseAdam updates only the rows present in the gradient: the moments and parameters of "
     "the other rows stay as they are (plain Adam would decay and move them)."),
    ("no-bias-correction", "Divide by the bias corrections: step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)."),
    ("eps-as-in-adam", "torch's SparseAdam adds eps to sqrt(v) before the bias correction: "
     "p -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps), unlike Adam's sqrt(v_hat) + eps."),
))

LBFGS = optimizer_check("LBFGS", RefLBFGS, [
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
