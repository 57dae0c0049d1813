"""The findings script on small synthetic results files, and its one-step GD comparison."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from iclbench import results
from iclbench.leaderboard import findings
from iclbench.models import gd_lsa
from iclbench.tasks import SUITE_VERSION, EvalSet, get


def rel_err(db: float) -> dict[str, Any]:
    """A relative-error metric of `db` with a degenerate interval."""
    value = 10 ** (db / 10)
    return {"value": value, "db": db, "ci90": [value, value], "ci90_db": [db, db]}


def task_entry(task: str, curves: dict[int, list[float]], alignment: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ok task entry whose error at each length is the last value of its per-step curve."""
    lengths = {str(n): {"rel_err": rel_err(c[-1]), "steps_rel_err_db": c} for n, c in curves.items()}
    out = {"status": "ok", "spec": get(task).spec.to_dict(), "lengths": lengths}
    if alignment:
        out["alignment"] = alignment
    return out


def write_doc(path: Path, name: str, tasks: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": results.SCHEMA_VERSION, "iclbench_version": "test", "suite_version": SUITE_VERSION,
           "model": {"name": name, "file_sha256": None, "checkpoint_sha256": None},
           "run": {"dtype": "float32", "device": "cpu"}, "tasks": tasks}
    results.write(path, doc)


@pytest.fixture()
def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    subs, base = tmp_path / "submissions", tmp_path / "baselines"
    gd = [-1.0 * k for k in range(1, 101)]  # 1 dB per step
    newton = [-4.0 * k for k in range(1, 11)]  # 4 dB per step
    align = {"gd": {"n": 40, "cosine": [[0.2, 0.9, 0.5], [0.1, 0.3, 0.95]], "closest_step": [2, 3]}}
    write_doc(subs / "lsa-4l-kappa100" / "results.json", "lsa-4l-kappa100",
              {"linear/kappa100": task_entry("linear/kappa100", {40: [-3.0, -6.0, -9.0, -12.0]}, align)})
    looped = next(iter(findings.Q3_MODELS))
    write_doc(subs / looped / "results.json", looped,
              {t: task_entry(t, {10: [-2.0, -5.0]}) for t in findings.Q3_TASKS})
    for name, err in (("kernel-relu-attn-relu", -5.0), ("kernel-relu-attn-linear", -2.0),
                      (findings.Q4_WIDE_MODELS["kernel/relu"][1], -7.0)):
        write_doc(subs / name / "results.json", name, {"kernel/relu": task_entry("kernel/relu", {14: [-1.0, err]})})
    write_doc(base / "gd.json", "gd", {"linear/kappa100": task_entry("linear/kappa100", {40: gd})})
    write_doc(base / "newton.json", "newton", {"linear/kappa100": task_entry("linear/kappa100", {40: newton})})
    write_doc(base / "ista.json", "ista", {"lasso/fixed": task_entry("lasso/fixed", {10: [-1.0, -1.5, -9.0]})})
    return subs, base


def test_curve_helpers() -> None:
    assert findings.steps_to_reach([-1.0, -2.5, -4.0], -2.5) == 2
    assert findings.steps_to_reach([-1.0, -2.0], -3.0) is None
    assert findings.at_step([-1.0, -2.0], 2) == -2.0 and findings.at_step([-1.0], 2) is None


