"""Exact solutions in float64: the regularised logistic optimum and the GP posterior mean; the oracles that read hidden
values of the pinned evaluation sets: true W (ar) and the noise level (select/noise-mix)."""

from __future__ import annotations

import numpy as np
import torch

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.baselines.ridge import apply, solve
from iclbench.kernels import gram
from iclbench.solvers import logistic_optimum
from iclbench.tasks import EvalSet, get

GP_RTOL = 1e-10
"""Eigenvalues of the context Gram matrix below GP_RTOL times its largest are treated as zero."""


class LogisticOptimum(Model):
    """The logit x_query^T w_mu of the mu-regularised logistic optimum: the logistic tasks' target."""

    name = "logistic-optimum"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "logistic"

    def predict(self, batch: Batch) -> Prediction:
        if not self.supports(batch.task):
            raise ValueError(f"{self.name}: task {batch.task.name} is not a logistic task")
        w = logistic_optimum(batch.x, batch.y, batch.task.params["mu"])
        logits = torch.einsum("bqd,bd->bq", batch.x_query.double(), w)
        return Prediction(logits.to(batch.x.dtype), w=w.to(batch.x.dtype))


def gp_posterior_mean(
    x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, kind: str, jitter: float = 0.0
) -> torch.Tensor:
    """k_query^T (K + jitter I)^-1 y (B, q), in float64: the posterior mean of the labels' GP.

    With `jitter` 0, K^-1 is the pseudo-inverse with cut-off `GP_RTOL`: the linear kernel's K
    has rank d < n for long prompts, and the float32 labels have a round-off part outside its
    range that an inverse of K's round-off eigenvalues would blow up; on that kernel the
    result is the minimum-norm interpolant x_query^T X^+ y. With a jitter (the exp and relu
    tasks' labels have covariance K + jitter I), K + jitter I is positive definite and solved.
    """
    x, y, x_query = x.double(), y.double(), x_query.double()
    k = gram(x, x, kind)
    if jitter > 0:
        eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
        coef = torch.linalg.solve(k + jitter * eye, y)
    else:
        coef = torch.einsum("bnm,bm->bn", torch.linalg.pinv(k, rtol=GP_RTOL, hermitian=True), y)
    return torch.einsum("bqn,bn->bq", gram(x_query, x, kind), coef)


class GPPosterior(Model):
    """The GP posterior mean k_*^T K^-1 y under the task's kernel: the Bayes predictor of the kernel tasks.

    On garg/relu2nn the kernel is the network's covariance, E[f(x) f(x')] = 2 E[relu(g^T x) relu(g^T x')], the
    "relu" kernel at any width; there it is the best predictor linear in the labels (exact, and Bayes-optimal in
    the infinite-width limit, where the network is that GP), not the Bayes predictor of a 100-unit network,
    which has no closed form."""

    name = "gp-posterior"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "kernel" or (task.family == "garg" and task.params["function"] == "relu2nn")

    def predict(self, batch: Batch) -> torch.Tensor:
        if not self.supports(batch.task):
            raise ValueError(f"{self.name}: task {batch.task.name} is neither a kernel task nor garg/relu2nn")
        params = batch.task.params
        kind, jitter = ("relu", 0.0) if batch.task.family == "garg" else (params["kernel"], params["jitter"])
        return gp_posterior_mean(batch.x, batch.y, batch.x_query, kind, jitter).to(batch.x.dtype)


def pool_posterior_mean(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, pool: torch.Tensor, noise: float,
                        chunk: int = 128) -> torch.Tensor:
    """The posterior mean prediction (B, q) when the prompt's w is one of the K rows of `pool` (K, d), uniformly a
    priori, and y = x^T w + `noise` eps (Raventós et al.'s dMMSE): sum_k p(k | x, y) x_query^T w_k with
    log p(k | x, y) = -||y - X w_k||^2 / (2 noise^2) + const, in float64, `chunk` prompts at a time (memory
    chunk x K x d)."""
    pool = pool.to(x.device, torch.float64)
    out = []
    for start in range(0, x.shape[0], chunk):
        xs, ys, qs = (t[start:start + chunk].double() for t in (x, y, x_query))
        gram = xs.mT @ xs
        fit = torch.einsum("bnd,bn->bd", xs, ys) @ pool.T  # (b, K): w_k^T X^T y
        quad = ((pool @ gram) * pool).sum(-1)  # (b, K): w_k^T X^T X w_k
        residual = (ys * ys).sum(-1, keepdim=True) - 2 * fit + quad  # ||y - X w_k||^2
        post = torch.softmax(-residual / (2 * noise**2), -1)
        out.append(torch.einsum("bqk,bk->bq", qs @ pool.T, post))
    return torch.cat(out)


