"""Bad input gives one clear message naming the task and what is wrong; nothing computed is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.plugins import HEADER, plugin, run_cli

from iclbench import results
from iclbench.cli import main


GOOD = HEADER + """
class Good(Model):
    name = "good"
    def predict(self, batch):
        return batch.x_query.new_zeros(batch.x_query.shape[:2])
"""


CASES = {
    "linear/kappa1": ("good[:, :1]", "prediction has shape (64, 1), expected (64, 8)"),
    "linear/kappa10": ("good.double()", "prediction has dtype torch.float64, expected torch.float32"),
    "linear/kappa100": ("good.to('meta')", "prediction is on meta, expected cpu"),
    "linear/noisy": ("good.tolist()", "prediction is a list, expected a torch.Tensor"),
    "kernel/exp": ("good + float('nan')", "prediction contains NaN or Inf (n=4, first at prompt 0)"),
    "kernel/relu": ("torch.where(torch.arange(64)[:, None] == 5, float('inf'), good)", "first at prompt 5"),
    "logistic/kappa1": ("Prediction(good, steps=good)", "Prediction.steps must be a (B, K, q) tensor"),
    "lasso/fixed": ("Prediction(good, w=good)", "Prediction.w has shape (64, 8), expected (64, 20)"),
    "lasso/random": ("1 / 0", "predict raised ZeroDivisionError: division by zero (n=5, prompts 0-63)"),
}
"""Per task, what the model returns there instead of a prediction, and what the failure says."""


def test_a_bad_prediction_fails_its_task_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Each kind of bad prediction, one per task of a single run: each fails its own task with its message, and
    the task where the model behaves is scored."""
    returns = "".join(f"            if batch.task.name == {task!r}:\n                return {bad}\n"
                      for task, (bad, _) in CASES.items())
    path = plugin(tmp_path, f"""
    class Broken(Model):
        name = "broken"
        def predict(self, batch):
            good = batch.x_query.new_zeros(batch.x_query.shape[:2])
{returns}            return good
    """)
    code, out, err = run_cli(capsys, "--model", str(path), "--tasks", "kernel/linear", *CASES, "--out", str(tmp_path))
    assert code == 1 and out.count("FAILED") == len(CASES)
    doc = results.read(tmp_path / "broken.json")  # valid, with the good task kept
    assert doc["tasks"]["kernel/linear"]["status"] == "ok"
    for task, (_, message) in CASES.items():
        assert f"error: {task}: " in err and message in err, (task, err)
        assert doc["tasks"][task]["status"] == "failed" and message in doc["tasks"][task]["error"], task


def test_an_exception_in_setup_fails_every_task_and_writes_results(tmp_path: Path, capsys) -> None:
    path = plugin(tmp_path, """
    class NoWeights(Model):
        name = "no-weights"
        def setup(self, device):
            raise FileNotFoundError("weights.safetensors")
        def predict(self, batch):
            return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """)
    code, _, err = run_cli(capsys, "--model", str(path), "--tasks", "lasso/fixed", "--out", str(tmp_path))
    assert code == 1 and "lasso/fixed: setup raised FileNotFoundError: weights.safetensors" in err
    assert results.read(tmp_path / "no-weights.json")["tasks"]["lasso/fixed"]["status"] == "failed"


def test_an_exception_in_supports_fails_that_task_only(tmp_path: Path, capsys) -> None:
    path = plugin(tmp_path, """
    class Picky(Model):
        name = "picky"
        def supports(self, task):
            return {"linear": True}[task.family]
        def predict(self, batch):
            return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """)
    code, _, err = run_cli(capsys, "--model", str(path), "--tasks", "linear/kappa1", "kernel/exp", "--out", str(tmp_path))
    assert code == 1 and "error: kernel/exp: supports(kernel/exp) raised KeyError: 'kernel'" in err
    doc = results.read(tmp_path / "picky.json")
    assert doc["tasks"]["linear/kappa1"]["status"] == "ok" and doc["tasks"]["kernel/exp"]["status"] == "failed"


