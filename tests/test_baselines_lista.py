"""LISTA, LISTA-CP and ALISTA: layer code against NumPy ISTA, ALISTA's weight against a SciPy
solve, the shared-matrix path against the per-prompt one, the trainer's two schedules, the committed
checkpoints against their training log, and the benchmark's claims (LISTA-CP beats ISTA on the
training matrix, fails on random matrices, skips other lengths)."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, replace

import numpy as np
import pytest
import scipy.linalg
import torch

from iclbench import Batch, tasks
from iclbench.baselines import lista
from iclbench.baselines.lista import (
    ALISTA, LAYERS, LISTA, LISTACP, ALISTANet, LISTACPNet, LISTANet, alista_weight, load_net,
)
from iclbench.baselines.train_lista import (
    FINAL, STAGES, TaskCodes, TrainConfig, decay_gradients, main, mean_of_db, save_net, stage_groups, train,
    validation_set,
)
from iclbench.plugins import load_model, sha256_file
from iclbench.runner import RunConfig, run

MODELS = {"lista": LISTA, "lista-cp": LISTACP, "alista": ALISTA}
LOG = json.loads((lista.CHECKPOINTS / "training_log.json").read_text())
FIXED = tasks.get("lasso/fixed")


def numpy_ista(x: np.ndarray, y: np.ndarray, lam: float, steps: int, lip: np.ndarray | None = None) -> np.ndarray:
    """Iterates (P, steps, d) of b <- soft(b + X^T (y - X b) / L, lam / L) from 0, one prompt at a time."""
    out = np.zeros((x.shape[0], steps, x.shape[2]))
    for p in range(x.shape[0]):
        big_l = np.linalg.norm(x[p], 2) ** 2 if lip is None else lip[p]
        b = np.zeros(x.shape[2])
        for k in range(steps):
            v = b + x[p].T @ (y[p] - x[p] @ b) / big_l
            b = np.sign(v) * np.maximum(np.abs(v) - lam / big_l, 0.0)
            out[p, k] = b
    return out


def nmse_db(b: np.ndarray, beta: np.ndarray) -> float:
    return 10 * math.log10(((b - beta) ** 2).sum() / (beta**2).sum())


def test_checkpoints_are_plain_safetensors() -> None:
    for kind in MODELS:
        path = lista.checkpoint_path(kind)
        raw = path.read_bytes()
        (size,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + size])
        meta = header.pop("__metadata__")
        assert meta["kind"] == kind and (meta["n"], meta["d"], meta["layers"]) == ("10", "20", "16")
        assert meta["seed"] == str(LOG["config"]["train_seed"])
        end = max(t["data_offsets"][1] for t in header.values())
        assert len(raw) == 8 + size + end, "bytes beyond the tensors' data"
        assert {t["dtype"] for t in header.values()} == {"F32"}
        assert b"\x80\x02" not in raw[:2] and not raw.startswith(b"PK"), "pickle or zip (torch.save) content"
        assert LOG["models"][kind]["sha256"] == sha256_file(path)


@pytest.mark.parametrize("kind", list(MODELS))
def test_checkpoints_reproduce_logged_validation_nmse(kind: str) -> None:
    cfg = LOG["config"]
    s = FIXED.sample(cfg["val_prompts"], cfg["n"], FIXED.train_generator(cfg["val_seed"]), n_queries=1)
    model = MODELS[kind]()
    model.setup(torch.device("cpu"))
    assert model.checkpoint == str(lista.checkpoint_path(kind))
    pred = model.predict(s.batch)
    got = nmse_db(pred.w.double().numpy(), s.hidden["w"].double().numpy())
    assert got == pytest.approx(LOG["models"][kind]["val_nmse_db"], abs=1e-3)
    assert LOG["models"][kind]["val_nmse_db"] < -9.0  # far below ISTA's 16-step -3 dB (see the ISTA test)


def test_untrained_lista_and_lista_cp_are_ista() -> None:
    x0 = FIXED.public["X0"][:10].double()
    s = FIXED.sample(64, 10, FIXED.train_generator(123), n_queries=1)
    x, y = s.batch.x.double(), s.batch.y.double()
    lam = 0.3
    lip = np.full(64, 1.001 * np.linalg.norm(x0.numpy(), 2) ** 2)
    ref = numpy_ista(x.numpy(), y.numpy(), lam, 16, lip)
    for net in (LISTANet(10, 20).double().init_from(x0, lam), LISTACPNet(10, 20).double().init_from(x0, lam)):
        with torch.no_grad():
            codes = net(x, y)
        np.testing.assert_allclose(codes.numpy(), ref, rtol=0, atol=1e-12)


def test_alista_weight_is_the_constrained_optimum() -> None:
    rng = np.random.default_rng(7)
    for n, d in ((6, 12), (10, 20), (9, 9), (15, 8)):
        xs = rng.standard_normal((3, n, d))
        w = alista_weight(torch.from_numpy(xs)).numpy()
        for x, wp in zip(xs, w):
            np.testing.assert_allclose(np.diag(wp.T @ x), 1.0, atol=1e-9)
            for i in range(d):
                others = np.delete(x, i, axis=1)
                # w = x_i / |x_i|^2 + N z over the null space N of x_i^T; least squares in z
                base = x[:, i] / (x[:, i] @ x[:, i])
                null = scipy.linalg.null_space(x[:, i][None, :])
                z = scipy.linalg.lstsq(others.T @ null, -others.T @ base)[0]
                ref = base + null @ z
                ours_obj, ref_obj = np.sum((others.T @ wp[:, i]) ** 2), np.sum((others.T @ ref) ** 2)
                assert ours_obj <= ref_obj + 1e-9 * (1 + ref_obj)
                if n < d:  # the optimum is unique
                    np.testing.assert_allclose(wp[:, i], ref, rtol=1e-7, atol=1e-9)


def test_alista_weight_is_what_alista_s_own_algorithm_converges_to() -> None:
    """Liu et al. (2019, appendix E.1, Algorithm 1) compute the weight by projected gradient descent from W = D
    (unit-norm columns): W <- W - eta D (D^T W - I), then each column w_i moved along d_i until d_i^T w_i = 1.
    Its limit is the package's closed form."""
    rng = np.random.default_rng(11)
    d = rng.standard_normal((24, 48))
    d /= np.linalg.norm(d, axis=0)
    w = d.copy()
    for _ in range(3000):
        w = w - 0.1 * d @ (d.T @ w - np.eye(48))
        w = w + (1 - np.einsum("ij,ij->j", d, w)) * d
    np.testing.assert_allclose(alista_weight(torch.from_numpy(d)).numpy(), w, rtol=0, atol=1e-12)


