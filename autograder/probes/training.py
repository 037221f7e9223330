"""Probe the parts of a whole training run: a data step, an evaluation, a training function.

`OutputsProbe` calls a function that returns several tensors (a tuple) and
compares each one with the reference's.

`EvaluateProbe` calls `impl(model, batches, num_classes)` on a small model
the probe builds with a batch-norm layer (whose output and running
statistics depend on the mode), in training mode, and returns the accuracy
(and whether it is a Python float, as the statement asks: a 0-d tensor is not), the confusion matrix, the running statistics afterwards and whether the
forward passes were recorded by autograd.

`FitProbe` calls a whole training function, `impl(X_train, y_train, X_val,
y_val) -> nn.Module`, under a fixed seed, times it, and runs the model it
returns, in eval mode and without autograd, on held-out test images that
come without their labels: the labels stay in the grader, where a judge
(`AccuracyJudge`, the case's `judge`) computes the accuracy. The training
function's calls of another graded function (`helpers`: the notebook's
`evaluate`) go to the course's own (`course_evaluate`) while it runs, so a
bug in the helper is paid for once, in the helper's check. While the
training function runs the probe watches, through torch's global hooks,
what a correct run never does:

    stale gradients       a backward pass added to gradients left in a parameter's
                          .grad from before the previous optimizer step (no zero_grad
                          between two steps; accumulating several micro-batches
                          between two steps is fine): tensor hooks on the parameters
                          of every optimizer that takes a step
    validation in train mode  the validation images went through the model under
                          torch.no_grad() while one of its modules whose output
                          depends on the mode was in training mode (dropout with
                          p > 0, batch or instance norm with running statistics, any
                          other module whose forward reads self.training; never a
                          loss): evaluation without model.eval(). Forward passes on
                          other data (torch.optim.swa_utils.update_bn's pass over the
                          training images) are not flagged.
    loaded the data       the training function read scikit-learn's digits itself
                          (the only way it could reach the held-out test split)
    probabilities out     the returned model's outputs are probabilities (a softmax
                          as its final layer, which CrossEntropyLoss applies again)

Then the whole run again on meta tensors (no data, no time): a model built on
the CPU (`.to("cpu")`) or a tensor made without `device=` meets the meta inputs
and torch raises a device mismatch, which a GPU would raise too (the answer's
`ON_META`); code that needs data there (`.item()`), or runs there longer than
`META_S`, is not graded on meta. It is
part of the one case, so device-bound code scores on a CPU what it scores on a
GPU.

Case kwargs of `FitProbe`: X_train, y_train, X_val, y_val, X_test: images as
uint8 pixel values, labels as int64. The probe standardizes the images in
float32 with the training split's statistics (`scale`) and gives them to the
training function; the test images get the same statistics. Integer images
are not upcast for the float64 reference: every run, the reference's
included, trains on the same float32 data.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from autograder.compare import Difference
from autograder.probes.helpers import helpers_in_place
from autograder.probes.replay import recording, replaying

TEST_OUTPUTS = "outputs on the held-out test images"
SECONDS = "training seconds"


@dataclass(frozen=True)
class OutputsProbe:
    """Calls `impl(*case.args, **case.kwargs)`, which returns a tuple of tensors: each is
    compared, as returned[0], returned[1], ... Also on a simulated CUDA device, where the CPU
    pass's .item(), .tolist() and .numpy() are replayed (probes/replay.py)."""

    fake_cuda = True

    def run(self, impl, case, watch=None, data=None) -> dict[str, Any]:
        with data if data is not None else recording(case), watch if watch is not None else contextlib.nullcontext():
            out = impl(*case.args, **case.kwargs)
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        result: dict[str, Any] = {"returns": f"a {type(out).__name__} of {len(items)}"
                                  if isinstance(out, (tuple, list)) else f"a {type(out).__name__}"}
        result.update({f"returned[{k}]": v for k, v in enumerate(items)})
        return result

    def run_fake(self, impl, case, watch=None) -> dict[str, Any]:
        return self.run(impl, case, watch, replaying())


def build_bn_classifier(weights: list[torch.Tensor], running: list[torch.Tensor]) -> nn.Module:
    """Linear -> BatchNorm1d -> ReLU -> Linear with the given weights [W1, b1, gamma, beta, W2, b2]
    and running statistics [mean, var]; in training mode, as a model is after training."""
    w1, _, _, _, w2, _ = weights
    net = nn.Sequential(nn.Linear(w1.shape[1], w1.shape[0]), nn.BatchNorm1d(w1.shape[0]), nn.ReLU(),
                        nn.Linear(w2.shape[1], w2.shape[0])).to(dtype=w1.dtype, device=w1.device)
    with torch.no_grad():
        for p, w in zip(net.parameters(), weights, strict=True):
            p.copy_(w)
        net[1].running_mean.copy_(running[0])
        net[1].running_var.copy_(running[1])
    return net.train()


