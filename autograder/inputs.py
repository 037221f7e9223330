"""Seeded input makers shared by every chapter's checks (like torch.testing.make_tensor).

Each takes a torch.Generator first and dtype/device as keyword-only arguments,
and draws on the CPU so that the same seed gives the same numbers on every
machine; Check.cases() moves the tensors to the grading device afterwards.
"""
from __future__ import annotations

import torch


def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype, device="cpu", scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype=dtype, device=device)


def rand(gen: torch.Generator, *shape: int, dtype: torch.dtype, device="cpu", low: float = 0.0,
         high: float = 1.0) -> torch.Tensor:
    u = torch.rand(*shape, generator=gen, dtype=torch.float64)
    return (low + (high - low) * u).to(dtype=dtype, device=device)


def randint(gen: torch.Generator, high: int, *shape: int, device="cpu") -> torch.Tensor:
    return torch.randint(0, high, shape, generator=gen, device="cpu").to(device)


def bernoulli(gen: torch.Generator, *shape: int, dtype: torch.dtype, device="cpu") -> torch.Tensor:
    return (torch.rand(*shape, generator=gen, dtype=torch.float64) < 0.5).to(dtype=dtype, device=device)

