"""The causal LSA for vector labels: one GD step on OLS when hand-set, causality, shapes, the plugin, and
its autoregressive training. Runs on the small multi-output task of tests/test_vector_labels.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_vector_labels import TASK as VECTOR_TASK

from iclbench import tasks as task_registry
from iclbench.models import CausalLSA, LinearTransformer, build, gd_causal_lsa
from iclbench.models.plugin import TrainedModel
from iclbench.models.weights import load_weights, save_weights
from iclbench.tasks import Task, get
from iclbench.training import TrainConfig, TrainError, autoregressive_loss, train

D, M, N, Q, B = 4, 3, 9, 2, 5

pytestmark = pytest.mark.usefixtures("one_thread")


def _sequence(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts of a linear dynamical system in the layout of the ar family: pairs (x_t, x_{t+1}) of one
    sequence x_{t+1} = W x_t + noise (W random, d = m), the query the state after the last pair."""
    g = torch.Generator().manual_seed(seed)
    w = torch.linalg.qr(torch.randn(B, D, D, generator=g, dtype=torch.float64)).Q
    states = [torch.rand(B, D, generator=g, dtype=torch.float64) * 2 - 1]
    for _ in range(N + 1):
        states.append(torch.einsum("bij,bj->bi", w, states[-1]) + 0.1 * torch.randn(B, D, generator=g, dtype=torch.float64))
    s = torch.stack(states, 1)  # (B, N + 2, D)
    return s[:, :N], s[:, 1 : N + 1], s[:, N + 1 : N + 2]


def _random_model(layers: int = 2, heads: int = 2, m: int = D) -> CausalLSA:
    torch.manual_seed(1)
    return CausalLSA(D, layers, m=m, heads=heads, init_std=0.3).double()


def test_hand_set_layer_is_one_gd_step_on_ols_at_every_position() -> None:
    """Token t predicts with W_1 = eta * sum_{i<t} y_i x_i^T / (t - 1), one GD step from 0 on the OLS objective
    of the pairs before it; the query with all n pairs. Reference: the gradient, computed one prompt at a time."""
    x, y, xq = _sequence(3)
    eta = 0.7
    context, steps = gd_causal_lsa(D, D, eta)(x, y, xq, context=True)
    expected = np.zeros((B, N + 1, D))
    xs, ys, qs = x.numpy(), y.numpy(), xq.numpy()
    for b in range(B):
        for t in range(N + 1):  # t pairs seen: positions 0..N-1 of the context, then the query
            xt = qs[b, 0] if t == N else xs[b, t]
            if t == 0:
                continue  # no pair before the first token: W = 0
            w = np.zeros((D, D))
            grad = -sum(np.outer(ys[b, i] - w @ xs[b, i], xs[b, i]) for i in range(t)) / t  # of sum ||y - W x||^2 / 2t
            expected[b, t] = (w - eta * grad) @ xt
    np.testing.assert_allclose(context[:, 0].detach().numpy(), expected[:, :N], rtol=0, atol=1e-12)
    np.testing.assert_allclose(steps[:, 0, 0].detach().numpy(), expected[:, N], rtol=0, atol=1e-12)
    assert np.abs(expected[:, N]).max() > 0.1


def test_hand_set_layer_on_scalar_labels_is_the_lsa_gd_step_for_the_queries() -> None:
    """With m = 1 the queries get the prediction of the (non-causal) hand-built LSA's first step."""
    from iclbench.models import gd_lsa

    g = torch.Generator().manual_seed(0)
    x, xq = torch.randn(B, N, D, generator=g, dtype=torch.float64), torch.randn(B, Q, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, N, generator=g, dtype=torch.float64)
    pred, steps = gd_causal_lsa(D, 1, 0.4)(x, y, xq)
    assert pred.shape == (B, Q) and steps.shape == (B, 1, Q)
    torch.testing.assert_close(pred, gd_lsa(D, 1, 0.4)(x, y, xq)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [0, 4, N - 1])
