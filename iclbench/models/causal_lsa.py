"""Causal linear self-attention over (x, y) pairs with labels of any dimension m: the architecture of
autoregressive in-context learning (von Oswald et al. 2023; Zheng et al. 2024).

Tokens are e_t = (x_t, y_t) in R^(d + m) for the n context pairs and e_q = (x_q, 0) for each query.
One layer with H heads updates every token j from the pairs it may see, S(j):

    e_j <- e_j + (1 / rho_j) sum_h sum_{i in S(j)} (x_i^T Q_h x_j) P_h e_i,

with x_i the first d entries of token i (its label slots never enter a score, so labels reach other
tokens through the values alone), Q_h (d, d), P_h (d + m, d + m); S(j) = {i < j} for a context
token (the pairs strictly before it: never its own label) and all n pairs for a query (queries never
see one another), and rho_j = |S(j)| (1 for the first token, which sees nothing). The prediction of
token j after each layer is y_j - e_j[d:], minus the change of its label slots (a query's start at 0),
summed from the layers' updates, never through y_j: it depends on x_j and the pairs before j alone,
to the bit. One forward pass thus predicts every y_t of a sequence
from the pairs before it, which is how `iclbench train` trains it (the loss over every position, as
both papers do), and each query from the whole context.

With Q = I_d and P = [[0, 0], [0, -eta I_m]] (`gd_causal_lsa`), token j's prediction is

    (eta / rho_j) sum_{i in S(j)} y_i x_i^T x_j = W_1 x_j,   W_1 = -eta grad L(0),   L(W) = sum_i ||y_i - W x_i||^2 / (2 rho_j),

one gradient-descent step from W = 0 on the least-squares (OLS) objective of the pairs it sees. On a
linear dynamical system, (x_t, y_t) = (x_t, x_{t+1}), this is the mesa-optimizer of Zheng et al.: their
token (0, x_t, x_{t-1}) holds the pair (x_{t-1}, x_t) and an output slot, their normalisation is the
number of pairs, and their trained layer predicts x_{t+1} = W_1 x_t. Here the output slot is the label
slot itself, read out as above (the LSA of `iclbench.models.linear_transformer` does the same for
scalar labels, without the causal mask).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iclbench.models.base import InContextModel


def visibility(n: int, seen: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n, n + len(seen)) weights 1 / rho_j where context pair i is in S(j), else 0, for the n context tokens
    (token j sees the j pairs before it) and then one query token per entry of `seen`, the number of pairs it sees."""
    pairs = torch.cat([torch.arange(n, device=seen.device), seen])  # rho_j, before the first token's clamp to 1
    return (torch.arange(n, device=seen.device).unsqueeze(1) < pairs).to(dtype) / pairs.clamp(min=1).to(dtype)


