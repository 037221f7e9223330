"""The optimizers chapter's checks, proven both ways.

1. The reference (the source notebook's solution cells) equals torch.optim on
   every case the grader uses and on fresh random settings: torch is the oracle.
2. The chapter's own switchable implementations, with no mistake switched on,
   equal torch.optim too: each catalogued mistake differs from torch by its bug only.
3. Every catalogued mistake loses points and gets its own hint.
4. Known-correct alternatives keep full marks.
5. Using torch.optim's own code inside is detected, whatever the route.
"""
from __future__ import annotations

import pytest
import torch

import autograder.chapters.optimizers as chapter
import autograder.mistakes.optimizers as optim_bugs
from autograder.compare import compare_answers
from autograder.probes import run_probe
from tests.conftest import assert_full_marks, grade_impl, grader, reference

STEM = "optimizers"
OPTIMIZERS = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "Adamax", "ASGD", "Rprop", "SparseAdam", "LBFGS"]


def _unwatched(check):
    return type(check)(**{**check.__dict__, "forbidden": ()})


def _same_as_torch(name, impl):
    """impl against torch.optim.<name> on every graded case, in the case dtype and in float64."""
    p = grader(STEM).prepared[name]
    check = _unwatched(p.check)
    for case in p.cases:
        for c in (case, case.upcast()):
            ours = run_probe(check, impl, c)
            theirs = run_probe(check, getattr(torch.optim, name), c)
            assert not ours["error"] and not theirs["error"], (c.label, ours["error"], theirs["error"])
            assert compare_answers(ours, theirs, case=c) is None, (c.label, compare_answers(ours, theirs, case=c))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_reference_equals_torch_on_every_case(name):
    _same_as_torch(name, reference(STEM)[name])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_chapter_implementation_without_mistakes_equals_torch(name):
    _same_as_torch(name, getattr(optim_bugs, f"Buggable{name}"))


def _random_options(name, g):
    def u(lo, hi):
        return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))

    flag = bool(torch.rand((), generator=g) < 0.5)
    return {
        "SGD": dict(lr=u(0.01, 0.1), momentum=u(0.1, 0.9), dampening=0.0 if flag else u(0, 0.5),
                    weight_decay=u(0, 0.2), nesterov=flag),
        "Adagrad": dict(lr=u(0.05, 0.5), lr_decay=u(0, 0.2), weight_decay=u(0, 0.2),
                        initial_accumulator_value=u(0, 1), eps=u(1e-10, 0.1)),
        "RMSprop": dict(lr=u(0.005, 0.05), alpha=u(0.5, 0.99), eps=u(1e-8, 0.1), weight_decay=u(0, 0.2),
                        momentum=u(0, 0.9), centered=flag),
        "Adadelta": dict(lr=u(0.5, 2), rho=u(0.5, 0.95), eps=u(1e-6, 1e-2), weight_decay=u(0, 0.2)),
        "Adam": dict(lr=u(0.01, 0.1), betas=(u(0.5, 0.95), u(0.6, 0.999)), eps=u(1e-8, 0.1),
                     weight_decay=u(0, 0.2), amsgrad=flag),
        "Adamax": dict(lr=u(0.01, 0.1), betas=(u(0.5, 0.95), u(0.6, 0.999)), eps=u(1e-8, 0.1),
                       weight_decay=u(0, 0.2)),
        "ASGD": dict(lr=u(0.01, 0.2), lambd=u(0, 0.5), alpha=u(0.5, 1), t0=float(int(u(0, 4))),
                     weight_decay=u(0, 0.2)),
        "Rprop": dict(lr=u(0.01, 0.1), etas=(u(0.2, 0.8), u(1.1, 1.6)), step_sizes=(u(1e-4, 0.01), u(0.05, 0.5))),
        "LBFGS": dict(lr=u(0.2, 1), max_iter=int(u(2, 6)), history_size=int(u(1, 5))),
    }[name]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "SparseAdam"])
