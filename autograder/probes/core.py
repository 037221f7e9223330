"""The machinery every probe shares: call watching, running a case into an `Answer`."""
from __future__ import annotations

import contextlib
import io
import sys
import traceback
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from autograder.answer import Answer

NOT_DIFFERENTIABLE = "not differentiable"


TAMPERED = "<the grader's call watch, switched off>"  # recorded as a forbidden call
ACTIVE: list = []  # the call watches entered now (innermost last)


class _GuardedDisable:
    """What graded code gets as torch._C.DisableTorchFunction or torch._C._DisableTorchDispatch in
    the child (`guard_the_watch`): the real guard, which, entered by code other than torch's own
    while a call watch is on, records TAMPERED in it."""

    real = None

    def __init__(self, *args, **kwargs):
        self._inner = type(self).real(*args, **kwargs)

    def __enter__(self):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not caller.startswith("torch."):  # torch's own code (fake tensors, ...) may; graded code may not
            for watch in ACTIVE:
                watch.record(TAMPERED)
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


def guard_the_watch() -> None:
    """In the child's zygote, before torch is snapshot: the switches that turn the watch off
    report themselves (the snapshot restores them before every request)."""
    for name in ("DisableTorchFunction", "_DisableTorchDispatch"):
        real = getattr(torch._C, name, None)
        if real is not None and not (isinstance(real, type) and issubclass(real, _GuardedDisable)):
            setattr(torch._C, name, type(name, (_GuardedDisable,), {"real": real}))


class _DispatchWatch(TorchDispatchMode):
    """The same watch one level down, at torch's dispatcher: it sees every aten operator that
    runs (after composite operators are decomposed), however it was reached: torch.ops.aten
    and its overloads, a `torch.special` alias, or code run with torch function handling off."""

    def __init__(self, watch: "_CallWatch"):
        super().__init__()
        self.watch = watch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = getattr(getattr(func, "_overloadpacket", func), "__name__", "")
        if name in self.watch.names:
            self.watch.record(f"torch.ops.aten.{name}")
        return func(*args, **(kwargs or {}))


class _CallWatch(TorchFunctionMode):
    """Records calls of torch functions whose __name__ is in `names`, at two levels.

    A TorchFunctionMode sees the torch function itself, whatever alias or
    module path the code used to reach it (F.l1_loss, torch._C._nn.l1_loss,
    nn.L1Loss()(...), a method), so renaming does not hide a call; a dispatch
    mode (`_DispatchWatch`) sees the aten operators below it, so switching
    torch function handling off or calling `torch.ops.aten` does not either.
    Code that pops either mode off its stack is recorded as TAMPERED.
    docs/sandbox.md says what the watch cannot see.
    """

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names = set(names)
        self.seen: list[str] = []
        self._below: list[_DispatchWatch] = []

    def record(self, what: str) -> None:
        if what not in self.seen:
            self.seen.append(what)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.names:
            self.record(f"{getattr(func, '__module__', None) or 'torch'}.{name}")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        below = _DispatchWatch(self)
        below.__enter__()
        self._below.append(below)
        ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        if ACTIVE and ACTIVE[-1] is self:
            ACTIVE.pop()
        below = self._below.pop()
        n_fn, n_disp = torch._C._len_torch_function_stack(), torch._C._len_torch_dispatch_stack()
        intact = (n_fn > 0 and torch._C._get_function_stack_at(n_fn - 1) is self
                  and n_disp > 0 and torch._C._get_dispatch_stack_at(n_disp - 1) is below)
        if not intact:
            self.record(TAMPERED)
            while torch._C._len_torch_function_stack() > 0:  # put the stacks back as they were before
                top = torch._C._pop_torch_function_stack()
                if top is self:
                    break
            while torch._C._len_torch_dispatch_stack() > 0:
                top = torch._C._pop_torch_dispatch_stack()
                if top is below:
                    break
            return False
        super().__exit__(*exc)
        below.__exit__(*exc)
        return False


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
    where = f" (cell {user[-1].filename[6:-1]}, line {user[-1].lineno})" if user else ""
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
