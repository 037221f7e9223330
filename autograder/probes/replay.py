"""Data out of tensors on the simulated CUDA device, replayed from the CPU pass of the same case.

`run_on_fake_cuda` (probes/fake_cuda.py) runs a case's CPU pass, then its pass
on fake CUDA tensors, which have no data: `.item()`, `.tolist()` and `.numpy()`
raise there, so code that builds its answer from Python numbers could not be
judged, though on a GPU it would return a CPU tensor. A probe that wraps its
CPU pass in `recording(case)` and its fake pass in `replaying()` gets, in the
fake pass, the values the same calls returned on the CPU, in the same order,
and `.numpy()` of a CUDA tensor raises the TypeError a GPU's torch raises.
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

from autograder.probes.fake_cuda import is_fake


class Replay(TorchFunctionMode):
    """Data out of tensors on the simulated CUDA device, as a GPU gives it: `.item()`, `.tolist()`
    and `.numpy()` (of a tensor moved to the CPU) return what the same calls returned in the
    CPU pass of the same case, in the same order (recorded there), so code that builds its
    answer from Python numbers (`torch.tensor([g.norm().item() ...])`) or numpy runs on and
    makes a CPU tensor, as on a GPU; `.numpy()` of a CUDA tensor raises the TypeError a GPU's
    torch raises. Past the end of the recording, torch's own (data-dependent) error:
    inconclusive."""

    def __init__(self, recorded: list | None = None):
        super().__init__()
        self.recording = recorded is None
        self.values = [] if recorded is None else list(recorded)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy) and args \
                and isinstance(args[0], torch.Tensor) and not (is_fake(args[0]) and args[0].device.type == "cuda"
                                                               and func is torch.Tensor.numpy):
            if self.recording:
                value = func(*args, **(kwargs or {}))
                self.values.append(value)
                return value
            if self.values and is_fake(args[0]):
                return self.values.pop(0)
        if func is torch.Tensor.numpy and args and is_fake(args[0]) and args[0].device.type == "cuda":
            raise TypeError(f"can't convert {args[0].device} device type tensor to numpy. Use Tensor.cpu() to "
                            "copy the tensor to host memory first.")
        return func(*args, **(kwargs or {}))


_RECORDED: list = []  # what the last recorded CPU pass got from .item(), .tolist() and .numpy()


@contextlib.contextmanager
def recording(case):
    """Around a case's CPU pass: when the case has a simulated-CUDA pass next, record."""
    if not getattr(case, "fake_cuda", False):
        yield
        return
    replay = Replay()
    _RECORDED.clear()
    try:
        with replay:
            yield
    finally:
        _RECORDED.extend(replay.values)


@contextlib.contextmanager
def replaying():
    """Around the simulated-CUDA pass: what the CPU pass recorded, in order. FakeTensor has a
    Python `tolist` of its own (an `.item()` per element), which is replaced meanwhile."""
    from torch._subclasses.fake_tensor import FakeTensor

    replay = Replay(_RECORDED)
    own = FakeTensor.__dict__.get("tolist")

    def tolist(self):
        return replay.values.pop(0) if replay.values else own(self)

    if own is not None:
        FakeTensor.tolist = tolist
    try:
        with replay:
            yield
    finally:
        if own is not None:
            FakeTensor.tolist = own
