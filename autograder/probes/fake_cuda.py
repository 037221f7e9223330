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
takes two steps, no autograd needed.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

# Which errors there say nothing about the code: compare.inconclusive_on_fake_cuda.


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode()


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


def run_on_fake_cuda(probe, impl, case, watch) -> dict[str, Any]:
    """Run `probe` on `case` with every tensor replaced by a fake CUDA tensor of its
    shape and dtype; return only the forward outputs the probe reports."""
    with simulated_cuda():
        fake = case.map_tensors(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cuda"))
        values = getattr(probe, "run_fake", probe.run)(impl, fake, watch)
    return {k: v for k, v in values.items() if not k.startswith("gradient")}
