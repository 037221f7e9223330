"""The tolerance policy, written down once (docs/design.md contract 5).

The reference is computed in float64 on the grading device; the student's
output is computed in the case's dtype. Their difference is rounding error,
which grows with the number of terms a result sums (a mean over n elements,
a matmul with inner size K), so tolerances widen with sqrt(n), the usual
growth of random rounding error.

The absolute tolerance is relative to the magnitude of the reference
(its largest finite element): a gradient of a mean over 1000 elements is
~1e-3 everywhere, and a fixed atol of 1e-5 would accept a gradient that is
wrong by 1 %. Errors of known-wrong implementations are orders of magnitude
larger than these tolerances (tests/test_tolerance.py measures the margins).

A tolerance relative to the reference alone collapses where the reference
is tiny: the float64 gradient of a softmax at logits of ±1000 is at most
~1e-218 in some columns, and a correct answer's rounding residue (~1e-217)
would fail an atol of ~1e-223. So the absolute tolerance has a floor tied
to what the result was computed from: the unit roundoff of the dtype times
the largest input (a difference of two inputs of size X is only known to
eps * X) and, for a gradient, times the largest upstream gradient too. It
is far below any known mistake's error (tests/test_tolerance.py).
"""
from __future__ import annotations

import math

import torch

# Base (rtol, atol-relative-to-scale) per dtype: torch.testing's defaults for
# rtol, widened by a safety factor of 4 for atol.
BASE = {
    torch.float16: (1e-3, 4e-3),
    torch.bfloat16: (1.6e-2, 3e-2),
    torch.float32: (1.3e-6, 4e-6),
    torch.float64: (1e-7, 1e-7),
}
SAFETY = 8.0


def tolerance(dtype: torch.dtype, *, numel: int, scale: float, inputs: float = 0.0) -> tuple[float, float]:
    """(rtol, atol) for comparing a `dtype` result against a float64 reference.

    numel: the size of the largest input (an upper bound on a reduction's length).
    scale: the largest finite magnitude in the reference.
    inputs: the largest finite magnitude the result was computed from (the case's
        inputs and, for a gradient, the upstream gradient): the floor of atol.
    """
    rtol, atol_rel = BASE.get(dtype, BASE[torch.float64])
    grow = SAFETY * max(1.0, math.sqrt(numel))
    if not dtype.is_floating_point:
        return rtol * grow, atol_rel * grow * scale
    info = torch.finfo(dtype)
    floor = max(info.eps * inputs, info.tiny)
    return rtol * grow, max(atol_rel * grow * scale, floor)


def input_scale(tensors, *, upstream: float = 0.0) -> float:
    """The largest finite magnitude among the floating tensors given and `upstream`."""
    best = upstream
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and t.device.type != "meta":
            finite = t.detach()[torch.isfinite(t.detach())]
            if finite.numel():
                best = max(best, float(finite.abs().max()))
    return best
