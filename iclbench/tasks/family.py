"""Task families: how a family draws prompts, and the `Task` users train and score on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch

from iclbench.api import Batch
from iclbench.tasks import portable
from iclbench.tasks.pool import MAX_POOL
from iclbench.tasks.spec import EvalSet, TaskSpec, f32

EVAL_STREAM = 0
TRAIN_STREAM = 1
VERIFY_STREAM = 2
VERIFY_SEED_BITS = 128
"""Seed streams: `SeedSequence(spec.seed, spawn_key=(EVAL_STREAM,))` draws the pinned evaluation set,
`(spec.seed, (TRAIN_STREAM, seed))` training batches and `(seed, (VERIFY_STREAM, spec.seed))`, for a
seed below 2^`VERIFY_SEED_BITS`, a fresh verification set. `SeedSequence` hashes its first argument,
as 32-bit words zero-padded to 4, followed by the key's words: the fifth word is 0, 1 or 2 in the
three streams, so none can reproduce another's."""
POOL_KEY = 0x706F6F6C
"""The spawn-key word of task pools on the training stream (`Task.task_pool`, `Task.pool_set`): `(TRAIN_STREAM, seed,
POOL_KEY)` is a rank's training stream only for rank 0x706F6F6C of a data-parallel run, which no run has."""


@dataclass(frozen=True)
class Draw:
    """Prompts drawn by a family: float64 NumPy arrays, every value float32-representable.

    `x` is (B, n, d), `x_query` (B, q, d); `y` is (B, n) and `y_query` (B, q) for scalar labels,
    (B, n, m) and (B, q, m) for vector labels (`TaskSpec.m`). `y_query` is the query label drawn
    like the context labels (noise included);
    `hidden` holds the per-prompt hidden values the evaluation set keeps (for example `w`,
    and `f_query`, the noiseless query target); `extra` holds by-products that training
    samples expose but evaluation sets do not keep (for example `sigma`).
    """

    x: np.ndarray
    y: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    hidden: dict[str, np.ndarray]
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """A training batch drawn by `Task.sample`.

    `batch` is what a model sees (`Batch`: `x` (B, n, d), `y` (B, n), `x_query` (B, q, d));
    `y_query` (B, q) the query labels ((B, n, m) and (B, q, m) for vector labels), drawn like the context labels (noise included; +-1 on
    logistic tasks); `target` (B, q) the noiseless target the benchmark scores (on logistic
    tasks, the regularised optimum's logit); `hidden` the per-prompt hidden values by name
    (`w` on linear and lasso tasks, and by-products of the draw such as `sigma`).
    """

    batch: Batch
    y_query: torch.Tensor
    target: torch.Tensor
    hidden: dict[str, torch.Tensor]


