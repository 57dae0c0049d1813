"""The averaging estimator w = mean_i y_i x_i (the simple baseline of Garg et al. 2022)."""

from __future__ import annotations

import torch

from iclbench import Batch, Model, Prediction, TaskSpec

FAMILIES = ("linear", "logistic")


class Averaging(Model):
    """Predicts x_query^T w with w = mean_i y_i x_i (a single GD step of size 1 from 0)."""

    name = "averaging"

    def supports(self, task: TaskSpec) -> bool:
        return task.family in FAMILIES

    def predict(self, batch: Batch) -> Prediction:
        x, y = batch.x.double(), batch.y.double()
        w = torch.einsum("bnd,bn->bd", x, y) / batch.n
        pred = torch.einsum("bqd,bd->bq", batch.x_query.double(), w)
        return Prediction(pred.to(batch.x.dtype), w=w.to(batch.x.dtype))
