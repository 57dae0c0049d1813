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
  parameter vector. Work on the whole batch at once: no Python loop over prompts.
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
        return True  # every family: regression, classification (the sign of the mean label), kernels

    def predict(self, batch: Batch) -> Prediction:
        k = min(self.max_k, batch.n)
        dist = torch.cdist(batch.x_query, batch.x)  # (B, q, n)
        idx = dist.topk(k, dim=-1, largest=False).indices  # (B, q, k), nearest first
        labels = torch.gather(batch.y.unsqueeze(1).expand(-1, idx.shape[1], -1), 2, idx)
        counts = torch.arange(1, k + 1, device=labels.device, dtype=labels.dtype)
        steps = (labels.cumsum(-1) / counts).transpose(1, 2)  # (B, k, q)
        return Prediction(steps[:, -1], steps=steps)
