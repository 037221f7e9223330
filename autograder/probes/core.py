"""The machinery every probe shares: call watching, running a case, the wire format."""
from __future__ import annotations

import contextlib
import io
import traceback
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

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


def grad_weights(out: torch.Tensor) -> torch.Tensor:
    """A fixed, non-uniform upstream gradient, so that permuted or summed
    outputs give different input gradients."""
    n = out.numel()
    w = torch.linspace(0.5, 1.5, max(n, 1), dtype=out.dtype, device=out.device)
    return w[:n].reshape(out.shape)


def run_probe(check, impl, case) -> dict[str, Any]:
    """Run one case and package the outcome for the wire.

    Returns {"values": {...}, "devices": {...}, "error": str | None,
    "forbidden": [names], "stdout": str}.
    """
    watch = _CallWatch(check.forbidden) if check.forbidden else None
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            values = check.probe.run(impl, case, watch)
        error = None
    except BaseException as exc:  # noqa: BLE001 - the student's exception is a result
        if isinstance(exc, KeyboardInterrupt):
            raise
        values = {}
        error = _describe_exception(exc)
    wire = to_wire(values)
    wire["error"] = error
    wire["forbidden"] = list(watch.seen) if watch else []
    wire["stdout"] = buf.getvalue()[-2000:]
    return wire


def _describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    # The last frame in the student's code is the one they can act on.
    user = [f for f in frames if f.filename.startswith("<cell")]
    where = f" (cell {user[-1].filename[5:-1]}, line {user[-1].lineno})" if user else ""
    text = f"{type(exc).__name__}: {exc}"
    return (text[:1500] + " ...") if len(text) > 1500 else text + where


def to_wire(values: dict[str, Any]) -> dict[str, Any]:
    """Plain tensors and plain values only; meta tensors become empty CPU
    tensors of the same shape and dtype, with their device recorded."""
    plain: dict[str, Any] = {}
    devices: dict[str, str] = {}
    for key, v in values.items():
        if isinstance(v, torch.Tensor):
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
    return {"values": plain, "devices": devices}


def to_bytes(wire: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(wire, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> dict[str, Any]:
    """Load an answer from the child: tensors and plain containers only."""
    obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(obj, dict):
        raise ValueError("answer is not a dict")
    return obj
