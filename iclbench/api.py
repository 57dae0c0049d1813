"""The plugin contract: what a model receives (`Batch`) and returns (`Prediction`), and the check of a return."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import torch

if TYPE_CHECKING:
    from iclbench.tasks.spec import TaskSpec


@dataclass(frozen=True)
class Batch:
    """A chunk of prompts: `x` (B, n, d) and `y` (B, n) of context, `x_query` (B, q, d).

    On a task with vector labels (`task.m` = m > 1) `y` is (B, n, m).
    """

    task: TaskSpec
    x: torch.Tensor
    y: torch.Tensor
    x_query: torch.Tensor

    @property
    def n(self) -> int:
        """Prompt length (number of context pairs)."""
        return self.x.shape[1]

    @property
    def m(self) -> int:
        """Label dimension: 1 for scalar labels, m for (B, n, m) vector labels."""
        return self.task.m

    def prefix(self, n: int) -> Batch:
        """The same prompts cut to their first `n` context pairs (the same queries)."""
        return Batch(self.task, self.x[:, :n], self.y[:, :n], self.x_query)


@dataclass(frozen=True)
class Prediction:
    """A model's output for a batch.

    `y` (B, q) is the prediction for every query. `steps` (B, K, q), optional, is the
    prediction after each of K iterations or layers (K at most `MAX_STEPS`). `w` (B, d), optional, is an
    estimated parameter vector, scored against the task's hidden one where it has one.
    On a task with vector labels (m > 1) every query's prediction is a vector: `y` is
    (B, q, m), `steps` (B, K, q, m) and `w` an estimated (B, m, d) matrix (labels W x).
    """

    y: torch.Tensor
    steps: torch.Tensor | None = None
    w: torch.Tensor | None = None


class Model(ABC):
    """Base class of every scored model, baselines included.

    Subclasses set `name`, may override `setup` (load weights onto `device`),
    `supports` and `predict_lengths`, and implement `predict`. A model that loads weights
    sets `checkpoint` to the file's path so that results record its SHA-256.
    """

    name: str = ""
    checkpoint: str | None = None
    task_pool: dict[str, Any] | None = None
    """Set (by `setup` at the latest) by a model trained on a finite pool of tasks: {"tasks": [task names], "size": K,
    "seed": S}, each task's prompts drawn with w from its `Task.task_pool(K, S)` (`iclbench train --task-pool K --seed
    S`; `TrainedModel` reads it from its checkpoint). `iclbench run` then also scores the model on in-pool prompts
    of those tasks (`iclbench.tasks.pool`). None: no pool (every task drawn afresh)."""

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
        """Predict the (B, q) query labels of `batch` ((B, q, m) for vector labels), on its device and in its dtype."""

    def predict_lengths(self, batch: Batch, lengths: list[int]) -> Mapping[int, torch.Tensor | Prediction]:
        """Optional: the predictions at every prompt length of `lengths` (ascending) in one call, by length.

        `batch` holds the prompts at the longest of them; the prediction at length n must be
        `predict(batch.prefix(n))` up to round-off: it may read only the first n context pairs.
        Override it when one pass serves every length (a causal transformer reads every prefix of
        its context at once); the runner then calls it once per chunk of prompts instead of calling
        `predict` once per length. `validate --rerun` scores with `predict` alone, so a model whose
        prediction at length n depends on later pairs is found out. By default: `predict` per length.
        """
        return {n: self.predict(batch.prefix(n)) for n in lengths}


def predicts_lengths(model: Model) -> bool:
    """Whether the model's class overrides `Model.predict_lengths` (the runner then uses it)."""
    return type(model).predict_lengths is not Model.predict_lengths


MAX_STEPS = 4096
"""Most steps a `Prediction.steps` may hold (`gd`, the iterative baseline with the most, reports 1,024): what bounds
the memory the harness gives a model's outputs, B x MAX_STEPS x q x m values per chunk of B prompts."""


class TaskFailure(Exception):
    """A task that could not be scored; the message names the task and what is wrong.

    `length`: the prompt length it concerns, when one call predicted several (`Model.predict_lengths`).
    """

    def __init__(self, message: str, length: int | None = None) -> None:
        super().__init__(message)
        self.length = length


def _check_tensor(t: Any, what: str, shape: tuple[int, ...], batch: Batch) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TaskFailure(f"{what} is a {type(t).__name__}, expected a torch.Tensor")
    if tuple(t.shape) != shape:
        raise TaskFailure(f"{what} has shape {tuple(t.shape)}, expected {shape}")
    if t.dtype != batch.x.dtype:
        raise TaskFailure(f"{what} has dtype {t.dtype}, expected {batch.x.dtype} (the batch's)")
    if t.device != batch.x.device:
        raise TaskFailure(f"{what} is on {t.device}, expected {batch.x.device} (the batch's)")
    return t


def check_prediction(out: Any, batch: Batch) -> Prediction:
    """The model's output as a `Prediction`, or `TaskFailure` saying what is wrong with it."""
    pred = out if isinstance(out, Prediction) else Prediction(out)
    b, q = batch.x_query.shape[:2]
    label = batch.task.label_shape
    _check_tensor(pred.y, "prediction", (b, q, *label), batch)
    if pred.steps is not None:
        if not isinstance(pred.steps, torch.Tensor) or pred.steps.dim() != 3 + len(label):
            raise TaskFailure(f"Prediction.steps must be a {_shape('B', 'K', 'q', *label)} tensor")
        if pred.steps.shape[1] > MAX_STEPS:
            raise TaskFailure(f"Prediction.steps has {pred.steps.shape[1]} steps, more than the {MAX_STEPS} accepted")
        _check_tensor(pred.steps, "Prediction.steps", (b, pred.steps.shape[1], q, *label), batch)
    if pred.w is not None:
        _check_tensor(pred.w, "Prediction.w", (b, *label, batch.task.d), batch)
    return pred


Request = tuple[Batch, list[int] | None]
"""One call the runner makes of a model: a batch, and the lengths to predict in it at once (`Model.predict_lengths`),
or None for `Model.predict` on the batch as it is."""
Answer = Prediction | dict[int, Prediction]
"""A request's answer: a `Prediction`, or one per length."""


def in_turn(model: Any, requests: Iterable[Request]) -> Iterator[Answer]:
    """The answer of `model` (its `predict` and `predict_lengths`) to each request, computed when it is asked for."""
    for batch, lengths in requests:
        yield model.predict(batch) if lengths is None else model.predict_lengths(batch, lengths)


def by_length(out: Any, lengths: list[int]) -> dict[int, Any]:
    """What `predict_lengths` returned, as a dict with exactly the keys `lengths`; `TaskFailure` otherwise."""
    if not isinstance(out, Mapping):
        raise TaskFailure(f"predict_lengths returned a {type(out).__name__}, expected a dict of predictions by prompt length")
    if set(out) != set(lengths) or any(type(n) is not int for n in out):
        raise TaskFailure(f"predict_lengths returned predictions for lengths {sorted(map(repr, out))}, expected {lengths}")
    return {n: out[n] for n in lengths}


def _shape(*dims: object) -> str:
    return f"({', '.join(map(str, dims))})"
