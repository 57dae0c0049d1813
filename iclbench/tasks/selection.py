"""Algorithm selection (Bai et al. 2023, "Transformers as statisticians"): prompts whose best algorithm differs.

`mode` "noise": noisy linear regression as the linear family draws it (x ~ N(0, I_d), w ~ N(0, I_d / d),
y = x^T w + s eps), each prompt's noise level s drawn uniformly from `noise_levels`; the hidden `noise` (P,)
keeps it. The Bayes-optimal predictor given s is ridge at the prompt's own penalty d s^2; no single penalty
is optimal for every prompt.

`mode` "reg-cls": each prompt is, with probability `classification`, a classification prompt, else a
regression prompt, and nothing but its labels says which (the hidden `kind` (P,) is 1 for classification).
Both kinds share one latent: w ~ N(0, I_d), as the logistic family draws it, and x ~ N(0, I_d). A regression
prompt observes y = x^T w + `noise` eps and is scored against x^T w (its noiseless label, as on the linear
tasks); a classification prompt observes sign(x^T w) and is scored against the logit x^T w_mu of the
mu-regularised logistic optimum on its context (as on the logistic tasks: the signs carry no scale, so x^T w
itself cannot be learned). The prior is unscaled (not w / sqrt(d)) so that both kinds' targets have energies
of one order, d per query for regression and 8.5-14.7 for classification's logits (d = 10, n = 5 to 80), and
the pooled relative error weighs the two kinds about equally (README, task table).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from iclbench.tasks import portable
from iclbench.tasks.family import Draw, Family, gaussian
from iclbench.tasks.linear import regression
from iclbench.tasks.logistic import optimum
from iclbench.tasks.spec import TaskSpec, f32


class Select(Family):
    """Prompts of one task drawn from two or more distributions whose best algorithms differ (`mode`)."""

    def classifies(self, spec: TaskSpec) -> bool:
        return spec.params["mode"] == "reg-cls"

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        mode = spec.params["mode"]
        if mode == "noise":
            levels = f32(np.asarray(spec.params["noise_levels"]))
            noise = levels[rng.integers(len(levels), size=batch)]
            draw = regression(spec, rng, batch, n, q, noise[:, None])
            return replace(draw, hidden={**draw.hidden, "noise": noise}, extra={})
        if mode != "reg-cls":
            raise ValueError(f"{spec.name}: unknown select mode {mode!r}")
        kind = (rng.random(batch) < spec.params["classification"]).astype(np.float64)
        w = f32(gaussian(rng, batch, spec.d))
        draw = regression(spec, rng, batch, n, q, spec.noise, w)
        cls = kind[:, None] == 1
        y = np.where(cls, np.sign(portable.dot(draw.x, w[:, None, :])), draw.y)
        y_query = np.where(cls, np.sign(portable.dot(draw.x_query, w[:, None, :])), draw.y_query)
        return Draw(draw.x, y, draw.x_query, y_query, {**draw.hidden, "kind": kind})

    def target(self, spec: TaskSpec, draw: Draw, n: int) -> np.ndarray:
        if spec.params["mode"] == "noise":
            return draw.hidden["f_query"]
        cls = draw.hidden["kind"] == 1
        out = draw.hidden["f_query"].copy()
        if cls.any():
            w_mu = optimum(draw.x[cls, :n], draw.y[cls, :n], spec.params["mu"])
            out[cls] = f32(portable.dot(draw.x_query[cls], w_mu[:, None, :]))
        return out
