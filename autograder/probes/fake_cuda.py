"""A forward pass on a simulated CUDA device, for machines without a GPU.

The meta device catches code that makes a tensor on the CPU and mixes it
with the inputs, but not code that moves everything to the CPU: on meta,
`.cpu()` raises, and the case is inconclusive. Under torch's
`FakeTensorMode`, `torch.empty(..., device="cuda")` is a fake CUDA tensor on
a CPU-only torch: mixing it with a CPU tensor raises
FakeTensorDeviceMismatchError, `.cpu()` returns a tensor on the CPU (which
the device comparison then sees), and data-dependent code (`.item()`, masks,
`nonzero`) raises, which says nothing about the code (inconclusive, as on
meta).

Recording autograd on a fake CUDA tensor aborts the process on a CPU-only
build (c10 cannot find a CUDA device guard), so the pass runs under
`torch.inference_mode()`: no graph is ever recorded, even where the code
turns grad mode on itself, and `backward()` or `torch.autograd.grad` raise an
ordinary RuntimeError. Only forward outputs are compared (shape, dtype,
device), never values: fake tensors have none. A probe may say how it runs on
a fake device (`run_fake`): the optimizer probe sets each gradient itself and
takes two steps, no autograd needed; the module probes build the module on
the CPU (its random initialisation needs a generator a fake CUDA device has
not) and place its parameters and buffers on the fake device, as `.to()`
would on a GPU (`build_on_the_cpu`, `place_on`).
"""
from __future__ import annotations

import contextlib
import dis
import logging
import os
import re
from typing import Any

import torch

_MODE = None  # the one fake tensor mode of this process (made in the zygote's warm-up, before the snapshot)


def fake_mode():
    """The process's fake tensor mode, made once: a new `FakeTensorMode` costs up to 0.4 ms (in a
    loop that makes and drops them), against about 1.2 ms for a whole simulated-CUDA case. A mode holds no answer between passes (its dispatch cache is
    torch's, shared by every mode: the metadata of an operator's outputs for its inputs'), and a
    child is a fresh process per submission, so passes share nothing a submission left."""
    global _MODE
    if _MODE is None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        _MODE = FakeTensorMode()
    return _MODE


def is_fake(t: Any) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


@contextlib.contextmanager
def simulated_cuda():
    """inference mode (no autograd graph, so no abort) and the fake tensor mode, with torch's
    fake-tensor logger silenced: it logs every op that fails (a device mismatch) to stderr
    before raising, and under `nbgrader autograde` any stderr output scores the cell 0."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    disabled, logger.disabled = logger.disabled, True
    try:
        with torch.inference_mode(), fake_mode() as mode:
            yield mode
    finally:
        logger.disabled = disabled


_MISMATCH = re.compile(r"same device|two devices|expected device", re.IGNORECASE)
NOT_RUN = "could not run on the simulated device (data-dependent code): not graded there"
SUFFIX = " on a CUDA device"
_TORCH = os.path.dirname(torch.__file__) + os.sep
_RAISES = {dis.opmap["RAISE_VARARGS"], dis.opmap["RERAISE"]}


def raised_by_torch(exc: BaseException) -> bool:
    """Whether torch raised `exc` (its Python code, or a C function the code called), not a
    `raise` of the graded code: told from where the exception started (its innermost frame and
    the instruction there), never from its wording."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    code = tb.tb_frame.f_code
    if code.co_filename.startswith(_TORCH):
        return True
    raw = code.co_code
    return 0 <= tb.tb_lasti < len(raw) and raw[tb.tb_lasti] not in _RAISES


def fake_only(exc: BaseException) -> bool:
    """An error of the simulated device itself: no data (.item(), masks, nonzero, numpy), no
    CUDA kernels (.cuda() of a CPU tensor, a module's .to()), no autograd (inference mode).
    Such an error, raised by torch where the same code ran on the CPU, says nothing about the
    code; an error the code raises itself, and every device mismatch, does."""
    return raised_by_torch(exc) and not _MISMATCH.search(f"{type(exc).__name__}: {exc}")


def build_on_the_cpu(make):
    """`make()` (a module's constructor) run outside the fake mode, with autograd allowed: the
    module's initialisation draws random numbers, which a fake CUDA tensor cannot (no CUDA
    generator). Its parameters are then placed on the simulated device (`place_on`)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.inference_mode(False):
        return make()


def module_forward(make, inputs: list, dtype: torch.dtype, watch) -> dict[str, Any]:
    """A module probe's pass on the simulated CUDA device: `make()` built on the CPU in `dtype`,
    placed on the inputs' device, called on them; {"output": ...}, or {} (inconclusive: the CPU
    cases grade the construction) when it cannot be built so or is not a module."""
    watching = watch if watch is not None else contextlib.nullcontext()
    try:
        with watching:
            module = build_on_the_cpu(lambda: make().to(dtype=dtype))
    except Exception:  # noqa: BLE001 - the CPU cases grade the construction
        return {}
    if not isinstance(module, torch.nn.Module) or not inputs:
        return {}
    place_on(module, inputs[0].device)
    with watching:
        return {"output": module(*inputs)}


def place_on(module: torch.nn.Module, device: torch.device) -> None:
    """What `module.to(device)` does on a GPU, on the simulated one (where `.to()` cannot swap a
    parameter): every registered parameter and buffer replaced by one of its shape and dtype on
    `device`. A plain tensor attribute stays where it was, as `.to()` leaves it."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=device),
                                                           p.requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device=device)


def run_on_fake_cuda(probe, impl, case, watch) -> dict[str, Any]:
    """The case in full on its own (CPU) tensors, as any case: errors, forbidden calls,
    gradients; then its forward pass again with every tensor replaced by a fake CUDA tensor
    of its shape and dtype, whose outputs are added as "<output> on a CUDA device" (their
    device is what is compared). A device mismatch there raises; an error only a fake device
    raises leaves those outputs NOT_RUN (inconclusive)."""
    values = dict(probe.run(impl, case, watch))
    try:
        with simulated_cuda():
            fake = case.map_tensors(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cuda"))
            on_fake = getattr(probe, "run_fake", probe.run)(impl, fake, watch)
    except Exception as exc:  # noqa: BLE001 - the error is a result, or says nothing
        if not fake_only(exc):
            raise
        on_fake = None
    for key in [k for k in values if not k.startswith("gradient")]:  # the same keys for every answer
        values[key + SUFFIX] = NOT_RUN if on_fake is None else on_fake.get(key, NOT_RUN)
    return values