def test_a_later_pair_never_changes_an_earlier_prediction(k: int) -> None:
    """Changing pair k (x_k and y_k) leaves the predictions of positions 0..k-1 unchanged at every layer;
    changing the label y_k alone leaves position k's own prediction unchanged too; both change later ones."""
    model = _random_model(layers=3)
    x, y, xq = _sequence()
    before, q_before = model(x, y, xq, context=True)
    x2, y2 = x.clone(), y.clone()
    x2[:, k] += 1.0
    y2[:, k] -= 2.0
    after, q_after = model(x2, y2, xq, context=True)
    # float64 round-off at most: the masked terms are exact zeros, but a product over other inputs may take
    # another kernel path; a later pair leaking into an earlier position would move it by O(1)
    torch.testing.assert_close(before[:, :, :k], after[:, :, :k], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(q_before, q_after)
    if k < N - 1:
        assert not torch.allclose(before[:, :, k + 1 :], after[:, :, k + 1 :])
    y3 = y.clone()
    y3[:, k] += 5.0
    own, _ = model(x, y3, xq, context=True)
    torch.testing.assert_close(before[:, :, : k + 1], own[:, :, : k + 1], rtol=1e-12, atol=1e-12)


def test_a_query_is_predicted_as_the_token_after_the_last_pair() -> None:
    """Queries see all n pairs and not one another: a query's prediction is that of a context token appended
    after the last pair, whatever its label, and does not depend on the other queries."""
    model = _random_model()
    x, y, xq = _sequence()
    more_q = torch.cat([xq, torch.randn(B, 2, D, dtype=torch.float64)], 1)
    pred, steps = model(x, y, more_q)
    assert pred.shape == (B, 3, D) and steps.shape == (B, 2, 3, D) and torch.equal(pred, steps[:, -1])
    context, _ = model(torch.cat([x, xq], 1), torch.cat([y, torch.randn(B, 1, D, dtype=torch.float64)], 1), xq,
                       context=True)
    torch.testing.assert_close(context[:, :, N], steps[:, :, 0], rtol=1e-12, atol=1e-12)
    alone, _ = model(x, y, xq)
    torch.testing.assert_close(alone[:, 0], pred[:, 0], rtol=1e-12, atol=1e-12)


def test_bad_labels_are_named() -> None:
    model = CausalLSA(D, 1, m=M)
    x, xq = torch.zeros(2, N, D), torch.zeros(2, 1, D)
    with pytest.raises(ValueError, match=r"y must be \(B, n, m\) = \(2, 9, 3\), got \(2, 9\)"):
        model(x, torch.zeros(2, N), xq)
    with pytest.raises(ValueError, match=r"y must be \(B, n, m\) = \(2, 9, 3\), got \(2, 9, 4\)"):
        model(x, torch.zeros(2, N, 4), xq)
    with pytest.raises(ValueError, match="x_query must be"):
        model(x, torch.zeros(2, N, M), torch.zeros(2, 1, D + 1))
    with pytest.raises(ValueError, match="need m >= 1"):
        CausalLSA(D, 1, m=0)


def test_checkpoint_and_plugin_on_a_vector_task(tmp_path) -> None:
    spec = VECTOR_TASK.spec
    model = CausalLSA(spec.d, 2, m=spec.m, init_std=0.2)
    path = tmp_path / "model.safetensors"
    save_weights(model, path, {"tasks": ["ar/test"]})
    reloaded, _ = load_weights(path)
    assert reloaded.config() == model.config() == build(model.config()).config()
    plugin = TrainedModel(path)
    plugin.setup(torch.device("cpu"))
    assert plugin.supports(spec)
    batch = VECTOR_TASK.sample(4, 8, VECTOR_TASK.train_generator(0)).batch
    pred = plugin.predict(batch)
    assert pred.y.shape == (4, spec.n_queries, spec.m) and pred.steps.shape == (4, 2, spec.n_queries, spec.m)
    scalar = tmp_path / "scalar.safetensors"  # a scalar architecture declines a vector task of its family
    save_weights(LinearTransformer(spec.d, 1), scalar, {"tasks": ["ar/test"]})
    other = TrainedModel(scalar)
    other.setup(torch.device("cpu"))
    assert not other.supports(spec)
    assert not plugin.supports(get("linear/kappa1").spec)


def test_autoregressive_loss_counts_every_position_but_the_first() -> None:
    sample = VECTOR_TASK.sample(6, 8, VECTOR_TASK.train_generator(0))
    g = torch.Generator().manual_seed(0)
    context, steps = torch.randn(6, 2, 8, M, generator=g), torch.randn(6, 2, VECTOR_TASK.spec.n_queries, M, generator=g)
    y, yq = sample.batch.y.numpy(), sample.y_query.numpy()
    for all_layers in (False, True):
        layers = [0, 1] if all_layers else [1]
        errs = [((context[:, k, 1:].numpy() - y[:, 1:]) ** 2).ravel() for k in layers]
        errs += [((steps[:, k].numpy() - yq) ** 2).ravel() for k in layers]
        expected = np.concatenate(errs).mean()
        assert float(autoregressive_loss(context, steps, sample, all_layers)) == pytest.approx(expected, rel=1e-6)


@pytest.fixture()
def vector_task(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(task_registry.TASKS, VECTOR_TASK.spec.name, VECTOR_TASK)
    return VECTOR_TASK.spec.name


def test_autoregressive_training_learns_and_is_deterministic(tmp_path, vector_task: str) -> None:
    cfg = TrainConfig(tasks=(vector_task,), arch="causal-lsa", layers=1, steps=40, lr=0.02, weight_decay=0.05,
                      batch_size=32, n_min=8, n_max=8, val_prompts=64, val_every=10)
    log = train(cfg, tmp_path / "a", progress=False)
    first, last = log["validations"][0], log["final"]
    assert log["model_config"] == {"arch": "causal-lsa", "d": D, "m": M, "layers": 1, "heads": 1, "init_std": 0.02}
    assert last["val_nominal_db"] < first["val_nominal_db"] - 0.5 and last["val_nominal_db"] < -0.5
    assert len(last["tasks"][vector_task]["steps_rel_err_db"]) == 1
    assert "--weight-decay 0.05" in log["command"] and "--arch causal-lsa" in log["command"]
    again = train(cfg, tmp_path / "b", progress=False)
    a, b = (load_weights(tmp_path / run / "model.safetensors")[0].state_dict() for run in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a) and again["validations"] == log["validations"]


def test_causal_settings_are_checked(vector_task: str) -> None:
    with pytest.raises(TrainError, match="no --norm, --width"):
        TrainConfig(tasks=(vector_task,), arch="causal-lsa", norm=True, width=12)
    with pytest.raises(TrainError, match="--loss target does not apply"):
        TrainConfig(tasks=(vector_task,), arch="causal-lsa", loss="target")
    with pytest.raises(TrainError, match="--weight-decay must be at least 0"):
        TrainConfig(tasks=(vector_task,), weight_decay=-1.0)

def test_tasks_of_one_training_run_share_m(monkeypatch: pytest.MonkeyPatch, vector_task: str) -> None:
    scalar = Task(replace(VECTOR_TASK.spec, name="test/scalar", m=1), VECTOR_TASK.family)
    monkeypatch.setitem(task_registry.TASKS, "test/scalar", scalar)
    with pytest.raises(TrainError, match=r"different m \[1, 3\]"):
        train(TrainConfig(tasks=(vector_task, "test/scalar"), steps=1), "unused", progress=False)


def test_a_submission_describes_the_architecture() -> None:
    from iclbench.submissions.create import describe

    text = describe(CausalLSA(D, 2, m=M, heads=2).config())
    assert text == "2-layer causal linear self-attention on (x, y) tokens, 2 head(s), labels of dimension 3, no MLP"


def test_hand_set_layer_matches_the_gd_baselines_first_step_on_ar() -> None:
    """The query's prediction of `gd_causal_lsa` with the gd baseline's step size is that baseline's step 1."""
    from iclbench.plugins import load_model

    gd = load_model("gd").model
    task = get("ar/uniform")
    batch = task.sample(16, 20, task.train_generator(0), dtype=torch.float64).batch
    eta = gd.step_size(task.spec, 20)
    pred, _ = gd_causal_lsa(task.spec.d, task.spec.m, eta)(batch.x, batch.y, batch.x_query)
    torch.testing.assert_close(pred, gd.predict(batch).steps[:, 0], rtol=0, atol=1e-12)