def test_support_selection_against_a_loop() -> None:
    rng = np.random.default_rng(3)
    v = rng.standard_normal((50, 20))
    th = 0.4
    for count in (1, 2, 3):
        got = lista.soft_ss(torch.from_numpy(v), torch.tensor(th, dtype=torch.float64), count).numpy()
        for row, out in zip(v, got):
            top = set(np.argsort(-np.abs(row))[:count])
            for j, val in enumerate(row):
                passes = j in top and abs(val) > th
                expected = val if passes else np.sign(val) * max(abs(val) - th, 0.0)
                assert out[j] == pytest.approx(expected, abs=1e-15)
    # p_k = min(1.2 (k + 1), 13) percent of d = 20 entries, rounded up
    assert [lista.ss_count(k, 20) for k in range(16)] == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]


@pytest.fixture(scope="module")
def lasso_runs() -> dict[str, dict]:
    cfg = RunConfig(device="cpu", prompts=512)
    lasso = [tasks.get(n) for n in ("lasso/fixed", "lasso/random")]
    return {name: run(load_model(name), lasso, cfg, progress=False)["tasks"] for name in MODELS}


def test_lista_cp_beats_ista_on_the_training_matrix_and_fails_elsewhere(lasso_runs: dict[str, dict]) -> None:
    from iclbench.cache import eval_set

    data, _ = eval_set(FIXED)
    x, y = data.x[:512, :10].double().numpy(), data.y[:512, :10].double().numpy()
    beta = data.hidden["w"][:512].double().numpy()
    target = data.targets[10][:512].double().numpy()
    xq = data.x_query[:512].double().numpy()
    ista_best = min(
        10 * math.log10(((np.einsum("pqd,pd->pq", xq, b) - target) ** 2).sum() / (target**2).sum())
        for lam in (0.1, 0.3, 1.0, 2.0, 3.0, 5.0)  # the best is interior (lambda = 2 on lasso/fixed)
        for b in [numpy_ista(x, y, lam, 16)[:, -1]]
    )
    fixed = lasso_runs["lista-cp"]["lasso/fixed"]["lengths"]["10"]
    random = lasso_runs["lista-cp"]["lasso/random"]["lengths"]["10"]
    assert fixed["rel_err"]["db"] < ista_best - 6.0
    assert fixed["recovery"]["db"] < nmse_db(numpy_ista(x, y, 0.1, 16)[:, -1], beta) - 6.0
    assert random["rel_err"]["db"] > fixed["rel_err"]["db"] + 10.0
    assert lasso_runs["lista"]["lasso/random"]["lengths"]["10"]["rel_err"]["db"] > 0.0
    # ALISTA recomputes W from each prompt's X: a new matrix costs it little
    alista_fixed = lasso_runs["alista"]["lasso/fixed"]["lengths"]["10"]["rel_err"]["db"]
    assert lasso_runs["alista"]["lasso/random"]["lengths"]["10"]["rel_err"]["db"] < alista_fixed + 3.0
    assert alista_fixed < ista_best - 6.0


