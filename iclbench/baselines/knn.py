"""k-nearest-neighbour regression (Garg et al.'s 3-NN baseline): the mean label of the k context points nearest to
the query in Euclidean distance (all n when n < k)."""

from __future__ import annotations

import torch

from iclbench import Batch, Model, TaskSpec

K = 3


class NearestNeighbours(Model):
    """The mean label of the `K` nearest context points, on Garg et al.'s function classes (the `garg` family)."""

    name = "3-nn"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "garg"

    def predict(self, batch: Batch) -> torch.Tensor:
        x, y, x_query = batch.x.double(), batch.y.double(), batch.x_query.double()
        dist = (x_query.unsqueeze(2) - x.unsqueeze(1)).square().sum(-1)  # (B, q, n) squared distances
        nearest = dist.topk(min(K, batch.n), dim=-1, largest=False).indices
        labels = y.unsqueeze(1).expand(-1, x_query.shape[1], -1).gather(2, nearest)
        return labels.mean(-1).to(batch.x.dtype)
