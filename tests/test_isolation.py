"""Models run in a worker process: exits, crashes, hangs and limits fail one task; inputs cannot alter later data."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from fixtures.plugins import plugin, run_cli
from fixtures.submission_kit import make_submission

from iclbench import Batch, results, tasks
from iclbench.api import TaskFailure
from iclbench.cli import main
from iclbench.plugins import load_model, sha256_file
from iclbench.runner import RunConfig, run
from iclbench.submissions.schema import validate
from iclbench import worker
from iclbench.worker import IsolatedModel


def bad_on_linear(statement: str) -> str:
    """A model that predicts zeros, except that it runs `statement` on the linear tasks."""
    return f"""
    import ctypes, os, sys, time
    class Bad(Model):
        name = "bad"
        def predict(self, batch):
            if batch.task.family == "linear":
                {statement}
            return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """


CASES = {
    "sys.exit": ("sys.exit(0)", [], "predict called sys.exit(0)"),
    "os._exit": ("os._exit(0)", [], "worker process exited with status 0 (sys.exit or os._exit in the model?), while predicting"),
    "segfault": ("ctypes.string_at(0)", [], "worker process was killed by SIGSEGV (segmentation fault)"),
    "hang": ("time.sleep(3600)", ["--task-timeout", "3"], "ran past the time limit of 3 s per task (--task-timeout)"),
    "memory": ("torch.empty(1 << 31, dtype=torch.float64)", ["--max-memory", "3"],
               "predict raised RuntimeError"),
}


@pytest.mark.parametrize("case", CASES)
def test_an_exit_crash_hang_or_limit_in_predict_fails_that_task_only(case: str, tmp_path: Path, capsys) -> None:
    statement, flags, message = CASES[case]
    path = plugin(tmp_path, bad_on_linear(statement))
    code, out, err = run_cli(capsys, "--model", str(path), "--tasks", "linear/kappa1", "lasso/fixed", "kernel/exp",
                             "--out", str(tmp_path), *flags)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: linear/kappa1: ") and message in errors[0], err
    assert "Traceback" not in err
    doc = results.read(tmp_path / "bad.json")
    assert doc["tasks"]["linear/kappa1"]["status"] == "failed"
    assert doc["tasks"]["lasso/fixed"]["status"] == "ok" and doc["tasks"]["kernel/exp"]["status"] == "ok"
    assert "results written to" in out
    if case == "memory":
        assert "(the worker's memory limit is 3 GB: --max-memory)" in errors[0]


def test_an_exit_at_import_is_one_message(tmp_path: Path, capsys) -> None:
    path = plugin(tmp_path, "import os\nos._exit(0)\n")
    code, _, err = run_cli(capsys, "--model", str(path), "--tasks", "linear/kappa1", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "exited with status 0" in err and "while loading the model" in err
    assert not list(tmp_path.glob("*.json"))


MUTATOR = """
class Mutator(Model):
    name = "mutator"
    def predict(self, batch):
        pred = batch.y.mean(1, keepdim=True).expand(-1, batch.x_query.shape[1]).clone()
        y, x, xq = batch.y, batch.x, batch.x_query
        y -= 1000.0
        x.mul_(0)
        xq.add_(7)
        return pred
