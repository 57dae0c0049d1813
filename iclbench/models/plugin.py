"""`TrainedModel`: an `iclbench.Model` that scores a trained architecture checkpoint.

A submission's model.py is a few lines:

    from iclbench.models.plugin import TrainedModel

    class MyLSA(TrainedModel):
        name = "lsa-3layer"

`setup` loads the checkpoint declared in the submission.yaml next to that file (checked
against its SHA-256 by `iclbench.checkpoint.resolve`) or, without one, `weights` (default
model.safetensors) from the file's folder. The architecture is rebuilt from the config in
the checkpoint's metadata.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from iclbench.api import Batch, Model, Prediction
from iclbench.checkpoint import resolve
from iclbench.models.base import InContextModel
from iclbench.models.weights import load_weights
from iclbench.tasks import TaskSpec


class TrainedModel(Model):
    """A trained architecture; predictions carry `steps`, the read-out after each layer.

    `families`: the task families it is scored on (None: those it was trained on, stored
    in the checkpoint). `loops`: for a looped (tied) model, how many times to apply its
    layer at test time (None: as trained).
    """

    weights: str = "model.safetensors"
    families: tuple[str, ...] | None = None
    loops: int | None = None

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.net: InContextModel | None = None
        self.trained_on: list[str] = []

    def weights_path(self) -> Path:
        """The checkpoint to load: `path`, the submission.yaml declaration, or `weights` beside the class's file."""
        if self.path is not None:
            return self.path
        source = Path(inspect.getfile(type(self))).resolve()
        if (source.parent / "submission.yaml").exists():
            return resolve(source)
        return source.parent / self.weights

    def setup(self, device: torch.device) -> None:
        path = self.weights_path()
        if not path.is_file():
            raise FileNotFoundError(f"{type(self).__name__}: checkpoint {path} not found")
        self.net, info = load_weights(path, device)
        self.trained_on = list(info.get("tasks", []))
        self.task_pool = info.get("task_pool")
        if self.loops is not None:
            if not getattr(self.net, "tied", False):
                raise ValueError(f"{type(self).__name__}: loops is set but {path} is not a looped (tied) model")
            self.net.layers = self.loops
        self.checkpoint = str(path)

    def _loaded(self) -> InContextModel:
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__}: call setup(device) before using the model")
        return self.net

    def supports(self, task: TaskSpec) -> bool:
        families = self.families or {name.split("/")[0] for name in self.trained_on}
        net = self._loaded()
        return task.d == net.d and task.m == net.m and task.family in families

    def supports_length(self, task: TaskSpec, n: int) -> bool:
        return self._loaded().supports_length(n)

    def _ready(self, dtype: torch.dtype) -> InContextModel:
        net = self._loaded()
        if next(net.parameters()).dtype != dtype:
            net.to(dtype)
        return net

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        y, steps = self._ready(batch.x.dtype)(batch.x, batch.y, batch.x_query)
        return Prediction(y, steps=steps)

    @torch.no_grad()
    def predict_lengths(self, batch: Batch, lengths: list[int]) -> dict[int, Prediction]:
        """Every length in one pass where the architecture is causal (GPT-2); one pass per length otherwise."""
        outs = self._ready(batch.x.dtype).forward_lengths(batch.x, batch.y, batch.x_query, lengths)
        return {n: Prediction(y, steps=steps) for n, (y, steps) in outs.items()}
