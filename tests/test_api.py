"""The Python API: `iclbench.evaluate` is what `iclbench run` does, `Results` reads its document, the example runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import iclbench
from iclbench import Batch, Model, tasks
from iclbench.cli import main
from iclbench.plugins import PluginError

ROOT = Path(__file__).resolve().parents[1]


class Scaled(Model):
    """Predicts `scale` times the least-squares answer: a model whose constructor takes arguments."""

    name = "scaled-lstsq"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def supports(self, task) -> bool:
        return task.family == "linear"

    def predict(self, batch: Batch) -> torch.Tensor:
        w = torch.linalg.lstsq(batch.x.double(), batch.y.double().unsqueeze(-1)).solution.squeeze(-1)
        return (self.scale * torch.einsum("bqd,bd->bq", batch.x_query.double(), w)).to(batch.x.dtype)


def test_evaluate_is_what_the_cli_runs(tmp_path: Path, capsys) -> None:
    assert main(["run", "--model", "ridge", "--tasks", "linear/kappa1,kernel/exp", "--prompts", "32", "--quiet",
                 "--device", "cpu", "--out", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    cli = json.loads((tmp_path / "cli" / "ridge.json").read_text())
    res = iclbench.evaluate("ridge", tasks=["linear/kappa1", "kernel/exp"], device="cpu", prompts=32,
                            out=tmp_path / "api", progress=False)
    assert res.path == tmp_path / "api" / "ridge.json" and json.loads(res.path.read_text()) == res.doc
    assert res.doc["model"] == cli["model"] | {"files_sha256": res.doc["model"]["files_sha256"]}
    for name in ("linear/kappa1", "kernel/exp"):
        drop = lambda e: {k: v for k, v in e.items() if k != "seconds"}  # noqa: E731
        assert drop(res.doc["tasks"][name]) == drop(cli["tasks"][name])
    from iclbench.baselines.ridge import Ridge  # the same class, in this process

    inline = iclbench.evaluate(Ridge, tasks="linear/kappa1", device="cpu", prompts=32, progress=False)
    assert inline.path is None and inline.doc["model"]["class"] == cli["model"]["class"]
    assert inline.doc["tasks"]["linear/kappa1"]["lengths"] == cli["tasks"]["linear/kappa1"]["lengths"]


def test_results_accessors_and_dataframe() -> None:
    res = iclbench.evaluate(Scaled(), tasks="linear/kappa1,kernel/exp", device="cpu", prompts=64, progress=False)
    assert res.model == "scaled-lstsq" and res.tasks == ["linear/kappa1", "kernel/exp"]
    assert res.status("kernel/exp") == "unsupported" and res.failed == {}
    assert res.lengths("linear/kappa1") == [5, 10, 20, 40, 80] and res.lengths("kernel/exp") == []
    entry = res.doc["tasks"]["linear/kappa1"]
    assert res.db("linear/kappa1") == entry["lengths"]["40"]["rel_err"]["db"]
    assert res.db("linear/kappa1", 5) == entry["lengths"]["5"]["rel_err"]["db"]
    assert res.metrics("kernel/exp") is None and res.db("kernel/exp") is None
    frame = res.to_dataframe()
    assert len(frame) == 5 + 1  # a row per scored length, one for the unsupported task
    row = frame[(frame.task == "linear/kappa1") & (frame.n == 40)].iloc[0]
    assert bool(row.nominal) and row.status == "ok" and row.n_prompts == 64
    assert row.rel_err == entry["lengths"]["40"]["rel_err"]["value"]
    assert [row.ci90_low_db, row.ci90_high_db] == entry["lengths"]["40"]["rel_err"]["ci90_db"]
    assert math.isnan(row.error_rate) and math.isnan(row.final_step_db)
    other = frame[frame.task == "kernel/exp"].iloc[0]
    assert other.status == "unsupported" and other.n == 14 and math.isnan(other.rel_err_db)
    assert "linear/kappa1" in res.table() and "unsupported" in res.table()


def test_model_arguments_reach_the_constructor_in_process() -> None:
    one = iclbench.evaluate(Scaled, tasks="linear/kappa1", device="cpu", prompts=32, progress=False)
    half = iclbench.evaluate(Scaled, tasks="linear/kappa1", model_args={"scale": 0.5}, device="cpu", prompts=32,
                             progress=False)
    assert one.doc["model"]["args"] == {} and half.doc["model"]["args"] == {"scale": 0.5}
    # at n = 80 > d least squares is exact, so 0.5 * f misses by 0.5 f: a relative error of 0.25 (-6.02 dB)
    assert half.db("linear/kappa1", 80) == pytest.approx(10 * np.log10(0.25), abs=1e-3)
    assert one.db("linear/kappa1", 80) < -100


def test_bad_calls_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="pass the class, not an instance"):
        iclbench.evaluate(Scaled(), tasks="linear/kappa1", model_args={"scale": 2.0})
    with pytest.raises(ValueError, match="an instance or a class runs in this process"):
        iclbench.evaluate(Scaled, tasks="linear/kappa1", isolated=True)
    with pytest.raises(TypeError, match="must be an iclbench.Model"):
        iclbench.evaluate(object(), tasks="linear/kappa1")
    with pytest.raises(ValueError, match=r"model argument scale=nan: a value must be"):
        iclbench.evaluate(Scaled, tasks="linear/kappa1", model_args={"scale": float("nan")})
    with pytest.raises(PluginError, match="unexpected keyword argument 'depth'"):
        iclbench.evaluate(Scaled, tasks="linear/kappa1", model_args={"depth": 3})
    with pytest.raises(tasks.UnknownTaskError, match="no task matches 'linear/kappa2'"):
        iclbench.evaluate(Scaled, tasks="linear/kappa1,linear/kappa2")


def test_the_example_script_runs() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "evaluate_in_python.py"), "--prompts", "64"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "recorded model arguments: {'steps': 8, 'lr': 0.2}" in proc.stdout
    assert "Sample: batch.x (16, 40, 20), batch.y (16, 40), batch.x_query (16, 8, 20)" in proc.stdout
    assert "linear/noisy: gd-steps" in proc.stdout and "ridge" in proc.stdout