def gaussian_posterior_mean(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, cov: torch.Tensor,
                            noise: float) -> torch.Tensor:
    """The posterior mean prediction (B, q) when w ~ N(0, `cov`) (d, d), possibly singular, and y = x^T w + `noise`
    eps: x_query^T cov X^T (X cov X^T + noise^2 I)^-1 y, in float64 (ridge at penalty noise^2 / v when cov = v I)."""
    x, y, x_query, cov = x.double(), y.double(), x_query.double(), cov.to(x.device, torch.float64)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    coef = torch.linalg.solve(x @ cov @ x.mT + noise**2 * eye, y.unsqueeze(-1)).squeeze(-1)  # (B, n)
    return torch.einsum("bqd,de,bne,bn->bq", x_query, cov, x, coef)


class PinnedOracle(Model):
    """An oracle that reads a hidden value of each prompt where anyone can for the pinned evaluation sets, which
    are public: it regenerates the task's set and finds each prompt by its first input. It knows no other prompt
    (a training sample, a fresh verification set) and fails on one with a line saying so: a reference, never
    ranked, that cannot pass `iclbench verify`."""

    def __init__(self) -> None:
        self._sets: dict[str, EvalSet] = {}

    def pinned(self, batch: Batch, key: str) -> torch.Tensor:
        """The hidden `key` of each prompt of `batch` in its task's pinned evaluation set, on the CPU."""
        name = batch.task.name
        data = self._sets.setdefault(name, get(name).generate())
        index = find_rows(data.x[:, 0], batch.x[:, 0].to("cpu", torch.float32))
        known = index >= 0
        if known.all():
            known = (data.x[index, : batch.n] == batch.x.to("cpu", torch.float32)).flatten(1).all(-1)
        if not known.all():
            raise ValueError(
                f"{self.name}: prompt {int((~known).nonzero()[0])} of this batch is not in the pinned evaluation set "
                f"of {name}; the oracle knows only those prompts' {key}"
            )
        return data.hidden[key][index]


class TrueW(PinnedOracle):
    """W x_query with each prompt's true W on the ar tasks: their target itself, the 0-error reference line
    (`PinnedOracle`: W from the pinned evaluation sets only)."""

    name = "true-w"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "ar"

    def predict(self, batch: Batch) -> Prediction:
        if not self.supports(batch.task):
            raise ValueError(f"{self.name}: task {batch.task.name} is not an ar task")
        true_w = self.pinned(batch, "w").to(batch.x.device, torch.float64)
        return Prediction(apply(batch.x_query.double(), true_w).to(batch.x.dtype), w=true_w.to(batch.x.dtype))


class NoiseOracle(PinnedOracle):
    """Ridge at each prompt's own Bayes penalty d s^2, s the prompt's hidden noise level, on select/noise-mix: the
    Bayes-optimal predictor given s, the reference line of algorithm selection (`PinnedOracle`: s from the pinned
    evaluation set only)."""

    name = "noise-oracle"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "select" and task.params["mode"] == "noise"

    def predict(self, batch: Batch) -> Prediction:
        if not self.supports(batch.task):
            raise ValueError(f"{self.name}: task {batch.task.name} is not a select task with noise levels")
        noise = self.pinned(batch, "noise").to(batch.x.device, torch.float64)
        w = solve(batch.x, batch.y, batch.task.d * noise**2)
        return Prediction(apply(batch.x_query.double(), w).to(batch.x.dtype), w=w.to(batch.x.dtype))


def _row_bytes(t: torch.Tensor) -> np.ndarray:
    """The rows of a (B, d) tensor as B opaque byte strings (NumPy void scalars), sortable and comparable."""
    a = np.ascontiguousarray(t.numpy())
    return a.view(np.dtype((np.void, a.shape[1] * a.itemsize)))[:, 0]


def find_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """For each row of `rows` (B, d), the index of the bitwise-equal row of `table` (P, d), or -1."""
    keys, wanted = _row_bytes(table), _row_bytes(rows)
    order = np.argsort(keys, kind="stable")
    pos = np.minimum(np.searchsorted(keys[order], wanted), len(keys) - 1)
    found = keys[order][pos] == wanted
    return torch.from_numpy(np.where(found, order[pos], -1))
