"""Task families: how a family draws prompts, and the `Task` users train and score on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from iclbench.api import Batch
from iclbench.tasks.spec import EvalSet, TaskSpec

EVAL_STREAM = 0
TRAIN_STREAM = 1


@dataclass(frozen=True)
class Draw:
    """Prompts drawn by a family, float64 on the CPU, every value float32-representable.

    `y_query` is the query label drawn like the context labels (noise included);
    `hidden` holds per-prompt hidden parameters (for example `w`, `sigma`).
    """

    x: torch.Tensor
    y: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    hidden: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Sample:
    """A training batch: what the model sees, the query labels and the scored target."""

    batch: Batch
    y_query: torch.Tensor
    target: torch.Tensor
    hidden: dict[str, torch.Tensor]


class Family(ABC):
    """A task family: draws prompts from the distribution a `TaskSpec` describes."""

    @abstractmethod
    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        """Draw `batch` prompts of `n` context pairs and `q` queries."""

    def target(self, spec: TaskSpec, draw: Draw, n: int) -> torch.Tensor:
        """The noiseless target scored for the queries of the length-`n` prefix."""
        return draw.hidden["f_query"]

    def public(self, spec: TaskSpec) -> dict[str, torch.Tensor]:
        """Tensors published with the task and shared by every prompt."""
        return {}


def stream(seed: int, *key: int) -> np.random.Generator:
    """A PCG64 generator for one of a task's independent seed streams."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


class Task:
    """One task of the suite: its spec, its evaluation set and a training sampler."""

    def __init__(self, spec: TaskSpec, family: Family) -> None:
        self.spec = spec
        self.family = family

    def __repr__(self) -> str:
        return f"Task({self.spec.name!r})"

    @cached_property
    def public(self) -> dict[str, torch.Tensor]:
        """Tensors published with the task (for example the lasso family's `X0`)."""
        return self.family.public(self.spec)

    def generate(self) -> EvalSet:
        """Generate the evaluation set from the task's evaluation seed stream (no cache)."""
        s = self.spec
        draw = self.family.draw(s, stream(s.seed, EVAL_STREAM), s.n_prompts, s.max_length, s.n_queries)
        targets = {n: self.family.target(s, draw, n) for n in s.lengths}
        hidden = {"y_query": draw.y_query, **draw.hidden}
        hidden.pop("f_query", None)
        as32 = lambda t: t.to(torch.float32).contiguous()  # noqa: E731
        return EvalSet(
            as32(draw.x),
            as32(draw.y),
            as32(draw.x_query),
            {n: as32(t) for n, t in targets.items()},
            {k: as32(t) for k, t in hidden.items()},
            {k: as32(t) for k, t in self.public.items()},
        )

    def train_generator(self, seed: int) -> np.random.Generator:
        """A generator on the training seed stream, disjoint from the evaluation stream."""
        return stream(self.spec.seed, TRAIN_STREAM, seed)

    def sample(
        self,
        batch_size: int,
        n: int,
        generator: np.random.Generator,
        n_queries: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Sample:
        """Draw a training batch of `batch_size` prompts of length `n` from the task's distribution."""
        q = n_queries or self.spec.n_queries
        draw = self.family.draw(self.spec, generator, batch_size, n, q)
        to = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        batch = Batch(self.spec, to(draw.x), to(draw.y), to(draw.x_query))
        hidden = {k: to(v) for k, v in draw.hidden.items() if k != "f_query"}
        return Sample(batch, to(draw.y_query), to(self.family.target(self.spec, draw, n)), hidden)


def gaussian(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    """Standard normal draws as a float64 tensor."""
    return torch.from_numpy(rng.standard_normal(shape))


def covariance(rng: np.random.Generator, batch: int, d: int, kappa: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt covariance Sigma = U diag(s) U^T and its square root.

    U is Haar-random per prompt, s log-spaced from 1 to 1/kappa and rescaled so that
    trace(Sigma) = d; kappa = 1 gives the identity without drawing anything.
    """
    if kappa == 1:
        eye = torch.eye(d, dtype=torch.float64).expand(batch, d, d)
        return eye, eye
    q, r = torch.linalg.qr(gaussian(rng, batch, d, d))
    u = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    s = torch.tensor(kappa, dtype=torch.float64) ** -torch.linspace(0, 1, d, dtype=torch.float64)
    s = s * d / s.sum()
    sigma = (u * s) @ u.mT
    root = (u * s.sqrt()) @ u.mT
    return sigma, root
