"""Tree learners on Garg et al.'s function classes: greedy regression trees and gradient boosting, by scikit-learn.

Each prompt is its own data set: a scikit-learn estimator is fitted on its n context pairs and predicts its
queries, prompt after prompt. This is the one place where a loop over prompts is the baseline itself: a greedy
tree breaks ties between equally good splits by scikit-learn's random feature order (seeded here, `SEED`), so
no batched re-implementation could promise scikit-learn's trees, which are the reference. The estimators run
on the CPU in float64 (scikit-learn's trees split on float32 copies of the inputs, which the suite's data are:
the trees are handed float32 inputs and skip scikit-learn's input checks, a third of a small fit's time, with the
same predictions).

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

    def prompt_predictions(self, x: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        """The predictions (q,) at x_query (q, d) of the estimator fitted on one prompt's context x (n, d), y (n,)."""
        return self.estimator(random_state=SEED, **self.options).fit(x, y).predict(x_query)

    def predict(self, batch: Batch) -> torch.Tensor:
        x, y, x_query = (t.detach().cpu().double().numpy() for t in (batch.x, batch.y, batch.x_query))
        pred = np.stack([self.prompt_predictions(x[b], y[b], x_query[b]) for b in range(len(x))])
        return torch.from_numpy(pred).to(batch.x.device, batch.x.dtype)


class _Tree(_PerPrompt):
    """A `DecisionTreeRegressor` given the float32 inputs it splits on, without scikit-learn's input checks."""

    estimator = DecisionTreeRegressor

    def prompt_predictions(self, x: np.ndarray, y: np.ndarray, x_query: np.ndarray) -> np.ndarray:
        # float32 rounds to nearest as scikit-learn's own conversion does; a prompt's slice is C-contiguous
        x, x_query = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(x_query, np.float32)
        tree = self.estimator(random_state=SEED, **self.options)
        return tree.fit(x, y, check_input=False).predict(x_query, check_input=False)


class Tree(_Tree):
    """A greedy (CART) regression tree grown until its leaves are pure."""

    name = "tree"


class TreeDepth4(_Tree):
    """A greedy regression tree of at most 4 levels."""

    name = "tree-depth4"
    options = {"max_depth": 4}


class Boosting(_PerPrompt):
    """Histogram gradient boosting with scikit-learn's default settings."""

    name = "boosting"
    estimator = HistGradientBoostingRegressor