class CausalLayer(nn.Module):
    """One layer: H heads with a score matrix Q_h on the x slots and a value-projection P_h on whole tokens."""

    def __init__(self, d: int, width: int, heads: int, init_std: float) -> None:
        super().__init__()
        self.kq = nn.Parameter(torch.randn(heads, d, d) * init_std)
        self.pv = nn.Parameter(torch.randn(heads, width, width) * init_std)

    def forward(self, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The update of every token (added to it by the caller)."""
        n, d = weights.shape[0], self.kq.shape[-1]
        x = tokens[..., :d]
        scores = torch.einsum("bid,hde,bje->bhij", x[:, :n], self.kq, x) * weights  # pair i -> token j
        values = torch.einsum("hde,bie->bhid", self.pv, tokens[:, :n])  # P_h e_i
        return torch.einsum("bhid,bhij->bjd", values, scores)


class CausalLSA(InContextModel):
    """A stack of `CausalLayer`s for d-dimensional inputs and m-dimensional labels (m = 1: scalar labels)."""

    arch = "causal-lsa"

    def __init__(self, d: int, layers: int, m: int = 1, heads: int = 1, init_std: float = 0.02) -> None:
        super().__init__(d, layers)
        if m < 1 or heads < 1:
            raise ValueError(f"causal LSA: need m >= 1 and heads >= 1, got m={m}, heads={heads}")
        self.m, self.heads, self.init_std = m, heads, init_std
        self.blocks = nn.ModuleList(CausalLayer(d, d + m, heads, init_std) for _ in range(layers))

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "d": self.d, "m": self.m, "layers": self.layers, "heads": self.heads,
                "init_std": self.init_std}

    def check_input(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> None:
        """Labels are (B, n, m), or (B, n) when m = 1; the rest as every architecture checks it."""
        if self.m > 1 or y.dim() == 3:
            expected = (*x.shape[:2], self.m)
            if tuple(y.shape) != expected:
                raise ValueError(f"{self.arch}: y must be (B, n, m) = {expected}, got {tuple(y.shape)}")
            y = y[..., 0]
        super().check_input(x, y, x_query)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, context: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(y_hat, steps)` for the queries, as every architecture returns them (with a last axis m for
        (B, n, m) labels); with `context`, `(context_steps (B, K, n[, m]), steps)`: the prediction of every
        context label y_t from the pairs before it, after each layer, and the queries' per-layer predictions."""
        self.check_input(x, y, x_query)
        n, q = x.shape[1], x_query.shape[1]
        out = self._steps(x, y, x_query, torch.full((q,), n, device=x.device))
        if context:
            return out[:, :, :n], out[:, :, n:]
        return out[:, -1, n:], out[:, :, n:]

    def forward_lengths(
        self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, lengths: list[int]
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """`forward` on the prefixes of `lengths` context pairs, in one pass, by length: a context token sees
        only the pairs before it, so the queries are added once per length, each group seeing that many pairs."""
        self.check_input(x, y, x_query)
        n, q = x.shape[1], x_query.shape[1]
        if not all(1 <= k <= n for k in lengths):
            raise ValueError(f"{self.arch}: lengths {lengths} must lie in 1..{n}, the batch's prompt length")
        seen = torch.tensor(lengths, device=x.device).repeat_interleave(q)
        out = self._steps(x, y, x_query.repeat(1, len(lengths), 1), seen)[:, :, n:]
        by_length = {}
        for g, k in enumerate(lengths):
            steps = out[:, :, g * q:(g + 1) * q]
            by_length[k] = (steps[:, -1], steps)
        return by_length

    def _steps(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """The per-layer predictions (B, K, n + Q[, m]) of the n context tokens and the Q query tokens, query i
        seeing the first `seen[i]` pairs."""
        labels = y if y.dim() == 3 else y.unsqueeze(-1)
        (b, n, d), q = x.shape, x_query.shape[1]
        tokens = x.new_zeros(b, n + q, d + self.m)
        tokens[:, :n, :d] = x
        tokens[:, :n, d:] = labels
        tokens[:, n:, :d] = x_query
        weights = visibility(n, seen, x.dtype)
        change = torch.zeros_like(tokens[..., d:])  # of the label slots, kept apart: y_j never enters y_j's prediction
        steps = []
        for block in self.blocks:
            update = block(tokens, weights)
            tokens = tokens + update
            change = change + update[..., d:]
            steps.append(-change)
        out = torch.stack(steps, 1)  # (B, K, n + q, m)
        return out.squeeze(-1) if y.dim() == 2 else out


def gd_causal_lsa(d: int, m: int, eta: float, dtype: torch.dtype = torch.float64) -> CausalLSA:
    """A 1-layer `CausalLSA` whose every prediction is one GD step with step `eta` from W = 0 on the
    least-squares objective of the pairs that token sees (module docstring)."""
    model = CausalLSA(d, 1, m=m).to(dtype)
    pv = torch.zeros(d + m, d + m, dtype=dtype)
    pv[d:, d:] = -eta * torch.eye(m, dtype=dtype)
    with torch.no_grad():
        model.blocks[0].kq.copy_(torch.eye(d, dtype=dtype).unsqueeze(0))
        model.blocks[0].pv.copy_(pv.unsqueeze(0))
    return model