def test_other_lengths_are_reported_unsupported(lasso_runs: dict[str, dict]) -> None:
    for name in MODELS:
        for task in ("lasso/fixed", "lasso/random"):
            entry = lasso_runs[name][task]
            assert entry["status"] == "ok"
            assert entry["unsupported_lengths"] == [5, 15, 20, 40]
            assert list(entry["lengths"]) == ["10"]
            assert len(entry["lengths"]["10"]["steps_rel_err_db"]) == 16
    model = LISTACP()
    assert model.supports(FIXED.spec) and not model.supports(tasks.get("linear/kappa1").spec)


def test_alista_fails_at_untrained_lengths() -> None:
    """Why ALISTA is limited to n = 10: its learned steps diverge at n = 5, and at n = d the
    pseudo-inverse of a random square X amplifies the noise past its thresholds."""
    net = load_net(lista.checkpoint_path("alista"))
    for task, n in ((FIXED, 5), (tasks.get("lasso/random"), 20)):
        s = task.sample(256, n, task.train_generator(99), n_queries=1)
        with torch.no_grad():
            b = net(s.batch.x, s.batch.y)[:, -1]
        assert nmse_db(b.double().numpy(), s.hidden["w"].double().numpy()) > 0.0


def test_predict_follows_the_batch_dtype() -> None:
    s = FIXED.sample(5, 10, FIXED.train_generator(4), n_queries=3, dtype=torch.float64)
    model = LISTACP()
    pred = model.predict(s.batch)
    assert pred.y.dtype == torch.float64 and pred.steps.shape == (5, 16, 3) and pred.w.shape == (5, 20)
    torch.testing.assert_close(pred.steps[:, -1], pred.y)
    torch.testing.assert_close(pred.y, torch.einsum("bqd,bd->bq", s.batch.x_query, pred.w))
    b32 = Batch(s.batch.task, s.batch.x.float(), s.batch.y.float(), s.batch.x_query.float())
    torch.testing.assert_close(model.predict(b32).y.double(), pred.y, rtol=1e-4, atol=1e-4)