class Family(ABC):
    """A task family: draws prompts from the distribution a `TaskSpec` describes."""

    dimension_axes: ClassVar[Mapping[str, tuple[int, ...]] | None] = None
    """Set where the family's draws at a smaller d, zero-padded to the spec's d, are its prompts in the
    subspace of the first d coordinates (for the dimension curriculum of `iclbench train`): the axes of
    the `Draw.hidden` and `Draw.extra` entries that run over the coordinates, padded with x. None where
    the family has no such draws (a fixed matrix or a label dimension tied to d)."""

    pooled: ClassVar[bool] = False
    """Set where a prompt's task is one hidden vector w, drawn by `prior` and given to `draw_given`: tasks that
    can be drawn from a finite pool (`Task.task_pool`, `iclbench train --task-pool`)."""

    @abstractmethod
    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        """Draw `batch` prompts of `n` context pairs and `q` queries."""

    def classifies(self, spec: TaskSpec) -> bool:
        """Whether some of the task's labels are classes (+-1) whose target is a logit, not the labels' noiseless
        value."""
        return False

    def prior(self, spec: TaskSpec, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` hidden task vectors w (count, d) drawn from the prior of `draw` (`pooled` families only)."""
        raise ValueError(f"{spec.name}: the {spec.family} family has no task vector to draw a pool of")

    def draw_given(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int, w: np.ndarray) -> Draw:
        """`draw` with each prompt's hidden task vector given, w (B, d), instead of drawn (`pooled` families only)."""
        raise ValueError(f"{spec.name}: the {spec.family} family has no task vector to draw prompts of")

    def target(self, spec: TaskSpec, draw: Draw, n: int) -> np.ndarray:
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

    def generate(self, seed: int | None = None) -> EvalSet:
        """Generate the evaluation set (no cache): the pinned one from the task's evaluation stream
        when `seed` is None, else a fresh set of the same size and distribution from the
        verification stream of `seed` (0 <= seed < 2^`VERIFY_SEED_BITS`)."""
        s = self.spec
        if seed is not None and not 0 <= seed < 2**VERIFY_SEED_BITS:
            raise ValueError(f"a verification seed is an integer from 0 to 2^{VERIFY_SEED_BITS} - 1, got {seed}")
        rng = stream(s.seed, EVAL_STREAM) if seed is None else stream(seed, VERIFY_STREAM, s.seed)
        return self._evaluation_set(self.family.draw(s, rng, s.n_prompts, s.max_length, s.n_queries))

    def _evaluation_set(self, draw: Draw) -> EvalSet:
        s = self.spec
        as32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        hidden = {"y_query": draw.y_query, **draw.hidden}
        hidden.pop("f_query", None)
        return EvalSet(
            as32(draw.x),
            as32(draw.y),
            as32(draw.x_query),
            {n: as32(self.family.target(s, draw, n)) for n in s.lengths},
            {k: as32(a) for k, a in hidden.items()},
            {k: t.to(torch.float32).contiguous() for k, t in self.public.items()},
        )

    def task_pool(self, size: int, seed: int) -> np.ndarray:
        """The pool of `size` tasks of seed `seed`: `size` hidden vectors w (size, d) drawn from the family's prior on
        the training stream `(TRAIN_STREAM, seed, POOL_KEY)` of the task (`pooled` families only). Pools of one seed
        are nested: the pool of size K is the first K rows of every larger one."""
        if not self.family.pooled:
            raise ValueError(f"{self.spec.name}: the {self.spec.family} family has no task vector to draw a pool of")
        if not 1 <= size <= MAX_POOL:
            raise ValueError(f"a task pool holds 1 to {MAX_POOL} tasks, got {size}")
        return self.family.prior(self.spec, stream(self.spec.seed, TRAIN_STREAM, seed, POOL_KEY), size)

    def pool_set(self, size: int, seed: int, verify_seed: int | None = None) -> EvalSet:
        """In-pool prompts: an evaluation set of the task's size and lengths whose every prompt's w is drawn uniformly
        from `task_pool(size, seed)`. Without `verify_seed`, the public in-pool set, on the training stream
        `(TRAIN_STREAM, seed, POOL_KEY, 1)`, disjoint from the evaluation sets, from the pool itself and from the
        training batches of any seed; with one (0 <= verify_seed < 2^`VERIFY_SEED_BITS`), a fresh in-pool set: the
        same pool, with the rows, inputs and noise drawn on the verification stream `(verify_seed, (VERIFY_STREAM,
        spec.seed, POOL_KEY, seed))`, disjoint from `generate(verify_seed)`'s."""
        s, pool = self.spec, self.task_pool(size, seed)
        if verify_seed is None:
            rng = stream(s.seed, TRAIN_STREAM, seed, POOL_KEY, 1)
        elif 0 <= verify_seed < 2**VERIFY_SEED_BITS:
            rng = stream(verify_seed, VERIFY_STREAM, s.seed, POOL_KEY, seed)
        else:
            raise ValueError(f"a verification seed is an integer from 0 to 2^{VERIFY_SEED_BITS} - 1, got {verify_seed}")
        return self._evaluation_set(self._draw(rng, s, s.n_prompts, s.max_length, s.n_queries, pool))

    def _draw(self, rng: np.random.Generator, spec: TaskSpec, batch: int, n: int, q: int,
              pool: np.ndarray | None) -> Draw:
        """The family's draw; with a `pool` (K, d), each prompt's w is a row of it, drawn uniformly first."""
        if pool is None:
            return self.family.draw(spec, rng, batch, n, q)
        return self.family.draw_given(spec, rng, batch, n, q, pool[rng.integers(len(pool), size=batch)])

    def train_generator(self, seed: int, rank: int = 0) -> np.random.Generator:
        """A generator on the training seed stream, disjoint from the evaluation stream; `rank` r > 0
        (of a data-parallel run) gets its own stream, disjoint from those of `seed` and every other rank."""
        return stream(self.spec.seed, TRAIN_STREAM, seed) if rank == 0 else stream(self.spec.seed, TRAIN_STREAM, seed, rank)

    def sample(
        self,
        batch_size: int,
        n: int,
        generator: np.random.Generator,
        n_queries: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        dims: int | None = None,
        pool: np.ndarray | None = None,
    ) -> Sample:
        """Draw a training batch of `batch_size` prompts of length `n` (and `n_queries` queries, by default
        the task's) from the task's distribution, with `generator` (`train_generator(seed)`), as
        `dtype` tensors on `device`; see `Sample` for what it holds. The draw is NumPy's, on the CPU (the
        portable stream); on a GPU the tensors are copied asynchronously, from page-locked memory.

        With `dims` k < d (families with `Family.dimension_axes` only), the prompts are the family's at
        dimension k, zero-padded to d: inputs in the span of the first k coordinates (Garg et al.'s
        dimension curriculum).

        With a `pool` (`task_pool`), each prompt's w is a row of it, drawn uniformly (not with `dims`)."""
        q = n_queries or self.spec.n_queries
        if pool is not None and dims not in (None, self.spec.d):
            raise ValueError(
                f"{self.spec.name}: prompts from a task pool are drawn at the task's dimension {self.spec.d}")
        spec = self.spec if dims is None else self.in_dimension(dims)
        draw = self._draw(generator, spec, batch_size, n, q, pool)
        target = self.family.target(spec, draw, n)
        if spec.d < self.spec.d:
            draw = padded(draw, self.spec.d, self.family.dimension_axes or {})
        on_gpu = torch.device(device).type == "cuda"

        def to(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(a))
            if on_gpu:  # from page-locked memory, so that the copy does not wait for the kernels queued before it
                return t.to(dtype).pin_memory().to(device, non_blocking=True)
            return t.to(device=device, dtype=dtype)

        batch = Batch(self.spec, to(draw.x), to(draw.y), to(draw.x_query))
        hidden = {k: to(a) for k, a in {**draw.hidden, **draw.extra}.items() if k != "f_query"}
        return Sample(batch, to(draw.y_query), to(target), hidden)

    def in_dimension(self, dims: int) -> TaskSpec:
        """The task's spec at dimension `dims` (2 to d); a ValueError where the family has no such draws."""
        if dims == self.spec.d:
            return self.spec
        if self.family.dimension_axes is None:
            raise ValueError(f"{self.spec.name}: the {self.spec.family} family has no draws in fewer dimensions")
        if not 2 <= dims <= self.spec.d:  # from 2: a condition number needs two directions
            raise ValueError(f"{self.spec.name}: a dimension from 2 to {self.spec.d}, got {dims}")
        return replace(self.spec, d=dims)


def padded(draw: Draw, d: int, axes: Mapping[str, tuple[int, ...]]) -> Draw:
    """`draw`, made at a smaller dimension, with x, x_query and the entries of `axes` zero-padded to `d`."""

    def pad(a: np.ndarray, over: tuple[int, ...]) -> np.ndarray:
        widths = [(0, 0)] * a.ndim
        for axis in over:
            widths[axis] = (0, d - a.shape[axis])
        return np.pad(a, widths)

    def pad_all(entries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: pad(a, axes[k]) if k in axes else a for k, a in entries.items()}

    return replace(draw, x=pad(draw.x, (-1,)), x_query=pad(draw.x_query, (-1,)), hidden=pad_all(draw.hidden),
                   extra=pad_all(draw.extra))


def gaussian(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard normal float64 draws."""
    return rng.standard_normal(shape)


def covariance_root(rng: np.random.Generator, batch: int, d: int, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt covariance Sigma = U diag(s) U^T and a root R with R R^T = Sigma (R = U diag(sqrt s)).

    U is Haar-random per prompt (`portable.haar` of a Gaussian matrix), s log-spaced from 1
    to 1/kappa and rescaled so that trace(Sigma) = d; kappa = 1 gives the identity without
    drawing anything. x = z R^T with z ~ N(0, I) then has covariance Sigma.
    """
    if kappa == 1:
        eye = np.broadcast_to(np.eye(d), (batch, d, d))
        return eye, eye
    u = portable.haar(gaussian(rng, batch, d, d))
    s = f32(np.array([kappa ** (-i / (d - 1)) for i in range(d)]))  # a last-bit pow difference cannot survive f32
    s = f32(s * (d / sum(s.tolist())))
    root = u * np.sqrt(s)
    return portable.matmul(root, np.swapaxes(root, -1, -2)), root
