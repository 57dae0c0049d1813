"""`iclbench train`: loss decrease, bit-identical resume, outputs, CLI, and bad settings."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from iclbench import training
from iclbench.cli import build_parser, main
from iclbench.models.weights import load_weights, read_metadata
from iclbench.tasks import get
from iclbench.training import (TrainConfig, TrainError, Validation, compute_loss, config_from_args, nominal_mean_db,
                               saved_step, select_tasks, train)

TINY = dict(batch_size=16, val_prompts=32, val_every=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_decreases_the_error(tmp_path) -> None:
    cfg = TrainConfig(tasks=("linear/kappa1",), layers=1, steps=60, lr=0.02, n_min=20, n_max=20, batch_size=32,
                      val_prompts=128, val_every=5)
    log = train(cfg, tmp_path / "run", progress=False)
    first, last = log["validations"][0], log["final"]
    assert last["step"] == 60 and len(log["validations"]) == 12
    assert last["val_nominal_db"] < first["val_nominal_db"] - 0.5
    assert last["val_nominal_db"] < -0.5  # better than the zero predictor (0 dB)
    assert last["train_loss"] < first["train_loss"]


def _tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.parametrize("arch", ["lsa", "gpt2", "prox-transformer"])
def test_resume_is_bit_identical(tmp_path, arch: str) -> None:
    cfg = TrainConfig(tasks=("linear",), arch=arch, layers=2, heads=2, width=16 if arch == "gpt2" else None,
                      steps=9, n_min=5, n_max=20, curriculum=6, **TINY)
    whole = train(cfg, tmp_path / "whole", progress=False)
    train(replace(cfg, steps=6), tmp_path / "split", progress=False)
    resumed = train(cfg, tmp_path / "split", resume=True, progress=False)
    for name in ("model.safetensors", "state.safetensors"):
        a, b = _tensors(tmp_path / "whole" / name), _tensors(tmp_path / "split" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed["validations"] == whole["validations"]
    assert resumed["resumed_at"] == [6] and whole["resumed_at"] == []


def test_resume_refuses_other_settings_and_overwrites(tmp_path) -> None:
    cfg = TrainConfig(tasks=("linear/kappa1",), steps=3, **TINY)
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(TrainError, match="already holds a training run"):
        train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(TrainError, match=r"lr: 0.001 -> 0.01"):
        train(replace(cfg, lr=0.01, steps=6), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(TrainError, match="no .* to resume from"):
        train(cfg, tmp_path / "other", resume=True, progress=False)


def test_bad_settings_are_explained() -> None:
    with pytest.raises(TrainError, match="--val-seed must differ"):
        TrainConfig(tasks=("linear/kappa1",), seed=3, val_seed=3)
    with pytest.raises(TrainError, match="--arch lsa has linear attention"):
        TrainConfig(tasks=("kernel/exp",), attention="exp")
    with pytest.raises(TrainError, match="prox-transformer has linear attention and a ReLU MLP: no --norm"):
        TrainConfig(tasks=("lasso/fixed",), arch="prox-transformer", norm=True)
    with pytest.raises(TrainError, match="different d"):
        train(TrainConfig(tasks=("linear/kappa1", "kernel/exp"), steps=1), "unused", progress=False)
    with pytest.raises(TrainError, match="no task matches"):
        train(TrainConfig(tasks=("linear/kappa7",), steps=1), "unused", progress=False)


def test_losses_against_references() -> None:
    task = get("logistic/kappa1")
    sample = task.sample(8, 10, task.train_generator(0))
    steps = torch.randn(8, 3, task.spec.n_queries, generator=torch.Generator().manual_seed(0))
    labels01 = (sample.y_query.unsqueeze(1).expand_as(steps) + 1) / 2
    torch.testing.assert_close(compute_loss(steps, sample, "logistic", True),
                               F.binary_cross_entropy_with_logits(steps, labels01))
    torch.testing.assert_close(compute_loss(steps, sample, "target", False),
                               F.mse_loss(steps[:, -1], sample.target))
    torch.testing.assert_close(compute_loss(steps, sample, "label", True),
                               F.mse_loss(steps, sample.y_query.unsqueeze(1).expand_as(steps)))


@pytest.mark.usefixtures("session_fingerprints")  # the kernel sets are generated in a separate process
def test_cli_train_then_run(tmp_path, capsys) -> None:
    out = tmp_path / "kern"
    args = ["train", "--task", "kernel/linear", "--arch", "linear-transformer", "--attention", "softmax",
            "--layers", "2", "--steps", "4", "--val-every", "2", "--val-prompts", "16", "--batch-size", "8",
            "--seed", "5", "--out", str(out), "--quiet", "--name", "tiny-kernel"]
    assert main(args) == 0
    assert "kernel/linear: validation error (dB)" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "state.safetensors", "log.json", "model.py"}
    log = json.loads((out / "log.json").read_text())
    assert log["command"].startswith("iclbench train --task kernel/linear --arch linear-transformer")
    assert log["seeds"] == {"init": 5, "train_stream": 5, "validation_stream": 1_000_008}
    assert log["final"]["step"] == 4 and log["finished"] is not None
    assert len(log["final"]["tasks"]["kernel/linear"]["steps_rel_err_db"]) == 2
    assert main(["run", "--model", str(out / "model.py"), "--tasks", "kernel", "linear/kappa1", "--prompts", "32",
                 "--device", "cpu", "--out", str(tmp_path / "results"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "results" / "tiny-kernel.json").read_text())
    assert doc["model"]["checkpoint_sha256"] is not None
    assert doc["tasks"]["linear/kappa1"]["status"] == "unsupported"
    entry = doc["tasks"]["kernel/exp"]
    assert entry["status"] == "ok" and len(entry["lengths"]["14"]["steps_rel_err_db"]) == 2
    assert main(["train", "--task", "kernel/linear", "--steps", "0", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_bf16_autocast_trains_on_the_cpu_and_the_switches_are_recorded(tmp_path) -> None:
    cfg = TrainConfig(tasks=("linear/kappa1",), layers=1, steps=60, lr=0.02, n_min=20, n_max=20, batch_size=32,
                      val_prompts=128, val_every=5, precision="bf16", fused=True, patience=50)
    log = train(cfg, tmp_path / "run", progress=False)
    first, last = log["validations"][0], log["validations"][-1]
    assert last["step"] == 60 and last["val_nominal_db"] < first["val_nominal_db"] - 0.5
    assert last["val_nominal_db"] < -0.5
    fp32 = train(replace(cfg, precision="fp32", fused=False, steps=5), tmp_path / "fp32", progress=False)
    assert fp32["validations"][0] != first  # bf16 autocast changed the numbers: it was on
    assert log["config"]["precision"] == "bf16" and log["config"]["fused"] and log["config"]["patience"] == 50
    assert "--precision bf16 --fused --patience 50 --out" in log["command"]
    saved = json.loads((tmp_path / "run" / "log.json").read_text())["config"]
    assert read_metadata(tmp_path / "run" / "model.safetensors")[1]["train_config"] == saved
    args = build_parser().parse_args(shlex.split(log["command"])[1:])
    assert config_from_args(args) == cfg  # the recorded command rebuilds the run


def test_early_stopping_keeps_the_best_weights(tmp_path, capsys) -> None:
    """lr 0.2 overshoots: the validation error falls, then rises; the run stops `patience` validations after its
    best, whose weights model.safetensors keeps."""
    out = tmp_path / "run"
    cfg = TrainConfig(tasks=("linear/kappa1",), layers=1, steps=40, lr=0.2, n_min=20, n_max=20, batch_size=16,
                      val_prompts=32, val_every=2, patience=2)
    log = train(cfg, out, progress=False)
    curve = [v["val_nominal_db"] for v in log["validations"]]
    best = curve.index(min(curve))
    assert 0 < best < len(curve) - 1 and curve[best] < curve[0] - 1  # it improved, then got worse
    assert log["stopped_early"] == log["validations"][-1]["step"] == 2 * (best + 1 + cfg.patience) < cfg.steps
    assert log["final"] == log["validations"][best] and log["finished"] is not None
    assert saved_step(out / "state.safetensors") == log["stopped_early"]
    model, info = load_weights(out / "model.safetensors")
    assert info["steps"] == log["final"]["step"]
    assert nominal_mean_db(Validation(cfg, select_tasks(cfg.tasks), model, torch.device("cpu"))(model)) == curve[best]
    assert train(cfg, out, resume=True, progress=False)["validations"] == log["validations"]  # stopped: no step more
    longer = train(replace(cfg, patience=4), out, resume=True, progress=False)  # more patience: it goes on
    more = [v["val_nominal_db"] for v in longer["validations"]]
    assert len(more) > len(curve) and longer["final"]["val_nominal_db"] == min(more)
    assert load_weights(out / "model.safetensors")[1]["steps"] == longer["final"]["step"]
    assert main(["train", "--task", "linear/kappa1", "--steps", "40", "--lr", "0.2", "--n-min", "20", "--n-max", "20",
                 "--batch-size", "16", "--val-prompts", "32", "--val-every", "2", "--patience", "2", "--out",
                 str(tmp_path / "cli"), "--quiet"]) == 0
    assert f"stopped early at step {log['stopped_early']}: 2 validations without improvement; kept the best, step " \
           f"{log['final']['step']}" in capsys.readouterr().out


@pytest.mark.parametrize("recipe", [{}, {"every_prefix": True, "dim_curriculum": 3}], ids=["plain", "garg"])
def test_compiled_training_follows_the_eager_run(tmp_path, monkeypatch, recipe: dict) -> None:
    """`--compile` on prompts of varying length: one graph for every n (a recompile is an error here; n stays
    apart from the 8 queries, as torch would guard on an n that equals them), with Garg et al.'s recipe too. The
    eager backend runs what dynamo captures without generating code, which takes minutes on a small CPU."""
    cfg = TrainConfig(tasks=("linear/kappa1",), arch="gpt2", layers=1, heads=2, width=8, steps=4, n_min=9, n_max=12,
                      **TINY, **recipe)
    eager = train(cfg, tmp_path / "eager", progress=False)
    torch._dynamo.reset()
    monkeypatch.setattr(training, "compile_model",
                        lambda net, fixed_length: torch.compile(net, backend="eager", dynamic=not fixed_length))
    with torch._dynamo.config.patch(error_on_recompile=True):  # torch's own patch: restored exactly on exit
        compiled = train(replace(cfg, compile=True), tmp_path / "compiled", progress=False)
    schedule = np.random.Generator(np.random.PCG64(cfg.seed))  # the trainer's: a task, then n, at every step
    assert len({[schedule.integers(1), int(schedule.integers(9, 13))][1] for _ in range(cfg.steps)}) > 1
    assert compiled["config"]["compile"] and "--compile" in compiled["command"]
    a, b = _tensors(tmp_path / "eager" / "model.safetensors"), _tensors(tmp_path / "compiled" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert [v["step"] for v in compiled["validations"]] == [v["step"] for v in eager["validations"]]


def _fails(*args, **kwargs):
    raise RuntimeError("no C++ compiler found\nmore detail")


def test_impossible_switches_get_one_line(tmp_path, monkeypatch, capsys) -> None:
    base = ["train", "--task", "linear/kappa1", "--steps", "2", "--val-every", "2", "--val-prompts", "8",
            "--batch-size", "4", "--quiet"]
    assert main([*base, "--patience", "0", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err == "iclbench train: --patience must be at least 1 validation, got 0\n"
    with pytest.raises(TrainError, match="--precision must be one of"):
        TrainConfig(tasks=("linear/kappa1",), precision="fp16")
    monkeypatch.setattr(training, "compile_model", lambda net, fixed_length: torch.compile(net, backend=_fails))
    assert main([*base, "--compile", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iclbench train: --compile: torch.compile failed on this machine (")
    assert err.endswith("(RuntimeError: no C++ compiler found); train without --compile\n") and err.count("\n") == 1
    monkeypatch.setattr(training, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    assert main([*base, "--precision", "bf16", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err == ("iclbench train: --precision bf16: Tesla V100 has no bfloat16 support; "
                                       "use --precision fp32\n")
    assert not (tmp_path / "c").exists()


def test_a_state_from_before_the_switches_resumes(tmp_path) -> None:
    """A state saved without the settings added since (precision, compile, fused, patience, the dimension
    curriculum, every prefix) reads them as defaults, and names the default when one of them changes."""
    cfg = TrainConfig(tasks=("linear/kappa1",), steps=3, **TINY)
    train(cfg, tmp_path / "run", progress=False)
    path = tmp_path / "run" / "state.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    added = ("precision", "compile", "fused", "patience", "dim_curriculum", "d_min", "dims", "every_prefix",
             "task_pool")
    old = {k: v for k, v in json.loads(meta["config"]).items() if k not in added}
    save_file(load_file(str(path)), str(path), {**meta, "config": json.dumps(old)})
    assert train(replace(cfg, steps=6), tmp_path / "run", resume=True, progress=False)["final"]["step"] == 6
    with pytest.raises(TrainError, match="precision: 'fp32' -> 'bf16'"):
        train(replace(cfg, steps=9, precision="bf16"), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(TrainError, match=r"dim_curriculum: 0 -> 4\)"):
        train(replace(cfg, steps=9, dim_curriculum=4), tmp_path / "run", resume=True, progress=False)


def test_the_dimension_curriculum_draws_each_step_at_its_dimension(tmp_path, monkeypatch) -> None:
    """k grows linearly from --d-min to d over --dim-curriculum steps (Garg et al.'s, in steps of one); validation
    stays at d; the recorded command rebuilds the run."""
    drawn: list[tuple[int, int]] = []
    sample = training.Task.sample

    def spy(task, batch_size, n, generator, *args, dims=None, **kwargs):
        s = sample(task, batch_size, n, generator, *args, dims=dims, **kwargs)
        if batch_size == 16:  # a training batch (validation draws 32 prompts)
            drawn.append((dims, int((s.batch.x.abs().sum((0, 1)) > 0).sum())))
        return s

    monkeypatch.setattr(training.Task, "sample", spy)
    cfg = TrainConfig(tasks=("linear/kappa1",), steps=6, dim_curriculum=4, d_min=5, **TINY)
    log = train(cfg, tmp_path / "run", progress=False)
    assert drawn == [(5, 5), (9, 9), (13, 13), (16, 16), (20, 20), (20, 20)]  # 5 + round(15 * min(1, step / 4))
    assert log["dimensions"] == {"d_min": 5, "d": 20, "input_d": 20, "curriculum_steps": 4}
    assert [v["d"] for v in log["validations"]] == [13, 20]  # at steps 3 and 6: the last step's dimension before each validation
    assert "--dim-curriculum 4 --d-min 5" in log["command"]
    assert config_from_args(build_parser().parse_args(shlex.split(log["command"])[1:])) == cfg
    plain = train(replace(cfg, dim_curriculum=0, d_min=None, steps=3), tmp_path / "plain", progress=False)
    assert plain["dimensions"] == {"d_min": 20, "d": 20, "input_d": 20, "curriculum_steps": 0}
    assert "--d-min" not in plain["command"]


def test_dims_trains_and_validates_at_a_smaller_dimension(tmp_path, monkeypatch) -> None:
    """--dims k: every training batch and every validation set at dimension k (inputs zero-padded to d), validated at
    the task's lengths scaled by k / d, the nominal one included; with --dim-curriculum it is the curriculum's end."""
    drawn: list[tuple[int, int, int | None, int]] = []
    sample = training.Task.sample

    def spy(task, batch_size, n, generator, *args, dims=None, **kwargs):
        s = sample(task, batch_size, n, generator, *args, dims=dims, **kwargs)
        drawn.append((batch_size, n, dims, int((s.batch.x.abs().sum((0, 1)) > 0).sum())))
        return s

    monkeypatch.setattr(training.Task, "sample", spy)
    assert training.lengths_at(get("linear/kappa1").spec, 5) == ((1, 2, 5, 10, 20), 10)
    assert training.lengths_at(get("linear/kappa1").spec, None) == ((5, 10, 20, 40, 80), 40)
    cfg = TrainConfig(tasks=("linear/kappa1",), steps=3, dims=5, **TINY)
    log = train(cfg, tmp_path / "run", progress=False)
    assert [(n, dims, used) for b, n, dims, used in drawn if b == 32] == [(n, 5, 5) for n in (1, 2, 5, 10, 20)]
    assert {(dims, used) for b, n, dims, used in drawn if b == 16} == {(5, 5)}
    assert log["dimensions"] == {"d_min": 5, "d": 5, "input_d": 20, "curriculum_steps": 0}
    assert list(log["final"]["tasks"]["linear/kappa1"]["rel_err_db"]) == ["1", "2", "5", "10", "20"]
    assert len(log["final"]["tasks"]["linear/kappa1"]["steps_rel_err_db"]) == 1  # read at the nominal length, 10
    assert config_from_args(build_parser().parse_args(shlex.split(log["command"])[1:])) == cfg
    curriculum = train(replace(cfg, dim_curriculum=2, d_min=3), tmp_path / "curriculum", progress=False)
    assert curriculum["dimensions"] == {"d_min": 3, "d": 5, "input_d": 20, "curriculum_steps": 2}
    for bad, message in (({"dims": 1}, "--dims must be from 2"), ({"dims": 21}, "--dims must be from 2"),
                         ({"dims": 5, "dim_curriculum": 2, "d_min": 5}, "starts below --dims 5: --d-min must be from 2 to 4")):
        with pytest.raises(TrainError, match=message):
            train(replace(cfg, **bad), tmp_path / "bad", progress=False)
    with pytest.raises(TrainError, match="lasso family has no draws"):
        train(TrainConfig(tasks=("lasso/fixed",), steps=1, dims=5), tmp_path / "lasso", progress=False)


def test_every_prefix_loss_is_the_error_on_every_context_label_and_the_queries() -> None:
    task = get("linear/noisy")
    cfg = TrainConfig(tasks=("linear/noisy",), arch="gpt2", layers=2, width=16, heads=2, every_prefix=True)
    net = training.make_model(cfg, [task])
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    s = task.sample(4, 9, task.train_generator(0))
    loss = training.train_step(cfg, net, opt, s, "label")
    with torch.no_grad():
        context, steps = net(s.batch.x, s.batch.y, s.batch.x_query, context=True)
        pred = torch.cat([context[:, -1, 1:], steps[:, -1]], 1)  # y_2 .. y_9 from the pairs before, then the queries
        goal = torch.cat([s.batch.y[:, 1:], s.y_query], 1)
    torch.testing.assert_close(loss, ((pred - goal) ** 2).mean())
    plain = training.train_step(replace(cfg, every_prefix=False), net, opt, s, "label")
    torch.testing.assert_close(plain, ((steps[:, -1] - s.y_query) ** 2).mean())


def test_curriculum_and_prefix_settings_that_cannot_apply_get_one_line(tmp_path, capsys) -> None:
    base = ["train", "--steps", "2", "--val-every", "2", "--val-prompts", "8", "--batch-size", "4", "--quiet",
            "--out", str(tmp_path / "x")]
    cases = {
        ("--task", "lasso/fixed", "--dim-curriculum", "10"):
            "--dim-curriculum: lasso/fixed: the lasso family has no draws in fewer dimensions",
        ("--task", "lasso/fixed", "--dim-curriculum", "10", "--d-min", "20"):
            "--dim-curriculum: lasso/fixed: the lasso family has no draws in fewer dimensions",
        ("--task", "kernel/exp", "--dim-curriculum", "10", "--d-min", "8"):
            "--dim-curriculum starts below the tasks' dimension d = 5: --d-min must be from 2 to 4, got 8",
        ("--task", "kernel/exp", "--dim-curriculum", "10"):
            "--dim-curriculum starts below the tasks' dimension d = 5: --d-min must be from 2 to 4, got 5 (the default)",
        ("--task", "linear/kappa10", "--dim-curriculum", "10", "--d-min", "1"):
            "--dim-curriculum starts below the tasks' dimension d = 20: --d-min must be from 2 to 19, got 1",
        ("--task", "linear/kappa1", "--dim-curriculum", "-1"): "--dim-curriculum must be at least 0 steps, got -1",
        ("--task", "linear/kappa1", "--d-min", "3"):
            "--d-min is the first dimension of a dimension curriculum: give --dim-curriculum STEPS",
        ("--task", "linear/kappa1", "--every-prefix"): "--every-prefix reads out the context tokens of --arch gpt2, not lsa",
        ("--task", "ar/uniform", "--arch", "causal-lsa", "--every-prefix"):
            "--every-prefix reads out the context tokens of --arch gpt2, not causal-lsa (which is always trained on "
            "every position)",
        ("--task", "logistic/kappa1", "--arch", "gpt2", "--every-prefix"):
            "--every-prefix is trained on the context labels: it needs --loss label (or auto on tasks without "
            "classification prompts)",
    }
    for args, message in cases.items():
        assert main([*base, *args]) == 2
        assert capsys.readouterr().err == f"iclbench train: {message}\n"
    assert not (tmp_path / "x").exists()