def test_reference_equals_torch_on_fresh_random_settings(name, seed):
    """Random hyperparameters and starting points, a least-squares problem, float64."""
    g = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(10, 2, generator=g, dtype=torch.float64)
    W0, c0 = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
    options = _random_options(name, g)

    def run(cls):
        W, c = W0.clone().requires_grad_(), c0.clone().requires_grad_()
        opt = cls([W, c], **options)

        def closure():
            opt.zero_grad()
            loss = ((X @ W.T + c - Y) ** 2).mean()
            loss.backward()
            return loss

        rows = []
        for _ in range(5):
            if name == "LBFGS":
                opt.step(closure)
            else:
                closure()
                opt.step()
            rows.append(torch.cat([W.detach().flatten(), c.detach().flatten()]))
        return torch.stack(rows)

    # torch's ASGD keeps eta in a float32 scalar tensor even for float64 parameters.
    tol = 1e-6 if name == "ASGD" else 1e-9
    torch.testing.assert_close(run(reference(STEM)[name]), run(getattr(torch.optim, name)), rtol=tol, atol=tol)


def test_reference_training_loop_equals_an_independent_loop():
    p = grader(STEM).prepared["train_one_epoch"]
    check = _unwatched(p.check)
    for case in p.cases:
        ours = run_probe(check, reference(STEM)["train_one_epoch"], case.upcast())
        theirs = run_probe(check, chapter._loop(), case.upcast())
        assert compare_answers(ours, theirs, case=case.upcast()) is None, case.label


def test_the_issue_s_catalogue_is_covered():
    """Bias correction, eps placement, weight decay placement, momentum buffer init, in-place
    updates under autograd, forgetting zero_grad: each is a catalogued mistake somewhere."""
    names = {(c.name, m.name) for c in grader(STEM).checks.values() for m in c.mistakes}
    for wanted in [("Adam", "no-bias-correction"), ("Adam", "bias-correction-off-by-one"),
                   ("Adam", "eps-inside-sqrt"), ("Adadelta", "eps-outside-sqrt"),
                   ("Adam", "weight-decay-decoupled"), ("SGD", "weight-decay-decoupled"),
                   ("SGD", "momentum-buffer-from-zero"), ("SGD", "no-no-grad"), ("SGD", "rebind"),
                   ("train_one_epoch", "no-zero-grad")]:
        assert wanted in names, wanted


# -- known-correct alternatives ----------------------------------------------------------------


class AdamWithLerpAndData(torch.optim.Optimizer):
    """Adam written differently: lerp_ for the averages, updates through .data without no_grad,
    bias correction folded into the step size the Adam paper's way (with eps scaled to match)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.detach()
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * p.detach()
                st = self.state[p]
                if not st:
                    st["t"] = torch.zeros((), dtype=torch.float64)
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                    st["vmax"] = torch.zeros_like(p)
                st["t"] += 1
                t = float(st["t"])
                st["m"].lerp_(g, 1 - b1)
                st["v"].lerp_(g * g, 1 - b2)
                v = st["v"]
                if group["amsgrad"]:
                    st["vmax"].copy_(torch.maximum(st["vmax"], v))
                    v = st["vmax"]
                c2 = (1 - b2**t) ** 0.5
                step = group["lr"] * c2 / (1 - b1**t)
                p.data.addcdiv_(st["m"], v.sqrt() + group["eps"] * c2, value=-step)


class SGDForeach(torch.optim.Optimizer):
    """SGD over all parameters of a group at once with torch._foreach_* ops."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            gs = [p.grad for p in ps]
            if group["weight_decay"]:
                gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
            if group["momentum"]:
                mu = group["momentum"]
                bufs = []
                for p, g in zip(ps, gs):
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = g.clone()
                    else:
                        st["momentum_buffer"].mul_(mu).add_(g, alpha=1 - group["dampening"])
                    bufs.append(st["momentum_buffer"])
                gs = torch._foreach_add(gs, bufs, alpha=mu) if group["nesterov"] else bufs
            torch._foreach_add_(ps, gs, alpha=-group["lr"])


