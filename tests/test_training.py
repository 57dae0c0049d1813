"""`iclbench train`: loss decrease, bit-identical resume, outputs, CLI, and bad settings."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from iclbench.cli import main
from iclbench.tasks import get
from iclbench.training import TrainConfig, TrainError, compute_loss, train

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


@pytest.mark.parametrize("arch", ["lsa", "gpt2"])
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
