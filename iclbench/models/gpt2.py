"""A GPT-2-style causal transformer over interleaved x / y tokens (Garg et al.), in torch alone.

The prompt is the sequence x_1, y_1, ..., x_n, y_n: an x token is (x_i, 0) and a y token
(0, ..., 0, y_i), both mapped to `width` by one linear read-in, plus a learned position
embedding. Blocks are pre-LayerNorm: causal multi-head softmax attention, then a GELU MLP
of 4 x width (`activation` "gelu", the exact GELU, or "gelu-tanh", its tanh approximation, which
Hugging Face's GPT-2 uses: checkpoints of Garg et al.'s code load with it, `iclbench.models.garg`).
The q queries are appended as x tokens at the same position 2n (right after
the context); each attends to the 2n context tokens and to itself only, so queries never
see one another. The prediction after each layer is the shared read-out
Linear(LayerNorm(h)) of the query token's hidden state h after that layer.

The context x token x_t sits where the query of the prefix of t - 1 pairs does (position 2(t - 1),
seeing the tokens before it and itself), so its read-out is the prediction of y_t from the pairs
before it: `forward(..., context=True)` returns these too, for training on every prefix at once
(`iclbench train --every-prefix`, as Garg et al. train on every prefix).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iclbench.models.base import InContextModel


ACTIVATIONS = {"gelu": "none", "gelu-tanh": "tanh"}
"""The MLP's GELU by name: `torch.nn.GELU`'s `approximate` argument for each."""


class Block(nn.Module):
    """Pre-LayerNorm transformer block: masked multi-head attention, then an MLP."""

    def __init__(self, width: int, heads: int, activation: str = "gelu") -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        gelu = nn.GELU(approximate=ACTIVATIONS[activation])
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), gelu, nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, w))
        return h + self.mlp(self.ln2(h))


class GPT2(InContextModel):
    """Causal transformer of `layers` blocks; prompts up to `max_len` context pairs."""

    arch = "gpt2"

    def __init__(
        self, d: int, layers: int, width: int = 64, heads: int = 4, max_len: int = 80, tied: bool = False,
        activation: str = "gelu",
    ) -> None:
        super().__init__(d, layers)
        if width % heads:
            raise ValueError(f"gpt2: width {width} is not a multiple of heads {heads}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"gpt2: unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        self.width, self.heads, self.max_len, self.tied, self.activation = width, heads, max_len, tied, activation
        self.read_in = nn.Linear(d + 1, width)
        self.pos = nn.Embedding(2 * max_len + 1, width)
        self.blocks = nn.ModuleList(Block(width, heads, activation) for _ in range(1 if tied else layers))
        self.ln_f = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, 1)
        nn.init.normal_(self.pos.weight, std=0.02)

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "d": self.d,
            "layers": self.layers,
            "width": self.width,
            "heads": self.heads,
            "max_len": self.max_len,
            "tied": self.tied,
            "activation": self.activation,
        }

    def supports_length(self, n: int) -> bool:
        return 1 <= n <= self.max_len

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, context: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction (B, q), per-layer predictions (B, K, q)); with `context`, (per-layer predictions of
        every context label y_t from the t - 1 pairs before it (B, K, n), per-layer predictions (B, K, q))."""
        out, before = self.read_outs(x, y, x_query, [x.shape[1]], context)  # one length: compiles once for every n
        return (before, out[:, :, 0]) if context else (out[:, -1, 0], out[:, :, 0])

    def forward_lengths(
        self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, lengths: list[int]
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """`forward` on the prefixes of `lengths` context pairs, in one pass, by length.

        The context is causal, so its first 2n tokens are the same in every prompt longer than n: the
        queries are appended once per length, at position 2n, each attending to the first 2n context
        tokens and to itself.
        """
        out = self.read_outs(x, y, x_query, lengths)[0]
        return {m: (out[:, -1, i], out[:, :, i]) for i, m in enumerate(lengths)}

    def read_outs(
        self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, lengths: list[int], context: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The read-outs (B, K, len(lengths), q) after each layer for the prefixes of `lengths` pairs, and with
        `context` those (B, K, n) of the context x tokens (None without)."""
        self.check_input(x, y, x_query)
        (b, n, d), q = x.shape, x_query.shape[1]
        if not all(1 <= m <= n for m in lengths):
            raise ValueError(f"{self.arch}: lengths {lengths} must lie in 1..{n}, the batch's prompt length")
        xt = torch.cat([x, x.new_zeros(b, n, 1)], -1)
        yt = torch.cat([x.new_zeros(b, n, d), y.unsqueeze(-1)], -1)
        qt = torch.cat([x_query, x.new_zeros(b, q, 1)], -1).repeat(1, len(lengths), 1)
        seq = torch.cat([torch.stack([xt, yt], 2).reshape(b, 2 * n, d + 1), qt], 1)
        # the prompt length of each query token, made on the device (no copy from the host in the training step)
        at = torch.cat([torch.full((q,), m, dtype=torch.long, device=x.device) for m in lengths])
        positions = torch.cat([torch.arange(2 * n, device=x.device), 2 * at])
        h = self.read_in(seq) + self.pos(positions)
        t = 2 * n + len(at)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        mask[2 * n :, : 2 * n] = torch.arange(2 * n, device=x.device) < 2 * at.unsqueeze(1)
        mask[2 * n :, 2 * n :] = torch.eye(len(at), dtype=torch.bool, device=x.device)
        steps, before = [], []
        for k in range(self.layers):
            h = self.blocks[0 if self.tied else k](h, mask)
            if context:  # one read-out of every token, then the queries' and the context x tokens'
                read = self.read_out(self.ln_f(h)).squeeze(-1)
                steps.append(read[:, 2 * n :])
                before.append(read[:, : 2 * n : 2])
            else:
                steps.append(self.read_out(self.ln_f(h[:, 2 * n :])).squeeze(-1))
        out = torch.stack(steps, 1).view(b, self.layers, len(lengths), q)
        return out, torch.stack(before, 1) if context else None
