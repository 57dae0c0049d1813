"""The garg family's samples match Garg et al.'s definitions: sparsity, tree walks, network outputs, quadratic
moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iclbench import tasks
from iclbench.cache import eval_set

pytestmark = pytest.mark.usefixtures("session_fingerprints")  # evaluation sets from the session's cache folder
D = 20
F32 = 2.0**-24
"""float32's relative rounding: labels are float64 values rounded to float32."""


def data(name: str):
    return eval_set(tasks.get(name))[0]


def within_rounding(got: torch.Tensor, exact: torch.Tensor) -> bool:
    """got is exact rounded to float32 (BLAS may sum in another order than the fixed one: a few float64 ulps)."""
    return bool(((got.double() - exact).abs() <= F32 * exact.abs() + 1e-12).all())


def test_sparse_linear_weights_have_three_gaussian_nonzeros_on_uniform_supports() -> None:
    d = data("garg/sparse-linear")
    w = d.hidden["w"].double()
    assert w.shape == (2048, D) and ((w != 0).sum(-1) == 3).all()
    nonzero = w[w != 0]
    assert abs(float(nonzero.mean())) < 0.05 and float(nonzero.var()) == pytest.approx(1.0, abs=0.06)
    assert float((nonzero**4).mean()) == pytest.approx(3.0, abs=0.3)  # Gaussian kurtosis
    counts = (w != 0).sum(0).double()  # each coordinate in the support with probability 3/20: 307.2 prompts
    assert float(((counts - 307.2) ** 2 / 307.2).sum()) < 43.8  # chi-square, 19 degrees of freedom, p = 0.001
    pairs = torch.einsum("bi,bj->ij", (w != 0).double(), (w != 0).double())  # pairs equally likely: 3/190 each
    off = pairs[~torch.eye(D, dtype=torch.bool)]
    assert float(off.mean()) == pytest.approx(2048 * 6 / 380, rel=1e-9) and float(off.std()) < 0.35 * float(off.mean())


def test_sparse_linear_labels_are_unscaled_and_noiseless() -> None:
    d = data("garg/sparse-linear")
    w = d.hidden["w"].double()
    assert within_rounding(d.y, torch.einsum("bnd,bd->bn", d.x.double(), w))
    for n in (5, 40):  # nested prefixes share their queries and targets
        assert torch.equal(d.targets[n], d.hidden["y_query"])
    assert within_rounding(d.targets[40], torch.einsum("bqd,bd->bq", d.x_query.double(), w))
    assert float(d.y.double().square().mean()) == pytest.approx(3.0, rel=0.05)  # E[f^2] = k, Garg et al.'s scale
    x = d.x.double().reshape(-1, D)
    assert abs(float(x.mean())) < 0.01 and (x.T @ x / len(x) - torch.eye(D, dtype=x.dtype)).abs().max() < 0.02


def walk(x: np.ndarray, coords: np.ndarray, leaves: np.ndarray) -> float:
    """Garg et al.'s tree walk for one point, written out: from the root, 2j + 1 + (x[coord] > 0), 4 times."""
    node = 0
    for _ in range(4):
        node = 2 * node + 1 + int(x[int(coords[node])] > 0)
    return float(leaves[node - 15])


def test_decision_tree_labels_follow_their_walk_down_four_levels() -> None:
    d = data("garg/decision-tree")
    coords, leaves = d.hidden["coords"].numpy(), d.hidden["leaves"].numpy()
    assert coords.shape == (2048, 15) and leaves.shape == (2048, 16)
    for b in range(0, 2048, 97):
        for i in range(0, 100, 7):
            assert d.y[b, i].item() == walk(d.x[b, i].numpy(), coords[b], leaves[b])
        assert d.targets[100][b, 3].item() == walk(d.x_query[b, 3].numpy(), coords[b], leaves[b])
    # every label is one of its prompt's 16 leaves
    assert (d.y.unsqueeze(-1) == d.hidden["leaves"].unsqueeze(1)).any(-1).all()


def test_decision_tree_splits_and_leaves_have_the_stated_laws() -> None:
    d = data("garg/decision-tree")
    coords = d.hidden["coords"].long()
    assert torch.equal(d.hidden["coords"], coords.float()) and coords.min() == 0 and coords.max() == D - 1
    counts = torch.bincount(coords.flatten(), minlength=D).double()  # uniform over 20 coordinates: 1,536 each
    assert float(((counts - 1536) ** 2 / 1536).sum()) < 43.8  # chi-square, 19 degrees of freedom, p = 0.001
    leaves = d.hidden["leaves"].double().flatten()
    assert abs(float(leaves.mean())) < 0.03 and float(leaves.var()) == pytest.approx(1.0, abs=0.04)
    root = torch.gather(d.x, 2, coords[:, :1, None].expand(-1, 100, 1))[..., 0]
    assert float((root > 0).double().mean()) == pytest.approx(0.5, abs=0.01)  # the root splits at 0
    # a point reaches a leaf with probability 1/16 when its path tests 4 distinct coordinates
    assert float(d.y.double().square().mean()) == pytest.approx(1.0, abs=0.08)  # E[f^2] = 1


