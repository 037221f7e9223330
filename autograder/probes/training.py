"""Probe the parts of a whole training run: a data step, an evaluation, a training function.

`OutputsProbe` calls a function that returns several tensors (a tuple) and
compares each one with the reference's.

`EvaluateProbe` calls `impl(model, batches, num_classes)` on a small model
the probe builds with a batch-norm layer (whose output and running
statistics depend on the mode), in training mode, and returns the accuracy,
the confusion matrix, the running statistics afterwards and whether the
forward passes were recorded by autograd.

`FitProbe` calls a whole training function, `impl(X_train, y_train, X_val,
y_val) -> nn.Module`, under a fixed seed, times it, and runs the model it
returns, in eval mode and without autograd, on held-out test images that
come without their labels: the labels stay in the grader, where a judge
(`AccuracyJudge`, the case's `judge`) computes the accuracy. While the
training function runs the probe watches, through torch's global hooks,
what a correct run never does:

    stale gradients       a backward pass found the previous step's gradients in a
                          parameter's .grad (no zero_grad): tensor hooks on the
                          parameters of every optimizer that takes a step
    no_grad in train mode a forward pass under torch.no_grad() with the module in
                          training mode: evaluation without model.eval()
    loaded the data       the training function read scikit-learn's digits itself
                          (the only way it could reach the held-out test split)
    probabilities out     the returned model's outputs are probabilities (a softmax
                          as its final layer, which CrossEntropyLoss applies again)

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
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from autograder.compare import Difference

TEST_OUTPUTS = "outputs on the held-out test images"
SECONDS = "training seconds"


@dataclass(frozen=True)
class OutputsProbe:
    """Calls `impl(*case.args, **case.kwargs)`, which returns a tuple of tensors: each is
    compared, as returned[0], returned[1], ..."""

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        with watch if watch is not None else contextlib.nullcontext():
            out = impl(*case.args, **case.kwargs)
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        result: dict[str, Any] = {"returns": f"a {type(out).__name__} of {len(items)}"
                                  if isinstance(out, (tuple, list)) else f"a {type(out).__name__}"}
        result.update({f"returned[{k}]": v for k, v in enumerate(items)})
        return result


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


@dataclass(frozen=True)
class EvaluateProbe:
    """Case kwargs: weights, running (see build_bn_classifier), X, y, batch_size, num_classes."""

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        kw = case.kwargs
        net = build_bn_classifier(kw["weights"], kw["running"])
        recorded: list[bool] = []
        handle = net.register_forward_hook(lambda m, i, o: recorded.append(torch.is_grad_enabled()))
        X, y, b = kw["X"], kw["y"], kw["batch_size"]
        batches = [(X[i:i + b], y[i:i + b]) for i in range(0, len(X), b)]
        try:
            with watch if watch is not None else contextlib.nullcontext():
                out = impl(net, batches, kw["num_classes"])
        finally:
            handle.remove()
        items = list(out) if isinstance(out, (tuple, list)) else [out]
        result: dict[str, Any] = {"returns": f"{len(items)} value{'s' if len(items) != 1 else ''}"}
        if len(items) == 2:
            result["accuracy"] = _number(items[0])
            result["confusion matrix"] = items[1]
        result["batch norm's running mean afterwards"] = net[1].running_mean
        result["forward passes recorded by autograd"] = any(recorded)
        return result


# -- the training function -------------------------------------------------------------------


class _Watch:
    """What a training run does that a correct one never does (see the module docstring)."""

    def __init__(self):
        self.stale_gradients = False
        self.no_grad_in_train_mode = False
        self.loaded_data = False
        self._hooked: set[int] = set()
        self._handles: list = []

    def _on_grad(self, p: torch.Tensor):
        def hook(grad):
            if p.grad is not None and not self.stale_gradients and bool(p.grad.detach().ne(0).any()):
                self.stale_gradients = True
            return None
        return hook

    def _before_step(self, optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in self._hooked and isinstance(p, torch.Tensor) and p.requires_grad:
                    self._hooked.add(id(p))
                    self._handles.append(p.register_hook(self._on_grad(p)))

    def _before_forward(self, module, args):
        if module.training and not torch.is_grad_enabled():
            self.no_grad_in_train_mode = True

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


@dataclass(frozen=True)
class FitProbe:
    """See the module docstring. `seed`: torch's global seed when the training function starts."""

    seed: int = 0

    def run(self, impl, case, watch=None) -> dict[str, Any]:
        kw = case.kwargs
        X_train, X_val, X_test = scale(*(kw[k].to(torch.float32) for k in ("X_train", "X_val", "X_test")))
        torch.manual_seed(self.seed)
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)  # CUDA: deterministic kernels where torch has them
        spy = _Watch()
        try:
            with spy.watching(), watch if watch is not None else contextlib.nullcontext():
                start = time.perf_counter()
                model = impl(X_train, kw["y_train"], X_val, kw["y_val"])
                seconds = time.perf_counter() - start
        finally:
            torch.use_deterministic_algorithms(deterministic)
        result: dict[str, Any] = {
            "returns": "an nn.Module" if isinstance(model, nn.Module) else f"a {type(model).__name__}",
            "a backward pass found the previous step's gradients still in .grad": spy.stale_gradients,
            "a forward pass ran under torch.no_grad() with the model in training mode": spy.no_grad_in_train_mode,
            "the training function loaded the digits data set itself": spy.loaded_data,
            SECONDS: seconds,
        }
        if not isinstance(model, nn.Module):
            return result
        model.eval()
        with torch.no_grad():
            out = model(X_test)
        result[TEST_OUTPUTS] = out
        probabilities = (isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point()
                         and bool(((out >= 0) & (out <= 1)).all())
                         and bool(torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-3)))
        result["its outputs are probabilities (a softmax as its last layer)"] = probabilities
        return result


DIAGNOSTICS = ("returns", "a backward pass found the previous step's gradients still in .grad",
               "a forward pass ran under torch.no_grad() with the model in training mode",
               "the training function loaded the digits data set itself",
               "its outputs are probabilities (a softmax as its last layer)")


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
