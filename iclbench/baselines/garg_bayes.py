"""`garg-bayes`: the Bayes-optimal predictor of Garg et al.'s function classes, from the prompt alone, exact, in
float64. A reference line (never ranked) and the source of the garg tasks' reference levels.

- sparse-linear: w has k N(0, 1) non-zeros on a support drawn uniformly among the C(d, k). The posterior mean
  is sum_S p(S | prompt) E[w | S, prompt] over every support S (`sparse_posterior_mean`); from n = k + 1 on, one
  support explains the noiseless labels and the prediction is exact.
- quadratic: f(x) = phi(x)^T w with phi(x) = x * x / sqrt(3) and w ~ N(0, I). The posterior mean is the
  minimum-norm interpolant on the features phi, exact from n = d on.
- decision-tree: the leaf values are N(0, 1), distinct with probability 1, so the labels split the prompt into
  groups of equal label, one group a leaf that holds prompt points. The coordinates of the tree are uniform a
  priori, and every tree that puts each group in one leaf of its own is equally likely a posteriori; the
  prediction at x is the mean over those trees of the label of x's leaf (0, the prior mean, where x's leaf holds
  no prompt point): `tree_posterior_mean`.

garg/relu2nn has no tractable Bayes predictor; its reference is `gp-posterior` with the network's covariance
(`iclbench.baselines.oracles`).
"""

from __future__ import annotations

import math

import torch

from iclbench import Batch, Model, TaskSpec
from iclbench.baselines.ridge import apply, solve

EXACT = ("sparse-linear", "decision-tree", "quadratic")
"""The garg classes whose Bayes predictor this computes."""
SPARSE_JITTER = 1e-10
"""The noise variance, relative to the labels' mean square, under which `sparse_posterior_mean` weighs the
supports: it stands for the labels' float32 rounding (a relative variance near 1e-15), so a support that leaves
a residual above it is ruled out, and it keeps every system it solves positive definite."""


def sparse_posterior_mean(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, k: int,
                          chunk: int = 32) -> torch.Tensor:
    """The posterior mean prediction (B, q) when w (d,) has `k` N(0, 1) non-zeros on a uniform support and
    y = X w, in float64: sum over the C(d, k) supports S of p(S | y) x_query^T E[w | S, y]. Under a noise of
    variance e = `SPARSE_JITTER` times the labels' mean square, E[w_S | S, y] = (X_S^T X_S + e I)^-1 X_S^T y and
    log p(S | y) = -r_S / (2 e) - log det(X_S^T X_S + e I) / 2 + const with r_S = ||y - X_S E[w_S]||^2 +
    e ||E[w_S]||^2 (= e y^T (X_S X_S^T + e I)^-1 y), by the k x k normal equations where n > k and by the n x n
    dual elsewhere, `chunk` prompts at a time (memory chunk x n x C(d, k) x max(n, k))."""
    x, y, x_query = x.double(), y.double(), x_query.double()
    supports = torch.combinations(torch.arange(x.shape[-1], device=x.device), k)  # (S, k)
    means = [_sparse_chunk(x[s:s + chunk], y[s:s + chunk], supports) for s in range(0, len(x), chunk)]
    return apply(x_query, torch.cat(means)) if means else x_query.new_zeros(x_query.shape[:2])


