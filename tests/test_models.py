"""Reference architectures: shapes, per-layer read-outs, query independence, LSA = GD, plugin round trip."""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import pytest
import torch

from iclbench import Batch
from iclbench.models import ATTENTIONS, GPT2, LinearTransformer, ProxTransformer, build, gd_lsa, ista_prox_transformer
from iclbench.models.plugin import TrainedModel
from iclbench.models.weights import load_weights, read_metadata, save_weights
from iclbench.plugins import load_model
from iclbench.tasks import get

D, N, Q, B = 4, 7, 5, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _variants() -> list[tuple[str, Callable[[], torch.nn.Module]]]:
    """(id, constructor) of every variant; each test builds its model after seeding torch, whatever ran before."""
    lt = [(f"linear-transformer-{h}{i}", partial(LinearTransformer, D, 3, attention=h, norm=norm, tied=tied, heads=2,
                                                 width=D + 3, init_std=0.1))
          for h in ATTENTIONS for i, (norm, tied) in enumerate((n, t) for n in (False, True) for t in (False, True))]
    return lt + [("gpt2-0", partial(GPT2, D, 3, width=16, heads=2, max_len=N)),
                 ("gpt2-1", partial(GPT2, D, 3, width=16, heads=2, max_len=N, tied=True)),
                 ("prox-transformer-0", partial(ProxTransformer, D, 3, heads=2, init_std=0.3)),
                 ("prox-transformer-1", partial(ProxTransformer, D, 3, tied=True, init_std=0.3))]


