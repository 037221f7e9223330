"""Probe an optimizer class, and a training loop.

`OptimizerProbe` runs K optimizer steps on a small deterministic problem, the
way a training loop does (zero_grad, loss, backward, step), and returns the
parameters after each step. The probe computes the loss itself from the
case's tensors, so the student's code only ever sees parameters and their
gradients, as it would in training. The case (its kwargs) says:

    problem        a key of PROBLEMS: the loss of the parameters
    data           the problem's fixed tensors (a dict)
    params         initial values of the parameters (a list of tensors)
    unused         how many trailing params take no part in the loss (p.grad stays None)
    groups         None, or param groups: [{"params": [indices into params], "lr": ...}, ...]
    options        the constructor's keyword arguments
    steps          K
    closure        call step(closure) (LBFGS) instead of step()
    idle_step      then zero_grad() and step() once more with no gradient: nothing may move
    resume_after   save state_dict() after this many steps (through torch.save), load it
                   into a fresh optimizer over fresh parameters and continue to K
    report_state   state entries to return after K steps (e.g. ("ax",) for ASGD)
    expect_error   the gradients are not the kind the optimizer takes (SparseAdam and a
                   dense gradient): step() must raise a RuntimeError that says so

What comes back, by name (compared in this order):

    step                 "ok", or which step raised what (an error inside a step is a result:
                         known mistakes raise the same errors, so they can be recognised)
    trajectory           (K [+1], n): every parameter, flattened and concatenated, after each step
    losses returned by step(closure)   (K,), with `closure`
    state['<key>']       with `report_state`
    resumed trajectory   with `resume_after`: the steps after the reload
    state                "ok", or which state tensor is not on its parameter's device or dtype

The optimizers run with autograd enabled, as in a training loop: a step must
make its in-place updates under torch.no_grad(). Calls of torch.optim's own
optimizer code (an optimizer's step, the functional kernels such as
torch.optim.adam._single_tensor_adam) are reported as forbidden, whatever
name reached them: the probe watches Python code objects while the graded
code runs, besides the torch functions the check forbids.

`TrainingLoopProbe` calls `impl(model, loader, loss_fn, optimizer)` once on a
small model built from the case and returns the parameters after the epoch,
what the function returned, and whether it left the model in training mode.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import pkgutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from typing import Any

import torch

from autograder.probes.optim_problems import PROBLEMS


# torch.optim imports torch._dynamo (about 1.5 s) when the first optimizer is
# made. Importing it here, with the chapter's checks, pays that once in the
# runner's fork server instead of once in every sandboxed child.
try:
    import torch._dynamo  # noqa: F401
except Exception:  # noqa: BLE001 - only a speed-up
    pass

# -- watching for torch.optim's own code -------------------------------------------

# torch.optim modules that hold no optimizer arithmetic (the base class the
# students subclass, schedulers, weight averaging).
_ALLOWED_MODULES = {"optimizer", "lr_scheduler", "swa_utils", "_multi_tensor"}


@lru_cache(maxsize=1)
def torch_optim_code() -> dict:
    """Code object -> name for torch.optim's optimizer code: every function
    of its optimizer modules (the functional kernels) and every non-dunder
    method of its optimizer classes (step, _init_group, ...)."""
    import torch.optim as optim

    codes: dict = {}
    for info in pkgutil.iter_modules(optim.__path__):
        if info.name in _ALLOWED_MODULES:
            continue
        try:
            mod = importlib.import_module(f"torch.optim.{info.name}")
        except Exception:  # noqa: BLE001 - an optional module of some torch version
            continue
        for name, obj in vars(mod).items():
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                codes[inspect.unwrap(obj).__code__] = f"{mod.__name__}.{name}"
            elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
                for attr, fn in vars(obj).items():
                    if inspect.isfunction(fn) and not attr.startswith("__"):
                        codes[inspect.unwrap(fn).__code__] = f"{mod.__name__}.{obj.__name__}.{attr}"
    return codes


@lru_cache(maxsize=1)
def torch_optimizer_constructors() -> dict:
    """Code object -> name for the __init__ of every optimizer class torch.optim exports
    (reported where a function may not use torch.optim at all, not even to build one)."""
    import torch.optim as optim

    return {vars(cls)["__init__"].__code__: f"torch.optim.{cls.__name__}" for cls in vars(optim).values()
            if isinstance(cls, type) and issubclass(cls, optim.Optimizer) and cls is not optim.Optimizer
            and inspect.isfunction(vars(cls).get("__init__"))}


@contextlib.contextmanager
def watching(watch, *, constructors: bool = False):
    """`with watch:` plus a profile hook that reports torch.optim's code
    (and, with `constructors`, the making of any torch.optim optimizer)."""
    if watch is None:
        yield
        return
    codes = torch_optim_code()
    if constructors:
        codes = {**codes, **torch_optimizer_constructors()}
    previous = sys.getprofile()

    def profile(frame, event, arg):
        if event == "call":
            name = codes.get(frame.f_code)
            if name is not None and name not in watch.seen:
                watch.seen.append(name)

    sys.setprofile(profile)
    try:
        with watch:
            yield
    finally:
        sys.setprofile(previous)


# -- the optimizer probe ---------------------------------------------------------------


class _StepFailed(Exception):
    """A step raised, or left the parameters broken; the message is the result."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().split("\n")[0]
    text = text[:300] + (" ..." if len(text) > 300 else "")
    return f"{type(exc).__name__}: {text}"


