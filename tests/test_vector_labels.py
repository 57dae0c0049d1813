"""The contract for vector-valued labels (`TaskSpec.m` > 1): shapes checked, metrics summed over every
output coordinate, and scalar tasks unchanged. Runs on a small multi-output linear task defined here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iclbench import metrics
from iclbench.api import Batch, Model, Prediction, TaskFailure, check_prediction
from iclbench.plugins import loaded
from iclbench.runner import RunConfig, run_task
from iclbench.tasks import Task, TaskSpec, get
from iclbench.tasks.family import Draw, Family, gaussian
from iclbench.tasks.spec import EvalSet, f32

D, M = 4, 3


class MultiOutput(Family):
    """y = W x with a Gaussian (m, d) W per prompt: a multi-output linear task for these tests only."""

    def draw(self, spec: TaskSpec, rng: np.random.Generator, batch: int, n: int, q: int) -> Draw:
        w = f32(gaussian(rng, batch, spec.m, spec.d))
        x, xq = f32(gaussian(rng, batch, n, spec.d)), f32(gaussian(rng, batch, q, spec.d))
        y, yq = f32(np.einsum("bnd,bmd->bnm", x, w)), f32(np.einsum("bqd,bmd->bqm", xq, w))
        return Draw(x, y, xq, yq, {"f_query": yq, "w": w})


SPEC = TaskSpec("test/multi", "ar", D, (2, 8), 8, n_prompts=96, n_queries=5, seed=7, m=M)
TASK = Task(SPEC, MultiOutput())


class LeastSquares(Model):
    """Per-output least squares, with the zero prediction as its first step (exact once n >= d)."""

    def __init__(self, scale: float = 1.0, shape: str = "vector") -> None:
        self.scale, self.shape = scale, shape

    def predict(self, batch: Batch) -> Prediction:
        w = torch.linalg.lstsq(batch.x, batch.y).solution.mT * self.scale  # (B, m, d)
        y = torch.einsum("bqd,bmd->bqm", batch.x_query, w)
        if self.shape == "scalar":
            return Prediction(y[..., 0])
        return Prediction(y, steps=torch.stack([torch.zeros_like(y), y], 1), w=w)


def score(model: Model, dtype: str = "float64") -> dict:
    return run_task(loaded(model, "test", None), TASK, RunConfig(dtype=dtype, batch_size=40), progress=False)


def test_vector_tasks_are_drawn_and_scored_with_a_last_label_axis() -> None:
    data = TASK.generate()
    assert data.y.shape == (96, 8, M) and data.x_query.shape == (96, 5, D) and data.targets[8].shape == (96, 5, M)
    sample = TASK.sample(6, 3, TASK.train_generator(0))
    assert sample.batch.y.shape == (6, 3, M) and sample.target.shape == (6, 5, M) and sample.batch.m == M
    entry = score(LeastSquares())
    assert entry["status"] == "ok", entry.get("error")
    exact = entry["lengths"]["8"]
    assert exact["rel_err"]["value"] < 1e-12 and exact["recovery"]["value"] < 1e-12
    assert exact["steps_rel_err_db"][0] == 0.0 and exact["steps_rel_err_db"][1] < -120
    assert entry["lengths"]["2"]["rel_err"]["value"] > 0.1  # 2 pairs cannot determine a 3 x 4 matrix


def test_the_relative_error_sums_over_every_output_coordinate() -> None:
    entry = score(LeastSquares(scale=0.5))
    data = TASK.generate()
    x, y, xq, f = (t.double() for t in (data.x[:, :2], data.y[:, :2], data.x_query, data.targets[2]))
    pred = np.einsum("bqd,bmd->bqm", xq.numpy(), 0.5 * _lstsq(x, y))
    expected = ((pred - f.numpy()) ** 2).sum() / (f.numpy() ** 2).sum()
    assert entry["lengths"]["2"]["rel_err"]["value"] == pytest.approx(expected, rel=1e-9)
    w = data.hidden["w"].double().numpy()
    recovery = ((0.5 * _lstsq(x, y) - w) ** 2).sum() / (w**2).sum()
    assert entry["lengths"]["2"]["recovery"]["value"] == pytest.approx(recovery, rel=1e-9)


def _lstsq(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(P, m, d) minimum-norm least-squares solutions, one prompt at a time (an independent reference)."""
    return np.stack([np.linalg.lstsq(xi, yi, rcond=None)[0].T for xi, yi in zip(x.numpy(), y.numpy())])


def test_a_scalar_prediction_on_a_vector_task_is_refused_with_the_expected_shape() -> None:
    entry = score(LeastSquares(shape="scalar"))
    assert entry["status"] == "failed"
    assert "prediction has shape (40, 5), expected (40, 5, 3)" in entry["error"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", torch.zeros(2, 4, 5), "Prediction.steps must be a (B, K, q, 3) tensor"),
        ("w", torch.zeros(2, D), "Prediction.w has shape (2, 4), expected (2, 3, 4)"),
    ],
)
def test_steps_and_w_of_a_vector_task_need_the_label_axis(field: str, value: torch.Tensor, message: str) -> None:
    batch = Batch(SPEC, torch.zeros(2, 8, D), torch.zeros(2, 8, M), torch.zeros(2, 5, D))
    with pytest.raises(TaskFailure, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_prediction(Prediction(torch.zeros(2, 5, M), **{field: value}), batch)


def test_scalar_tasks_keep_their_shapes() -> None:
    spec = get("linear/kappa1").spec
    assert spec.m == 1 and spec.label_shape == () and spec.to_dict()["m"] == 1
    batch = Batch(spec, torch.zeros(2, 5, 20), torch.zeros(2, 5), torch.zeros(2, 8, 20))
    assert check_prediction(torch.zeros(2, 8), batch).y.shape == (2, 8)
    with pytest.raises(TaskFailure, match=r"expected \(2, 8\)"):
        check_prediction(torch.zeros(2, 8, 1), batch)
    with pytest.raises(TaskFailure, match=r"Prediction.steps must be a \(B, K, q\) tensor"):
        check_prediction(Prediction(torch.zeros(2, 8), steps=torch.zeros(2, 3, 8, 1)), batch)


def test_scalar_metrics_are_the_same_numbers_as_before_vector_labels() -> None:
    """The generalised sums give the bits of the scalar formulas they replace."""
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    steps = torch.randn(300, 6, 8, generator=g)
    err, energy = metrics.squared_errors(pred, target)
    assert torch.equal(err, ((pred.double() - target.double()) ** 2).sum(-1))
    assert torch.equal(energy, (target.double() ** 2).sum(-1))
    old = ((steps.double() - target.double().unsqueeze(1)) ** 2).sum((0, 2)) / (target.double() ** 2).sum()
    spec = get("linear/kappa1").spec
    data = EvalSet(torch.zeros(300, 1, 20), torch.zeros(300, 1), torch.zeros(300, 8, 20), {1: target}, {}, {})
    assert metrics.score(spec, data, 1, pred, steps)["steps_rel_err_db"] == [metrics.db(float(e)) for e in old]
