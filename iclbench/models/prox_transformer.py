"""A transformer built to be able to run proximal-gradient steps on the lasso: attention for the gradient term,
an MLP for the shrinkage (the architecture asked of Liu et al. 2024's question: does a K-layer transformer run a
learned optimizer whose error falls linearly in K, for any measurement matrix and prompt length?).

The model carries one state token s = (w, 1), w in R^d an estimate of the task's weights (0 at the start), beside
the context tokens u_i = (x_i, y_i) in R^(d + 1), which no layer changes. Each of the K layers updates w by
linear attention of the state token over the context pairs, then by a residual ReLU MLP:

    w <- w + (1 / n) sum_h sum_i (u_i^T Q_h s) P_h u_i,       Q_h (d + 1, d + 1), P_h (d, d + 1),
    w <- w + W_2 relu(W_1 w + b_1) + b_2,                      W_1 (hidden, d), W_2 (d, hidden),

and the prediction after layer k is x_q^T w_k for every query. The attention sum is P_h G Q_h s with
G = (1 / n) sum_i u_i u_i^T, which is how it is computed: the context enters only through G, so one layer costs
O(d^2) whatever n. With `tied`, one layer's weights are applied K times (looped).

With one head, Q = [[I_d, 0], [0, -1]] and P = -eta [I_d, 0], the attention adds -(eta / n) sum_i (x_i^T w - y_i) x_i:
one gradient step on ||X w - y||^2 / (2n). With hidden = 4d, W_1 = [I; -I; I; -I], b_1 = (-t, -t, 0, 0),
W_2 = [I, -I, -I, I] and b_2 = 0, the MLP maps u to u + relu(u - t) - relu(-u - t) - relu(u) + relu(-u) =
soft(u, t), the soft-thresholding of the lasso's proximal step. `ista_prox_transformer` sets these weights in
every layer: its K layers are K ISTA steps with constant step eta on ||X w - y||^2 / (2n) + lam ||w||_1 (t =
eta lam). Trained weights may instead learn a preconditioner (P_h, Q_h) and thresholds (b_1) per layer, as LISTA
does, while the gradient term still comes from the prompt's own X.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iclbench.models.base import InContextModel


class ProxLayer(nn.Module):
    """One layer: H linear-attention heads from the state token to the context, then a residual ReLU MLP on w."""

    def __init__(self, d: int, heads: int, hidden: int, init_std: float) -> None:
        super().__init__()
        self.kq = nn.Parameter(torch.randn(heads, d + 1, d + 1) * init_std)
        self.pv = nn.Parameter(torch.randn(heads, d, d + 1) * init_std)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        for layer in (self.up, self.down):
            nn.init.normal_(layer.weight, std=init_std)
            nn.init.zeros_(layer.bias)

    def forward(self, w: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """The next w (B, d) from w and the context's second moments `gram` (B, d + 1, d + 1)."""
        state = torch.cat([w, w.new_ones(w.shape[0], 1)], -1)
        w = w + torch.einsum("hkc,bce,hef,bf->bk", self.pv, gram, self.kq, state)
        return w + self.down(torch.relu(self.up(w)))


class ProxTransformer(InContextModel):
    """K `ProxLayer`s (one, applied K times, when `tied`) on a state token; the prediction x_q^T w after each."""

    arch = "prox-transformer"

    def __init__(self, d: int, layers: int, heads: int = 1, hidden: int | None = None, tied: bool = False,
                 init_std: float = 0.02) -> None:
        super().__init__(d, layers)
        hidden = 4 * d if hidden is None else hidden
        if heads < 1 or hidden < 1:
            raise ValueError(f"{self.arch}: need heads >= 1 and hidden >= 1, got heads={heads}, hidden={hidden}")
        self.heads, self.hidden, self.tied, self.init_std = heads, hidden, tied, init_std
        self.blocks = nn.ModuleList(ProxLayer(d, heads, hidden, init_std) for _ in range(1 if tied else layers))

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "d": self.d, "layers": self.layers, "heads": self.heads, "hidden": self.hidden,
                "tied": self.tied, "init_std": self.init_std}

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(y_hat (B, q), steps (B, K, q))`: x_q^T w_k after each layer k."""
        self.check_input(x, y, x_query)
        tokens = torch.cat([x, y.unsqueeze(-1)], -1)
        gram = tokens.mT @ tokens / x.shape[1]
        w = x.new_zeros(x.shape[0], self.d)
        steps = []
        for k in range(self.layers):
            w = self.blocks[0 if self.tied else k](w, gram)
            steps.append(torch.einsum("bqd,bd->bq", x_query, w))
        out = torch.stack(steps, 1)
        return out[:, -1], out


def ista_prox_transformer(d: int, steps: int, eta: float, lam: float, dtype: torch.dtype = torch.float64
                          ) -> ProxTransformer:
    """A `steps`-layer `ProxTransformer` whose layer k predicts with the k-th ISTA iterate (constant step `eta`)
    on ||X w - y||^2 / (2n) + lam ||w||_1, from w = 0 (module docstring)."""
    model = ProxTransformer(d, steps, hidden=4 * d).to(dtype)
    eye = torch.eye(d, dtype=dtype)
    kq = torch.zeros(d + 1, d + 1, dtype=dtype)
    kq[:d, :d] = eye
    kq[d, d] = -1.0
    pv = torch.cat([-eta * eye, torch.zeros(d, 1, dtype=dtype)], -1)
    t = eta * lam
    with torch.no_grad():
        for block in model.blocks:
            block.kq.copy_(kq.unsqueeze(0))
            block.pv.copy_(pv.unsqueeze(0))
            block.up.weight.copy_(torch.cat([eye, -eye, eye, -eye]))
            block.up.bias.copy_(torch.tensor([-t] * (2 * d) + [0.0] * (2 * d), dtype=dtype))
            block.down.weight.copy_(torch.cat([eye, -eye, -eye, eye], -1))
            block.down.bias.zero_()
    return model