def _sparse_chunk(x: torch.Tensor, y: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
    """The posterior mean of w (B, d) of float64 prompts, all at once (`sparse_posterior_mean`)."""
    n, k = x.shape[1], supports.shape[-1]
    jitter = (SPARSE_JITTER * (y * y).mean(-1)).clamp(min=torch.finfo(x.dtype).tiny)[:, None]  # (B, 1)
    columns = x[:, :, supports]  # (B, n, S, k)
    if n > k:  # the k x k normal equations
        normal = torch.einsum("bnsi,bnsj->bsij", columns, columns)
        factor = torch.linalg.cholesky(normal + jitter[..., None, None] * torch.eye(k, dtype=x.dtype, device=x.device))
        w = torch.cholesky_solve(torch.einsum("bnsk,bn->bsk", columns, y).unsqueeze(-1), factor).squeeze(-1)
        misfit = ((y[:, :, None] - torch.einsum("bnsk,bsk->bns", columns, w)) ** 2).sum(1) + jitter * (w * w).sum(-1)
    else:  # the n x n dual, w = X_S^T (X_S X_S^T + e I)^-1 y: the k x k system would be singular but for e
        cov = torch.einsum("bnsk,bmsk->bsnm", columns, columns)
        factor = torch.linalg.cholesky(cov + jitter[..., None, None] * torch.eye(n, dtype=x.dtype, device=x.device))
        z = torch.cholesky_solve(y[:, None, :, None].expand(-1, len(supports), -1, -1), factor).squeeze(-1)
        w = torch.einsum("bnsk,bsn->bsk", columns, z)
        misfit = jitter * (y[:, None, :] * z).sum(-1)
    log_det = 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # log det of either differs by a constant
    post = torch.softmax(-misfit / (2 * jitter) - log_det / 2, -1)  # (B, S)
    weighted = (post[..., None] * w).flatten(1)  # (B, S k)
    return x.new_zeros(x.shape[0], x.shape[-1]).scatter_add_(1, supports.flatten().expand(len(x), -1), weighted)


def _masks(bits: torch.Tensor, width: int) -> torch.Tensor:
    """The bit masks (...) of boolean vectors bits (..., width) over `width` groups: sum_g bits[g] 2^g."""
    return (bits.long() << torch.arange(width, device=bits.device)).sum(-1)


def _count_and_ends(masks: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For bit masks over `width` groups: the number of groups in each, the index of its lowest group and that of
    its other group where it has two (the lowest elsewhere; 0 where it has none)."""
    count = sum((masks >> g) & 1 for g in range(width))
    low_bit = masks & -masks
    low = torch.log2(low_bit.clamp(min=1).double()).round().long()
    high = torch.log2((masks ^ low_bit).clamp(min=1).double()).round().long()
    return count, low, torch.where(count == 2, high, low)


def tree_posterior_mean(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, depth: int,
                        chunk: int = 32) -> torch.Tensor:
    """The posterior mean prediction (B, q) at x_query under Garg et al.'s decision trees of `depth` levels (every
    internal node tests a uniformly drawn coordinate, going right where x > 0; leaf values N(0, 1)), noiseless,
    in float64 (module docstring). A prompt whose labels no tree explains (more distinct labels than leaves, or
    equal labels no tree can put in one leaf) is predicted 0.

    The prompt's points are grouped by label, at most 2^depth groups, a set of them a bit mask. A node's prompt
    points are a union of whole groups, or the tree is not consistent; a test on coordinate c keeps the groups
    whole where each group of the node lies on one side of c. Counting the consistent trees below a node at
    height h, A(S, h) over its set S of groups, A(S, h) = sum_{c keeping S's groups whole} A(S_c-, h - 1) A(S_c+,
    h - 1), with A at height 1 in closed form: d for no group, the number of coordinates on which a group lies on
    one side for one, the number that separate two for two, 0 for more. The query's sum V(S, h) over the
    consistent trees of its leaf's label follows the query's side at each test. Every node of every ordered path
    of tests is a tensor entry ((2d)^(depth - 1) nodes at the last inner level, d^(depth - 1) on a query's
    paths), `chunk` prompts at a time (a few tensors of 8 (2d)^(depth - 1) bytes a prompt: 16 MB each at d = 20,
    depth 4 and the default chunk), so no loop runs over prompts."""
    x, y, x_query = x.double(), y.double(), x_query.double()
    parts = [_tree_chunk(x[s:s + chunk], y[s:s + chunk], x_query[s:s + chunk], depth) for s in range(0, len(x), chunk)]
    return torch.cat(parts) if parts else x_query.new_zeros(x_query.shape[:2])


def _tree_chunk(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, depth: int) -> torch.Tensor:
    """`tree_posterior_mean` of float64 prompts, all at once."""
    batch, n, d = x.shape
    width = 2**depth
    same = y[:, :, None] == y[:, None, :]
    first = same.long().argmax(-1)  # each point's first point of equal label
    leader = first == torch.arange(n, device=x.device)
    rank = torch.cumsum(leader.long(), -1) - 1
    explained = leader.sum(-1) <= width  # more distinct labels than leaves: no tree is consistent
    group = rank.gather(1, first).clamp(max=width - 1)  # (B, n)
    member = torch.nn.functional.one_hot(group, width).double()  # (B, n, G)
    size = member.sum(1)  # (B, G)
    value = torch.einsum("bng,bn->bg", member, y) / size.clamp(min=1)  # each group's label
    present = size > 0
    right = torch.einsum("bng,bnd->bgd", member, (x > 0).double())  # members right of each coordinate
    plus = present[..., None] & (right == size[..., None])  # (B, G, d): all the group right of c
    minus = present[..., None] & (right == 0)
    mixed = _masks((present[..., None] & ~plus & ~minus).mT, width)  # (B, d)
    side = torch.stack([_masks(minus.mT, width), _masks(plus.mT, width)], -1).reshape(batch, 2 * d)  # test 2c + right
    whole, separate = (plus | minus).sum(-1).double(), (plus.double() @ minus.mT.double())  # (B, G), (B, G, G)
    separate = separate + separate.mT
    q_right = (x_query > 0).long()  # (B, q, d)
    q_side = torch.where(q_right.bool()[:, None], plus[:, :, None], minus[:, :, None]).double()  # (B, G, q, d)
    q_other = torch.where(q_right.bool()[:, None], minus[:, :, None], plus[:, :, None]).double()
    joins = q_side.sum(-1)  # (B, G, q): coordinates whose test keeps the group whole on the query's side
    joins_of_two = torch.einsum("bgqc,bhqc->bghq", q_side, q_other)  # g on the query's side, h on the other

    def count_at_one(masks: torch.Tensor) -> torch.Tensor:
        """A(S, 1) for masks (B, N)."""
        count, low, high = _count_and_ends(masks, width)
        one = whole.gather(1, low)
        two = separate.flatten(1).gather(1, low * width + high)
        return torch.where(count == 0, float(d), torch.where(count == 1, one, torch.where(count == 2, two, 0.0)))

    def query_sum_at_one(masks: torch.Tensor) -> torch.Tensor:
        """V(S, 1) for the query nodes' masks (B, q, N)."""
        count, low, high = _count_and_ends(masks, width)
        at = lambda t, i: t.gather(1, i.flatten(1)).view_as(i)  # noqa: E731
        q_index = torch.arange(masks.shape[1], device=x.device)[None, :, None]
        one = at(value, low) * joins.mT.flatten(1).gather(1, (q_index * width + low).flatten(1)).view_as(low)
        pair = joins_of_two.permute(0, 3, 1, 2).flatten(1)  # (B, q G G)
        two = at(value, low) * pair.gather(1, ((q_index * width + low) * width + high).flatten(1)).view_as(low)
        two = two + at(value, high) * pair.gather(1, ((q_index * width + high) * width + low).flatten(1)).view_as(low)
        return torch.where(count == 1, one, torch.where(count == 2, two, 0.0))

    everything = _masks(present, width)  # (B,)
    nodes = [everything[:, None]]  # nodes[k]: the masks (B, (2d)^k) of depth k, ordered paths of tests
    for _ in range(depth - 1):
        nodes.append((nodes[-1][:, :, None] & side[:, None, :]).flatten(1))
    q_lit = side.view(batch, 1, d, 2).expand(-1, x_query.shape[1], -1, -1)
    q_near = q_lit.gather(-1, q_right[..., None]).squeeze(-1)  # (B, q, d): the query's child of each test
    steps = 2 * torch.arange(d, device=x.device) + q_right  # (B, q, d): its index among a node's children
    q_nodes, q_index = [everything[:, None, None].expand(-1, x_query.shape[1], 1)], [torch.zeros_like(q_right[..., :1])]
    for _ in range(depth - 1):
        q_nodes.append((q_nodes[-1][..., None] & q_near[:, :, None, :]).flatten(2))
        q_index.append((q_index[-1][..., None] * 2 * d + steps[:, :, None, :]).flatten(2))
    counts, sums = count_at_one(nodes[-1]), query_sum_at_one(q_nodes[-1])
    for k in range(depth - 2, -1, -1):
        keeps = (nodes[k][..., None] & mixed[:, None, :]) == 0  # (B, (2d)^k, d)
        pairs = counts.view(batch, -1, d, 2)
        q_keeps = (q_nodes[k][..., None] & mixed[:, None, None, :]) == 0  # (B, q, d^k, d)
        other = q_index[k][..., None] * 2 * d + (steps ^ 1)[:, :, None, :]  # the query's sibling at each test
        sums = (q_keeps * counts.gather(1, other.flatten(1)).view_as(other) * sums.view(other.shape)).sum(-1)
        counts = (keeps * pairs[..., 0] * pairs[..., 1]).sum(-1)
    total = counts[:, :1]  # (B, 1): the consistent trees, at least the true one on the task's own data
    ok = explained[:, None] & (total > 0)
    return torch.where(ok, sums[..., 0] / torch.where(ok, total, 1.0), 0.0)


class GargBayes(Model):
    """The Bayes-optimal predictor of the garg family's sparse-linear, decision-tree and quadratic classes
    (module docstring)."""

    name = "garg-bayes"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "garg" and task.params["function"] in EXACT

    def predict(self, batch: Batch) -> torch.Tensor:
        spec = batch.task
        if not self.supports(spec):
            raise ValueError(f"{self.name}: task {spec.name} is not one of the garg classes {', '.join(EXACT)}")
        function = spec.params["function"]
        if function == "sparse-linear":
            pred = sparse_posterior_mean(batch.x, batch.y, batch.x_query, min(spec.params["k"], spec.d))
        elif function == "decision-tree":
            pred = tree_posterior_mean(batch.x, batch.y, batch.x_query, spec.params["depth"])
        else:
            features = lambda t: t.double() ** 2 / math.sqrt(3.0)  # noqa: E731
            pred = apply(features(batch.x_query), solve(features(batch.x), batch.y, 0.0))
        return pred.to(batch.x.dtype)
