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


def tolerance(dtype: torch.dtype, *, numel: int, scale: float) -> tuple[float, float]:
    """(rtol, atol) for comparing a `dtype` result against a float64 reference.

    numel: the size of the largest input (an upper bound on a reduction's length).
    scale: the largest finite magnitude in the reference.
    """
    rtol, atol_rel = BASE.get(dtype, BASE[torch.float64])
    grow = SAFETY * max(1.0, math.sqrt(numel))
    floor = torch.finfo(dtype).tiny if dtype.is_floating_point else 0.0
    return rtol * grow, max(atol_rel * grow * scale, floor)
