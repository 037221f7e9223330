"""The optimizers the course grades, written with switches (`bugs`) that turn on one known mistake each.

Not a reference: the source notebook is the only reference. With no switch
on, each class equals torch.optim's (tests/chapters/test_optimizers.py proves
it), so a class made by `with_bugs(cls, name)` differs from torch by that one
bug only, and its answer is what a student who made that mistake would get.
The base class can also make the mistakes every optimizer can make (no
torch.no_grad(), rebinding instead of updating in place, a missing gradient
read as zero, state kept outside self.state, weight decay applied to the
parameter directly).
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


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
                elif "p-slice-update" in self.bugs:
                    p[:] = p + d  # the mistake: IndexError on a 0-dim parameter
                else:
                    p.add_(d)
                self.after(p, group, state)

    def after(self, p, group, state):
        pass


class BuggableSGD(_Base):
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


class BuggableAdagrad(_Base):
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


class BuggableRMSprop(_Base):
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


class BuggableAdadelta(_Base):
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


class BuggableAdam(_Base):
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
        elif "eps-before-bias-correction" in self.bugs:
            denom = (v.sqrt() + group["eps"]) / math.sqrt(bc2)
        else:
            denom = v.sqrt() / math.sqrt(bc2) + group["eps"]
        return -step_size * st["exp_avg"] / denom


class BuggableAdamax(_Base):
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


class BuggableASGD(_Base):
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


class BuggableRprop(_Base):
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


class BuggableSparseAdam(_Base):
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


class BuggableLBFGS(Optimizer):
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


HARD_CODED_EPS = 1e-6  # what code without an eps argument often uses instead


def with_bugs(cls, *bugs: str):
    """cls with the given mistakes switched on, named as torch names the optimizer.

    "no-eps-argument": a constructor without `eps` (Python's own TypeError when it is
    passed; a hard-coded eps otherwise)."""
    name = cls.__name__.removeprefix("Buggable")
    body: dict = {"bugs": frozenset(bugs)}
    if "no-eps-argument" in bugs:
        def __init__(self, params, *args, **kwargs):
            if "eps" in kwargs:
                raise TypeError(f"{name}.__init__() got an unexpected keyword argument 'eps'")
            cls.__init__(self, params, *args, eps=HARD_CODED_EPS, **kwargs)
        body["__init__"] = __init__
    return type(name, (cls,), body)

