"""What every architecture shares: the (prompt -> predictions per layer) interface and its config."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

import torch
from torch import nn


class InContextModel(nn.Module, metaclass=ABCMeta):
    """An architecture that reads a prompt and predicts its queries after each layer.

    `forward(x (B, n, d), y (B, n), x_query (B, q, d))` returns `(y_hat (B, q), steps (B, K, q))`
    with `steps[:, k]` the read-out after layer k + 1 and `y_hat = steps[:, -1]`. Every
    query is predicted from the context alone: queries never see one another.
    `config()` is a JSON-ready dict from which `iclbench.models.build` recreates the model.
    """

    arch: str = ""
    m: int = 1
    """The label dimension the architecture reads and predicts (1: scalar labels)."""

    def __init__(self, d: int, layers: int) -> None:
        super().__init__()
        if d < 1 or layers < 1:
            raise ValueError(f"{type(self).__name__}: need d >= 1 and layers >= 1, got d={d}, layers={layers}")
        self.d = d
        self.layers = layers

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The JSON-ready dict `iclbench.models.build` recreates this architecture from."""

    def forward_lengths(
        self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, lengths: list[int]
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """`forward` on the prefixes of `lengths` context pairs, by length: here one pass per length; a causal
        architecture, whose every prefix is read in one pass over the longest, overrides it."""
        return {n: self(x[:, :n], y[:, :n], x_query) for n in lengths}

    def supports_length(self, n: int) -> bool:
        """Whether prompts of `n` context pairs fit the architecture."""
        return n >= 1

    def check_input(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> None:
        """Raise a clear error for inputs of the wrong shape."""
        if x.dim() != 3 or x.shape[-1] != self.d:
            raise ValueError(f"{self.arch}: x must be (B, n, {self.d}), got {tuple(x.shape)}")
        if tuple(y.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{self.arch}: y must be (B, n) = {tuple(x.shape[:2])}, got {tuple(y.shape)}")
        if x_query.dim() != 3 or x_query.shape[0] != x.shape[0] or x_query.shape[-1] != self.d:
            raise ValueError(f"{self.arch}: x_query must be ({x.shape[0]}, q, {self.d}), got {tuple(x_query.shape)}")
        if not self.supports_length(x.shape[1]):
            raise ValueError(f"{self.arch}: prompts of length {x.shape[1]} are not supported")
