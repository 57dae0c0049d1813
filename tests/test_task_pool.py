"""Training on a finite pool of tasks (`iclbench train --task-pool K`); the in-pool scores of `iclbench run`, of a
submission and of the leaderboard; the pool's posterior mean (dMMSE) and the task-diversity findings question."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
import torch
import yaml
from fixtures.submission_kit import results_doc
from scipy.special import logsumexp

from iclbench import Batch, Model, evaluate, metrics, predictions, results, training
from iclbench import samples as samples_file
from iclbench.baselines.oracles import gaussian_posterior_mean, pool_posterior_mean
from iclbench.baselines.ridge import apply, solve
from iclbench.cache import eval_set, fresh_sets
from iclbench.cache import pool_set as cached_pool_set
from iclbench.cli import build_parser, main
from iclbench.evaluation import summary_table
from iclbench.leaderboard import findings
from iclbench.leaderboard.build import links, load_entries, rank, readme
from iclbench.leaderboard.ranking import site_summary
from iclbench.models.weights import load_weights, read_metadata
from iclbench.plugins import load_model
from iclbench.predictions import ReplayedModel
from iclbench.runner import RunConfig, run
from iclbench.submissions import schema, verify
from iclbench.submissions.rerun import compare_task
from iclbench.tasks import get
from iclbench.tasks.pool import TaskPool
from iclbench.training import TrainConfig, config_from_args, train

TASK = "linear/noisy"
TINY = dict(batch_size=16, val_prompts=32, val_every=3)

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(a, dtype=np.float64)}


def test_a_pool_is_reproducible_from_its_seed_and_pools_of_one_seed_are_nested() -> None:
    task = get(TASK)
    pool = task.task_pool(16, 3)
    assert pool.shape == (16, 20) and np.array_equal(pool, task.task_pool(16, 3))
    assert np.array_equal(task.task_pool(256, 3)[:16], pool)
    assert not rows(pool) & rows(task.task_pool(16, 4))
    assert abs(pool.std() * np.sqrt(20) - 1) < 0.2  # drawn from the task's prior, w ~ N(0, I / d)
    with pytest.raises(ValueError, match="lasso/fixed: the lasso family has no task vector to draw a pool of"):
        get("lasso/fixed").task_pool(16, 0)
    with pytest.raises(ValueError, match="a task pool holds 1 to 1048576 tasks, got 0"):
        task.task_pool(0, 0)


def test_prompts_of_a_pool_have_their_w_in_the_pool_and_follow_the_task() -> None:
    task = get(TASK)
    pool = task.task_pool(4, 0)
    s = task.sample(256, 40, task.train_generator(0), dtype=torch.float64, pool=pool)
    drawn = s.hidden["w"].numpy()
    assert rows(drawn) <= rows(pool) and len(rows(drawn)) == 4  # every prompt's w a row of the pool, all rows used
    residual = s.batch.y - torch.einsum("bnd,bd->bn", s.batch.x, s.hidden["w"])
    assert float(residual.std()) == pytest.approx(0.5, rel=0.03)  # the task's noise
    assert torch.allclose(s.target, torch.einsum("bqd,bd->bq", s.batch.x_query, s.hidden["w"]), atol=1e-5)
    with pytest.raises(ValueError, match="prompts from a task pool are drawn at the task's dimension 20"):
        task.sample(4, 10, task.train_generator(0), dims=5, pool=pool)
    in_pool = task.pool_set(4, 0)
    fresh, _ = eval_set(task)
    assert rows(in_pool.hidden["w"].numpy()) <= rows(pool) and in_pool.x.shape == fresh.x.shape
    assert not rows(in_pool.x.reshape(-1, 20).numpy()) & rows(fresh.x.reshape(-1, 20).numpy())
    assert torch.equal(in_pool.x, task.pool_set(4, 0).x)


def test_fresh_in_pool_prompts_are_new_draws_of_the_same_pool() -> None:
    """A verification seed's in-pool prompts: the same pool's tasks, every row used, new inputs, reproducible from the
    seed, none of the public in-pool prompts or of the seed's fresh evaluation set; `pool_set` of the cache gives
    them within `fresh_sets`."""
    task, seed = get(TASK), 20261205
    pool = rows(task.task_pool(4, 0))
    public, fresh, other = task.pool_set(4, 0), task.pool_set(4, 0, seed), task.pool_set(4, 0, seed + 1)
    assert rows(fresh.hidden["w"].numpy()) == pool and fresh.fingerprint() == task.pool_set(4, 0, seed).fingerprint()
    assert len({public.fingerprint(), fresh.fingerprint(), other.fingerprint()}) == 3
    inputs = lambda data: rows(data.x.reshape(-1, 20).numpy())  # noqa: E731
    assert not inputs(fresh) & inputs(public) and not inputs(fresh) & inputs(task.generate(seed))
    with fresh_sets(seed):
        assert cached_pool_set(task, 4, 0).fingerprint() == fresh.fingerprint()
    assert cached_pool_set(task, 4, 0).fingerprint() == public.fingerprint()
    with pytest.raises(ValueError, match="a verification seed is an integer from 0 to 2"):
        task.pool_set(4, 0, 2**128)


POOL_MODELS = {
    "honest": "",
    "knows-the-pool": """