def test_the_default_schedule_is_the_committed_checkpoints_one() -> None:
    """`python -m iclbench.baselines.train_lista` runs the schedule the committed checkpoints were trained with
    (early stopping), and the log says that each network's last stage, the whole network's fine-tuning, ended by
    it: its validation error had stopped falling, before the cap of steps."""
    cfg = json.loads(json.dumps(asdict(TrainConfig())))
    assert cfg["patience"] is not None and {"n": FIXED.spec.nominal, **cfg} == LOG["config"]
    for kind, record in LOG["models"].items():
        last = record["stages"][-1]
        assert last["stage"] == FINAL and last["steps"] < cfg["final_steps"], kind


@pytest.mark.parametrize("net", [LISTACPNet(10, 20), ALISTANet(10, 20)], ids=["lista-cp", "alista"])
def test_a_shared_matrix_equals_a_copy_per_prompt(net) -> None:
    """One (n, d) matrix for the whole batch gives the codes of the same matrix copied per prompt (B, n, d):
    the same sums in another order, so equal to float64 round-off."""
    x0 = FIXED.public["X0"][:10].double()
    net = net.double().init_from(x0, 0.3)
    s = FIXED.sample(32, 10, FIXED.train_generator(6), n_queries=1, dtype=torch.float64)
    with torch.no_grad():
        per_prompt = net(s.batch.x, s.batch.y)
        torch.testing.assert_close(net(x0, s.batch.y), per_prompt, rtol=1e-12, atol=1e-12)
        if isinstance(net, ALISTANet):
            torch.testing.assert_close(net(x0, s.batch.y, weight=alista_weight(x0)), per_prompt, rtol=1e-12, atol=1e-12)


