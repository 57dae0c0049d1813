"""The zero predictor: the reference point every relative error is measured against."""

from __future__ import annotations

import torch

from iclbench import Batch, Model


class Zero(Model):
    """Predicts 0 for every query, a 0 vector on vector labels (relative error 1, 0 dB)."""

    name = "zero"

    def predict(self, batch: Batch) -> torch.Tensor:
        return batch.x_query.new_zeros(*batch.x_query.shape[:2], *batch.task.label_shape)
