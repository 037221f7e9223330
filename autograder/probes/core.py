"""The machinery every probe shares: call watching, running a case into an `Answer`."""
from __future__ import annotations

import contextlib
import io
import traceback
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from autograder.answer import Answer

NOT_DIFFERENTIABLE = "not differentiable"


class _CallWatch(TorchFunctionMode):
    """Records calls of torch functions whose __name__ is in `names`.

    A TorchFunctionMode sees the torch function itself, whatever alias or
    module path the code used to reach it (F.l1_loss, torch._C._nn.l1_loss,
    nn.L1Loss()(...), a method), so renaming does not hide a call.
    """

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names = set(names)
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.names and name not in self.seen:
            module = getattr(func, "__module__", None) or "torch"
            self.seen.append(f"{module}.{name}")
        return func(*args, **(kwargs or {}))


UPSTREAM = (0.5, 1.5)  # the range of the upstream gradient (tolerance.py's floor uses its maximum)


def grad_weights(out: torch.Tensor) -> torch.Tensor:
    """A fixed, non-uniform upstream gradient, so that permuted or summed
    outputs give different input gradients."""
    n = out.numel()
    w = torch.linspace(*UPSTREAM, max(n, 1), dtype=out.dtype, device=out.device)
    return w[:n].reshape(out.shape)


def run_probe(check, impl, case) -> Answer:
    """Run one case of `check` on `impl` (the student's code, the reference or a known
    mistake) and return what came out as an `Answer` of plain values."""
    watch = _CallWatch(check.forbidden) if check.forbidden else None
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            if getattr(case, "fake_cuda", False):
                from autograder.probes.fake_cuda import run_on_fake_cuda

                values = run_on_fake_cuda(check.probe, impl, case, watch)
            else:
                values = check.probe.run(impl, case, watch)
        error = None
    except BaseException as exc:  # noqa: BLE001 - the student's exception is a result
        if isinstance(exc, KeyboardInterrupt):
            raise
        values = {}
        error = describe_exception(exc)
    plain, devices = to_wire(values)
    return Answer(plain, devices, error, list(watch.seen) if watch else [], buf.getvalue()[-2000:])


def _is_fake(t) -> bool:
    from autograder.probes.fake_cuda import is_fake

    return is_fake(t)


def describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    # The last frame in the student's code is the one they can act on.
    user = [f for f in frames if f.filename.startswith("<cell")]
    where = f" (cell {user[-1].filename[5:-1]}, line {user[-1].lineno})" if user else ""
    text = f"{type(exc).__name__}: {exc}"
    return (text[:1500] + " ...") if len(text) > 1500 else text + where


def to_wire(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(plain values, devices): plain tensors and plain values only; meta and fake
    (simulated CUDA) tensors become empty CPU tensors of the same shape and dtype, with
    their device recorded."""
    plain: dict[str, Any] = {}
    devices: dict[str, str] = {}
    for key, v in values.items():
        if isinstance(v, torch.Tensor) and type(v) is not torch.Tensor and _is_fake(v):
            devices[key] = str(v.device)  # a simulated device's tensor: shape, dtype and device only
            plain[key] = torch.zeros(tuple(v.shape), dtype=v.dtype)
        elif isinstance(v, torch.Tensor):
            t = v.detach()
            if type(t) is not torch.Tensor:
                t = t.as_subclass(torch.Tensor)
            devices[key] = str(t.device)
            if t.device.type == "meta":
                t = torch.empty(t.shape, dtype=t.dtype)
            else:
                t = t.cpu().clone()
            plain[key] = t
        elif v is None or isinstance(v, (bool, int, float, str)):
            plain[key] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v):
            plain[key] = list(v)
        else:
            plain[key] = f"<{type(v).__name__}>"
    return plain, devices