"""
MEAN = MUTATOR.replace("Mutator", "Mean").replace('"mutator"', '"mean"').split("        y, x, xq")[0] + "        return pred\n"


def test_a_model_that_writes_into_its_inputs_cannot_alter_later_data(tmp_path: Path, capsys) -> None:
    chosen = ["--tasks", "linear/kappa1", "--out"]
    assert run_cli(capsys, "--model", "ridge", *chosen, str(tmp_path / "before"))[0] == 0
    assert run_cli(capsys, "--model", str(plugin(tmp_path / "m", MUTATOR)), *chosen, str(tmp_path))[0] == 0
    assert run_cli(capsys, "--model", str(plugin(tmp_path / "n", MEAN)), *chosen, str(tmp_path))[0] == 0
    assert run_cli(capsys, "--model", "ridge", *chosen, str(tmp_path / "after"))[0] == 0

    def lengths(path: Path) -> dict:
        return json.loads(path.read_text())["tasks"]["linear/kappa1"]["lengths"]

    assert lengths(tmp_path / "mutator.json") == lengths(tmp_path / "mean.json")  # its own later lengths intact
    assert lengths(tmp_path / "after" / "ridge.json") == lengths(tmp_path / "before" / "ridge.json")
    assert lengths(tmp_path / "after" / "ridge.json")["40"]["rel_err"]["db"] < -100
    # a model run in this process (`run(load_model(...))`) gets copies too
    chosen_tasks, cfg = tasks.select(["linear/kappa1"]), RunConfig("cpu", prompts=64)
    inprocess = run(load_model(str(tmp_path / "m" / "model.py")), chosen_tasks, cfg, progress=False)
    assert inprocess["tasks"]["linear/kappa1"]["lengths"] == lengths(tmp_path / "mean.json")
    assert run(load_model("ridge"), chosen_tasks, cfg, progress=False)["tasks"]["linear/kappa1"]["lengths"] == lengths(
        tmp_path / "before" / "ridge.json")


def test_outputs_that_share_storage_cross_the_worker_boundary(tmp_path: Path, capsys) -> None:
    """A model whose prediction is a view of its per-step predictions (the reference models' layout)."""
    path = plugin(tmp_path, """
    class Views(Model):
        name = "views"
        def predict(self, batch):
            steps = batch.x_query.new_zeros(3, batch.x_query.shape[0], batch.x_query.shape[1])
            return Prediction(steps[-1], steps=steps.transpose(0, 1))  # a view of a strided view
    """)
    code, _, err = run_cli(capsys, "--model", str(path), "--tasks", "kernel/exp", "--out", str(tmp_path))
    assert code == 0, err
    entry = results.read(tmp_path / "views.json")["tasks"]["kernel/exp"]
    assert entry["status"] == "ok" and len(entry["lengths"]["14"]["steps_rel_err_db"]) == 3


def test_a_prediction_too_large_to_score_fails_its_task_only(tmp_path: Path, capsys) -> None:
    path = plugin(tmp_path, """
    class Huge(Model):
        name = "huge"
        def predict(self, batch):
            return batch.x_query.new_full(batch.x_query.shape[:2], 1e200 if batch.task.family == "linear" else 0.0)
    """)
    code, _, err = run_cli(capsys, "--model", str(path), "--dtype", "float64", "--tasks", "linear/kappa1", "kernel/exp",
                           "--out", str(tmp_path))
    assert code == 1 and "Traceback" not in err and "cannot resume" not in err
    assert "error: linear/kappa1: n=5: rel_err.value is not a finite number: the predictions are too large to score " \
           "(largest magnitude 1e+200)" in err
    doc = results.read(tmp_path / "huge.json")
    assert doc["tasks"]["linear/kappa1"]["status"] == "failed" and doc["tasks"]["kernel/exp"]["status"] == "ok"


def _forged(folder: Path, model_lines: str) -> Path:
    """The tiny submission with `model_lines` at the top of model.py and every error claimed at -300 dB."""
    model = folder / "model.py"
    future = "from __future__ import annotations\n"
    model.write_text(model.read_text().replace(future, future + model_lines, 1))
    doc = json.loads((folder / "results.json").read_text())
    doc["model"]["file_sha256"] = sha256_file(model)
    for entry in doc["tasks"].values():
        for metric in entry.get("lengths", {}).values():
            metric["rel_err"].update(value=1e-30, db=-300.0, ci90=[1e-30, 1e-30], ci90_db=[-300.0, -300.0])
    (folder / "results.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_submission(tmp_path_factory.mktemp("subs") / "honest")


def _copy(honest: Path, folder: Path) -> Path:
    shutil.copytree(honest, folder)
    return folder


@pytest.mark.parametrize("lines", [
    "import os\nos._exit(0)\n",
    "import iclbench.submissions.rerun\niclbench.submissions.rerun.compare_task = lambda *a: []\n",
])
def test_a_model_cannot_end_or_patch_the_validator(lines: str, honest: Path, tmp_path: Path, capsys) -> None:
    folder = _forged(_copy(honest, tmp_path / "forged"), lines)
    code = main(["validate", str(folder), "--rerun", "--tasks", "linear/kappa1"])
    out, err = capsys.readouterr()
    assert code == 1 and "INVALID" in out and "Traceback" not in err + out
    problems = validate(folder, rerun=True, tasks=["linear/kappa1"])
    assert problems, "a forged submission passed"
    expected = "exited with status 0" if "_exit" in lines else "rel_err.db is -300 in results.json"
    assert any(expected in p for p in problems), problems


def test_an_honest_submission_after_a_mutating_one_stays_valid(honest: Path, tmp_path: Path, capsys) -> None:
    mutating = _copy(honest, tmp_path / "mutating")
    model = mutating / "model.py"
    line = "        x, y = batch.x, batch.y\n"
    model.write_text(model.read_text().replace(line, line + "        batch.y.mul_(-1)\n        batch.x_query.mul_(3)\n"))
    doc = json.loads((mutating / "results.json").read_text())
    doc["model"]["file_sha256"] = sha256_file(model)  # so that validation reaches the re-run
    (mutating / "results.json").write_text(json.dumps(doc))
    code = main(["validate", str(mutating), str(honest), "--rerun", "--tasks", "linear/kappa1", "kernel/linear"])
    out = capsys.readouterr().out
    assert code == 1 and f"{mutating}: INVALID" in out
    assert f"{honest}: valid (re-run matches)" in out.splitlines(), out


def test_the_harness_refuses_outputs_larger_than_the_task_can_need_before_reading_them(tmp_path: Path, capsys) -> None:
    """A worker that announces steps of a terabyte (the model patched the worker's protocol) is refused from the
    header alone: nothing is allocated or read, and the task fails at once, not at its time limit."""
    path = plugin(tmp_path, """
    import json, sys
    w = sys.modules["__main__"]  # the worker's own module (python -m iclbench.worker)

    honest = w._send

    def forged(fd, header, tensors, deadline):
        if not tensors or "y" not in tensors:
            return honest(fd, header, tensors, deadline)
        b, q = tensors["y"].shape
        steps = [b, 1 << 30, q]  # 4 TiB of float32 for 8 prompts of 8 queries: at most 4096 steps are accepted
        specs = [["y", "float32", [b, q]], ["steps", "float32", steps]]
        head = json.dumps({"tensors": specs}).encode()
        w._write_all(fd, w._FRAME.pack(len(head), 4 * b * q * (1 + steps[1])) + head, deadline)

    w._send = forged

    class Forger(Model):
        name = "forger"
        def predict(self, batch):
            return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """)
    code, _, err = run_cli(capsys, "--model", str(path), "--tasks", "kernel/exp", "--prompts", "8", "--out", str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert ("error: kernel/exp: the model's worker process sent tensor steps of float32 [8, 1073741824, 8], expected "
            "float32 of shape [8, 'K <= 4096', 8], while predicting (n=4, prompts 0-7)") in err, err


def test_steps_beyond_the_most_accepted_fail_the_task(tmp_path: Path, capsys) -> None:
    path = plugin(tmp_path, """
    class Long(Model):
        name = "long"
        def predict(self, batch):
            return Prediction(batch.x_query.new_zeros(batch.x_query.shape[:2]),
                              steps=batch.x_query.new_zeros(len(batch.x_query), 4097, batch.x_query.shape[1]))
    """)
    code, _, err = run_cli(capsys, "--model", str(path), "--tasks", "kernel/exp", "--prompts", "8", "--out", str(tmp_path))
    assert code == 1
    assert "error: kernel/exp: Prediction.steps has 4097 steps, more than the 4096 accepted (n=4, prompts 0-7)" in err, err


LOGGER = """
import time
class Logger(Model):
    name = "logger"
    def __init__(self, log, slow=0.0):
        self.log, self.slow = log, slow
    def predict(self, batch):
        if float(batch.x[0, 0, 0]) == 1.0:
            time.sleep(self.slow)
        with open(self.log, "a") as fh:
            fh.write(f"{float(batch.x[0, 0, 0])}\\n")
        return batch.x_query[..., 0] * 0 + batch.x[:, :1, 0]
"""


def logger(tmp_path: Path, slow: float = 0.0) -> tuple[IsolatedModel, list[Batch]]:
    """`LOGGER` in a worker, set up, with three batches of linear/kappa1 whose x are 0, 1 and 2."""
    model = IsolatedModel(str(plugin(tmp_path, LOGGER)), args={"log": str(tmp_path / "calls.log"), "slow": slow},
                          sandbox=False)
    spec = tasks.TASKS["linear/kappa1"].spec
    model.setup(torch.device("cpu"))
    model.begin_task()
    return model, [Batch(spec, torch.full((2, 5, spec.d), float(i)), torch.zeros(2, 5), torch.zeros(2, 3, spec.d))
                   for i in range(3)]


def test_an_answer_under_way_that_does_not_come_in_time_to_be_dropped_stops_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "DROP_WAIT", 0.2)
    model, batches = logger(tmp_path, slow=5.0)
    try:
        answers = model.answers((batch, None) for batch in batches)
        next(answers)
        answers.close()  # the second answer takes 5 s: not dropped in time
        assert model.pid is None
        model.begin_task()  # another worker, whose first answer is its own request's
        assert float(model.predict(batches[2]).y[0, 0]) == 2.0
    finally:
        model.close()


def test_the_worker_computes_the_next_answer_while_the_runner_scores_the_last(tmp_path: Path) -> None:
    model, batches = logger(tmp_path)
    log = tmp_path / "calls.log"
    try:
        answers = model.answers((batch, None) for batch in batches)
        first = next(answers)
        deadline = time.monotonic() + 120  # the second request was sent before the first answer was handed over
        while log.read_text().count("\n") < 2:
            assert time.monotonic() < deadline, "the worker never received the second request"
            time.sleep(0.01)
        assert [float(p.y[0, 0]) for p in (first, *answers)] == [0.0, 1.0, 2.0]
        assert log.read_text().split() == ["0.0", "1.0", "2.0"]

        pid = model.pid
        answers = model.answers((batch, None) for batch in batches)
        next(answers)
        answers.close()  # the second answer, under way, is read and dropped: the same worker goes on
        model.begin_task()
        assert model.pid == pid and float(model.predict(batches[2]).y[0, 0]) == 2.0

        answers = model.answers((batch, None) for batch in batches)
        next(answers)
        with pytest.raises(TaskFailure, match="not running"):  # never the answer under way for another batch
            model.predict(batches[0])
        answers.close()
        model.begin_task()
        assert float(model.predict(batches[1]).y[0, 0]) == 1.0
    finally:
        model.close()


CHANGING_STEPS = """
class ChangingSteps(Model):
    name = "changing-steps"
    calls = 0
    def predict(self, batch):
        y = batch.y.mean(1, keepdim=True).expand(-1, batch.x_query.shape[1]).clone()
        if batch.task.family != "linear":
            return y
        self.calls += 1
        return Prediction(y, steps=y.unsqueeze(1).expand(-1, 2 if self.calls == 1 else 3, -1).clone())
"""


def test_a_task_the_runner_fails_with_an_answer_under_way_leaves_the_next_task_its_own_answers(tmp_path: Path) -> None:
    path = plugin(tmp_path, CHANGING_STEPS)
    picked = [tasks.TASKS["linear/kappa1"], tasks.TASKS["lasso/fixed"]]
    cfg = RunConfig(device="cpu", batch_size=16, prompts=64)
    isolated = IsolatedModel(str(path), sandbox=False)
    try:
        doc = run(isolated, picked, cfg, progress=False)
    finally:
        isolated.close()
    linear, lasso = doc["tasks"]["linear/kappa1"], doc["tasks"]["lasso/fixed"]
    assert linear["status"] == "failed" and "earlier batches had 2" in linear["error"], linear
    direct = run(load_model(str(path)), picked[1:], cfg, progress=False)["tasks"]["lasso/fixed"]
    assert lasso["status"] == "ok" and lasso["lengths"] == direct["lengths"]


EXITS_SECOND = """
import os
class ExitsSecond(Model):
    name = "exits-second"
    calls = 0
    def predict(self, batch):
        self.calls += batch.task.family == "linear"
        if self.calls == 2:
            os._exit(3)
        return batch.x_query.new_zeros(batch.x_query.shape[:2])
"""


def test_a_worker_that_dies_with_requests_under_way_fails_the_one_it_was_computing(tmp_path: Path) -> None:
    """Its second request fails (whether the third could still be sent or not), or, when it died before its reply
    to the first was written whole, the first does, saying that the second was under way; the next task runs."""
    isolated = IsolatedModel(str(plugin(tmp_path, EXITS_SECOND)), sandbox=False)
    picked = [tasks.TASKS["linear/kappa1"], tasks.TASKS["lasso/fixed"]]
    try:
        doc = run(isolated, picked, RunConfig(device="cpu", batch_size=16, prompts=64), progress=False)
    finally:
        isolated.close()
    error = doc["tasks"]["linear/kappa1"]["error"]
    second = error.endswith("(n=5, prompts 16-31)")
    either = error.endswith("(on this batch or the next, which it had been sent) (n=5, prompts 0-15)")
    assert "exited with status 3" in error and (second or either), error
    assert doc["tasks"]["lasso/fixed"]["status"] == "ok"


@pytest.mark.parametrize("batch_size", [512, 16])  # one chunk per length (64 prompts), and four
def test_no_request_sent_ahead_holds_a_longer_prefix_of_prompts_not_yet_answered(
    batch_size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model answering `predict` per length must not have been sent its prompts at a longer length before it
    answers them at a shorter one (what `validate --rerun` relies on to find a model that uses later pairs)."""
    events: list[tuple[str, int, int]] = []  # (sent or answered, prompt length, first prompt)
    ask, answer = IsolatedModel._ask, IsolatedModel._answer

    def logged_ask(self, batch, lengths, **how):
        events.append(("sent", batch.n, int(batch.x_query[0, 0, 0].item() * 1e6)))
        return ask(self, batch, lengths, **how)

    def logged_answer(self, batch, lengths):
        events.append(("answered", batch.n, int(batch.x_query[0, 0, 0].item() * 1e6)))
        return answer(self, batch, lengths)

    monkeypatch.setattr(IsolatedModel, "_ask", logged_ask)
    monkeypatch.setattr(IsolatedModel, "_answer", logged_answer)
    isolated = IsolatedModel("zero", one_pass=False, sandbox=False)
    try:
        doc = run(isolated, [tasks.TASKS["linear/kappa1"]], RunConfig(device="cpu", batch_size=batch_size, prompts=64),
                  progress=False)
    finally:
        isolated.close()
    assert doc["tasks"]["linear/kappa1"]["status"] == "ok"
    sent: set[tuple[int, int]] = set()
    for kind, n, prompts in events:
        if kind == "sent":
            sent.add((n, prompts))
        else:
            assert not any(m > n and p == prompts for m, p in sent), (n, prompts, sorted(sent))
    assert len(sent) == 5 * 64 // min(batch_size, 64)
    if batch_size == 16:  # within a length, the next chunk is sent before an answer is read
        first_answer = next(i for i, e in enumerate(events) if e[0] == "answered")
        assert [e[0] for e in events[: first_answer + 1]] == ["sent", "sent", "answered"]