def _built(make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    return make().double()


def _prompt(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g, dtype=dtype)
    w = torch.randn(B, D, generator=g, dtype=dtype)
    return x, torch.einsum("bnd,bd->bn", x, w), torch.randn(B, Q, D, generator=g, dtype=dtype)


@pytest.mark.parametrize("make", [m for _, m in _variants()], ids=[i for i, _ in _variants()])
def test_shapes_and_per_layer_outputs(make: Callable[[], torch.nn.Module]) -> None:
    model = _built(make)
    x, y, xq = _prompt()
    pred, steps = model(x, y, xq)
    assert pred.shape == (B, Q) and steps.shape == (B, 3, Q)
    assert torch.isfinite(steps).all() and torch.equal(pred, steps[:, -1])
    assert not torch.allclose(steps[:, 0], steps[:, 1])  # every layer changes the read-out


@pytest.mark.parametrize("make", [m for _, m in _variants()], ids=[i for i, _ in _variants()])
def test_queries_do_not_influence_each_other(make: Callable[[], torch.nn.Module]) -> None:
    model = _built(make)
    x, y, xq = _prompt()
    _, steps = model(x, y, xq)
    moved = xq.clone()
    moved[:, 0] += 1.0
    _, steps2 = model(x, y, moved)
    # the same values up to float64 round-off: a batched product over other inputs may take another kernel path
    torch.testing.assert_close(steps[:, :, 1:], steps2[:, :, 1:], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(steps[:, :, 0], steps2[:, :, 0])
    _, alone = model(x, y, xq[:, 2:3])  # one query alone gets the same prediction as within the batch
    torch.testing.assert_close(alone[:, :, 0], steps[:, :, 2], rtol=1e-12, atol=1e-12)


def test_context_order_matters_only_for_gpt2() -> None:
    x, y, xq = _prompt()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    lsa = LinearTransformer(D, 2, init_std=0.3).double()
    torch.testing.assert_close(lsa(x, y, xq)[0], lsa(x[:, perm], y[:, perm], xq)[0])
    gpt = GPT2(D, 2, width=16, heads=2, max_len=N).double()
    assert not torch.allclose(gpt(x, y, xq)[0], gpt(x[:, perm], y[:, perm], xq)[0])


def _numpy_gd(x: np.ndarray, y: np.ndarray, xq: np.ndarray, eta: float, steps: int) -> np.ndarray:
    """Predictions (B, steps, q) of plain least-squares GD from w = 0, one prompt at a time."""
    out = np.zeros((x.shape[0], steps, xq.shape[1]))
    for b in range(x.shape[0]):
        w = np.zeros(x.shape[2])
        for k in range(steps):
            w = w - eta * x[b].T @ (x[b] @ w - y[b]) / x.shape[1]
            out[b, k] = xq[b] @ w
    return out


def test_hand_built_lsa_is_gradient_descent() -> None:
    x, _, xq = _prompt(3)
    y = torch.randn(B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(4))  # any labels
    eta, k = 0.35, 12
    _, steps = gd_lsa(D, k, eta)(x, y, xq)
    expected = _numpy_gd(x.numpy(), y.numpy(), xq.numpy(), eta, k)
    np.testing.assert_allclose(steps.detach().numpy(), expected, rtol=0, atol=1e-5)
    assert np.abs(expected[:, -1] - expected[:, 0]).max() > 0.1  # the steps really move


def test_hand_built_lsa_matches_gd_baseline() -> None:
    gd = load_model("gd").model
    task = get("linear/kappa10")
    sample = task.sample(16, 20, task.train_generator(0), dtype=torch.float64)
    batch = sample.batch
    eta = gd.step_size(task.spec, 20)
    k = 30
    _, steps = gd_lsa(task.spec.d, k, eta)(batch.x, batch.y, batch.x_query)
    expected = gd.predict(batch).steps[:, :k]
    torch.testing.assert_close(steps.detach(), expected, rtol=0, atol=1e-5)


def _numpy_ista(x: np.ndarray, y: np.ndarray, xq: np.ndarray, eta: float, lam: float, steps: int) -> np.ndarray:
    """Predictions (B, steps, q) of ISTA with constant step eta on ||X w - y||^2 / (2n) + lam ||w||_1 from 0, per prompt."""
    out = np.zeros((x.shape[0], steps, xq.shape[1]))
    for b in range(x.shape[0]):
        w = np.zeros(x.shape[2])
        for k in range(steps):
            v = w - eta * x[b].T @ (x[b] @ w - y[b]) / x.shape[1]
            w = np.sign(v) * np.maximum(np.abs(v) - eta * lam, 0.0)
            out[b, k] = xq[b] @ w
    return out


@pytest.mark.parametrize("tied", [False, True])
def test_hand_built_prox_transformer_is_ista(tied: bool) -> None:
    task = get("lasso/random")
    batch = task.sample(16, 20, task.train_generator(0), dtype=torch.float64).batch
    eta, lam, k = 0.2, 0.1, 40  # eta below 1 / L: the largest eigenvalue of X^T X / n is about 4 here
    model = ista_prox_transformer(task.spec.d, k, eta, lam)
    if tied:  # one layer looped k times is the same algorithm
        looped = ProxTransformer(task.spec.d, k, tied=True).double()
        looped.blocks[0].load_state_dict(model.blocks[0].state_dict())
        model = looped
    with torch.no_grad():
        _, steps = model(batch.x, batch.y, batch.x_query)
    expected = _numpy_ista(batch.x.numpy(), batch.y.numpy(), batch.x_query.numpy(), eta, lam, k)
    np.testing.assert_allclose(steps.numpy(), expected, rtol=0, atol=1e-10)
    assert np.abs(expected[:, -1] - expected[:, 0]).max() > 0.1  # the steps really move
    plain = _numpy_ista(batch.x.numpy(), batch.y.numpy(), batch.x_query.numpy(), eta, 0.0, k)
    assert np.abs(expected - plain).max() > 0.1  # and the shrinkage matters


def test_a_submission_describes_the_prox_transformer() -> None:
    from iclbench.submissions.create import describe

    assert describe(ProxTransformer(D, 8, heads=2, hidden=32, tied=True).config()) == (
        "8-layer looped (one tied layer applied 8 times) proximal-step transformer: a state token updated by linear "
        "attention over the context, 2 head(s), then a ReLU MLP of width 32")


def test_bad_input_is_named() -> None:
    model = LinearTransformer(D, 1)
    x, y, xq = _prompt(dtype=torch.float32)
    with pytest.raises(ValueError, match="x_query must be"):
        model(x, y, xq[..., :2])
    with pytest.raises(ValueError, match="length 8"):
        GPT2(D, 1, width=8, heads=2, max_len=7)(torch.randn(1, 8, D), torch.randn(1, 8), torch.randn(1, 1, D))
    with pytest.raises(ValueError, match="attention must be one of"):
        LinearTransformer(D, 1, attention="cubic")
    with pytest.raises(ValueError, match="unknown architecture"):
        build({"arch": "rnn", "d": 3, "layers": 1})


@pytest.mark.parametrize("model", [LinearTransformer(20, 2, norm=True), GPT2(20, 2, width=16, heads=2, max_len=10),
                                   ProxTransformer(20, 2, heads=2)])
def test_checkpoint_round_trip_through_plugin(tmp_path, model) -> None:
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_weights(model, path, {"tasks": ["linear/kappa1"]})
    assert read_metadata(path) == (model.config(), {"tasks": ["linear/kappa1"]})
    plugin = TrainedModel(path)
    plugin.setup(torch.device("cpu"))
    assert plugin.checkpoint == str(path)
    task = get("linear/kappa1")
    assert plugin.supports(task.spec) and not plugin.supports(get("lasso/fixed").spec)
    assert plugin.supports_length(task.spec, 10)
    assert plugin.supports_length(task.spec, 80) == (not isinstance(model, GPT2))  # gpt2: max_len 10
    batch = task.sample(4, 10, task.train_generator(0)).batch
    pred = plugin.predict(batch)
    with torch.no_grad():
        y, steps = model(batch.x, batch.y, batch.x_query)
    assert torch.equal(pred.y, y) and torch.equal(pred.steps, steps)
    b64 = Batch(batch.task, batch.x.double(), batch.y.double(), batch.x_query.double())
    assert plugin.predict(b64).y.dtype == torch.float64
    reloaded, _ = load_weights(path)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))


def test_looped_model_runs_more_loops_at_test_time(tmp_path) -> None:
    path = tmp_path / "looped.safetensors"
    save_weights(LinearTransformer(20, 2, tied=True), path, {"tasks": ["lasso/fixed"]})

    class Longer(TrainedModel):
        loops = 5

    plugin = Longer(path)
    plugin.setup(torch.device("cpu"))
    task = get("lasso/fixed")
    assert plugin.predict(task.sample(2, 10, task.train_generator(0)).batch).steps.shape == (2, 5, 8)
    save_weights(LinearTransformer(20, 2), path, {"tasks": ["lasso/fixed"]})
    with pytest.raises(ValueError, match="not a looped"):
        Longer(path).setup(torch.device("cpu"))


def test_plugin_refuses_foreign_files(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not an iclbench architecture checkpoint"):
        TrainedModel(path).setup(torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="not found"):
        TrainedModel(tmp_path / "missing.safetensors").setup(torch.device("cpu"))
