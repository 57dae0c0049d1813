"""The runner and its metrics: exactness, batch-size independence, resumption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iclbench import cache, metrics, results, runner, tasks
from iclbench.api import Batch, Model, Prediction
from iclbench.cache import eval_set
from iclbench.plugins import load_model, loaded
from iclbench.tasks import SUITE_VERSION
from iclbench.runner import RunConfig, run, run_task

LINEAR = tasks.select(["linear/kappa1", "linear/kappa100"])


def scores(doc: dict, task: str) -> dict:
    return doc["tasks"][task]["lengths"]


def test_zero_predictor_scores_exactly_one() -> None:
    doc = run(load_model("zero"), tasks.select(["linear/kappa1", "logistic/kappa1", "kernel/exp"]), RunConfig(prompts=256))
    for name, entry in doc["tasks"].items():
        assert entry["status"] == "ok"
        for m in entry["lengths"].values():
            assert m["rel_err"]["value"] == 1.0 and m["rel_err"]["db"] == 0.0
    assert doc["tasks"]["logistic/kappa1"]["lengths"]["20"]["error_rate"]["value"] == 0.5


def test_least_squares_is_exact_on_noiseless_linear_tasks_once_n_reaches_d() -> None:
    doc = run(load_model("ols"), LINEAR, RunConfig(prompts=512, dtype="float64"))
    for name in ("linear/kappa1", "linear/kappa100"):
        lengths = scores(doc, name)
        for n in (40, 80):
            assert lengths[str(n)]["rel_err"]["value"] < 1e-12, (name, n)
            assert lengths[str(n)]["recovery"]["value"] < 1e-12, (name, n)
        assert lengths["10"]["rel_err"]["value"] > 0.1  # under-determined: no exact recovery


def test_ridge_matches_numpy_solve_per_prompt() -> None:
    task = tasks.get("linear/noisy")
    data, _ = eval_set(task)
    model = load_model("ridge").model
    x, y, xq = data.x[:64, :20].double(), data.y[:64, :20].double(), data.x_query[:64].double()
    from iclbench.api import Batch

    pred = model.predict(Batch(task.spec, x, y, xq))
    lam = 20 * 0.5**2  # d s^2: the posterior mean under w / sqrt(d) ~ N(0, I / d)
    for i in range(64):  # an independent per-prompt reference
        xi, yi = x[i].numpy(), y[i].numpy()
        w = np.linalg.solve(xi.T @ xi + lam * np.eye(20), xi.T @ yi)
        np.testing.assert_allclose(pred.w[i].numpy(), w, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(pred.y[i].numpy(), xq[i].numpy() @ w, rtol=1e-9, atol=1e-12)


def test_ridge_is_bayes_optimal_on_the_noisy_task() -> None:
    doc = run(load_model("ridge"), tasks.select(["linear/noisy"]), RunConfig(prompts=1024))
    other = run(load_model("ols"), tasks.select(["linear/noisy"]), RunConfig(prompts=1024))
    for n in ("5", "10", "20", "40", "80"):
        assert scores(doc, "linear/noisy")[n]["rel_err"]["value"] < scores(other, "linear/noisy")[n]["rel_err"]["value"]


@pytest.mark.usefixtures("session_fingerprints")  # kernel/relu from the cache folder, not generated in this process
def test_metrics_do_not_depend_on_batch_size() -> None:
    chosen = tasks.select(["linear/kappa10", "logistic/kappa10", "lasso/shift0.5", "kernel/relu"])
    runs = [run(load_model(m), chosen, RunConfig(batch_size=bs, prompts=600)) for m in ("ridge",) for bs in (600, 77)]
    runs += [run(load_model("examples/template_model.py"), chosen, RunConfig(batch_size=bs, prompts=600)) for bs in (7, 600)]
    for a, b in (runs[:2], runs[2:]):
        for name in a["tasks"]:
            assert a["tasks"][name]["status"] == b["tasks"][name]["status"]
            assert a["tasks"][name].get("lengths") == b["tasks"][name].get("lengths"), name


def test_relative_error_and_interval_match_direct_computation() -> None:
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(500, 8, generator=gen, dtype=torch.float64)
    pred = target + 0.3 * torch.randn(500, 8, generator=gen, dtype=torch.float64)
    m = metrics.relative_error(pred, target)
    direct = float(((pred - target) ** 2).mean() / (target**2).mean())
    assert m["value"] == pytest.approx(direct, rel=1e-12)
    assert m["db"] == pytest.approx(10 * np.log10(direct), rel=1e-12)
    lo, hi = m["ci90"]
    assert lo < direct < hi
    # the interval matches a plain resampling loop with the same draws
    rng = np.random.Generator(np.random.PCG64(metrics.BOOTSTRAP_SEED))
    idx = rng.integers(0, 500, size=(metrics.BOOTSTRAP_RESAMPLES, 500))
    num, den = ((pred - target) ** 2).sum(-1).numpy(), (target**2).sum(-1).numpy()
    boot = [num[i].sum() / den[i].sum() for i in idx]
    assert [lo, hi] == pytest.approx(list(np.quantile(boot, [0.05, 0.95])), rel=1e-12)


def test_results_file_records_the_run(tmp_path: Path) -> None:
    out = tmp_path / "ridge.json"
    run(load_model("ridge"), tasks.select(["linear/kappa1", "logistic/kappa1"]), RunConfig(prompts=128), out)
    doc = results.read(out)
    assert doc["schema_version"] == results.SCHEMA_VERSION and doc["suite_version"] == SUITE_VERSION
    assert doc["model"]["name"] == "ridge" and len(doc["model"]["file_sha256"]) == 64
    assert doc["run"]["limited"] is True and doc["run"]["prompts"] == 128 and doc["run"]["finished"]
    entry = doc["tasks"]["linear/kappa1"]
    assert entry["fingerprint"] == tasks.FINGERPRINTS["linear/kappa1"] and entry["fingerprint_ok"]
    assert set(entry["lengths"]) == {"5", "10", "20", "40", "80"} and entry["seconds"] > 0
    assert doc["tasks"]["logistic/kappa1"]["status"] == "unsupported"


def test_resume_keeps_finished_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ridge.json"
    chosen = tasks.select(["linear/kappa1", "kernel/exp"])
    first = run(load_model("ridge"), chosen[:1], RunConfig(prompts=128), out)
    loaded = load_model("ridge")
    calls = []
    original = loaded.model.predict
    monkeypatch.setattr(loaded.model, "predict", lambda batch: calls.append(batch.task.name) or original(batch))
    second = run(loaded, chosen, RunConfig(prompts=128), out, resume=True)
    assert set(calls) == {"kernel/exp"}
    assert second["tasks"]["linear/kappa1"] == first["tasks"]["linear/kappa1"]
    assert json.loads(out.read_text())["tasks"]["kernel/exp"]["status"] == "ok"
    third = run(load_model("ridge"), chosen, RunConfig(prompts=256), out, resume=True)  # other settings: re-run
    assert third["tasks"]["linear/kappa1"]["n_prompts"] == 256


def test_a_run_holds_one_evaluation_set_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    held = []

    def spy(model, task, *args, **kwargs):  # which sets are in memory while a task is scored
        entry = run_task(model, task, *args, **kwargs)
        held.append(sorted(cache._memory))
        return entry

    monkeypatch.setattr(runner, "run_task", spy)
    eval_set(tasks.get("linear/noisy"))  # held before the run: it stays
    run(load_model("ridge"), tasks.select(["linear/kappa1", "linear/noisy", "kernel/exp"]), RunConfig("cpu", prompts=8),
        progress=False)
    assert held == [["linear/kappa1", "linear/noisy"], ["linear/noisy"], ["kernel/exp", "linear/noisy"]]
    assert sorted(cache._memory) == ["linear/noisy"]


def test_steps_curves_are_recorded() -> None:
    doc = run(load_model("examples/template_model.py"), tasks.select(["kernel/exp"]), RunConfig(prompts=128))
    lengths = scores(doc, "kernel/exp")
    assert len(lengths["14"]["steps_rel_err_db"]) == 8 and len(lengths["4"]["steps_rel_err_db"]) == 4
    assert lengths["14"]["steps_rel_err_db"][-1] == pytest.approx(lengths["14"]["rel_err"]["db"], abs=1e-9)


def _steps_sums_at_once(steps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The per-step sums as `metrics.score` took them on the whole (P, K, q[, m]) steps before they were chunked."""
    outputs = (0, *range(2, steps.dim()))
    return ((steps.double() - target.unsqueeze(1)) ** 2).sum(outputs)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    "shape",
    [(2048, 64, 8), (300, 33, 10), (517, 5, 3), (517, 5, 1), (64, 1, 8), (40, 1, 1), (257, 7, 4, 3), (100, 1, 4, 3), (90, 6, 1, 1)],
)
def test_step_errors_in_chunks_are_the_sum_at_once_bit_for_bit(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    steps = torch.randn(shape, generator=gen) * torch.rand(shape, generator=gen).mul(8).exp()  # float32, wide range
    target = torch.randn(shape[:1] + shape[2:], generator=gen, dtype=torch.float64)
    expected = _steps_sums_at_once(steps, target)
    for chunk in (1, 7, 512, shape[0]):
        errors = metrics.StepErrors(target)
        for start in range(0, shape[0], chunk):
            errors.add(steps[start : start + chunk])
        assert torch.equal(errors.total(), expected), chunk
        assert errors.largest == float(steps.abs().max())


class _Steps(Model):
    """Per-prompt predictions (elementwise and per-prompt sums only, so independent of the batch) with 6 steps."""

    name = "steps"

    def predict(self, batch: Batch) -> Prediction:
        y = batch.y if batch.y.dim() == 3 else batch.y.unsqueeze(-1)
        w = torch.einsum("bnd,bnm->bmd", batch.x, y) / batch.n  # (B, m, d)
        pred = (batch.x_query.unsqueeze(2) * w.unsqueeze(1)).sum(-1)  # (B, q, m)
        pred = pred if batch.y.dim() == 3 else pred[..., 0]
        return Prediction(pred, steps=torch.stack([pred * (1 - 0.6**k) for k in range(1, 7)], 1))


@pytest.mark.parametrize("vector", [False, True])
def test_per_step_errors_of_a_run_are_those_of_the_whole_steps(vector: bool) -> None:
    from test_vector_labels import TASK

    task = TASK if vector else tasks.get("linear/kappa10")
    cfg = RunConfig(prompts=96, batch_size=7)
    entry = run_task(loaded(_Steps(), "steps", None), task, cfg, progress=False)
    assert entry["status"] == "ok", entry.get("error")
    data = eval_set(task)[0].head(96)
    for n in task.spec.lengths:
        steps = _Steps().predict(Batch(task.spec, data.x[:, :n], data.y[:, :n], data.x_query)).steps
        target = data.targets[n].double()
        expected = [metrics.db(float(e)) for e in _steps_sums_at_once(steps, target) / (target**2).sum()]
        assert entry["lengths"][str(n)]["steps_rel_err_db"] == expected, n
