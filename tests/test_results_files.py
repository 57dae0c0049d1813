"""Results files never lose finished work: subset runs merge, concurrent runs and colliding names are refused,
and --resume re-runs a task when anything that can change its numbers changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from iclbench import Batch, Model, results, tasks
from iclbench import samples as samples_file
from iclbench.cli import main
from iclbench.plugins import load_model, loaded
from iclbench.runner import RunConfig, run

SCALED = """
import json
from pathlib import Path
import torch
from iclbench import Model

class Scaled(Model):
    name = "scaled"
    def setup(self, device):
        self.scale = json.loads((Path(__file__).parent / "config.json").read_text())["scale"]
    def predict(self, batch):
        return self.scale * batch.x_query.sum(-1)
"""


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(["run", "--quiet", "--prompts", "32", *args])
    return code, capsys.readouterr().err


def scaled_model(folder: Path, scale: float) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "model.py").write_text(SCALED)
    (folder / "config.json").write_text(json.dumps({"scale": scale}))
    return folder / "model.py"


def db(out: Path, task: str) -> float:
    entry = json.loads(out.read_text())["tasks"][task]
    return entry["lengths"][str(entry["spec"]["nominal"])]["rel_err"]["db"]


@pytest.mark.parametrize("resume", [False, True])
def test_a_subset_run_merges_into_the_file(resume: bool, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ridge.json"
    assert cli(capsys, "--model", "ridge", "--tasks", "linear/kappa1", "kernel/exp", "--out", str(tmp_path))[0] == 0
    first = json.loads(out.read_text())["tasks"]
    again = ["--resume"] if resume else []
    assert cli(capsys, "--model", "ridge", "--tasks", "linear/noisy", "--out", str(tmp_path), *again)[0] == 0
    merged = json.loads(out.read_text())["tasks"]
    assert list(merged) == ["linear/kappa1", "linear/noisy", "kernel/exp"]  # the suite's order
    assert merged["linear/kappa1"] == first["linear/kappa1"] and merged["kernel/exp"] == first["kernel/exp"]


def test_a_subset_run_with_other_settings_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ridge.json"
    assert cli(capsys, "--model", "ridge", "--tasks", "linear/kappa1", "kernel/exp", "--out", str(tmp_path))[0] == 0
    before = out.read_text()
    code, err = cli(capsys, "--model", "ridge", "--tasks", "linear/kappa1", "--dtype", "float64", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"iclbench run: {out} holds tasks this run does not re-run (kernel/exp), made with other "
                          "model files or settings (run.dtype 'float32' -> 'float64')"), err
    assert out.read_text() == before
    # with --overwrite, the run replaces the file
    code, _ = cli(capsys, "--model", "ridge", "--tasks", "linear/kappa1", "--dtype", "float64", "--out", str(tmp_path),
                  "--overwrite")
    doc = json.loads(out.read_text())
    assert code == 0 and doc["run"]["dtype"] == "float64" and list(doc["tasks"]) == ["linear/kappa1"]


SMALLER = {
    "fewer prompts": (["--prompts", "16"], {}, "--prompts 16 where the file has 32"),
    "another dtype": (["--dtype", "float64"], {}, "dtype float64 where the file has float32"),
    "another device": ([], {"device": "cuda:0"}, "device cpu where the file has cuda:0"),
}


@pytest.mark.parametrize("case", SMALLER)
def test_a_smaller_run_never_replaces_the_file(case: str, tmp_path: Path, capsys) -> None:
    flags, recorded, what = SMALLER[case]
    out = tmp_path / "zero.json"
    doc = run(load_model("zero"), tasks.select(["kernel/exp"]), RunConfig("cpu", prompts=32), progress=False)
    doc["run"].update(recorded)  # as if run there
    results.write(out, doc)
    before = out.read_text()
    code, err = cli(capsys, "--model", "zero", "--tasks", "kernel/exp", "--out", str(tmp_path), *flags)
    assert code == 2 and err == (f"iclbench run: {out} would be replaced by a smaller run ({what}): use another --out, "
                                 "or replace the file with --overwrite\n")
    assert out.read_text() == before
    assert cli(capsys, "--model", "zero", "--tasks", "kernel/exp", "--out", str(tmp_path), *flags, "--overwrite")[0] == 0
    assert out.read_text() != before and results.read(out)["tasks"]["kernel/exp"]["status"] == "ok"


def test_a_larger_run_replaces_the_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "zero.json"
    run(load_model("zero"), tasks.select(["kernel/exp"]), RunConfig("cpu", prompts=32), out, progress=False)
    assert cli(capsys, "--model", "zero", "--tasks", "kernel/exp", "--out", str(tmp_path), "--prompts", "64")[0] == 0
    doc = results.read(out)
    assert doc["run"]["prompts"] == 64 and doc["tasks"]["kernel/exp"]["n_prompts"] == 64


def test_names_that_give_the_same_file_name_are_refused(tmp_path: Path, capsys) -> None:
    for i, name in enumerate(("a b", "a/b")):
        (tmp_path / f"m{i}.py").write_text(SCALED.replace('"scaled"', repr(name)).replace(
            '(Path(__file__).parent / "config.json").read_text())["scale"]', '"1")'))
    assert cli(capsys, "--model", str(tmp_path / "m0.py"), "--tasks", "linear/kappa1", "--out", str(tmp_path))[0] == 0
    before = (tmp_path / "a-b.json").read_text()
    code, err = cli(capsys, "--model", str(tmp_path / "m1.py"), "--tasks", "linear/kappa1", "--out", str(tmp_path))
    assert code == 2 and err == (f"iclbench run: {tmp_path / 'a-b.json'} holds the results of model 'a b', not 'a/b' "
                                 "(both names give this file name): use another --out\n")
    assert (tmp_path / "a-b.json").read_text() == before


def test_a_second_run_into_the_same_file_is_refused_while_the_first_runs(tmp_path: Path, capsys) -> None:
    model = tmp_path / "slow.py"
    model.write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from iclbench import Model
        class Slow(Model):
            name = "slow"
            def predict(self, batch):
                while not Path({str(tmp_path / 'go')!r}).exists():
                    time.sleep(0.05)
                return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """))
    out = tmp_path / "slow.json"
    # --no-sandbox: the model waits for a file the test makes later, which a sandbox would not show it
    args = ["run", "--quiet", "--no-sandbox", "--prompts", "32", "--model", str(model), "--out", str(tmp_path), "--tasks"]
    first = subprocess.Popen([sys.executable, "-m", "iclbench.cli", *args, "linear/kappa1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "slow.json.lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        code = main(args[:-1] + ["--tasks", "kernel/exp"])
        err = capsys.readouterr().err
        assert code == 2 and err == (f"iclbench run: {out} is being written by another run (process {first.pid}, "
                                     f"lock {lock}): wait for it to finish, or use another --out\n")
    finally:
        (tmp_path / "go").touch()
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert list(json.loads(out.read_text())["tasks"]) == ["linear/kappa1"] and not lock.exists()


def test_resume_reruns_a_task_when_a_file_beside_the_model_changed(tmp_path: Path, capsys, caplog) -> None:
    path = scaled_model(tmp_path / "model", 1.0)
    out = tmp_path / "scaled.json"
    assert cli(capsys, "--model", str(path), "--tasks", "linear/kappa1", "--out", str(tmp_path))[0] == 0
    assert cli(capsys, "--model", str(path), "--tasks", "linear/kappa1", "--out", str(tmp_path), "--resume")[0] == 0
    first = db(out, "linear/kappa1")
    scaled_model(tmp_path / "model", 0.0)  # the zero predictor: 0 dB
    code, err = cli(capsys, "--model", str(path), "--tasks", "linear/kappa1", "--out", str(tmp_path), "--resume")
    assert code == 0 and db(out, "linear/kappa1") == 0.0 != first
    assert "re-running every task" in caplog.text and "files changed beside the model: config.json" in caplog.text


def test_a_resumed_run_keeps_a_task_only_when_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ridge.json"
    chosen, cfg = tasks.select(["linear/kappa1"]), RunConfig("cpu", prompts=32)
    run(load_model("ridge"), chosen, cfg, out, progress=False)

    def predicts_after(edit: dict[str, str]) -> int:
        doc = json.loads(out.read_text())
        for key, value in edit.items():
            part, _, field = key.rpartition(".")
            (doc[part] if part else doc)[field] = value
        results.write(out, doc)
        loaded = load_model("ridge")
        calls = []
        original = loaded.model.predict
        monkeypatch.setattr(loaded.model, "predict", lambda batch: calls.append(1) or original(batch))
        run(loaded, chosen, cfg, out, resume=True, progress=False)
        return len(calls)

    assert predicts_after({}) == 0
    assert predicts_after({"iclbench_version": "0.0.1"}) > 0
    assert predicts_after({"run.torch_version": "1.0.0"}) > 0
    assert predicts_after({"model.checkpoint_sha256": "0" * 64}) > 0
    doc = json.loads(out.read_text())
    doc["tasks"]["linear/kappa1"]["fingerprint"] = "0" * 64  # scored on other data
    results.write(out, doc)
    assert predicts_after({}) > 0


def test_a_file_that_is_not_a_results_file_is_not_overwritten(tmp_path: Path, capsys) -> None:
    (tmp_path / "ridge.json").write_text("my notes\n")
    code, err = cli(capsys, "--model", "ridge", "--tasks", "linear/kappa1", "--out", str(tmp_path))
    assert code == 2 and err.startswith(f"iclbench run: {tmp_path / 'ridge.json'}: not a readable JSON results file")
    assert (tmp_path / "ridge.json").read_text() == "my notes\n"


def test_each_task_is_journaled_as_it_finishes_and_the_file_written_once(tmp_path: Path, monkeypatch) -> None:
    out, samples_out = tmp_path / "ridge.json", samples_file.path_for(tmp_path / "ridge.json")
    chosen = tasks.select(["linear/kappa1", "linear/noisy", "kernel/exp"])
    writes, seen = [], []
    original, original_samples = results.write, samples_file.write
    monkeypatch.setattr(results, "write", lambda path, doc: writes.append(Path(path)) or original(path, doc))
    monkeypatch.setattr(samples_file, "write", lambda path, *a: writes.append(Path(path)) or original_samples(path, *a))

    def report(name: str, entry: dict, kept: bool) -> None:  # the task and its samples are durable before it is reported
        seen.append(name)
        assert not out.exists() and list(results.read_journaled(out)["tasks"]) == seen
        assert not samples_out.exists() and list(samples_file.kept(samples_out, {name: entry})) == [name]
        assert [list(t) for _, t in samples_file._journaled(samples_out)] == [[n] for n in seen]

    collected: dict = {}
    doc = run(load_model("ridge"), chosen, RunConfig("cpu", prompts=32), out, progress=False, report=report,
              samples=collected)
    assert writes == [out, samples_out] and not results.journal_path(out).exists()
    assert not results.journal_path(samples_out).exists()
    assert results.read(out) == doc and list(doc["tasks"]) == seen == [t.spec.name for t in chosen]
    head, written = samples_file.read(samples_out)
    assert list(written) == seen and all(
        torch.equal(t, collected[n][k]) for n, ts in written.items() for k, t in ts.items())


SLOW = """
import os, time
from iclbench import Model

class Slow(Model):
    name = "slow"
    def predict(self, batch):
        if os.environ.get("SLOW_TASK") == batch.task.name:
            time.sleep(600)
        return 0 * batch.x_query.sum(-1)
"""


def test_a_crashed_run_loses_no_finished_task(tmp_path: Path) -> None:
    model = tmp_path / "slow.py"
    model.write_text(SLOW)
    out, journal = tmp_path / "slow.json", results.journal_path(tmp_path / "slow.json")
    samples_out = samples_file.path_for(out)
    command = [sys.executable, "-m", "iclbench", "run", "--quiet", "--model", str(model), "--prompts", "32",
               "--tasks", "linear/kappa1", "kernel/exp", "--log-samples", "--out", str(tmp_path)]
    # --no-sandbox: the model reads SLOW_TASK, which the sandbox's environment leaves out
    proc = subprocess.Popen([*command, "--no-sandbox"], env={**os.environ, "SLOW_TASK": "kernel/exp"},
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (journal.exists() and journal.read_text().count("\n") >= 2):  # the first task is durable
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        proc.kill()  # a crash: no chance to write the results file
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists() and not samples_out.exists()
    first = results.read_journaled(out)["tasks"]["linear/kappa1"]
    first_samples = samples_file.kept(samples_out, {"linear/kappa1": first})["linear/kappa1"]
    with journal.open("a") as fh:
        fh.write('{"task": "kernel/exp", "entr')  # a line torn by the crash
    with results.journal_path(samples_out).open("ab") as fh:
        fh.write((10_000).to_bytes(8, "little") + b"torn")  # and a samples record
    finished = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    doc = results.read(out)
    assert doc["tasks"]["linear/kappa1"] == first and doc["tasks"]["kernel/exp"]["status"] == "ok"
    assert not journal.exists() and not results.journal_path(samples_out).exists()
    _, kept = samples_file.read(samples_out)
    assert list(kept) == ["linear/kappa1", "kernel/exp"]
    assert first_samples.keys() == kept["linear/kappa1"].keys()
    assert all(torch.equal(t, kept["linear/kappa1"][k]) for k, t in first_samples.items())


def test_ctrl_c_writes_the_tasks_finished_into_the_file(tmp_path: Path) -> None:
    class Interrupting(Model):
        name = "interrupting"

        def predict(self, batch: Batch) -> torch.Tensor:
            if batch.task.name == "kernel/exp":
                raise KeyboardInterrupt
            return 0 * batch.x_query.sum(-1)

    out = tmp_path / "interrupting.json"
    samples_out = samples_file.path_for(out)
    with pytest.raises(KeyboardInterrupt):
        run(loaded(Interrupting(), "interrupting", None), tasks.select(["linear/kappa1", "kernel/exp"]),
            RunConfig("cpu", prompts=32), out, progress=False, samples={})
    assert list(results.read(out)["tasks"]) == ["linear/kappa1"] and not results.journal_path(out).exists()
    assert list(samples_file.read(samples_out)[1]) == ["linear/kappa1"]
    assert not results.journal_path(samples_out).exists()


def test_a_journal_that_is_not_one_is_refused_and_left_alone(tmp_path: Path, capsys) -> None:
    journal = results.journal_path(tmp_path / "ridge.json")
    journal.write_text("my notes\nmore\n")
    code, err = cli(capsys, "--model", "ridge", "--tasks", "linear/kappa1", "--out", str(tmp_path))
    assert code == 2 and err.startswith(f"iclbench run: {journal}: not a readable results journal")
    assert journal.read_text() == "my notes\nmore\n"
