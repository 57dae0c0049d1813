"""The alignment metric: cosine similarity of per-layer and per-step residuals, and `iclbench run --align`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from iclbench.baselines.gd import GradientDescent

from iclbench import Batch, Model, Prediction, TaskSpec
from iclbench.alignment import align, cosine_matrix
from iclbench.cli import main
from iclbench.models import gd_lsa
from iclbench.plugins import LoadedModel, load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks import get

LAYERS = 4


def numpy_cosines(steps: np.ndarray, ref: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Plain-loop reference: flatten each residual over prompts and queries, then cosine."""
    out = np.zeros((steps.shape[1], ref.shape[1]))
    for k in range(steps.shape[1]):
        a = (steps[:, k, :] - target).ravel()
        for s in range(ref.shape[1]):
            b = (ref[:, s, :] - target).ravel()
            out[k, s] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return out


def test_cosine_matrix_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    steps, ref, target = rng.normal(size=(7, 3, 5)), rng.normal(size=(7, 6, 5)), rng.normal(size=(7, 5))
    got = cosine_matrix(torch.tensor(steps, dtype=torch.float32), torch.tensor(ref), torch.tensor(target))
    np.testing.assert_allclose(got.numpy(), numpy_cosines(steps.astype(np.float32), ref, target), rtol=1e-6, atol=1e-6)


def test_align_picks_the_most_similar_step_and_scale_does_not_matter() -> None:
    rng = np.random.default_rng(1)
    target = rng.normal(size=(10, 4))
    ref = target[:, None, :] + rng.normal(size=(10, 5, 4))
    # layer 0 errs like step 3 (scaled by 0.1), layer 1 like step 0 (scaled by 7)
    steps = np.stack([target + 0.1 * (ref[:, 3] - target), target + 7 * (ref[:, 0] - target)], axis=1)
    out = align(torch.tensor(steps), torch.tensor(ref), torch.tensor(target))
    assert out["closest_step"] == [4, 1]
    assert out["cosine"][0][3] == pytest.approx(1.0) and out["cosine"][1][0] == pytest.approx(1.0)
    np.testing.assert_allclose(out["cosine"], numpy_cosines(steps, ref, target), atol=1e-5)


def test_zero_residual_has_cosine_zero_and_shapes_are_checked() -> None:
    target = torch.ones(3, 2)
    out = cosine_matrix(target.unsqueeze(1), torch.randn(3, 2, 2), target)
    assert torch.equal(out, torch.zeros(1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="prompts and queries differ"):
        cosine_matrix(torch.zeros(3, 1, 2), torch.zeros(4, 1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"expected steps \(P, K, q\)"):
        cosine_matrix(torch.zeros(3, 2), torch.zeros(3, 1, 2), torch.zeros(3, 2))


class HandBuiltLSA(Model):
    """`gd_lsa` with the gd baseline's step size for the task and length: layer k is GD step k."""

    name = "gd-lsa"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "linear"

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        eta = GradientDescent().step_size(batch.task, batch.n)
        net = gd_lsa(batch.task.d, LAYERS, eta, dtype=torch.float64).to(batch.x.device)
        y, steps = net(batch.x.double(), batch.y.double(), batch.x_query.double())
        return Prediction(y.to(batch.x.dtype), steps=steps.to(batch.x.dtype))


def test_hand_built_lsa_aligns_with_gd_step_k_at_layer_k() -> None:
    refs = {name: load_model(name) for name in ("gd", "gp-posterior")}
    for ref in refs.values():
        ref.model.setup(torch.device("cpu"))
    tasks = [get("linear/kappa1"), get("lasso/fixed")]
    doc = run(LoadedModel(HandBuiltLSA(), "test", None), tasks, RunConfig("cpu", prompts=64), progress=False,
              references=refs)
    entry = doc["tasks"]["linear/kappa1"]
    assert entry["status"] == "ok" and set(entry["alignment"]) == {"gd"}  # gp-posterior is for kernel tasks
    gd = entry["alignment"]["gd"]
    assert gd["n"] == 40 and gd["closest_step"] == [1, 2, 3, 4]
    assert len(gd["cosine"]) == LAYERS and len(gd["cosine"][0]) == 1024
    for k in range(LAYERS):
        assert gd["cosine"][k][k] == pytest.approx(1.0, abs=1e-5)
    assert doc["tasks"]["lasso/fixed"]["status"] == "unsupported"
    assert "alignment" not in run(LoadedModel(HandBuiltLSA(), "test", None), tasks[:1], RunConfig("cpu", prompts=8),
                                  progress=False)["tasks"]["linear/kappa1"]


def test_cli_align_writes_the_matrix(tmp_path, capsys) -> None:
    code = main(["run", "--model", "newton", "--tasks", "linear/kappa1", "--prompts", "16", "--align", "newton3",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    entry = json.loads((tmp_path / "newton.json").read_text())["tasks"]["linear/kappa1"]
    newton3 = entry["alignment"]["newton3"]
    layers = len(entry["lengths"]["40"]["steps_rel_err_db"])  # newton's steps play the model's layers
    assert newton3["n"] == 40 and len(newton3["cosine"]) == layers == len(newton3["closest_step"])
    ref_steps = len(newton3["cosine"][0])
    assert ref_steps > 1 and all(len(row) == ref_steps for row in newton3["cosine"])
    assert all(1 <= s <= ref_steps for s in newton3["closest_step"])
    assert main(["run", "--model", "gd", "--tasks", "linear/kappa1", "--align", "no-such-baseline",
                 "--out", str(tmp_path), "--quiet"]) == 2
    assert "no-such-baseline" in capsys.readouterr().err
