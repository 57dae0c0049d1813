"""Tree learners on Garg et al.'s function classes: greedy regression trees and gradient boosting, by scikit-learn.

Each prompt is its own data set: a scikit-learn estimator is fitted on its n context pairs and predicts its
queries, prompt after prompt. This is the one place where a loop over prompts is the baseline itself: a greedy
tree breaks ties between equally good splits by scikit-learn's random feature order (seeded here, `SEED`), so
no batched re-implementation could promise scikit-learn's trees, which are the reference. The estimators run
on the CPU in float64 (scikit-learn's trees split on float32 copies of the inputs, which the suite's data are).

- `tree`: `DecisionTreeRegressor()` grown until its leaves are pure (Garg et al.'s "greedy tree learning",
  `max_depth=None`);
- `tree-depth4`: the same, at most 4 levels deep (the depth of the decision-tree task's trees);
- `boosting`: `HistGradientBoostingRegressor()` with scikit-learn's defaults (100 trees of at most 31 leaves,
  learning rate 0.1, at least 20 points a leaf, so no split below n = 40), in place of Garg et al.'s XGBoost.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.tree import DecisionTreeRegressor

from iclbench import Batch, Model, TaskSpec

SEED = 0
"""`random_state` of every estimator: the order in which a tree visits features, hence its ties, is fixed."""


class _PerPrompt(Model):
    """A scikit-learn regressor fitted on each prompt's context and evaluated on its queries."""

    estimator: ClassVar[type]
    options: ClassVar[dict[str, Any]] = {}

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "garg"

    def fitted(self, x: np.ndarray, y: np.ndarray) -> Any:
        """The estimator fitted on one prompt's context x (n, d), y (n,)."""
        return self.estimator(random_state=SEED, **self.options).fit(x, y)

    def predict(self, batch: Batch) -> torch.Tensor:
        x, y, x_query = (t.detach().cpu().double().numpy() for t in (batch.x, batch.y, batch.x_query))
        pred = np.stack([self.fitted(x[b], y[b]).predict(x_query[b]) for b in range(len(x))])
        return torch.from_numpy(pred).to(batch.x.device, batch.x.dtype)


class Tree(_PerPrompt):
    """A greedy (CART) regression tree grown until its leaves are pure."""

    name = "tree"
    estimator = DecisionTreeRegressor


class TreeDepth4(_PerPrompt):
    """A greedy regression tree of at most 4 levels."""

    name = "tree-depth4"
    estimator = DecisionTreeRegressor
    options = {"max_depth": 4}


class Boosting(_PerPrompt):
    """Histogram gradient boosting with scikit-learn's default settings."""

    name = "boosting"
    estimator = HistGradientBoostingRegressor
