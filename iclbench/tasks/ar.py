"""Autoregressive linear dynamics: x_{t+1} = W x_t + sigma eps_t with a hidden random orthogonal W.

The setting of the mesa-optimization papers (von Oswald et al., "Uncovering mesa-optimization
algorithms in Transformers"; Zheng et al. 2024, "On Mesa-Optimization in Autoregressively Trained
Transformers"): per prompt a Haar-random orthogonal W (d x d, `portable.haar` of a Gaussian matrix),
an initial token x_1 (`init` "uniform": U(-1, 1)^d, von Oswald et al.'s; "gaussian": N(0, I_d), an
initial token for which Zheng et al. show that the learned one-step mesa-optimizer does not recover
the sequence; with this Haar-random W one step recovers it under neither law, and the Gaussian token
tests the scale of x_1, docs/findings.md question 6), and x_{t+1} = W x_t + sigma eps_t with
eps_t ~ N(0, I_d) and sigma = `TaskSpec.noise`.
Every state is rounded to float32 as it is produced, so a pair's label is exactly the next pair's
input and the recurrence holds exactly in the float32 data (up to the noise).

Layout. Labels are vectors (`TaskSpec.m` = d): the prompt of length n holds the pairs
(x_t, y_t = x_{t+1}), t = 1..n, of one sequence; the query is one further state (q = 1), its
noiseless target W x_query (`f_query`), `y_query` the state after it (noise included), hidden `w`
= W (B, d, d). A sequence drawn with n pairs has the query x_{n+1}, the state after its last pair.
The evaluation set is drawn at the longest length N, so its query is x_{N+1} and the prompt of
length n < N is the first n transitions with that same query: the layout of every family (nested
prefixes sharing their queries). W is shared along the whole sequence, so predicting W x_{N+1} from
the first n transitions is the same problem at every n, that of learning W from n transitions; only
the query's position differs from a training sample's (x_{n+1}), and with orthogonal W and no noise
every state has the initial token's norm (with noise, the norm drifts by about sigma^2 d per step).

A prompt has one query: successive states would reveal each other's targets (x_{N+2} is the
noisy label of x_{N+1}), so `draw` refuses q > 1.

Dimension: d = 10, the papers'. Prompts hold at most 50 transitions (the papers' sequence length),
and a one-layer linear self-attention on 20-dimensional tokens (x_t, x_{t+1}) is a few thousand
parameters, which trains in minutes on a 2-core CPU, so there is no reason to shrink d.
"""

from __future__ import annotations

import numpy as np

from iclbench.tasks import portable
from iclbench.tasks.family import Draw, Family, gaussian
from iclbench.tasks.spec import TaskSpec, f32

INITS = ("uniform", "gaussian")


def initial_token(rng: np.random.Generator, init: str, batch: int, d: int) -> np.ndarray:
    """x_1 (batch, d): U(-1, 1)^d as 2u - 1 with u ~ U[0, 1) (exact in float64), or N(0, I_d)."""
    if init == "uniform":
        return f32(2.0 * rng.random((batch, d)) - 1.0)
    if init == "gaussian":
        return f32(gaussian(rng, batch, d))
    raise ValueError(f"autoregressive task: unknown initial token {init!r}; expected one of {INITS}")


def transition(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """W x for (B, d, d) W and (B, d) states, each coordinate summed in order of the state's index."""
    return portable.dot(w, x[:, None, :])


class AR(Family):
    """`init` "uniform" or "gaussian" (the initial token's law); sigma is `TaskSpec.noise`."""

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        if q != 1:
            raise ValueError(
                f"{spec.name}: a prompt has one query, the state after its last pair (successive states would "
                f"reveal each other's targets); got n_queries={q}"
            )
        d = spec.d
        w = f32(portable.haar(gaussian(rng, batch, d, d)))
        states = np.empty((batch, n + 2, d))  # x_1 .. x_{n+1} (prompt and query) and x_{n+2} (the query's label)
        states[:, 0] = initial_token(rng, spec.params["init"], batch, d)
        for t in range(n + 1):
            step = transition(w, states[:, t])
            states[:, t + 1] = f32(step + spec.noise * gaussian(rng, batch, d)) if spec.noise else f32(step)
        f_query = f32(transition(w, states[:, n]))
        x, y = states[:, :n], states[:, 1 : n + 1]
        x_query, y_query = states[:, n : n + 1], states[:, n + 1 : n + 2]
        return Draw(x, y, x_query, y_query, {"f_query": f_query[:, None], "w": w})