def test_training_data_come_from_one_fixed_matrix() -> None:
    codes = TaskCodes(FIXED, 10)
    torch.testing.assert_close(codes.matrix, FIXED.public["X0"][:10].float(), rtol=0, atol=0)
    y, beta = codes.draw(4, codes.generator(3))
    s = FIXED.sample(4, 10, FIXED.train_generator(3), n_queries=1)
    torch.testing.assert_close(y, s.batch.y, rtol=0, atol=0)
    torch.testing.assert_close(beta, s.hidden["w"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="mode 'fixed'"):
        TaskCodes(tasks.get("lasso/random"), 10)


def test_with_patience_each_stage_stops_early_and_keeps_its_best_weights() -> None:
    """A stage ends after `patience` validations without improvement (or at its steps) and keeps its best weights:
    the validation error at a layer never rises from one stage to the next, and the network returned scores the
    last stage's best."""
    cfg = TrainConfig(layers=2, stage_steps=(30, 30, 30), final_steps=30, patience=2, val_every=5, val_prompts=64,
                      batch_size=16, stage_lrs=(5e-2, 1e-2, 1e-3))
    net, record = train("lista-cp", cfg, TaskCodes(FIXED, 10), log=False)
    stages = record["stages"]
    assert [(r["layer"], r["stage"]) for r in stages] == [(k, s) for k in (1, 2) for s in STAGES] + [(2, FINAL)]
    for r in stages:
        assert r["steps"] % cfg.val_every == 0 and cfg.patience * cfg.val_every <= r["steps"] <= 30
    assert any(r["steps"] < 30 for r in stages)  # early stopping happened
    for layer in (1, 2):
        vals = [r["val_nmse_db"] for r in stages if r["layer"] == layer]
        assert vals == sorted(vals, reverse=True)
    assert record["val_nmse_db"] == pytest.approx(stages[-1]["val_nmse_db"], abs=1e-4)
    assert record["steps"] == sum(r["steps"] for r in stages)


def test_open_l2o_nmse_is_the_mean_of_the_per_code_db() -> None:
    rng = np.random.default_rng(4)
    beta = rng.standard_normal((40, 30)) * (rng.random((40, 30)) < 0.2)
    beta[0] = 0.0  # a zero code: only the 1e-10 keeps its ratio finite
    codes = beta + 10.0 ** rng.uniform(-6, 0, (40, 1)) * rng.standard_normal((40, 30))
    ref = np.mean([10 * math.log10((np.mean((c - b) ** 2) + 1e-10) / (np.mean(b**2) + 1e-10))
                   for c, b in zip(codes, beta)])
    assert mean_of_db(torch.from_numpy(codes), torch.from_numpy(beta)) == pytest.approx(ref, rel=1e-12)


def test_open_l2o_starts_where_its_code_does() -> None:
    """Open-L2O's models/*.py: LISTA from ISTA's weights (as the package), LISTA-CP at W_k = A and ALISTA at a step of
    1, both with thresholds lambda / (1.001 ||A||_2^2)."""
    x0 = FIXED.public["X0"][:10].double()
    th = 0.4 / (1.001 * np.linalg.norm(x0.numpy(), 2) ** 2)
    ours, theirs = LISTANet(10, 20).double().init_from(x0, 0.4), LISTANet(10, 20).double().init_open_l2o(x0, 0.4)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    cp = LISTACPNet(10, 20).double().init_open_l2o(x0, 0.4)
    assert all(torch.equal(w, x0) for w in cp.W) and all(float(t.detach()) == pytest.approx(th, rel=1e-12) for t in cp.theta)
    al = ALISTANet(10, 20).double().init_open_l2o(x0, 0.4)
    assert all(float(g.detach()) == 1.0 for g in al.gamma)
    assert all(float(t.detach()) == pytest.approx(th, rel=1e-12) for t in al.theta)


def test_open_l2o_training_is_its_loop() -> None:
    """`open_l2o` against Open-L2O's loop written out: Adam (eps 1e-7) on half the squared error summed over the
    batch; the new layer alone, then every layer with layer j's gradients times 0.3^(k - j). Both run the same
    operations on the same tensors in one process, so the weights are equal bit for bit; they must be, as Adam
    divides a gradient by its own scale: the mean instead of the half sum, or eps 1e-8, moves the weights by 3.5e-8
    or 1.7e-8 of their size here (the decay by nothing: it is tested on its own)."""
    cfg = TrainConfig(layers=2, stage_steps=(3, 2, 2), stage_lrs=(1e-2, 1e-3, 1e-4), final_steps=0, patience=None,
                      val_prompts=16, batch_size=8, init_lambda=0.4, open_l2o=True)
    codes = TaskCodes(FIXED, 10)
    got, record = train("lista-cp", cfg, codes, log=False)
    net = LISTACPNet(10, 20, 2).init_open_l2o(codes.matrix, 0.4)
    gen = codes.generator(cfg.train_seed)
    for k in range(2):
        for stage, (lr, steps) in enumerate(zip(cfg.stage_lrs, cfg.stage_steps)):
            layers = [k] if stage == 0 else range(k + 1)
            opt = torch.optim.Adam([p for j in layers for p in net.stage_params(j)], lr=lr, eps=1e-7)
            for _ in range(steps):
                y, beta = codes.draw(cfg.batch_size, gen)
                loss = 0.5 * ((net(codes.matrix, y, k + 1)[:, -1] - beta) ** 2).sum()
                opt.zero_grad()
                loss.backward()
                for j in layers:
                    for p in net.stage_params(j):
                        p.grad *= 0.3 ** (k - j)
                opt.step()
    for a, b in zip(got.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    vy, vbeta = validation_set(codes, cfg)
    with torch.no_grad():
        layers = got(codes.matrix, vy).unbind(1)
    assert record["val_nmse_db_per_layer"] == [round(mean_of_db(c, vbeta), 4) for c in layers]


def test_open_l2o_decays_the_gradients_of_older_layers_in_fine_tuning() -> None:
    """Open-L2O's `utils.Adam`: the new layer alone (its other variables frozen), then every layer, the gradient of a
    variable created j layers ago times 0.3^j; LISTA's B is layer 0's."""
    net = LISTANet(10, 20, 4)
    new = stage_groups(net, 2, 0, open_l2o=True)
    assert [g["decay"] for g in new] == [1.0] and new[0]["params"] == [net.W[1], net.theta[2]]
    for stage in (1, 2):
        groups = stage_groups(net, 2, stage, open_l2o=True)
        assert [g["decay"] for g in groups] == [0.3**2, 0.3, 1.0]
        assert [g["params"] for g in groups] == [[net.B, net.theta[0]], [net.W[0], net.theta[1]], [net.W[1], net.theta[2]]]
        assert stage_groups(net, 2, stage, open_l2o=False) == [{"params": list(net.parameters()), "decay": 1.0}]


def test_the_decay_multiplies_each_group_s_gradients() -> None:
    net = LISTACPNet(10, 20, 3)
    opt = torch.optim.Adam(stage_groups(net, 2, 1, open_l2o=True))
    for i, param in enumerate(net.parameters()):
        param.grad = torch.full_like(param, float(i + 1))
    decay_gradients(opt)
    for j in range(3):
        for param in net.stage_params(j):
            i = next(i for i, q in enumerate(net.parameters()) if q is param)
            torch.testing.assert_close(param.grad, torch.full_like(param, (i + 1) * 0.3 ** (2 - j)))


@pytest.mark.parametrize("open_l2o", [True, False])
def test_a_stage_keeps_its_last_weights_as_open_l2o_or_its_best(open_l2o: bool) -> None:
    """A stage stopped early returns, with `open_l2o`, the network of its last step (the same steps run without
    early stopping), and otherwise that of its best validation, an earlier one."""
    cfg = TrainConfig(layers=1, stage_steps=(300, 0, 0), stage_lrs=(0.2, 1e-4, 1e-5), final_steps=0, patience=1,
                      val_every=5, val_prompts=64, batch_size=16, open_l2o=open_l2o)
    codes = TaskCodes(FIXED, 10)
    stopped, record = train("alista", cfg, codes, log=False)
    done = record["stages"][0]["steps"]
    assert done < 300  # it stopped early, after a validation without improvement
    ran, _ = train("alista", replace(cfg, stage_steps=(done, 0, 0), patience=None), codes, log=False)
    same = all(torch.equal(a, b) for a, b in zip(stopped.state_dict().values(), ran.state_dict().values()))
    assert same == open_l2o


def test_training_is_deterministic_and_round_trips(tmp_path) -> None:
    cfg = TrainConfig(layers=2, stage_steps=(4, 2, 1), final_steps=2, val_prompts=32, batch_size=16)
    codes = TaskCodes(FIXED, 10)
    runs = [train("alista", cfg, codes, log=False) for _ in range(2)]
    for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b)
    net, record = runs[0]
    assert len(record["val_nmse_db_per_layer"]) == 2 and math.isfinite(record["val_nmse_db"])
    assert [r["steps"] for r in record["stages"]] == [4, 2, 1, 4, 2, 1, 2] and record["steps"] == 16  # no early stop
    path = tmp_path / "alista.safetensors"
    save_net(net, path, cfg, codes)
    again = tmp_path / "again.safetensors"
    save_net(runs[1][0], again, cfg, codes)
    assert path.read_bytes() == again.read_bytes()
    loaded = load_net(path)
    assert isinstance(loaded, ALISTANet) and loaded.meta["seed"] == "0" and loaded.support
    s = FIXED.sample(8, 10, FIXED.train_generator(2), n_queries=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(s.batch.x, s.batch.y), net(s.batch.x, s.batch.y), rtol=0, atol=0)


def test_bad_checkpoints_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train_lista"):
        load_net(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a learned-ISTA checkpoint"):
        load_net(tmp_path / "other.safetensors")


def test_the_command_line_sets_the_schedule_and_refuses_bad_counts(tmp_path) -> None:
    """`--patience 0` runs every stage's steps (no early stopping), as the Python API's `patience=None` does."""
    main(["--models", "alista", "--patience", "0", "--stage-steps", "2", "1", "1", "--final-steps", "0",
          "--out", str(tmp_path)])
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["config"]["patience"] is None and log["config"]["stage_steps"] == [2, 1, 1]
    assert [s["steps"] for s in log["models"]["alista"]["stages"]] == [2, 1, 1] * LAYERS
    for bad in (["--patience", "-1"], ["--val-every", "0"], ["--final-steps", "-3"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--out", str(tmp_path), *bad])
        assert exit_info.value.code == 2