def _leaves(values) -> list[torch.Tensor]:
    return [v.detach().clone().requires_grad_(True) for v in values]


def _param_spec(params, groups):
    """What the constructor receives: the tensors, or param-group dicts."""
    if groups is None:
        return list(params)
    return [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[i] for i in g["params"]]}
            for g in groups]


def _snapshot(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def _as_loss(value, like: torch.Tensor):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.detach().reshape(())
    if isinstance(value, Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    return None


def _state_tensors(obj, path=""):
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _state_tensors(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _state_tensors(v, f"{path}[{i}]")


def state_problem(opt, params) -> str:
    """'ok' when every state tensor with a dimension follows its parameter's device and dtype."""
    state = getattr(opt, "state", None)
    if not isinstance(state, dict):
        return "ok"
    for i, p in enumerate(params):
        if p not in state:
            continue
        for path, t in _state_tensors(state[p]):
            if t.dim() == 0 or not t.is_floating_point():
                continue  # step counters and scalars may live anywhere
            if t.device != p.device:
                return (f"state{path} of parameter {i} is on {t.device}, its parameter on {p.device}: "
                        "make state with torch.zeros_like(p) or device=p.device")
            if t.dtype != p.dtype:
                return (f"state{path} of parameter {i} has dtype {t.dtype}, its parameter {p.dtype}: "
                        "make state with torch.zeros_like(p) or dtype=p.dtype")
    return "ok"


@dataclass(frozen=True)
class OptimizerProbe:
    """Runs an optimizer class on a case; see the module docstring."""

    fake_cuda = True  # runs on a simulated CUDA device (probes/fake_cuda.py)

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        kw = case.kwargs
        loss_of = PROBLEMS[kw["problem"]].loss
        data = kw.get("data", {})
        n_used = len(kw["params"]) - int(kw.get("unused", 0))

        def loss(params, k):
            return loss_of(params[:n_used], data, k)

        with watching(watch):
            if kw.get("expect_error"):
                return self._expect_error(impl, kw, loss)
            return self._trajectories(impl, kw, loss)

    @staticmethod
    def run_fake(impl, case, watch=None) -> dict[str, Any]:
        """On a simulated CUDA device (probes/fake_cuda.py): gradients set by hand (no autograd
        there), two steps; returns the parameters (their device) and where the state lives."""
        kw = case.kwargs
        params = [p.clone().requires_grad_(True) for p in kw["params"]]
        with watching(watch):
            opt = impl(_param_spec(params, kw.get("groups")), **kw.get("options", {}))
            for _ in range(2):
                for p in params:
                    p.grad = torch.ones_like(p)
                opt.step()
        out: dict[str, Any] = {f"parameter {i}": p for i, p in enumerate(params)}
        out["state"] = state_problem(opt, params)
        return out

    @staticmethod
    def _expect_error(impl, kw, loss) -> dict[str, Any]:
        params = _leaves(kw["params"])
        opt = impl(_param_spec(params, kw.get("groups")), **kw.get("options", {}))
        opt.zero_grad()
        loss(params, 1).backward()
        try:
            opt.step()
        except Exception as exc:  # noqa: BLE001 - the error is the answer
            if isinstance(exc, RuntimeError) and "dense" in str(exc).lower():
                return {"dense gradients": "raised a RuntimeError about dense gradients"}
        return {"dense gradients": "no RuntimeError about dense gradients"}

    @staticmethod
    def _run_steps(opt, params, loss, first: int, last: int, *, closure: bool, where: str):
        """Steps first..last (1-based); returns the trajectory rows and the returned losses."""
        rows, returned = [], []
        for k in range(first, last + 1):
            try:
                if closure:
                    def closure_fn(k=k):
                        opt.zero_grad()
                        value = loss(params, k)
                        value.backward()
                        return value

                    returned.append(opt.step(closure_fn))
                else:
                    opt.zero_grad()
                    loss(params, k).backward()
                    opt.step()
            except Exception as exc:  # noqa: BLE001 - an error in a step is a result
                raise _StepFailed(f"{where}step {k} raised {_describe(exc)}") from None
            for i, p in enumerate(params):
                if p.grad_fn is not None or not p.requires_grad:
                    raise _StepFailed(f"{where}after step {k}, parameter {i} is no longer a leaf tensor that "
                                      "requires grad: update it in place under torch.no_grad()")
            rows.append(_snapshot(params))
        return rows, returned

    def _trajectories(self, impl, kw, loss) -> dict[str, Any]:
        K = int(kw["steps"])
        closure = bool(kw.get("closure"))
        resume = kw.get("resume_after")
        groups, options = kw.get("groups"), kw.get("options", {})
        params = _leaves(kw["params"])
        opt = impl(_param_spec(params, groups), **options)
        out: dict[str, Any] = {"step": "ok"}
        try:
            first_part = resume if resume else K
            rows, returned = self._run_steps(opt, params, loss, 1, first_part, closure=closure, where="")
            if resume:
                saved = io.BytesIO()
                torch.save(opt.state_dict(), saved)
                resume_values = [p.detach().clone() for p in params]
                more, more_returned = self._run_steps(opt, params, loss, resume + 1, K, closure=closure,
                                                      where="")
                rows += more
                returned += more_returned
            if kw.get("idle_step"):
                try:
                    opt.zero_grad()
                    opt.step()
                except Exception as exc:  # noqa: BLE001
                    raise _StepFailed(f"the step after zero_grad() (no gradients) raised {_describe(exc)}") from None
                rows.append(_snapshot(params))
        except _StepFailed as failed:
            return {"step": str(failed)}
        out["trajectory"] = torch.stack(rows)
        if closure:
            losses = [_as_loss(r, rows[0]) for r in returned]
            out["losses returned by step(closure)"] = (
                torch.stack(losses) if all(x is not None for x in losses)
                else "step(closure) must return the loss that the first call of closure() returned")
        for key in kw.get("report_state") or ():
            try:
                out[f"state[{key!r}]"] = torch.cat([opt.state[p][key].detach().reshape(-1) for p in params])
            except (KeyError, TypeError, AttributeError):
                out[f"state[{key!r}]"] = f"optimizer.state[p][{key!r}] is missing"
        if resume:
            params2 = _leaves(resume_values)
            opt2 = impl(_param_spec(params2, groups), **options)
            saved.seek(0)
            opt2.load_state_dict(torch.load(saved, weights_only=False))
            try:
                rows2, _ = self._run_steps(opt2, params2, loss, resume + 1, K, closure=closure,
                                           where="after load_state_dict(), ")
            except _StepFailed as failed:
                return {"step": str(failed)}
            out["resumed trajectory"] = torch.stack(rows2)
        out["state"] = state_problem(opt, params)
        return out


# -- the training-loop probe -------------------------------------------------------------


def build_model(kind: str, weights, dtype, device) -> torch.nn.Module:
    """A small model whose parameters (in .parameters() order) take `weights`."""
    d_in = weights[0].shape[1]
    if kind == "linear":
        net = torch.nn.Linear(d_in, weights[0].shape[0])
    elif kind == "mlp":
        net = torch.nn.Sequential(torch.nn.Linear(d_in, weights[0].shape[0]), torch.nn.Tanh(),
                                  torch.nn.Linear(weights[2].shape[1], weights[2].shape[0]))
    else:
        raise ValueError(kind)
    net = net.to(dtype=dtype, device=device)
    with torch.no_grad():
        for p, w in zip(net.parameters(), weights, strict=True):
            p.copy_(w)
    return net


LOSSES = {"mse": torch.nn.MSELoss, "cross_entropy": torch.nn.CrossEntropyLoss}


@dataclass(frozen=True)
class TrainingLoopProbe:
    """Calls impl(net, loader, loss_fn, optimizer) for one epoch with torch.optim.SGD.

    Case kwargs: model ("linear" | "mlp"), weights (list of tensors), X, y,
    batch_size, loss ("mse" | "cross_entropy"), lr, momentum. The model
    starts in eval mode: the function must switch it to training mode.
    """

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        kw = case.kwargs
        X, y = kw["X"], kw["y"]
        net = build_model(kw["model"], kw["weights"], X.dtype, X.device)
        net.eval()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=kw["batch_size"],
                                             shuffle=False)
        optimizer = torch.optim.SGD(net.parameters(), lr=kw["lr"], momentum=kw.get("momentum", 0.0))
        with watch if watch is not None else contextlib.nullcontext():
            result = impl(net, loader, LOSSES[kw["loss"]](), optimizer)
        out: dict[str, Any] = {"parameters": _snapshot(list(net.parameters()))}
        if isinstance(result, torch.Tensor) and result.requires_grad:
            out["returns"] = "a tensor attached to the autograd graph"
        elif (isinstance(result, Real) and not isinstance(result, bool)) or (
                isinstance(result, torch.Tensor) and result.numel() == 1 and result.is_floating_point()):
            out["returns"] = "a number"
            out["mean loss"] = torch.tensor(float(result), dtype=X.dtype, device=X.device)
        else:
            out["returns"] = f"{type(result).__name__} {str(result)[:60]}"
        out["training mode"] = net.training
        return out