def test_relu2nn_labels_are_the_scaled_network_and_have_variance_d() -> None:
    task = tasks.get("garg/relu2nn")
    s = task.sample(256, 100, task.train_generator(3), dtype=torch.float64)
    w1, a = s.hidden["w1"], s.hidden["a"]
    assert w1.shape == (256, D, 100) and a.shape == (256, 100)
    for weights in (w1, a):
        assert abs(float(weights.mean())) < 0.02 and float(weights.var()) == pytest.approx(1.0, abs=0.02)
    exact = math.sqrt(2 / 100) * torch.einsum("bnh,bh->bn", torch.relu(s.batch.x @ w1), a)
    assert within_rounding(s.batch.y, exact)
    query = math.sqrt(2 / 100) * torch.einsum("bqh,bh->bq", torch.relu(s.batch.x_query @ w1), a)
    assert within_rounding(s.target, query)
    d = data("garg/relu2nn")
    y = d.y.double()
    assert float(y.square().mean()) == pytest.approx(D, rel=0.05)  # E[f^2] = E||x||^2 = d: the linear scale
    assert abs(float(y.mean())) < 0.1
    # given the network, E[f(x)^2 | W, a] = (2 / h) a^T E[relu(W^T x) relu(W^T x)^T] a: per-prompt spread
    per_prompt = y.square().mean(1)
    assert float(per_prompt.std()) > 0.3 * D  # prompts differ in scale: a distribution of networks, not one
    assert "w1" not in d.hidden and set(d.hidden) == {"y_query"}  # 2,000 numbers a prompt, not kept


def test_quadratic_labels_and_their_moments() -> None:
    d = data("garg/quadratic")
    w, x = d.hidden["w"].double(), d.x.double()
    assert within_rounding(d.y, torch.einsum("bnd,bd->bn", x * x, w) / math.sqrt(3))
    assert abs(float(w.mean())) < 0.02 and float(w.var()) == pytest.approx(1.0, abs=0.03)
    y = d.y.double()
    assert float(y.square().mean()) == pytest.approx(D, rel=0.05)  # E[x^4] = 3: (3 d) / 3
    # given w: E[f] = sum(w) / sqrt(3) and E[f^2] = (2 ||w||^2 + (sum w)^2) / 3, over each prompt's 40 points
    mean_w = w.sum(-1) / math.sqrt(3)
    assert float((y.mean(1) - mean_w).mean()) == pytest.approx(0.0, abs=0.05)
    second = (2 * w.square().sum(-1) + w.sum(-1) ** 2) / 3
    assert float(y.square().mean(1).sum() / second.sum()) == pytest.approx(1.0, abs=0.03)
    assert float(torch.corrcoef(torch.stack([y.mean(1), mean_w]))[0, 1]) > 0.9


@pytest.mark.parametrize("name, shapes", [("garg/sparse-linear", {"w": (-1,)}), ("garg/relu2nn", {"w1": (-2,)}),
                                          ("garg/quadratic", {"w": (-1,)}), ("garg/decision-tree", {})])
def test_a_smaller_dimension_is_the_class_in_a_subspace(name: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """`sample(dims=k)` (Garg et al.'s dimension curriculum): the class at dimension k, zero-padded to d."""
    task, k = tasks.get(name), 7
    s = task.sample(64, 30, task.train_generator(5), dtype=torch.float64, dims=k)
    ref = task.family.draw(task.in_dimension(k), task.train_generator(5), 64, 30, task.spec.n_queries)
    assert torch.equal(s.batch.x[..., :k], torch.from_numpy(ref.x)) and not s.batch.x[..., k:].any()
    assert torch.equal(s.batch.y, torch.from_numpy(ref.y)) and torch.equal(s.target, torch.from_numpy(ref.y_query))
    for key, axes in shapes.items():
        padded = s.hidden[key]
        assert padded.shape[axes[0]] == D and not padded.narrow(axes[0], k, D - k).any()
    if name == "garg/decision-tree":
        assert s.hidden["coords"].max() < k  # splits test the first k coordinates only
    if name == "garg/sparse-linear":
        assert ((s.hidden["w"] != 0).sum(-1) == 3).all()


def test_an_unknown_function_class_is_named() -> None:
    spec = tasks.TaskSpec("garg/cubic", "garg", 4, (5,), 5, params={"function": "cubic"})
    with pytest.raises(ValueError, match="garg/cubic: unknown function class 'cubic'; expected one of sparse-linear"):
        tasks.Task(spec, tasks.FAMILIES["garg"]).sample(2, 5, np.random.default_rng(0))
