"""The averaging estimator w = mean_i y_i x_i (the simple baseline of Garg et al. 2022).

On vector labels (the ar family) W = mean_t y_t x_t^T = mean_t x_{t+1} x_t^T: one GD step of size 1 from 0
on the least-squares objective, the mesa-optimizer's update with a unit step.
"""

from __future__ import annotations

import torch

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.baselines.ridge import apply

FAMILIES = ("linear", "logistic", "ar", "select", "garg")


class Averaging(Model):
    """Predicts x_query^T w with w = mean_i y_i x_i (a single GD step of size 1 from 0); W x_query on vector labels."""

    name = "averaging"

    def supports(self, task: TaskSpec) -> bool:
        return task.family in FAMILIES

    def predict(self, batch: Batch) -> Prediction:
        x, y = batch.x.double(), batch.y.double()
        w = torch.einsum("bnd,bn->bd" if y.dim() == 2 else "bnd,bnm->bmd", x, y) / batch.n
        pred = apply(batch.x_query.double(), w)
        return Prediction(pred.to(batch.x.dtype), w=w.to(batch.x.dtype))
