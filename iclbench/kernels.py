"""Kernels of the kernel task family, batched over leading dimensions."""

from __future__ import annotations

import math

import torch

KERNELS = ("linear", "exp", "relu")


def gram(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """K(a_i, b_j) for (..., n, d) and (..., m, d) inputs, shape (..., n, m).

    "linear": a^T b; "exp": exp(a^T b); "relu": the arc-cosine kernel of order 1,
    ||a|| ||b|| (sin t + (pi - t) cos t) / pi with t the angle between a and b, which
    is 2 E[relu(g^T a) relu(g^T b)] for g ~ N(0, I) and equals a^T b at t = 0.
    """
    dot = a @ b.mT
    if kind == "linear":
        return dot
    if kind == "exp":
        return dot.exp()
    if kind == "relu":
        norms = a.norm(dim=-1).unsqueeze(-1) * b.norm(dim=-1).unsqueeze(-2)
        cos = (dot / norms.clamp(min=torch.finfo(dot.dtype).tiny)).clamp(-1.0, 1.0)
        t = torch.arccos(cos)
        return norms * (torch.sin(t) + (math.pi - t) * cos) / math.pi
    raise ValueError(f"unknown kernel {kind!r}; expected one of {', '.join(KERNELS)}")
