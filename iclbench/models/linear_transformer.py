"""Linear self-attention (LSA) and its kernel variants: attention without MLP on (x, y) tokens.

Tokens are e_i = (x_i, y_i, 0...) for the n context pairs and e_q = (x_q, 0, 0...) for each
query, of `width` >= d + 1 entries (entries past d + 1 are zero at the start: extra memory).
One layer with H heads updates every token j, context and query alike, from the context
tokens i only:

    e_j <- e_j + sum_h sum_{i <= n} a_h(i, j) P_h u_i,    s_h(i, j) = v_i^T Q_h v_j,

with u = e (or u = LayerNorm(e) when `norm`), v = u with its y-slot (entry d) set to 0,
a_h = h(s_h) / n for h in {linear, relu, exp} and a_h = softmax over the context i of s_h
for h = softmax. Labels thus enter through the values only and the scores are a kernel of
the other entries (as in Cheng et al.); this keeps exp attention from feeding the labels
back into its exponent, which overflows within a few layers. Queries are never keys or
values, so they do not influence each other. The prediction after each layer is the read-out
-e_q[d], minus the query token's y-slot (the sign under which one layer is one GD step, see
`iclbench.models.lsa`). With `tied`, one layer's weights are applied `layers` times (looped).

h = linear without norm is the LSA of von Oswald et al.; with norm, the LayerNorm variant
(Giannou et al.); h in {relu, exp, softmax} are the linear transformers of Cheng et al.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iclbench.models.base import InContextModel

ATTENTIONS = ("linear", "relu", "exp", "softmax")


class AttentionLayer(nn.Module):
    """One layer: H heads with a bilinear score matrix Q_h and a value-projection matrix P_h."""

    def __init__(self, width: int, heads: int, attention: str, norm: bool, init_std: float) -> None:
        super().__init__()
        self.attention = attention
        self.kq = nn.Parameter(torch.randn(heads, width, width) * init_std)
        self.pv = nn.Parameter(torch.randn(heads, width, width) * init_std)
        self.norm = nn.LayerNorm(width) if norm else None

    def forward(self, tokens: torch.Tensor, n: int, y_slot: int) -> torch.Tensor:
        u = tokens if self.norm is None else self.norm(tokens)
        v = u.clone()
        v[..., y_slot] = 0
        scores = torch.einsum("bid,hde,bje->bhij", v[:, :n], self.kq, v)  # context i -> every token j
        ctx = u[:, :n]
        if self.attention == "softmax":
            weights = scores.softmax(dim=2)
        elif self.attention == "relu":
            weights = scores.relu() / n
        elif self.attention == "exp":
            weights = scores.exp() / n
        else:
            weights = scores / n
        values = torch.einsum("hde,bie->bhid", self.pv, ctx)
        return tokens + torch.einsum("bhid,bhij->bjd", values, weights)


class LinearTransformer(InContextModel):
    """A stack of `AttentionLayer`s; `attention` = "linear" and `norm` = False is LSA."""

    arch = "linear-transformer"

    def __init__(
        self,
        d: int,
        layers: int,
        attention: str = "linear",
        heads: int = 1,
        width: int | None = None,
        norm: bool = False,
        tied: bool = False,
        init_std: float = 0.02,
    ) -> None:
        super().__init__(d, layers)
        if attention not in ATTENTIONS:
            raise ValueError(f"linear transformer: attention must be one of {ATTENTIONS}, got {attention!r}")
        width = d + 1 if width is None else width
        if width < d + 1 or heads < 1:
            raise ValueError(f"linear transformer: need width >= d + 1 = {d + 1} and heads >= 1, got {width}, {heads}")
        self.attention, self.heads, self.width, self.norm, self.tied = attention, heads, width, norm, tied
        self.init_std = init_std
        self.blocks = nn.ModuleList(
            AttentionLayer(width, heads, attention, norm, init_std) for _ in range(1 if tied else layers)
        )

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "d": self.d,
            "layers": self.layers,
            "attention": self.attention,
            "heads": self.heads,
            "width": self.width,
            "norm": self.norm,
            "tied": self.tied,
            "init_std": self.init_std,
        }

    def embed(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """Tokens (B, n + q, width): (x_i, y_i, 0...) then (x_q, 0, 0...)."""
        b, n, d = x.shape
        tokens = x.new_zeros(b, n + x_query.shape[1], self.width)
        tokens[:, :n, :d] = x
        tokens[:, :n, d] = y
        tokens[:, n:, :d] = x_query
        return tokens

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x, y, x_query)
        n = x.shape[1]
        tokens = self.embed(x, y, x_query)
        steps = []
        for k in range(self.layers):
            tokens = self.blocks[0 if self.tied else k](tokens, n, self.d)
            steps.append(-tokens[:, n:, self.d])
        out = torch.stack(steps, 1)
        return out[:, -1], out