def test_build_on_synthetic_results(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    subs, base = synthetic
    out = tmp_path / "figures"
    assert findings.main(["--submissions", str(subs), "--baselines", str(base), "--out", str(out),
                          "--no-checkpoints"]) == 0
    numbers = json.loads((out / "numbers.json").read_text())
    q2 = numbers["q2"]["models"]["lsa-4l-kappa100"]
    assert q2["per_layer_db"] == [-3.0, -6.0, -9.0, -12.0]
    assert q2["gd_at_same_steps_db"] == -4.0 and q2["newton_at_same_steps_db"] == -16.0
    assert q2["gd_steps_to_match"] == 12 and q2["newton_steps_to_match"] == 3
    assert "lsa-norm-4l-kappa100" not in numbers["q2"]["models"]  # missing models are left out
    q3 = numbers["q3"]
    assert q3["loops"] == 2 and q3["nominal_db"][next(iter(findings.Q3_MODELS))]["lasso/random"] == -5.0
    assert q3["nominal_db"]["ista (2 iterations)"]["lasso/fixed"] == -1.5
    assert q3["nominal_db"]["lista-cp"]["lasso/fixed"] is None
    assert q3["per_layer_db"][next(iter(findings.Q3_MODELS))]["lasso/random"] == [-2.0, -5.0]
    assert q3["at_depth_db"]["ista"]["lasso/fixed"] == -1.5 and q3["at_depth_db"]["alista"]["lasso/fixed"] is None
    assert numbers["q4"]["best_on_own_task"] == {"kernel/exp": None, "kernel/relu": "kernel-relu-attn-relu"}
    wide = numbers["q4"]["best_on_own_task_wide"]  # best only among its group
    assert wide == {"kernel/exp": None, "kernel/relu": findings.Q4_WIDE_MODELS["kernel/relu"][1]}
    assert numbers["q4"]["per_layer_db"]["kernel/relu"]["kernel-relu-attn-linear"] == [-1.0, -2.0]
    q5 = numbers["q5"]["lsa-4l-kappa100 | linear/kappa100 | gd"]
    assert q5 == {"n": 40, "closest_step": [2, 3], "best_cosine": [0.9, 0.95]}
    for name in ("q1_one_layer", "q2_depth", "q3_lasso", "q4_kernel", "q5_alignment", "q7_gpt2"):
        assert (out / f"{name}.png").stat().st_size > 1000


def test_one_step_gd_fit_and_a_hand_built_one_layer_lsa() -> None:
    task, n = get("linear/kappa1"), 20
    sample = task.sample(256, n, task.train_generator(123))
    data = EvalSet(sample.batch.x, sample.batch.y, sample.batch.x_query, {n: sample.target}, {}, {})
    eta, pred = findings.one_step_gd(task, n, data)
    # the fitted step size is the least-squares solution on the tuning prompts, found here with NumPy
    tune = task.sample(4096, n, task.train_generator(findings.TUNING_SEED))
    x, y, xq = (t.double().numpy() for t in (tune.batch.x, tune.batch.y, tune.batch.x_query))
    feature = np.einsum("bqd,bd->bq", xq, np.einsum("bnd,bn->bd", x, y)) / n
    expected = np.linalg.lstsq(feature.reshape(-1, 1), tune.target.double().numpy().reshape(-1), rcond=None)[0][0]
    assert eta == pytest.approx(expected, rel=1e-9)
    # gd_lsa with that step size is exactly one GD step: same error, residual cosine 1
    found = findings.one_step_comparison(gd_lsa(task.spec.d, 1, eta), task, data, n)
    assert found["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert found["model_db"] == pytest.approx(found["gd_db"], abs=0.01)
    etas = [findings.one_step_gd(task, n, data, seed=seed)[0] for seed in findings.TUNING_SEEDS]
    assert found["refits"]["eta"] == [round(min(etas), 4), round(max(etas), 4)] and min(etas) < max(etas)
    assert found["refits"]["cosine"][1] == pytest.approx(1.0, abs=1e-6)  # the fit of TUNING_SEED is among them
    xty = (data.x.double().mT @ data.y.double().unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(pred, eta * torch.einsum("bqd,bd->bq", data.x_query.double(), xty) / n)


def test_one_step_gd_on_vector_labels_and_a_hand_set_causal_lsa() -> None:
    """On the ar family, the fitted step W = eta Y^T X / n (checked with NumPy), and a causal LSA hand-set to
    that step agrees with it: same error, a difference at round-off, residual cosine 1."""
    from iclbench.models import gd_causal_lsa

    task, n = get("ar/uniform"), 20
    sample = task.sample(256, n, task.train_generator(123))
    data = EvalSet(sample.batch.x, sample.batch.y, sample.batch.x_query, {n: sample.target}, {}, {})
    eta, pred = findings.one_step_gd(task, n, data, tuning_prompts=512)
    tune = task.sample(512, n, task.train_generator(findings.TUNING_SEED))
    x, y, xq = (t.double().numpy() for t in (tune.batch.x, tune.batch.y, tune.batch.x_query))
    feature = np.einsum("bqd,bnd,bnm->bqm", xq, x, y) / n
    expected = np.linalg.lstsq(feature.reshape(-1, 1), tune.target.double().numpy().reshape(-1), rcond=None)[0][0]
    assert eta == pytest.approx(expected, rel=1e-9) and pred.shape == (256, 1, task.spec.m)
    refits = [findings.one_step_gd(task, n, data, tuning_prompts=512, seed=seed)[1] for seed in (1, 2)]
    found = findings.mesa_comparison(gd_causal_lsa(task.spec.d, task.spec.m, eta), data, n, eta, pred, pred, refits)
    gd_db = findings.metrics.relative_error(pred, sample.target.double())["db"]
    assert found["layers_db"] == [round(gd_db, 2)] and found["cosine"] == [1.0] and found["difference_db"][0] < -200
    assert found["closest_eta"] == [round(eta, 4)] and found["closest_difference_db"][0] < -200
    energy = float((sample.target.double() ** 2).sum())
    apart = sorted(round(10 * math.log10(float(((pred - r) ** 2).sum()) / energy), 2) for r in refits)
    assert found["difference_db_refits"] == [apart] and -200 < apart[0] < apart[1]  # other draws, other steps
    other = findings.mesa_comparison(gd_causal_lsa(task.spec.d, task.spec.m, 2 * eta), data, n, eta, pred, pred)
    assert other["cosine"][0] < 0.99 and other["difference_db"][0] > -10  # a wrong step size is seen
    assert other["closest_eta"] == [round(2 * eta, 4)] and other["closest_difference_db"][0] < -200  # still one step
    assert "difference_db_refits" not in other


def test_two_gd_steps_take_the_best_step_size_of_the_grid() -> None:
    """Two steps W_2 = W_1 - eta (W_1 X^T X - Y^T X) / n from W_1 = eta Y^T X / n (NumPy, one prompt at a time),
    at the grid step size with the least error on the tuning prompts."""
    task, n = get("ar/uniform"), 12
    sample = task.sample(64, n, task.train_generator(5))
    data = EvalSet(sample.batch.x, sample.batch.y, sample.batch.x_query, {n: sample.target}, {}, {})
    eta, pred = findings.two_gd_steps(task, n, data, tuning_prompts=256)
    tune = task.sample(256, n, task.train_generator(findings.TUNING_SEED))

    def two_steps(x: np.ndarray, y: np.ndarray, xq: np.ndarray, step: float) -> np.ndarray:
        out = []
        for xb, yb, qb in zip(x, y, xq):
            w = np.zeros((y.shape[-1], x.shape[-1]))
            for _ in range(2):
                w = w - step * (w @ xb.T @ xb - yb.T @ xb) / n
            out.append(qb @ w.T)
        return np.stack(out)

    tx, ty, tq, tt = (t.double().numpy() for t in (tune.batch.x, tune.batch.y, tune.batch.x_query, tune.target))
    grid = np.logspace(-2, np.log10(3), 121)
    best = grid[int(np.argmin([((two_steps(tx, ty, tq, e) - tt) ** 2).sum() for e in grid]))]
    assert eta == pytest.approx(best, rel=1e-12)
    x, y, xq = (t.double().numpy() for t in (data.x, data.y, data.x_query))
    np.testing.assert_allclose(pred.numpy(), two_steps(x, y, xq, eta), rtol=0, atol=1e-10)


def test_question6_reads_the_ar_models_results(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    subs, base = synthetic
    model = next(iter(findings.Q6_MODELS))
    write_doc(subs / model / "results.json", model, {"ar/uniform": task_entry("ar/uniform", {20: [-4.5], 50: [-4.7]})})
    found = findings.question6(findings.load(subs, base), tmp_path, None)
    lengths = {"ar/uniform": {"20": -4.5, "50": -4.7}, "ar/gaussian": {}, "ar/noisy": {}}
    assert found["models"][model] == {"task": "ar/uniform", "lengths_db": lengths, "per_layer_db": [-4.5]}
    assert found["one_step"] is None and (tmp_path / "q6_ar.png").stat().st_size > 1000


def test_question7_reads_the_gpt2_model_and_the_linear_baselines(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    subs, base = synthetic
    write_doc(subs / findings.Q7_MODEL / "results.json", findings.Q7_MODEL,
              {"linear/kappa1": task_entry("linear/kappa1", {10: [-1.0, -3.0], 40: [-8.0, -30.0]}),
               "linear/noisy": task_entry("linear/noisy", {40: [-2.0, -6.5]})})
    write_doc(base / "ols.json", "ols", {"linear/kappa1": task_entry("linear/kappa1", {10: [-3.01], 40: [-149.2]})})
    found = findings.question7(findings.load(subs, base), tmp_path)
    assert found["lengths_db"][findings.Q7_MODEL] == {"10": -3.0, "40": -30.0}
    assert found["lengths_db"]["ols"] == {"10": -3.01, "40": -149.2} and found["lengths_db"]["ridge"] == {}
    assert found["per_layer_db"] == [-8.0, -30.0]  # at the nominal length, 40
    assert found["nominal_db"][findings.Q7_MODEL] == {"linear/kappa1": -30.0, "linear/kappa10": None,
                                                      "linear/kappa100": None, "linear/noisy": -6.5}
    assert found["nominal_db"]["ols"]["linear/kappa1"] == -149.2
    assert (tmp_path / "q7_gpt2.png").stat().st_size > 1000


def test_check_compares_every_number_but_not_the_inputs() -> None:
    """`--check`'s comparison: floats within a re-run's tolerance, everything else exactly; the input folders and
    the list of models found there (which grows with every baseline added) are not compared."""
    committed = {
        "inputs": {"submissions": "submissions", "baselines": "results/baselines", "models": ["gd", "ridge"]},
        "q1": {"gd": -12.0, "steps": 3, "task": "linear/kappa1", "curve": [-1.0, -2.0]},
    }
    built = json.loads(json.dumps(committed))
    built["inputs"] = {"submissions": "/tmp/s", "baselines": "/tmp/b", "models": ["boosting", "gd", "ridge"]}
    built["q1"]["gd"] = -12.0 + 0.9 * findings.TOL_DB
    assert findings.compare(built, committed) == []
    built["q1"]["gd"] = -12.0 + 1.1 * findings.TOL_DB
    built["q1"]["steps"], built["q1"]["curve"] = 4, [-1.0]
    assert [line.split(":")[0] for line in findings.compare(built, committed)] == ["q1/gd", "q1/steps", "q1/curve"]
    del built["q1"]["task"]
    assert "q1/task: built null, committed \"linear/kappa1\"" in findings.compare(built, committed)


def test_question9_references_are_least_squares_and_ridge_at_d5(tmp_path: Path) -> None:
    """Without a checkpoint the model's numbers are null; the references are, prompt by prompt, NumPy's least squares
    (minimum norm) and ridge at penalty noise^2 d on the prompts' 5 coordinates, drawn as the docstring says."""
    found = findings.question9(tmp_path, None)
    task = get(findings.Q9_TASK)
    sample = task.sample(findings.Q9_PROMPTS, 20, task.train_generator(findings.Q9_SEED), dims=findings.Q9_DIMS)
    x, y, xq = (t.double().numpy() for t in (sample.batch.x, sample.batch.y, sample.batch.x_query))
    assert not x[..., findings.Q9_DIMS:].any() and found["ridge_penalty"] == task.spec.noise**2 * findings.Q9_DIMS
    target = sample.target.double().numpy()
    assert list(found["lengths"]) == ["1", "2", "5", "10", "20"] and found["nominal"] == 10
    for n, row in found["lengths"].items():
        xs, ys = x[:, : int(n), : findings.Q9_DIMS], y[:, : int(n)]
        ols = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(xs, ys)])
        eye = np.eye(findings.Q9_DIMS) * found["ridge_penalty"]
        ridge = np.stack([np.linalg.solve(a.T @ a + eye, a.T @ b) for a, b in zip(xs, ys)])
        for key, w in (("ols_db", ols), ("ridge_db", ridge)):
            pred = np.einsum("bqd,bd->bq", xq[..., : findings.Q9_DIMS], w)
            assert row[key] == pytest.approx(10 * np.log10(((pred - target) ** 2).sum() / (target**2).sum()), abs=0.006)
        assert row["model_db"] is None
    assert found["worst_gap_to_ols_db"] is None and found["within_gap"] is None
    assert (tmp_path / "q9_gpt2_d5.png").stat().st_size > 1000