def _number(x) -> Any:
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_complex():
        return float(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return f"<{type(x).__name__}>"


ACCURACY_TYPE = "the accuracy's type"


@dataclass(frozen=True)
class EvaluateProbe:
    """Case kwargs: weights, running (see build_bn_classifier), X, y, batch_size, num_classes.
    On the simulated CUDA device (`run_fake`) the same model is built on the CPU and placed on the
    fake device, and `.item()`/`.tolist()` give what they gave in the CPU pass (probes/replay.py):
    a confusion matrix kept on the CPU comes back on the CPU, as on a GPU. The course's own evaluate
    (which the fit check runs in place of the student's) is guarded: graded code that runs it is
    recorded (probes/core.py)."""

    fake_cuda = True

    @property
    def guarded(self) -> tuple:
        return (course_evaluate,)

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        net = build_bn_classifier(case.kwargs["weights"], case.kwargs["running"])
        return self._evaluate(impl, net, case, watch, recording(case))  # recorded for run_fake

    def run_fake(self, impl, case, watch=None) -> dict[str, Any]:
        from autograder.probes.fake_cuda import build_on_the_cpu, place_on

        kw = case.kwargs
        net = build_on_the_cpu(lambda: build_bn_classifier(
            [torch.zeros(w.shape, dtype=w.dtype) for w in kw["weights"]],
            [torch.ones(r.shape, dtype=r.dtype) for r in kw["running"]]))
        place_on(net, kw["X"].device)
        return self._evaluate(impl, net, case, watch, replaying())

    def _evaluate(self, impl, net, case, watch, data) -> dict[str, Any]:
        kw = case.kwargs
        recorded: list[bool] = []
        handle = net.register_forward_hook(lambda m, i, o: recorded.append(torch.is_grad_enabled()))
        X, y, b = kw["X"], kw["y"], kw["batch_size"]
        batches = [(X.narrow(0, i, min(b, len(X) - i)), y.narrow(0, i, min(b, len(X) - i)))  # narrow: slices fail
                   for i in range(0, len(X), b)]  # on the simulated device
        try:
            with data, watch if watch is not None else contextlib.nullcontext():
                out = impl(net, batches, kw["num_classes"])
        finally:
            handle.remove()
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        result: dict[str, Any] = {"returns": f"{len(items)} value{'s' if len(items) != 1 else ''}"}
        if len(items) == 2:
            result[ACCURACY_TYPE] = "a Python float" if type(items[0]) is float else f"a {type(items[0]).__name__}"
            result["accuracy"] = _number(items[0])
            result["confusion matrix"] = items[1]
        result["batch norm's running mean afterwards"] = net[1].running_mean
        result["forward passes recorded by autograd"] = any(recorded)
        return result


# -- the training function -------------------------------------------------------------------


class _Watch:
    """What a training run does that a correct one never does (see the module docstring).
    `X_val`: the validation images the training function was given."""

    def __init__(self, X_val: torch.Tensor | None = None):
        self.stale_gradients = False
        self.validation_in_train_mode: bool | str = False
        self.loaded_data = False
        self._hooked: set[int] = set()
        self._stepped: set[int] = set()  # parameters stepped since their last new gradient
        self._handles: list = []
        self._val = None
        if X_val is not None and _has_data(X_val) and X_val.dim() == 2:
            self._val = X_val.detach().to("cpu", torch.float64)

    def _on_grad(self, p: torch.Tensor):
        def hook(grad):
            if id(p) in self._stepped:
                self._stepped.discard(id(p))
                if (p.grad is not None and not self.stale_gradients and _has_data(p.grad)
                        and bool(p.grad.detach().ne(0).any())):
                    self.stale_gradients = True  # the gradient of before the last step is still there
            return None
        return hook

    def _before_step(self, optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if not isinstance(p, torch.Tensor) or not p.requires_grad:
                    continue
                if id(p) not in self._hooked:
                    self._hooked.add(id(p))
                    self._handles.append(p.register_hook(self._on_grad(p)))
                self._stepped.add(id(p))

    def _before_forward(self, module, args):
        if self.validation_in_train_mode or torch.is_grad_enabled() or self._val is None or not args:
            return
        kind = next((k for k in map(mode_dependent, module.modules()) if k), None)
        if kind is not None and _is_validation(args[0], self._val):
            self.validation_in_train_mode = kind

    @contextlib.contextmanager
    def watching(self):
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        handles = [register_optimizer_step_pre_hook(self._before_step),
                   register_module_forward_pre_hook(self._before_forward)]
        loaders = _digits_loaders()
        originals = {mod: getattr(mod, name) for mod, name in loaders}
        for mod, name in loaders:
            setattr(mod, name, self._recording(originals[mod]))
        try:
            yield self
        finally:
            for mod, name in loaders:
                setattr(mod, name, originals[mod])
            for h in handles + self._handles:
                h.remove()

    def _recording(self, original: Callable) -> Callable:
        def load(*args, **kwargs):
            if "digits" in str(kwargs.get("data_file_name", args[0] if args else "")):
                self.loaded_data = True
            return original(*args, **kwargs)
        return load


def _has_data(t: torch.Tensor) -> bool:
    """A tensor with values to read (not on the meta device, not a simulated one's)."""
    from autograder.probes.fake_cuda import is_fake

    return isinstance(t, torch.Tensor) and t.device.type != "meta" and not is_fake(t)


DROPOUT, NORM, READS_TRAINING = "a dropout layer", "a batch-norm layer", "a module whose forward reads self.training"


def mode_dependent(module: nn.Module) -> str | None:
    """What kind of module `module` is, when it is in training mode and its output depends on
    the mode (DROPOUT, NORM, READS_TRAINING), else None. A loss never is; batch or instance
    norm without running statistics computes the same in both modes; dropout with p = 0 too."""
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.dropout import _DropoutNd
    from torch.nn.modules.loss import _Loss

    if not module.training or isinstance(module, _Loss):
        return None
    if isinstance(module, _DropoutNd):
        return DROPOUT if module.p > 0 else None
    if isinstance(module, _NormBase):
        return NORM if module.track_running_stats else None
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return None
    forward = getattr(type(module), "forward", None)
    code = getattr(forward, "__code__", None)
    return READS_TRAINING if code is not None and "training" in code.co_names else None


def _is_validation(x: Any, val: torch.Tensor) -> bool:
    """Whether every row of `x` is one of the validation images (a batch of them, in any order)."""
    if not isinstance(x, torch.Tensor) or not _has_data(x) or x.dim() != 2 or x.shape[1] != val.shape[1] \
            or len(x) == 0 or not x.is_floating_point():
        return False
    rows = x.detach().to("cpu", torch.float64)
    return bool((rows[:, None, :] == val[None]).all(-1).any(1).all())


def course_evaluate(model: nn.Module, batches, num_classes: int):
    """The course's evaluate (the capstone's statement): (accuracy, confusion) of `model` over
    `batches` of (X, y), in eval mode and without autograd. A training function graded by
    `FitProbe` calls this one in place of the notebook's. On a device without data (meta)
    the accuracy is 0.0."""
    model.eval()
    confusion = None
    with torch.no_grad():
        for X, y in batches:
            guesses = model(X).argmax(dim=1)
            counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=y.device)
            counts.index_put_((y, guesses), torch.ones_like(y), accumulate=True)
            confusion = counts if confusion is None else confusion + counts
    if confusion is None or not _has_data(confusion):
        return 0.0, confusion
    return confusion.diagonal().sum().item() / max(confusion.sum().item(), 1), confusion


def _digits_loaders() -> list[tuple[Any, str]]:
    """scikit-learn's CSV reader that load_digits calls (looked up at call time, so a
    `from sklearn.datasets import load_digits` made earlier still goes through it)."""
    try:
        base = sys.modules.get("sklearn.datasets._base") or importlib.import_module("sklearn.datasets._base")
    except ImportError:
        return []
    return [(base, "load_gzip_compressed_csv_data")] if hasattr(base, "load_gzip_compressed_csv_data") else []


def scale(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every column to mean 0 and standard deviation 1 (correction=0) with the statistics of
    `train`; a column constant on `train` is only centred."""
    mean, std = train.mean(0), train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (train, *others))


STALE = "a backward pass added to gradients left from before the previous optimizer step (no zero_grad)"
VALIDATION_IN_TRAIN_MODE = ("a layer whose output depends on the mode was in training mode when the validation "
                            "images went through the model under torch.no_grad()")
LOADED = "the training function loaded the digits data set itself"
PROBABILITIES = "its outputs are probabilities (a softmax as its last layer)"
ON_META = ("the device of the outputs when fit runs on the meta device (no data: a model or a tensor made "
           "on the CPU meets the inputs there)")
DEVICE_MISMATCH = "a device mismatch"


META_S = 10.0  # seconds the run on meta may take (meta kernels cost Python time, not compute): then not graded


class _OutOfTime(BaseException):
    """The meta run took longer than META_S (a BaseException: `except Exception` in fit cannot swallow it)."""


@contextlib.contextmanager
def _deadline(seconds: float):
    """Stops the graded code, at its next module forward pass, once `seconds` have passed."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    end = time.perf_counter() + seconds

    def check(module, args):
        if time.perf_counter() > end:
            raise _OutOfTime()

    handle = register_module_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class FitProbe:
    """See the module docstring. `seed`: torch's global seed when the training function starts;
    `helpers`: (name, function) pairs, the course's own code for the other graded functions the
    training function may call (the notebook's are put back afterwards)."""

    seed: int = 0
    helpers: tuple[tuple[str, Callable], ...] = ()

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        kw = case.kwargs
        X_train, X_val, X_test = scale(*(kw[k].to(torch.float32) for k in ("X_train", "X_val", "X_test")))
        torch.manual_seed(self.seed)
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)  # CUDA: deterministic kernels where torch has them
        spy = _Watch(X_val)
        try:
            with spy.watching(), helpers_in_place(impl, self.helpers), \
                    watch if watch is not None else contextlib.nullcontext():
                start = time.perf_counter()
                model = impl(X_train, kw["y_train"], X_val, kw["y_val"])
                seconds = time.perf_counter() - start
        finally:
            torch.use_deterministic_algorithms(deterministic)
        result: dict[str, Any] = {
            "returns": "an nn.Module" if isinstance(model, nn.Module) else f"a {type(model).__name__}",
            STALE: spy.stale_gradients,
            VALIDATION_IN_TRAIN_MODE: spy.validation_in_train_mode,
            LOADED: spy.loaded_data,
            SECONDS: seconds,
        }
        if not isinstance(model, nn.Module):
            return result
        model.eval()
        with torch.no_grad():
            out = model(X_test)
        result[TEST_OUTPUTS] = out
        probabilities = (isinstance(out, torch.Tensor) and _has_data(out) and out.dim() == 2
                         and out.is_floating_point() and bool(((out >= 0) & (out <= 1)).all())
                         and bool(torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-3)))
        result[PROBABILITIES] = probabilities
        result[ON_META] = self._on_meta(impl, kw)
        return result

    def _on_meta(self, impl, kw) -> str:
        """The whole run again on meta tensors: the device of the returned model's outputs,
        DEVICE_MISMATCH when torch found two devices (a model built with .to("cpu"), a tensor
        made without device=), NOT_RUN when it could not run there otherwise (data-dependent
        code: not graded there)."""
        from autograder.probes.fake_cuda import _MISMATCH, NOT_RUN, raised_by_torch

        meta = {k: kw[k].to("meta") for k in ("X_train", "y_train", "X_val", "y_val", "X_test")}
        X_train, X_val, X_test = scale(*(meta[k].to(torch.float32) for k in ("X_train", "X_val", "X_test")))
        torch.manual_seed(self.seed)
        try:
            with contextlib.redirect_stdout(io.StringIO()), helpers_in_place(impl, self.helpers), \
                    _deadline(META_S):
                model = impl(X_train, meta["y_train"], X_val, meta["y_val"])
            if not isinstance(model, nn.Module):
                return NOT_RUN
            model.eval()
            with torch.no_grad():
                out = model(X_test)
        except _OutOfTime:
            return NOT_RUN
        except Exception as exc:  # noqa: BLE001 - the error is a result, or says nothing
            if raised_by_torch(exc) and _MISMATCH.search(f"{type(exc).__name__}: {exc}"):
                return DEVICE_MISMATCH
            return NOT_RUN
        return str(out.device) if isinstance(out, torch.Tensor) else NOT_RUN


