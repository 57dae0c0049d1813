"""The hand-built LSA of von Oswald et al.: K layers that run K steps of gradient descent.

With tokens e_i = (x_i, y_i) and query tokens (x_q, 0), take in every layer

    Q = [[I_d, 0], [0, 0]],    P = [[0, 0], [0, -eta]],

so that layer k adds -(eta / n) sum_i r_i x_i^T x_j to the y-slot of token j, where r_i is
context token i's y-slot. By induction the context y-slots hold the residuals
r_i = y_i - w_k^T x_i and every query's y-slot holds -w_k^T x_q, where
w_{k+1} = w_k - eta X^T (X w_k - y) / n and w_0 = 0: least-squares GD with step eta. The
read-out -e_q[d] is therefore the GD prediction w_k^T x_q after each layer.
"""

from __future__ import annotations

import torch

from iclbench.models.linear_transformer import LinearTransformer


def gd_lsa(d: int, steps: int, eta: float, dtype: torch.dtype = torch.float64) -> LinearTransformer:
    """A `steps`-layer LSA whose layer k prediction is that of k steps of GD with step `eta` from 0."""
    model = LinearTransformer(d, steps, attention="linear").to(dtype)
    kq = torch.zeros(d + 1, d + 1, dtype=dtype)
    kq[:d, :d] = torch.eye(d, dtype=dtype)
    pv = torch.zeros(d + 1, d + 1, dtype=dtype)
    pv[d, d] = -eta
    with torch.no_grad():
        for block in model.blocks:
            block.kq.copy_(kq.unsqueeze(0))
            block.pv.copy_(pv.unsqueeze(0))
    return model
