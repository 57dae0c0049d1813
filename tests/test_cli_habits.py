"""What users of a command line expect: --version, task lists with commas or spaces, examples in --help,
a line per finished task when output goes to a file, and Ctrl-C that keeps the work and says how to resume."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.plugins import plugin

import iclbench
from iclbench import cli, results, training
from iclbench.cli import main
from iclbench.submissions import schema

BLOCKS = """
import os
import time
from pathlib import Path

class Blocks(Model):
    name = "blocks"
    def predict(self, batch):
        if batch.task.family == "kernel":  # the second task says it waits, then waits for the test's signal
            gate, deadline = Path(os.environ["GATE"]), time.monotonic() + 120
            gate.with_suffix(".waiting").touch()
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return batch.x_query.new_zeros(batch.x_query.shape[:2])
"""


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"iclbench {iclbench.__version__} (suite {iclbench.SUITE_VERSION})\n"


@pytest.mark.parametrize("command", ["run", "compare", "list", "export", "verify", "train"])
def test_help_has_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    examples = capsys.readouterr().out.split("examples:\n", 1)[1]
    assert f"iclbench {command} " in examples


def test_task_lists_take_commas_and_spaces_in_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    capture = lambda args: seen.append(getattr(args, "tasks", None) or args.task) or 0  # noqa: E731
    for module, name in [(cli, "cmd_run"), (cli, "cmd_compare"), (cli, "cmd_verify"), (schema, "cmd_validate"),
                         (training, "cmd_train")]:
        monkeypatch.setattr(module, name, capture)
    lists = ["linear,lasso/fixed", "kernel/*", "logistic,"]
    assert main(["run", "--model", "ridge", "--tasks", *lists]) == 0
    assert main(["compare", "a.json", "b.json", "--tasks", *lists]) == 0
    assert main(["verify", "submissions/x", "--tasks", *lists]) == 0
    assert main(["validate", "submissions/x", "--rerun", "--tasks", *lists]) == 0
    assert main(["train", "--task", *lists, "--out", "runs/x"]) == 0
    assert main(["train", "--tasks", *lists, "--out", "runs/x"]) == 0
    assert seen == [["linear", "lasso/fixed", "kernel/*", "logistic"]] * 6


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    path = plugin(tmp_path / "model", BLOCKS)
    # --no-sandbox: the model waits for a file named in its environment, both of which a sandbox hides
    argv = ["run", "--model", str(path), "--tasks", "linear/kappa1,kernel/exp", "--prompts", "32",
            "--device", "cpu", "--out", str(tmp_path / "out"), "--no-sandbox", *extra]
    proc = subprocess.Popen([sys.executable, "-m", "iclbench.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path), preexec_fn=_interruptible)
    return proc, argv


def _interruptible() -> None:
    """In the child: Ctrl-C as a terminal delivers it (a test session started in the background, `pytest &`,
    ignores SIGINT, and a child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GATE": str(tmp_path / "go")}  # outside the model's folder, whose files are hashed


def _line(proc: subprocess.Popen, timeout: float = 120) -> str:
    """The next line the process writes on stderr, while it runs."""
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "no line on stderr"
    return proc.stderr.readline()


def test_a_redirected_run_prints_each_task_as_it_finishes(tmp_path: Path) -> None:
    proc, _ = _start(tmp_path)
    try:
        first = _line(proc)
        assert proc.poll() is None  # still running: the line came as the task finished, not at the end
        assert first.startswith("[1/2] linear/kappa1: 0.00 dB at n=40, ") and first.endswith(" s\n")
        (tmp_path / "go").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.startswith("[2/2] kernel/exp: 0.00 dB at n=14, ")
    assert "results written to" in out


def test_ctrl_c_keeps_the_finished_tasks_and_says_how_to_resume(tmp_path: Path) -> None:
    proc, argv = _start(tmp_path)
    try:
        assert _line(proc).startswith("[1/2] linear/kappa1")
        waiting, deadline = tmp_path / "go.waiting", time.monotonic() + 120
        while not waiting.exists() and time.monotonic() < deadline:  # into the second task, whose worker waits
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and out == ""
    resume = " ".join(["iclbench", *argv, "--resume"])
    out_file = tmp_path / "out" / "blocks.json"
    assert err == (f"iclbench run: interrupted; {out_file} keeps 1 of the 2 tasks selected (linear/kappa1); "
                   f"continue with: {resume}\n")
    assert list(results.read(out_file)["tasks"]) == ["linear/kappa1"]
    assert not list((tmp_path / "out").glob("*.lock")) and not list((tmp_path / "out").glob(".*.tmp"))
    (tmp_path / "go").touch()
    again = subprocess.run([sys.executable, "-m", "iclbench.cli", *argv, "--resume"], capture_output=True, text=True,
                           env=_env(tmp_path))
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith(f"[1/2] linear/kappa1: 0.00 dB at n=40, kept from {out_file}\n[2/2] kernel/exp")


def test_training_prints_a_line_per_validation(tmp_path: Path, capsys) -> None:
    assert main(["train", "--task", "kernel/linear", "--steps", "4", "--val-every", "2", "--val-prompts", "8",
                 "--batch-size", "8", "--out", str(tmp_path / "t")]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("step ")]
    assert [x.split(":")[0] for x in lines] == ["step 2/4", "step 4/4"]
    assert "dB (mean at the nominal lengths)" in lines[0]


def test_ctrl_c_in_training_says_what_was_kept(tmp_path: Path) -> None:
    out = tmp_path / "t"
    argv = ["train", "--task", "kernel/linear", "--steps", "1000000", "--val-every", "3", "--val-prompts", "8",
            "--batch-size", "8", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "iclbench.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_interruptible)
    try:
        assert _line(proc).startswith("step 3/1000000: ")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    last = err.splitlines()[-1]
    step = training.saved_step(out / "state.safetensors")
    assert step is not None and step % 3 == 0 and "Traceback" not in err
    assert last == (f"iclbench train: interrupted; {out} keeps the state of step {step} (state.safetensors, "
                    f"model.safetensors); continue with: iclbench {' '.join(argv)} --resume")
    assert json.loads((out / "log.json").read_text())["validations"][-1]["step"] == step