class SparseAdamViaSparseMask(torch.optim.Optimizer):
    """SparseAdam with sparse_mask and sparse additions, as torch's functional kernel does it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("dense gradients are not supported")
                st = self.state[p]
                if not st:
                    st["step"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                grad = p.grad.coalesce()
                idx, vals = grad._indices(), grad._values()

                def sparse(values):
                    return torch.sparse_coo_tensor(idx, values, grad.size(), check_invariants=False)

                old_m = st["m"].sparse_mask(grad)._values()
                dm = (vals - old_m) * (1 - b1)
                st["m"].add_(sparse(dm))
                old_v = st["v"].sparse_mask(grad)._values()
                dv = (vals**2 - old_v) * (1 - b2)
                st["v"].add_(sparse(dv))
                t = st["step"]
                size = group["lr"] * (1 - b2**t) ** 0.5 / (1 - b1**t)
                p.add_(sparse(-size * (dm + old_m) / ((dv + old_v).sqrt() + group["eps"])))


def train_with_sample_weighted_mean(net, loader, loss_fn, optimizer):
    """Weights each batch loss by its size (the batches are equal, so the mean is the same)."""
    net.train()
    total, n = 0.0, 0
    for X, y in loader:
        optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(net(X), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(X)
        n += len(X)
    return total / n


ALTERNATIVES = [
    pytest.param("Adam", AdamWithLerpAndData, id="Adam:lerp-data-paper-eps"),
    pytest.param("SGD", SGDForeach, id="SGD:foreach"),
    pytest.param("SparseAdam", SparseAdamViaSparseMask, id="SparseAdam:sparse-mask"),
    pytest.param("train_one_epoch", train_with_sample_weighted_mean, id="train_one_epoch:sample-weighted"),
] + [pytest.param(n, getattr(optim_bugs, f"Buggable{n}"), id=f"{n}:chapter-implementation") for n in OPTIMIZERS]


@pytest.mark.parametrize("name, impl", ALTERNATIVES)
def test_known_correct_alternative_keeps_full_marks(name, impl):
    assert_full_marks(STEM, name, impl)


# -- calling torch.optim's own code --------------------------------------------------------------


class AdamSubclassingTorch(torch.optim.Adam):
    pass


class AdamCallingTorchInside(torch.optim.Optimizer):
    def __init__(self, params, **kw):
        super().__init__(params, {})
        self.inner = torch.optim.Adam(self.param_groups[0]["params"], **kw)

    def step(self, closure=None):
        return self.inner.step(closure)


class SGDCallingTheFunctionalKernel(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        from torch.optim.sgd import _single_tensor_sgd as kernel  # renamed: still seen

        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            bufs = [self.state[p].get("momentum_buffer") for p in ps]
            kernel(ps, [p.grad for p in ps], bufs, None, None, weight_decay=group["weight_decay"],
                   momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                   nesterov=group["nesterov"], maximize=False, has_sparse_grad=False)
            for p, b in zip(ps, bufs):
                if b is not None:
                    self.state[p]["momentum_buffer"] = b


@pytest.mark.parametrize("name, impl", [
    pytest.param("Adam", AdamSubclassingTorch, id="subclass-torch.optim.Adam"),
    pytest.param("Adam", AdamCallingTorchInside, id="torch.optim.Adam-inside"),
    pytest.param("SGD", SGDCallingTheFunctionalKernel, id="_single_tensor_sgd"),
])
def test_using_torch_optim_inside_scores_zero_with_a_message(name, impl):
    result = grade_impl(STEM, name, impl)
    assert result.points == 0
    assert any("the torch function this exercise asks you to write" in v.message for v in result.cases)


def test_stub_scores_zero_and_says_not_implemented():
    class SGD(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
            raise NotImplementedError()

    result = grade_impl(STEM, "SGD", SGD)
    assert result.points == 0
    assert all("NotImplementedError" in v.message for v in result.cases)


def test_state_in_another_dtype_is_reported():
    ref = reference(STEM)["Adagrad"]

    class Adagrad(ref):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and not self.state[p]:
                        self.state[p]["step"] = 0
                        self.state[p]["sum"] = torch.full(p.shape, group["initial_accumulator_value"],
                                                          dtype=torch.float64, device=p.device)
            return super().step(closure)

    result = grade_impl(STEM, "Adagrad", Adagrad)
    assert result.points < result.max_points
    assert any("state['sum'] of parameter 0 has dtype torch.float64" in v.message for v in result.cases)


def test_every_case_reports_the_state_device():
    p = grader(STEM).prepared["Adam"]
    for case, ref in zip(p.cases, p.reference):
        assert ref["values"]["state"] == "ok", case.label


def test_dense_gradients_for_sparse_adam_must_raise():
    ref = reference(STEM)["SparseAdam"]

    class Lenient(ref):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and not p.grad.is_sparse:
                        p.grad = p.grad.to_sparse()
            return super().step(closure)

    result = grade_impl(STEM, "SparseAdam", Lenient)
    failed = [v for v in result.cases if not v.passed]
    assert failed and all("dense gradients" in v.message for v in failed)
    assert result.passed == result.total - len(failed) > 0
