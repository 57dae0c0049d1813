"""A template iclbench plugin: k-nearest-neighbour regression on the prompt.

Copy this file, rename the class, and replace `predict` with your model. Score it with

    iclbench run --model examples/template_model.py

The contract (see README.md, "Writing a model"):
- subclass `iclbench.Model` and give it a `name` (shown on the leaderboard);
- `setup(device)` loads weights and moves them to `device` (set `self.checkpoint` to
  the weights file so that results record its SHA-256);
- `supports(task)` says which tasks the model can be scored on;
- `predict(batch)` gets `batch.x` (B, n, d), `batch.y` (B, n) and `batch.x_query`
  (B, q, d), on the run's device and dtype, and returns a (B, q) tensor of the same
  device and dtype, or a `Prediction` that may also carry `steps` (B, K, q), the
  prediction after each of K iterations or layers, and `w` (B, d), an estimated
  parameter vector. On tasks with vector labels (`task.m` > 1: the ar family) `batch.y` is
  (B, n, m) and every prediction gains a last axis m. Work on the whole batch at once: no
  Python loop over prompts.
"""

from __future__ import annotations

import torch

from iclbench import Batch, Model, Prediction, TaskSpec


class NearestNeighbours(Model):
    """Averages the labels of the k nearest context points, for k = 1..max_k.

    `steps[:, k - 1]` is the prediction with k neighbours, so the runner draws the
    error against k just as it draws a transformer's error against its layers.
    """

    name = "template-knn"
    max_k = 8

    def setup(self, device: torch.device) -> None:
        """Nothing to load: a model with weights would read them here, onto `device`."""

    def supports(self, task: TaskSpec) -> bool:
        return True  # every family: regression, classification (the sign of the mean label), kernels, vector labels

    def predict(self, batch: Batch) -> Prediction:
        k = min(self.max_k, batch.n)
        dist = torch.cdist(batch.x_query, batch.x)  # (B, q, n)
        idx = dist.topk(k, dim=-1, largest=False).indices  # (B, q, k), nearest first
        y = batch.y.reshape(*batch.y.shape[:2], batch.m)  # (B, n, m): scalar labels as m = 1
        b, q, m = idx.shape[0], idx.shape[1], batch.m
        labels = torch.gather(y.unsqueeze(1).expand(b, q, -1, m), 2, idx.unsqueeze(-1).expand(b, q, k, m))
        counts = torch.arange(1, k + 1, device=labels.device, dtype=labels.dtype).unsqueeze(-1)
        steps = (labels.cumsum(2) / counts).transpose(1, 2)  # (B, k, q, m)
        if batch.task.m == 1:
            steps = steps.squeeze(-1)  # scalar tasks: (B, k, q)
        return Prediction(steps[:, -1], steps=steps)