LOAD_CASES = {
    "missing file": (None, "model file not found: {path}"),
    "import error": ("import not_a_module_anywhere\n", "importing {path} failed: ModuleNotFoundError"),
    "syntax error": ("def broken(:\n", "importing {path} failed: SyntaxError"),
    "no model class": ("class Thing:\n    pass\n", "{path} defines no iclbench.Model subclass"),
    "two model classes": (GOOD + "\nclass Other(Good):\n    pass\n", "defines several models (Good, Other)"),
}


@pytest.mark.parametrize("case", LOAD_CASES)
def test_a_plugin_that_cannot_load_gives_one_message(case: str, tmp_path: Path, capsys) -> None:
    source, message = LOAD_CASES[case]
    path = tmp_path / "model.py"
    if source is not None:
        path.write_text(source)
    previous = tmp_path / "out" / "good.json"
    previous.parent.mkdir()
    previous.write_text("{}")
    code, out, err = run_cli(capsys, "--model", str(path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith("iclbench run: ") and message.format(path=path) in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert previous.read_text() == "{}"  # nothing written or touched


def test_class_selection_and_unknown_names(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.py"
    path.write_text(GOOD + "\nclass Other(Good):\n    name = 'other'\n")
    assert run_cli(capsys, "--model", f"{path}:Other", "--tasks", "kernel/exp", "--out", str(tmp_path))[0] == 0
    assert (tmp_path / "other.json").exists()
    code, _, err = run_cli(capsys, "--model", f"{path}:Missing")
    assert code == 2 and "has no iclbench.Model subclass called 'Missing'" in err
    code, _, err = run_cli(capsys, "--model", "no_such_baseline")
    assert code == 2 and "no model called 'no_such_baseline'" in err and "ridge" in err
    code, _, err = run_cli(capsys, "--model", "zero", "--tasks", "linear/kappa3")
    assert code == 2 and "no task matches 'linear/kappa3'" in err
    code, _, err = run_cli(capsys, "--model", "zero", "--device", "cuda:99")
    assert code == 2 and "--device cuda:99: " in err


def test_list_prints_every_task_with_its_fingerprint(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    from iclbench.tasks import FINGERPRINTS

    for name, fingerprint in FINGERPRINTS.items():
        assert name in out and fingerprint[:16] in out


def test_a_crash_mid_run_keeps_finished_tasks(tmp_path: Path) -> None:
    """A harness killed during a task leaves the tasks done before it in the journal beside the results file,
    which the next run writes into the file, and no stale lock."""
    path = plugin(tmp_path, """
    import os
    class Dies(Model):
        name = "dies"
        def predict(self, batch):
            if batch.task.family == "kernel":
                os.kill(os.getppid(), 9)  # the harness, not the model's own worker process
            return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """)
    # --no-sandbox: a sandboxed model cannot reach the harness to kill it
    cmd = [sys.executable, "-m", "iclbench.cli", "run", "--model", str(path), "--quiet", "--no-sandbox", "--prompts",
           "32", "--tasks", "linear/kappa1", "lasso/fixed", "kernel/exp", "--out", str(tmp_path)]
    assert subprocess.run(cmd, capture_output=True).returncode == -9
    assert not (tmp_path / "dies.json").exists()
    doc = results.read_journaled(tmp_path / "dies.json")
    assert list(doc["tasks"]) == ["linear/kappa1", "lasso/fixed"]
    assert not list(tmp_path.glob(".*.tmp"))
    again = subprocess.run([*cmd[:-5], "linear/kappa1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the dead run's lock does not block
    assert list(json.loads((tmp_path / "dies.json").read_text())["tasks"]) == ["linear/kappa1", "lasso/fixed"]


def test_results_with_non_finite_numbers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(results.ResultsError, match=r"non-finite number at tasks.t.x"):
        results.write(tmp_path / "r.json", {"tasks": {"t": {"x": float("nan")}}})
    assert not (tmp_path / "r.json").exists()
