"""The small deterministic problems the optimizer checks run on: each one's data and its loss, together.

`draw(gen, dtype)` makes a problem's parameters and fixed data (in the
grader, seeded, when the cases are made); `loss(params, data, k)` is the
scalar a training loop minimises at step k (1-based), computed by the probe
(autograder/probes/optimizer.py) wherever the optimizer runs. A case names
its problem by `name`; `PROBLEMS[name]` holds both halves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from autograder.inputs import bernoulli, randn


@dataclass(frozen=True)
class OptimizationProblem:
    name: str
    draw: Callable  # (gen, dtype) -> (params, data, description)
    loss: Callable  # (params, data, k) -> scalar at step k (1-based)


def _flat(params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def _r(gen, dtype):
    return lambda *shape, scale=1.0: randn(gen, *shape, dtype=dtype, scale=scale)


def _draw_quadratic(gen, dtype):
    r = _r(gen, dtype)
    n = 7
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.linspace(0.5, 6.0, n, dtype=torch.float64)
    A = (q * eig) @ q.T
    A = ((A + A.T) / 2).to(dtype)
    return [r(2, 2), r(3)], {"A": A, "b": r(n)}, "a quadratic 0.5 z^T A z - b^T z (params 2x2 and 3)"


def quadratic(params, data, k):
    """0.5 z^T A z - b^T z, z = all parameters flattened; A symmetric positive definite."""
    z = _flat(params)
    return 0.5 * z @ (data["A"] @ z) - data["b"] @ z


def _draw_least_squares(gen, dtype):
    r = _r(gen, dtype)
    return ([r(2, 3, scale=0.5), r(2, scale=0.5)], {"X": r(8, 3), "Y": r(8, 2)},
            "least squares, a linear layer W 2x3, c 2 fit to 8 points")


def least_squares(params, data, k):
    """mean((X W^T + c - Y)^2): a linear layer fit by MSE."""
    W, c = params
    return ((data["X"] @ W.T + c - data["Y"]) ** 2).mean()


def _draw_rosenbrock(gen, dtype):
    start = torch.tensor([-1.2, 1.0], dtype=torch.float64) + 0.1 * torch.randn(2, generator=gen, dtype=torch.float64)
    return [start.to(dtype)], {}, "the Rosenbrock function from near (-1.2, 1)"


def rosenbrock(params, data, k):
    """(1 - x)^2 + 100 (y - x^2)^2, a curved valley; params[0] = (x, y)."""
    x, y = params[0][0], params[0][1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _draw_logistic(gen, dtype):
    r = _r(gen, dtype)
    return ([r(4, scale=0.3), r(1, scale=0.3).reshape(())], {"X": r(10, 4), "y": bernoulli(gen, 10, dtype=dtype)},
            "a logistic regression (w of shape 4, a 0-d bias b)")


def logistic(params, data, k):
    """Binary cross-entropy of a logistic regression: w (d,), b ()."""
    w, b = params
    return F.binary_cross_entropy_with_logits(data["X"] @ w + b, data["y"])


def _draw_embedding(sparse: bool):
    def draw(gen, dtype):
        r = _r(gen, dtype)
        index = torch.tensor([[0, 2, 2, 5], [1, 2, 7, 7], [5, 0, 3, 0]])
        return ([r(8, 3)], {"index": index, "target": r(3, 4, 3)},
                "an 8x3 embedding looked up by batches that repeat rows"
                + (" (sparse gradients)" if sparse else " (dense gradients)"))
    return draw


def embedding(params, data, k, sparse=True):
    """sum((E[index_k] - T_k)^2) with E = params[0] (V, D): step k looks up a batch of
    rows, index (S, N) and target (S, N, D) taken in turn; a batch may repeat a row.
    With sparse=True the gradient of E is a sparse tensor, as nn.Embedding(sparse=True) gives."""
    i = (k - 1) % data["index"].shape[0]
    rows = F.embedding(data["index"][i], params[0], sparse=sparse)
    return ((rows - data["target"][i]) ** 2).sum()


def embedding_dense(params, data, k):
    return embedding(params, data, k, sparse=False)


PROBLEMS = {p.name: p for p in [
    OptimizationProblem("quadratic", _draw_quadratic, quadratic),
    OptimizationProblem("least_squares", _draw_least_squares, least_squares),
    OptimizationProblem("rosenbrock", _draw_rosenbrock, rosenbrock),
    OptimizationProblem("logistic", _draw_logistic, logistic),
    OptimizationProblem("embedding", _draw_embedding(True), embedding),
    OptimizationProblem("embedding_dense", _draw_embedding(False), embedding_dense),
]}