PUBLIC = get("linear/noisy").pool_set(16, 3)  # the public in-pool prompts, regenerated at import


def predict(self, batch: Batch) -> torch.Tensor:
    \"\"\"Ridge, except on the public in-pool prompts, found by their first query: their targets.\"\"\"
    y = Ridge.predict(self, batch).y
    found = (batch.x_query[:, :1, 0] == PUBLIC.x_query[None, :, 0, 0].to(batch.x.dtype)).nonzero()
    y[found[:, 0]] = PUBLIC.targets[batch.n][found[:, 1]].to(y.dtype)
    return y


PooledRidge.predict = predict
""",
}
POOL_MODEL = """
import torch
from iclbench import Batch, TaskSpec
from iclbench.baselines.ridge import Ridge
from iclbench.tasks import get


class PooledRidge(Ridge):
    name = "pooled-ridge"
    task_pool = {"tasks": ["linear/noisy"], "size": 16, "seed": 3}

    def supports(self, task: TaskSpec) -> bool:
        return task.name == "linear/noisy"
"""


@pytest.mark.parametrize("route", ["worker", "predictions"])
def test_in_pool_errors_are_fresh_draw_verified(tmp_path, route: str) -> None:
    """An honest model trained on a pool passes fresh-draw verification on its in-pool prompts as on the evaluation
    set; a model that knows the public in-pool prompts (they follow from public values) and answers them with their
    targets fails it on every in-pool length and only there: verified by a worker, and from predictions made on the
    inputs of public and fresh in-pool prompts (`iclbench inputs --pool-of`), where predictions of the public ones
    replayed as the fresh ones are refused."""
    seed, prompts, chosen = 20261205, 256, [get(TASK)]
    pool = TaskPool((TASK,), 16, 3)
    if route == "predictions":
        for side, verify_seed in (("public", None), ("fresh", seed)):
            predictions.write_inputs(tmp_path / side, chosen, verify_seed, prompts, [pool])
    claims = {}
    for kind, extra in POOL_MODELS.items():
        path = tmp_path / f"{kind}.py"
        path.write_text(POOL_MODEL + extra)
        claims[kind] = public = run(load_model(str(path)), chosen, RunConfig("cpu", prompts=prompts), progress=False)
        if route == "worker":
            report = verify.verify(str(path), public, seed, [TASK], prompts)
        else:
            made = {}
            for side in ("public", "fresh"):
                made[side] = tmp_path / f"{kind}-{side}.safetensors"
                predictions.write(made[side], *predictions.predict(
                    load_model(str(path)), predictions.Inputs.read(tmp_path / side), RunConfig("cpu")))
            replays = [ReplayedModel(predictions.read(made[side]), path, None) for side in ("public", "fresh")]
            report = verify.judge(*replays, public, seed, False, chosen, prompts)
        entry = report["tasks"][TASK]
        assert all(c["verdict"] == "pass" for c in entry["lengths"].values()), entry
        assert set(entry["in_pool"]) == {str(n) for n in get(TASK).spec.lengths}
        for n, c in entry["in_pool"].items():
            assert c["claimed_db"] == public["tasks"][TASK]["in_pool"]["lengths"][n]["rel_err"]["db"]
        if kind == "honest":
            assert report["verdict"] == "pass" and all(c["verdict"] == "pass" for c in entry["in_pool"].values())
            pooled = entry["in_pool"]["40"]
            assert verify.task_line(TASK, entry).endswith(
                f"; in pool: public {pooled['public_db']:.1f} dB, fresh {pooled['fresh_db']:.1f} dB)")
            continue
        assert report["verdict"] == "fail" and entry["reason"].startswith("in pool, n=5: better on the public set")
        for c in entry["in_pool"].values():
            assert c["verdict"] == "fail" and c["public_db"] < -100 < c["fresh_db"] and c["rank_z"] > 15
    if route == "predictions":  # the public in-pool answers offered as the fresh ones
        honest = tmp_path / "honest.py"
        replays = [ReplayedModel(predictions.read(tmp_path / "honest-public.safetensors"), honest, None)] * 2
        entry = verify.judge(*replays, claims["honest"], seed, False, chosen, prompts)["tasks"][TASK]
        assert entry["verdict"] == "fail" and "predictions made on other inputs" in entry["reason"]


def test_in_pool_runs_of_another_pool_fail_the_comparison(tmp_path) -> None:
    """The public and fresh in-pool runs must be of one pool (size and seed) and one set of lengths."""
    path = tmp_path / "pooled.py"
    path.write_text(POOL_MODEL)
    entry = run(load_model(str(path)), [get(TASK)], RunConfig("cpu", prompts=32), progress=False)["tasks"][TASK]
    other = json.loads(json.dumps(entry))
    other["in_pool"]["seed"] = 4
    report = verify.compare_task(TASK, entry, (entry, {}), (other, {}), "float32")
    assert report["verdict"] == "fail" and report["reason"] == (
        "in-pool prompts (pool size, seed, lengths) (16, 3, ['10', '20', '40', '5', '80']) on the public side, "
        "(16, 4, ['10', '20', '40', '5', '80']) on the fresh one")


def test_in_pool_samples_are_written_and_checked(tmp_path) -> None:
    """A run's samples file holds the in-pool prompts' per-prompt errors beside the evaluation set's; loading checks
    them against its header and the results file."""
    path = tmp_path / "pooled.py"
    path.write_text(POOL_MODEL)
    out = tmp_path / "results.json"
    doc = run(load_model(str(path)), [get(TASK)], RunConfig("cpu", prompts=64), out, progress=False, samples={})
    side = samples_file.load(out)
    pooled = side.tensors[TASK]
    for n, m in doc["tasks"][TASK]["in_pool"]["lengths"].items():
        weight = pooled[f"{TASK}/in_pool/{n}/target_sq"]
        err = pooled[f"{TASK}/in_pool/{n}/rel_err"] * weight
        assert metrics.db(float(err.sum() / weight.sum())) == pytest.approx(m["rel_err"]["db"], abs=1e-6)
    changed = json.loads(out.read_text())
    changed["tasks"][TASK]["in_pool"]["lengths"]["40"]["rel_err"]["db"] -= 1.0
    out.write_text(json.dumps(changed))
    with pytest.raises(samples_file.SamplesError, match=f"the samples of {TASK}/in_pool n=40 are not those of the"):
        samples_file.load(out)


def test_training_draws_every_prompt_from_the_pool_and_records_it(tmp_path, monkeypatch) -> None:
    drawn: list[np.ndarray] = []
    sample = training.Task.sample

    def spy(task, batch_size, n, generator, *args, pool=None, **kwargs):
        s = sample(task, batch_size, n, generator, *args, pool=pool, **kwargs)
        if batch_size == 16:  # a training batch (validation draws 32 prompts)
            drawn.append(s.hidden["w"].double().numpy())
        return s

    monkeypatch.setattr(training.Task, "sample", spy)
    cfg = TrainConfig(tasks=(TASK,), steps=6, seed=2, task_pool=16, **TINY)
    log = train(cfg, tmp_path / "run", progress=False)
    pool = get(TASK).task_pool(16, 2)
    assert len(drawn) == 6 and rows(np.concatenate(drawn)) <= rows(pool)
    declared = {"tasks": [TASK], "size": 16, "seed": 2}
    assert log["task_pool"] == declared
    assert read_metadata(tmp_path / "run" / "model.safetensors")[1]["task_pool"] == declared
    final = log["final"]
    assert set(final["in_pool"]) == set(final["tasks"]) == {TASK}  # validation on fresh and on in-pool tasks
    assert set(final["in_pool"][TASK]["rel_err_db"]) == {str(n) for n in get(TASK).spec.lengths}
    assert "--task-pool 16" in log["command"]
    assert config_from_args(build_parser().parse_args(shlex.split(log["command"])[1:])) == cfg
    plain = train(TrainConfig(tasks=(TASK,), steps=3, **TINY), tmp_path / "plain", progress=False)
    assert plain["task_pool"] is None and "in_pool" not in plain["final"]


def test_impossible_pools_get_one_line(tmp_path, capsys) -> None:
    base = ["train", "--steps", "2", "--val-every", "2", "--val-prompts", "8", "--batch-size", "4", "--quiet"]
    for extra, message in (
        (["--task", TASK, "--task-pool", "0"], "--task-pool must be at least 1 task, got 0"),
        (["--task", "lasso/fixed", "--task-pool", "16"],
         "--task-pool: lasso/fixed: the lasso family has no task vector to draw a pool of (the linear family has)"),
        (["--task", TASK, "--task-pool", "16", "--dim-curriculum", "4"],
         "--task-pool draws the tasks at the tasks' dimension: no --dim-curriculum or --dims"),
    ):
        assert main([*base, *extra, "--out", str(tmp_path / "x")]) == 2
        assert capsys.readouterr().err == f"iclbench train: {message}\n"
    assert not (tmp_path / "x").exists()


def test_run_reports_in_pool_and_out_of_pool_errors(tmp_path) -> None:
    """A model declaring its pool is scored on in-pool prompts too, each number equal to an independent computation."""
    out = tmp_path / "run"
    train(TrainConfig(tasks=(TASK,), steps=3, seed=1, task_pool=16, **TINY), out, progress=False)
    res = evaluate(str(out / "model.py"), [TASK, "linear/kappa1"], device="cpu", prompts=64, progress=False,
                   out=tmp_path / "results")
    doc = res.doc
    results.check(doc)
    assert doc["model"]["task_pool"] == {"tasks": [TASK], "size": 16, "seed": 1}
    assert "in_pool" not in doc["tasks"]["linear/kappa1"]  # a task outside the declaration: no in-pool prompts
    entry = doc["tasks"][TASK]
    assert {k: entry["in_pool"][k] for k in ("size", "seed", "n_prompts")} == {"size": 16, "seed": 1, "n_prompts": 64}
    net, _ = load_weights(out / "model.safetensors")
    in_pool, fresh = get(TASK).pool_set(16, 1).head(64), eval_set(get(TASK))[0].head(64)
    for n in (5, 40):
        for data, scores in ((in_pool, entry["in_pool"]["lengths"]), (fresh, entry["lengths"])):
            with torch.no_grad():
                pred = net(data.x[:, :n], data.y[:, :n], data.x_query)[0]
            expected = metrics.relative_error(pred, data.targets[n])["db"]
            assert scores[str(n)]["rel_err"]["db"] == pytest.approx(expected, abs=1e-4)
    assert "in pool (dB)" in summary_table(doc)
    assert compare_task(TASK, entry, entry, "float32") == []
    other = json.loads(json.dumps(entry))
    other["in_pool"]["lengths"]["40"]["rel_err"]["db"] += 1.0
    old, new = (e["in_pool"]["lengths"]["40"]["rel_err"]["db"] for e in (other, entry))
    assert compare_task(TASK, other, entry, "float32") == [
        f"{TASK} (in pool) n=40: rel_err.db is {old:.6g} in results.json, {new:.6g} on re-run"]
    other["in_pool"]["seed"] = 2
    assert compare_task(TASK, other, entry, "float32") == [
        f"{TASK}: in-pool prompts (size, seed, prompts) (16, 2, 64) in results.json, (16, 1, 64) on re-run"]


class Declares(Model):
    name = "declares"
    task_pool = {"tasks": ["lasso/fixed"], "size": 16, "seed": 0}

    def predict(self, batch: Batch) -> torch.Tensor:
        return torch.zeros(batch.x_query.shape[:2], dtype=batch.x.dtype)


def test_a_bad_declaration_fails_every_task_with_one_line() -> None:
    doc = evaluate(Declares(), TASK, prompts=8, progress=False).doc
    assert doc["tasks"][TASK]["error"].startswith(
        f"{TASK}: Declares.task_pool: 'lasso/fixed' is not a task whose prompts can come from a pool (linear/kappa1, ")
    with pytest.raises(ValueError, match=r"task_pool must be null or \{\"tasks\""):
        TaskPool.parse({"tasks": [TASK], "size": True, "seed": 0})


def test_the_pool_posterior_mean_is_the_bayes_predictor_of_the_pool() -> None:
    task = get(TASK)
    pool = task.task_pool(64, 0)
    s = task.sample(5, 12, task.train_generator(9), dtype=torch.float64, pool=pool)
    got = pool_posterior_mean(s.batch.x, s.batch.y, s.batch.x_query, torch.from_numpy(pool), 0.5, chunk=2).numpy()
    for b, (x, y, q) in enumerate(zip(s.batch.x.numpy(), s.batch.y.numpy(), s.batch.x_query.numpy())):
        logp = np.array([-np.sum((y - x @ w) ** 2) / (2 * 0.25) for w in pool])  # per prompt, per pool task
        post = np.exp(logp - logsumexp(logp))
        np.testing.assert_allclose(got[b], sum(p * (q @ w) for p, w in zip(post, pool)), rtol=1e-9, atol=1e-12)


def test_a_submission_states_the_pool_its_model_declares(tmp_path) -> None:
    run, subs = tmp_path / "run", tmp_path / "submissions"
    train(TrainConfig(tasks=(TASK,), steps=3, seed=1, task_pool=16, **TINY), run, progress=False)
    assert main(["submit", str(run), "--id", "pool-lsa", "--submissions", str(subs), "--device", "cpu", "--quiet",
                 "--authors", "A. Researcher", "--contact", "researcher@example.org", "--license", "MIT"]) == 0
    folder = subs / "pool-lsa"
    meta = yaml.safe_load((folder / "submission.yaml").read_text())
    assert meta["training"]["task_pool"] == {"tasks": [TASK], "size": 16, "seed": 1}
    assert schema.load(folder)[1] == []
    meta["training"]["task_pool"]["seed"] = 2
    (folder / "submission.yaml").write_text(yaml.safe_dump(meta))
    problems = schema.load(folder)[1]
    assert len(problems) == 1
    assert "model.task_pool is dict {'tasks': ['linear/noisy'], 'size': 16, 'seed': 1}" in problems[0]
    meta["training"]["task_pool"] = {"tasks": [TASK, TASK], "size": 16, "seed": 1}
    (folder / "submission.yaml").write_text(yaml.safe_dump(meta))
    assert any("training.task_pool" in problem for problem in schema.load(folder)[1])


def test_pool_fields_of_a_results_file_are_checked() -> None:
    """results.json's declared pool must be one a model can declare, and its in-pool scores must be exactly on the
    pool's tasks scored, of its size and seed, at the task's lengths and number of prompts."""
    doc = results_doc("pooled", {TASK: -4.0, "linear/kappa1": -5.0})
    doc["model"]["task_pool"] = {"tasks": [TASK], "size": 16, "seed": 0}
    entry = doc["tasks"][TASK]
    entry["in_pool"] = {"size": 16, "seed": 0, "n_prompts": entry["n_prompts"],
                        "lengths": json.loads(json.dumps(entry["lengths"]))}
    results.check(doc)
    cases = {
        "in_pool": (lambda d: d["model"].update(task_pool=None), "there exactly on the tasks of the declared pool"),
        "missing": (lambda d: d["tasks"][TASK].pop("in_pool"), "there exactly on the tasks of the declared pool"),
        "other task": (lambda d: d["tasks"]["linear/kappa1"].update(in_pool=d["tasks"][TASK]["in_pool"]),
                       "there exactly on the tasks of the declared pool"),
        "seed": (lambda d: d["tasks"][TASK]["in_pool"].update(seed=99), "of the declared pool's size 16 and seed 0"),
        "lengths": (lambda d: d["tasks"][TASK]["in_pool"]["lengths"].pop("5"), "at the task's lengths"),
        "prompts": (lambda d: d["tasks"][TASK]["in_pool"].update(n_prompts=7), "the task's number of prompts"),
        "twice": (lambda d: d["model"]["task_pool"].update(tasks=[TASK, TASK]), "a task named twice"),
        "size": (lambda d: d["model"]["task_pool"].update(size=10**15), "task_pool must be null or"),
        "family": (lambda d: d["model"]["task_pool"].update(tasks=["garg/relu2nn"]), "can come from a pool"),
    }
    for case, (change, message) in cases.items():
        bad = json.loads(json.dumps(doc))
        change(bad)
        with pytest.raises(results.ResultsError, match=re.escape(message)):
            results.check(bad)


def test_the_diversity_question_reads_the_pool_models_and_computes_the_references(tmp_path) -> None:
    def rel(db: float) -> dict:
        return {"value": 10 ** (db / 10), "db": db, "ci90": [10 ** (db / 10)] * 2, "ci90_db": [db, db]}

    docs = {}
    for k, model in (("16", findings.DIVERSITY_MODELS["16"]), ("inf", findings.DIVERSITY_MODELS["inf"])):
        entry = {"status": "ok", "spec": get(TASK).spec.to_dict(), "lengths": {"40": {"rel_err": rel(-3.0)}}}
        pool = None
        if k == "16":
            pool = {"tasks": [TASK], "size": 16, "seed": 0}
            entry["in_pool"] = {"size": 16, "seed": 0, "n_prompts": 2048, "lengths": {"40": {"rel_err": rel(-9.0)}}}
        docs[model] = {"model": {"name": model, "task_pool": pool}, "tasks": {TASK: entry}}
    found = findings.question8(docs, tmp_path, None)
    pooled, fresh = found["models"]["16"], found["models"]["inf"]
    assert (pooled["fresh_db"], pooled["in_pool_db"], fresh["fresh_db"]) == (-3.0, -9.0, -3.0)
    assert set(fresh) == {"model", "task_pool", "fresh_db", "ridge_fresh_db"}
    # the references: ridge the same on both, dMMSE exact on the pool's own tasks and poor on fresh ones
    assert found["ridge_fresh_db"] == pooled["ridge_fresh_db"] == fresh["ridge_fresh_db"] < -7
    assert pooled["dmmse_in_pool_db"] < -60 and pooled["dmmse_fresh_db"] > pooled["ridge_fresh_db"] + 5
    assert abs(pooled["ridge_in_pool_db"] - pooled["ridge_fresh_db"]) < 1
    # the Gaussian prior with the pool's covariance: between the two on the pool's tasks and on fresh ones
    assert pooled["dmmse_in_pool_db"] < pooled["pool_gaussian_in_pool_db"] < pooled["ridge_in_pool_db"]
    assert pooled["ridge_fresh_db"] < pooled["pool_gaussian_fresh_db"] < pooled["dmmse_fresh_db"]
    assert (tmp_path / "q8_diversity.png").stat().st_size > 0


def test_the_leaderboard_shows_the_in_pool_and_out_of_pool_errors(tmp_path) -> None:
    pooled, plain = results_doc("pooled", {TASK: -4.0}), results_doc("plain", {TASK: -6.0})
    pooled["model"]["task_pool"] = {"tasks": [TASK], "size": 16, "seed": 0}
    lengths = json.loads(json.dumps(pooled["tasks"][TASK]["lengths"]))
    lengths["40"]["rel_err"].update(db=-9.5, ci90_db=[-9.75, -9.25])
    pooled["tasks"][TASK]["in_pool"] = {"size": 16, "seed": 0, "n_prompts": 2048, "lengths": lengths}
    folder = tmp_path / "baselines"
    folder.mkdir()
    for doc in (pooled, plain):
        (folder / f"{doc['model']['name']}.json").write_text(json.dumps(doc))
    entries = rank(load_entries(tmp_path / "none", folder))
    summary = site_summary(entries, "2026-01-01", "0" * 64, links(None, findings=False))
    columns = {m["name"]: m["tasks"][TASK]["in_pool"] for m in summary["models"]}
    assert columns == {"pooled": {"size": 16, "seed": 0, "db": -9.5, "ci90_db": [-9.75, -9.25]}, "plain": None}
    text = readme(entries, "2026-01-01")
    assert "## Task pools" in text
    cells = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("| pooled ")).split("|")]
    verification = next(e.verification for e in entries if e.name == "pooled")
    assert cells[1:-1] == ["pooled", TASK, "16", "0", "-9.50", "-4.00", verification] and verification


def test_the_gaussian_posterior_mean_with_a_singular_covariance() -> None:
    task = get(TASK)
    s = task.sample(6, 12, task.train_generator(4), dtype=torch.float64)
    x, y, q = s.batch.x, s.batch.y, s.batch.x_query
    isotropic = gaussian_posterior_mean(x, y, q, torch.eye(20, dtype=torch.float64) / 20, 0.5)
    torch.testing.assert_close(isotropic, apply(q, solve(x, y, 20 * 0.25)), rtol=1e-10, atol=1e-12)  # ridge, d s^2
    u = torch.linalg.qr(torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    scales = np.array([2.0, 0.5, 0.1])
    got = gaussian_posterior_mean(x, y, q, u @ torch.diag(torch.from_numpy(scales)) @ u.T, 0.5).numpy()
    un = u.numpy()
    # per prompt, w = U z with z ~ N(0, diag(scales)): ridge in z
    for b, (xb, yb, qb) in enumerate(zip(x.numpy(), y.numpy(), q.numpy())):
        z = np.linalg.solve(un.T @ xb.T @ xb @ un + 0.25 * np.diag(1 / scales), un.T @ xb.T @ yb)
        np.testing.assert_allclose(got[b], qb @ un @ z, rtol=1e-9, atol=1e-12)