DIAGNOSTICS = ("returns", STALE, VALIDATION_IN_TRAIN_MODE, LOADED, PROBABILITIES, ON_META)


@dataclass(frozen=True)
class AccuracyJudge:
    """Decides a FitProbe answer in the grader: accuracy on the held-out labels (from `labels`,
    a module-level function, so the case that carries this judge holds no label) at least
    `threshold`, and the training run within `budget_s` seconds."""

    labels: Callable[[], torch.Tensor]
    threshold: float
    budget_s: float

    def __call__(self, values: dict) -> str | None:
        labels = self.labels()
        out = values.get(TEST_OUTPUTS)
        if type(out) is not torch.Tensor or not out.is_floating_point() or tuple(out.shape[:1]) != (len(labels),) \
                or out.dim() != 2:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            return Difference(TEST_OUTPUTS, f"a float tensor of shape ({len(labels)}, number of classes)", got)
        accuracy = float((out.argmax(1) == labels.to(out.device)).double().mean())
        if accuracy < self.threshold:
            return Difference("accuracy on the held-out test images", f"at least {self.threshold:.2f}",
                              f"{accuracy:.3f}")
        seconds = values.get(SECONDS)
        if not isinstance(seconds, float) or seconds > self.budget_s:
            return Difference(SECONDS, f"at most {self.budget_s:g}", f"{seconds}")
        return None
