"""The plugin contract: what a model receives (`Batch`) and returns (`Prediction`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from iclbench.tasks.spec import TaskSpec


@dataclass(frozen=True)
class Batch:
    """A chunk of prompts: `x` (B, n, d) and `y` (B, n) of context, `x_query` (B, q, d)."""

    task: TaskSpec
    x: torch.Tensor
    y: torch.Tensor
    x_query: torch.Tensor

    @property
    def n(self) -> int:
        """Prompt length (number of context pairs)."""
        return self.x.shape[1]


@dataclass(frozen=True)
class Prediction:
    """A model's output for a batch.

    `y` (B, q) is the prediction for every query. `steps` (B, K, q), optional, is the
    prediction after each of K iterations or layers. `w` (B, d), optional, is an
    estimated parameter vector, scored against the task's hidden one where it has one.
    """

    y: torch.Tensor
    steps: torch.Tensor | None = None
    w: torch.Tensor | None = None


class Model(ABC):
    """Base class of every scored model, baselines included.

    Subclasses set `name`, may override `setup` (load weights onto `device`) and
    `supports`, and implement `predict`. A model that loads weights sets
    `checkpoint` to the file's path so that results record its SHA-256.
    """

    name: str = ""
    checkpoint: str | None = None

    def setup(self, device: torch.device) -> None:
        """Prepare to run on `device` (load weights, move buffers)."""

    def supports(self, task: TaskSpec) -> bool:
        """Whether this model can be scored on `task`; unsupported tasks are skipped."""
        return True

    def supports_length(self, task: TaskSpec, n: int) -> bool:
        """Whether this model applies to prompts of length `n` of a supported task.

        A model whose weights are tied to one prompt length (LISTA, say) returns
        False for the others; those lengths are reported unsupported, not scored.
        """
        return True

    @abstractmethod
    def predict(self, batch: Batch) -> torch.Tensor | Prediction:
        """Predict the (B, q) query labels of `batch`, on its device and in its dtype."""
